"""Smoke test of benchmarks/scale.py's code path on the real Postgres (127.0.0.1:5432): 2,000 slides registered
by the cohort sensor, an unchanged tick, 100 appended rows, and the webserver's partition-status query.

Skipped only when Postgres is not reachable; dagster-postgres must be installed (the ``scale`` extra)."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance

from benchmarks import _scale_lib as lib
from slide2vec_dagster.defs.partitions import register
from slide2vec_dagster.manifest import read_manifests

SLIDES, APPENDED, MATERIALISED, FAILED = 2_000, 100, 50, 5


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


def test_cohort_sensor_and_partition_status_on_postgres(pg_instance: DagsterInstance) -> None:
    instance = pg_instance
    with tempfile.TemporaryDirectory(prefix="s2v-scale-test-") as tmp:
        folder = Path(tmp)
        manifest = lib.write_manifest(folder / "cohort.csv", 0, SLIDES)
        config = lib.write_platform_config(folder, manifest)
        defs = lib.load_definitions(config)

        # First tick: every row is new; the daemon applies the partition requests.
        first = lib.code_server_tick(defs, instance, None)
        assert first.requests == SLIDES
        assert len(first.new_keys("sample_id")) == SLIDES
        assert len(first.new_keys("patient_id")) == SLIDES * 4 // 10
        lib.apply_tick(instance, first.data, daemon_budget_s=0)
        assert len(instance.get_dynamic_partitions("sample_id")) == SLIDES
        assert register(instance, read_manifests([manifest])) == ([], [])  # nothing left to register

        # Unchanged manifest: skipped, nothing requested.
        unchanged = lib.code_server_tick(defs, instance, first.cursor)
        assert unchanged.requests == 0 and "unchanged" in (unchanged.skip_message or "")

        # Appended rows: exactly those are requested, and registered by the daemon's own code.
        lib.write_manifest(manifest, SLIDES, APPENDED, append=True)
        appended = lib.code_server_tick(defs, instance, first.cursor)
        expected = [lib.sample_id(i) for i in range(SLIDES, SLIDES + APPENDED)]
        assert sorted(r.partition_key for r in appended.data.run_requests) == expected
        lib.apply_tick(instance, appended.data)
        registered = instance.get_dynamic_partitions("sample_id")
        assert len(registered) == SLIDES + APPENDED and set(expected) <= set(registered)

        # The webserver's partition-status queries see the registered keys and the recorded history.
        asset = AssetKey([lib.PIPELINE, "coordinates"])
        materialised = [lib.sample_id(i) for i in range(MATERIALISED)]
        failed = [lib.sample_id(i) for i in range(MATERIALISED, MATERIALISED + FAILED)]
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
