"""Smoke test of benchmarks/scale.py's code path on the real Postgres (127.0.0.1:5432): 2,000 slides registered
by the cohort sensor 500 a tick (each requested run's own observation of its slide simulated after its batch), an
unchanged tick, 100 appended rows, edited rows, and the webserver's partition-status query.

Skipped only when Postgres is not reachable; dagster-postgres must be installed (the ``scale`` extra)."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from benchmarks import _scale_lib as lib
from slide2vec_dagster.defs.partitions import register
from slide2vec_dagster.manifest import read_manifests
from slide2vec_dagster.staleness import slide_data_version

SLIDES, CAP, APPENDED, MATERIALISED, FAILED = 2_000, 500, 100, 50, 5
EDITED, EDITED_UNOBSERVED = 50, 10  # observed rows edited, and appended rows edited before their runs observed them
JOB = f"{lib.PIPELINE}_job"


@pytest.fixture
def pg_instance() -> Iterator[DagsterInstance]:
    problem = lib.postgres_problem()
    if problem:
        pytest.skip(problem)
    if importlib.util.find_spec("dagster_postgres") is None or importlib.util.find_spec("psycopg2") is None:
        pytest.fail(
            "dagster-postgres is not installed: pip install -e '.[scale]' (while dagster-postgres 0.29.28 is not "
            "on the index: pip install --no-deps dagster-postgres==0.29.27 psycopg2-binary)"
        )
    # One database per process: concurrent runs of this test never share one.
    database = f"slide2vec_scale_test_{os.getpid()}"
    lib.reset_database(database)
    try:
        with lib.postgres_instance(database) as instance:
            yield instance
    finally:
        lib.drop_database(database)


def _samples(start: int, stop: int) -> list[str]:
    return [lib.sample_id(i) for i in range(start, stop)]


def _patients(start: int, stop: int) -> list[str]:
    return list(dict.fromkeys(lib.patient_of(i) for i in range(start, stop)))


def test_cohort_sensor_and_partition_status_on_postgres(pg_instance: DagsterInstance) -> None:
    instance = pg_instance
    with tempfile.TemporaryDirectory(prefix="s2v-scale-test-") as tmp:
        folder = Path(tmp)
        manifest = lib.write_manifest(folder / "cohort.csv", 0, SLIDES)
        config = lib.write_platform_config(folder, manifest, max_runs_per_tick=CAP)
        defs = lib.load_definitions(config)

        # Tick after tick, the next CAP rows in manifest order are registered by the sensor itself (no partition
        # requests for the daemon) and requested under the pipeline's job. While rows are left the cursor stays
        # where it was; the tick that registers the last row stores the manifest stamps. After each batch the drain
        # simulates its runs observing their slides, so a tick diffs every earlier batch, and, nothing being
        # edited, observes nothing: not its own new rows (their runs do), not the earlier ones.
        def check(number: int, tick: lib.Tick, recorded: lib.Recorded) -> None:
            batch = _samples((number - 1) * CAP, number * CAP)
            assert not tick.data.dynamic_partitions_requests
            assert tick.partition_keys == batch and tick.job_names == {JOB}
            assert instance.get_dynamic_partitions("sample_id") == _samples(0, number * CAP)
            assert instance.get_dynamic_partitions("patient_id") == _patients(0, number * CAP)
            assert set(lib.latest_slide_versions(instance)) == set(_samples(0, (number - 1) * CAP))
            assert tick.observed == [] and recorded.total == 0
            assert tick.cursor is None if number < SLIDES // CAP else tick.cursor is not None

        slides = read_manifests([manifest])
        drained = lib.drain(defs, instance, slides, CAP, None, daemon_budget_s=0.2, on_tick=check)
        assert [number for number, _, _ in drained.ticks] == [1, 2, 3, 4] and drained.finished
        assert drained.runs_observed == SLIDES
        # The runs' simulated observations are what the sensor's own query reads back: each row's data version.
        assert lib.latest_slide_versions(instance) == {sid: slide_data_version(e) for sid, e in slides.items()}
        assert register(instance, slides) == ([], [])  # nothing left to register

        # Unchanged manifest: skipped, nothing requested, the cursor kept.
        unchanged = lib.code_server_tick(defs, instance, drained.cursor)
        assert unchanged.requests == 0 and "unchanged" in (unchanged.skip_message or "")
        assert unchanged.cursor == drained.cursor

        # Appended rows: exactly those are registered and requested, in one tick that stores the new stamps.
        lib.write_manifest(manifest, SLIDES, APPENDED, append=True)
        appended = lib.code_server_tick(defs, instance, drained.cursor)
        expected = _samples(SLIDES, SLIDES + APPENDED)
        assert appended.partition_keys == expected and appended.job_names == {JOB}
        assert appended.observed == []
        assert appended.cursor not in (None, drained.cursor)
        lib.apply_tick(instance, appended.data, daemon_budget_s=0)
        assert instance.get_dynamic_partitions("sample_id") == _samples(0, SLIDES + APPENDED)
        assert instance.get_dynamic_partitions("patient_id") == _patients(0, SLIDES + APPENDED)
        assert lib.code_server_tick(defs, instance, appended.cursor).requests == 0
        # Before their runs observe them, a tick re-reading the manifest leaves the new rows alone.
        reread = lib.code_server_tick(defs, instance, None)
        assert reread.observed == [] and reread.requests == 0
        assert set(lib.latest_slide_versions(instance)) == set(_samples(0, SLIDES))

        # Edited rows: a spacing override on EDITED observed rows and on EDITED_UNOBSERVED appended rows whose runs
        # have not observed them yet. The next tick observes exactly the EDITED ones, with their new versions, and
        # requests nothing; once the daemon has recorded them, a re-read observes nothing.
        before = lib.latest_slide_versions(instance)
        observed_rows = lib.edited_rows(SLIDES, EDITED)
        unobserved_rows = range(SLIDES, SLIDES + EDITED_UNOBSERVED)
        spacing = dict.fromkeys([*observed_rows, *unobserved_rows], 0.25)
        lib.write_manifest(manifest, 0, SLIDES + APPENDED, spacing=spacing)
        slides = read_manifests([manifest])
        edited = [lib.sample_id(i) for i in observed_rows]
        assert len(edited) == EDITED
        edit = lib.code_server_tick(defs, instance, appended.cursor)
        assert sorted(edit.observed) == edited
        versions = {event.partition: event.tags[DATA_VERSION_TAG] for event in edit.data.asset_events}
        assert versions == {sid: slide_data_version(slides[sid]) for sid in edited}
        assert all(versions[sid] != before[sid] for sid in edited)
        assert edit.requests == 0 and not edit.data.dynamic_partitions_requests
        assert edit.cursor not in (None, appended.cursor)
        assert lib.apply_tick(instance, edit.data).daemon == EDITED  # through the daemon's own code
        assert lib.code_server_tick(defs, instance, None).observed == []
        # Then the appended rows' runs observe their slides (the edited ones at their new version): all current.
        lib.simulate_runs_observing(instance, slides, expected)
        after = lib.code_server_tick(defs, instance, None)
        assert after.observed == [] and after.requests == 0
        assert lib.latest_slide_versions(instance) == {sid: slide_data_version(e) for sid, e in slides.items()}

        # The webserver's partition-status queries see the registered keys and the recorded history.
        asset = AssetKey([lib.PIPELINE, "coordinates"])
        materialised = _samples(0, MATERIALISED)
        failed = _samples(MATERIALISED, MATERIALISED + FAILED)
        lib.fabricate_history(instance, asset, materialised, failed)
        with lib.workspace(instance, config) as context:
            stats, _, _ = lib.partition_stats(context, asset)
            statuses, _, _ = lib.partition_statuses(context, asset)
        assert stats == {
            "numMaterialized": MATERIALISED,
            "numPartitions": SLIDES + APPENDED,
            "numFailed": FAILED,
            "numMaterializing": 0,
        }
        assert sorted(statuses["materializedPartitions"]) == materialised
        assert sorted(statuses["failedPartitions"]) == failed
