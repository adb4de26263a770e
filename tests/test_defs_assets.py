"""Dagster layer: definitions load, assets materialise on a temporary instance, bad slides fail alone."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from dagster import AssetKey, instance_for_test, materialize

from slide2vec_dagster.config import load_config
from slide2vec_dagster.defs.build import build_definitions
from slide2vec_dagster.defs.partitions import patient_partitions, register, sample_partitions
from slide2vec_dagster.manifest import read_manifests
from tests.contract import check_output_dir
from tests.dagster_helpers import BAD_ROWS, GOOD_ROWS, write_manifest, write_platform_config


@pytest.fixture
def platform(tmp_path: Path):
    write_manifest(tmp_path / "cohort.csv", GOOD_ROWS + BAD_ROWS)
    config = load_config(write_platform_config(tmp_path, ["cohort.csv"]))
    return config, build_definitions(config)


def _materialize(defs, instance, sample_id: str):
    assets = list(defs.assets)
    return materialize(
        assets,
        partition_key=sample_id,
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
    )


def _process_list(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return {row["sample_id"]: row for row in csv.DictReader(handle)}


def test_definitions_load_for_the_demo_config():
    defs = build_definitions(load_config(Path(__file__).resolve().parent.parent / "demo" / "config.yaml"))
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    per_pipeline = ("coordinates", "mask_preview", "tiling_preview")
    assert keys == (
        {f"demo/{name}" for name in (*per_pipeline, "tile_embeddings")}
        | {f"demo_regions/{name}" for name in (*per_pipeline, "hierarchical_embeddings")}
        | {f"demo_patients/{name}" for name in (*per_pipeline, "tile_embeddings", "slide_embeddings")}
        | {"demo_patients/patient_embeddings", "slides"}
    )
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        expected = patient_partitions if key.path[-1] == "patient_embeddings" else sample_partitions
        assert node.partitions_def == expected
        assert node.group_name == (key.path[0] if len(key.path) > 1 else "cohort")
    # The slide files are the source: the tiling depends on them, so a changed file shows as stale.
    assert graph.get(AssetKey(["demo", "coordinates"])).parent_keys == {AssetKey("slides")}
    # The embeddings read the coordinates of the same pipeline, partition by partition.
    assert graph.get(AssetKey(["demo", "tile_embeddings"])).parent_keys == {
        AssetKey(["demo", "coordinates"]),
        AssetKey("slides"),  # it reads the slide's pixels
    }
    assert defs.resolve_job_def("demo_job") is not None and defs.resolve_job_def("demo_regions_job") is not None
    assert defs.resolve_sensor_def("cohort_sensor") is not None
    assert defs.resolve_sensor_def("patient_sensor") is not None
    assert defs.resolve_job_def("demo_patients_patients_job") is not None


def test_previews_off_means_no_preview_assets(tmp_path: Path):
    write_manifest(tmp_path / "cohort.csv", GOOD_ROWS)
    pipelines = {
        "plain": {
            "tiling": {
                "params": {"requested_spacing_um": 1.0, "requested_tile_size_px": 256},
                "preview": {"save_mask_preview": False, "save_tiling_preview": False},
            }
        }
    }
    defs = build_definitions(load_config(write_platform_config(tmp_path, ["cohort.csv"], pipelines)))
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {"slides", "plain/coordinates"}


def test_materialize_good_and_bad_slides(platform):
    config, defs = platform
    layout_dir = config.output_dir("p1")
    with instance_for_test() as instance:
        register(instance, read_manifests(config.manifests))
        results = {sid: _materialize(defs, instance, sid) for sid in ("001", "missing", "no-spacing", "002")}

        assert results["001"].success and results["002"].success
        assert not results["missing"].success and not results["no-spacing"].success

        # The good partitions are materialised, the bad ones are not.
        coords_key = AssetKey(["p1", "coordinates"])
        materialized = instance.get_materialized_partitions(coords_key)
        assert materialized == {"001", "002"}

        # Materialisation metadata a person needs in the UI.
        metadata = instance.fetch_materializations(coords_key, limit=1).records[0].asset_materialization.metadata
        for key in ("num_tiles", "backend", "base_spacing_um", "read_level", "coordinates_npz", "image_path"):
            assert key in metadata, key
        preview = instance.fetch_materializations(AssetKey(["p1", "mask_preview"]), limit=1).records[0]
        assert "data:image/png;base64," in preview.asset_materialization.metadata["preview"].value

    rows = _process_list(layout_dir / "process_list.csv")
    assert rows["001"]["status"] == "done" and rows["002"]["status"] == "done"
    assert rows["missing"]["status"] == "failed"
    assert rows["missing"]["error"].startswith("FileNotFoundError: ")
    assert "no-such-slide.svs" in rows["missing"]["error"]
    assert rows["no-spacing"]["status"] == "failed"
    assert rows["no-spacing"]["error"].startswith("MissingSpacingError: ")
    assert "spacing_at_level_0" in rows["no-spacing"]["error"]
    # No partial files for the failed slides.
    leftovers = [
        p.name
        for p in layout_dir.rglob("*")
        if p.is_file() and ".locks" not in p.parts and ("missing" in p.name or "no-spacing" in p.name)
    ]
    assert leftovers == []
    assert not [p for p in layout_dir.rglob(".*.tmp*")], "temporary files left behind"

    # The masked slide recorded its mask; the contract holds for the whole directory.
    with np.load(layout_dir / "tiles" / "002.coordinates.npz") as archive:
        assert len(archive["x"]) > 0
    assert check_output_dir(layout_dir) == []


def test_rerun_is_skipped_and_a_changed_config_retiles(platform, tmp_path: Path):
    config, defs = platform
    process_list = config.output_dir("p1") / "process_list.csv"
    with instance_for_test() as instance:
        register(instance, read_manifests(config.manifests))
        assert _materialize(defs, instance, "001").success
        npz = config.output_dir("p1") / "tiles" / "001.coordinates.npz"
        first_mtime = npz.stat().st_mtime_ns
        assert _materialize(defs, instance, "001").success
        assert _process_list(process_list)["001"]["status"] == "skipped"
        assert npz.stat().st_mtime_ns == first_mtime

        # Another tile size is another configuration: the slide is tiled again.
        changed = write_platform_config(
            tmp_path,
            ["cohort.csv"],
            {"p1": {"tiling": {"params": {"requested_spacing_um": 0.5, "requested_tile_size_px": 256}}}},
        )
        defs2 = build_definitions(load_config(changed))
        assert _materialize(defs2, instance, "001").success
        assert _process_list(process_list)["001"]["status"] == "done"
        assert npz.stat().st_mtime_ns != first_mtime


def test_removed_row_fails_with_a_clear_message(platform, tmp_path: Path):
    config, defs = platform
    with instance_for_test() as instance:
        register(instance, read_manifests(config.manifests))
        write_manifest(tmp_path / "cohort.csv", GOOD_ROWS)  # "missing" and "no-spacing" rows removed
        result = _materialize(defs, instance, "missing")
        assert not result.success
        # Registered partitions are never deleted by a manifest edit.
        assert "missing" in instance.get_dynamic_partitions("sample_id")
    error = _process_list(config.output_dir("p1") / "process_list.csv")["missing"]["error"]
    assert error.startswith("SampleNotInManifestError: ") and "no longer in any manifest" in error


def test_backfill_style_run_with_range_tags(platform):
    """Backfill runs tag a partition range even for one slide; the asset and IO manager must cope."""
    config, defs = platform
    with instance_for_test() as instance:
        register(instance, read_manifests(config.manifests))
        job = defs.resolve_job_def("p1_job")
        result = job.execute_in_process(
            instance=instance,
            tags={"dagster/asset_partition_range_start": "002", "dagster/asset_partition_range_end": "002"},
        )
        assert result.success
        assert instance.get_materialized_partitions(AssetKey(["p1", "coordinates"])) == {"002"}


def test_a_slide_whose_workers_keep_dying_fails_with_a_clear_row(platform):
    """The record a killed writer leaves in the partition's lock file: below execution.max_retries deaths
    the slide is processed again (with a warning), above it the slide fails with a row that says why."""
    import json

    from slide2vec_dagster.layout import OutputLayout

    config, defs = platform
    layout = OutputLayout(config.output_dir("p1"))
    limit = config.execution.max_retries
    with instance_for_test() as instance:
        register(instance, read_manifests(config.manifests))
        for sample_id, deaths_so_far in (("001", limit - 1), ("002", limit)):
            layout.lock_file(sample_id).parent.mkdir(parents=True, exist_ok=True)
            record = {"run_id": "dead-run", "pid": 4242, "host": "gpu-node-7", "since": "x", "deaths": deaths_so_far}
            layout.lock_file(sample_id).write_text(json.dumps(record))
        survived, refused = _materialize(defs, instance, "001"), _materialize(defs, instance, "002")
        assert survived.success and not refused.success
        warnings = [e.message for e in instance.all_logs(survived.run_id) if "died before finishing" in e.message]
        assert warnings and "pid 4242 on gpu-node-7" in warnings[0]

    rows = _process_list(layout.process_list)
    assert rows["001"]["status"] == "done"
    assert rows["002"]["status"] == "failed"
    assert rows["002"]["error"].startswith("WorkerDiedError: ")
    assert f"died {limit + 1} times in a row" in rows["002"]["error"]
    assert "pid 4242 on gpu-node-7" in rows["002"]["error"] and "rerun the slide" in rows["002"]["error"]
    # Both runs ended alive: their records are gone, so a rerun of 002 starts counting from zero.
    assert layout.lock_file("001").read_text() == "" and layout.lock_file("002").read_text() == ""
