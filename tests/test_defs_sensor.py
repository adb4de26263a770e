"""The cohort sensor registers new partitions, requests their runs, and costs nothing when unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import SensorResult, SkipReason, build_sensor_context, instance_for_test, partition_loading_context

from slide2vec_dagster.config import load_config
from slide2vec_dagster.defs.build import build_definitions
from slide2vec_dagster.manifest import ManifestError
from tests.dagster_helpers import DATA, GOOD_ROWS, write_manifest, write_platform_config


def _evaluate(defs, instance, cursor):
    """Evaluate a tick as the daemon does: apply the partition requests, then resolve the run requests
    against the definitions (a request outside the sensor's target, or for an unknown partition, is an
    error there)."""
    sensor = defs.resolve_sensor_def("cohort_sensor")
    context = build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    result = sensor(context)
    if isinstance(result, SensorResult):
        for request in result.dynamic_partitions_requests or []:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        with partition_loading_context(dynamic_partitions_store=instance):
            sensor.resolve_run_requests(result.run_requests or [], context, sensor.asset_selection, [])
        # The observations of new slides' data versions are recorded as the daemon would.
        for event in result.asset_events or []:
            instance.report_runless_asset_event(event)
    return result


def test_sensor_registers_new_slides_once(tmp_path: Path):
    manifest = write_manifest(tmp_path / "cohort.csv", GOOD_ROWS)
    config = load_config(write_platform_config(tmp_path, ["cohort.csv"]))
    defs = build_definitions(config)
    with instance_for_test() as instance:
        first = _evaluate(defs, instance, None)
        assert isinstance(first, SensorResult)
        assert instance.get_dynamic_partitions("sample_id") == ["001", "002"]
        assert instance.get_dynamic_partitions("patient_id") == ["pa"]
        assert sorted(r.partition_key for r in first.run_requests) == ["001", "002"]
        # Runs show under the pipeline's named job, not an anonymous asset job.
        assert {r.job_name for r in first.run_requests} == {"p1_job"}

        # Unchanged manifest: skipped without reading it.
        second = _evaluate(defs, instance, first.cursor)
        assert isinstance(second, SkipReason) and "unchanged" in second.skip_message

        # A new row: only the new slide is registered and requested.
        rows = [
            *GOOD_ROWS,
            {"sample_id": "003", "image_path": str(DATA / "CMU-1-Small-Region.svs"), "patient_id": "pc"},
        ]
        write_manifest(manifest, rows)
        third = _evaluate(defs, instance, first.cursor)
        assert isinstance(third, SensorResult)
        assert [r.partition_key for r in third.run_requests] == ["003"]
        assert instance.get_dynamic_partitions("sample_id") == ["001", "002", "003"]
        assert instance.get_dynamic_partitions("patient_id") == ["pa", "pc"]

        # Removing rows never deletes partitions.
        write_manifest(manifest, GOOD_ROWS[:1])
        fourth = _evaluate(defs, instance, third.cursor)
        assert isinstance(fourth, SensorResult) and fourth.run_requests == []
        assert instance.get_dynamic_partitions("sample_id") == ["001", "002", "003"]


def test_sensor_reports_a_broken_manifest(tmp_path: Path):
    manifest = write_manifest(tmp_path / "cohort.csv", GOOD_ROWS)
    config = load_config(write_platform_config(tmp_path, ["cohort.csv"]))
    sensor = build_definitions(config).resolve_sensor_def("cohort_sensor")
    manifest.write_text("sample_id,image_path\n001,a.svs\n001,b.svs\n", encoding="utf-8")
    with instance_for_test() as instance, pytest.raises(ManifestError, match="duplicate sample_id '001'"):
        sensor(build_sensor_context(instance=instance, cursor=None))


def test_edited_rows_are_observed_at_most_max_runs_per_tick_a_tick(tmp_path: Path):
    """Rows edited after their runs observed them get a new data version, max_runs_per_tick a tick (the cursor
    stays behind until all are observed); rows never observed are left to their runs."""
    import yaml

    rows = [
        {"sample_id": f"s{i}", "image_path": str(DATA / "synthetic-he-0.5mpp.tiff"), "patient_id": "pa"}
        for i in range(5)
    ]
    manifest = write_manifest(tmp_path / "cohort.csv", rows)
    path = write_platform_config(tmp_path, ["cohort.csv"])
    config = yaml.safe_load(path.read_text())
    config["execution"] = {"max_runs_per_tick": 2}
    path.write_text(yaml.safe_dump(config))
    defs = build_definitions(load_config(path))
    with instance_for_test() as instance:
        cursor = None
        for _ in range(3):  # 5 new slides, 2 a tick
            result = _evaluate(defs, instance, cursor)
            assert result.asset_events == []  # never observed: left to their runs
            cursor = result.cursor
        assert len(instance.get_dynamic_partitions("sample_id")) == 5
        for sample_id in ("s0", "s1", "s2", "s3"):  # their runs observe them (s4's has not run yet)
            defs.resolve_job_def("p1_job").execute_in_process(partition_key=sample_id, instance=instance)

        for row in rows:  # a new spacing for every row
            row["spacing_at_level_0"] = "0.5"
        write_manifest(manifest, rows)
        observed: list[str] = []
        for expected in (["s0", "s1"], ["s2", "s3"]):
            result = _evaluate(defs, instance, cursor)
            assert isinstance(result, SensorResult) and result.run_requests == []
            assert [event.partition for event in result.asset_events] == expected
            observed += expected
            held_back = result.cursor == cursor
            cursor = result.cursor
        assert observed == ["s0", "s1", "s2", "s3"] and not held_back  # s4: never observed, not observed now
        assert isinstance(_evaluate(defs, instance, cursor), SkipReason)
