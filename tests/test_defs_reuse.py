"""``tiling.read_coordinates_from``: another pipeline's coordinates, or a folder written earlier (ours or
slide2vec 7.1.4's, whose rows are sorted x then y)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from dagster import AssetKey, instance_for_test, materialize

from slide2vec_dagster.config import ConfigError, load_config
from slide2vec_dagster.defs.build import build_definitions
from slide2vec_dagster.defs.partitions import register
from slide2vec_dagster.manifest import read_manifests
from tests.contract import check_output_dir
from tests.dagster_helpers import DATA, write_manifest

SLIDE2VEC = DATA / "slide2vec-7.1.4"
CMU_ID = "CMU-1-Small-Region"
TILING = {"params": {"requested_spacing_um": 0.5, "requested_tile_size_px": 224}}
BASELINE = {"name": "baseline-color-texture", "batch_size": 64}
ROWS = [{"sample_id": CMU_ID, "image_path": str(DATA / "CMU-1-Small-Region.svs")}]


def _setup(tmp_path: Path, pipelines: dict, rows: list[dict] = ROWS):
    write_manifest(tmp_path / "cohort.csv", rows)
    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump({"manifests": ["cohort.csv"], "output_root": "out", "pipelines": pipelines}))
    config = load_config(path)
    return config, build_definitions(config)


def _run(defs, instance, partition: str):
    assets = [a for a in defs.assets if a.partitions_def is not None and a.partitions_def.name == "sample_id"]
    return materialize(
        assets, partition_key=partition, instance=instance, resources=defs.resources, raise_on_error=False
    )


def test_a_pipeline_can_embed_another_pipelines_coordinates(tmp_path: Path):
    pipelines = {
        "tiled": {"tiling": TILING, "model": BASELINE},
        "second": {"tiling": {**TILING, "read_coordinates_from": "tiled"}, "model": BASELINE, "output_format": "npz"},
    }
    config, defs = _setup(tmp_path, pipelines)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {k for k in keys if k.startswith("second/")} == {"second/tile_embeddings"}  # no tiling of its own
    assert graph.get(AssetKey(["second", "tile_embeddings"])).parent_keys == {
        AssetKey(["tiled", "coordinates"]),
        AssetKey("slides"),
    }
    assert defs.resolve_job_def("tiled_job").asset_layer.executable_asset_keys >= {
        AssetKey(["tiled", "coordinates"]),
        AssetKey(["second", "tile_embeddings"]),
    }  # one run per new slide tiles it and embeds it for both
    with instance_for_test() as instance:
        register(instance, read_manifests(config.manifests))
        assert _run(defs, instance, CMU_ID).success
    tiled, second = config.output_dir("tiled"), config.output_dir("second")
    # The reused coordinates are copied into the pipeline's own tiles/: its output_dir stands alone.
    theirs, mine = (
        np.load(tiled / "tiles" / f"{CMU_ID}.coordinates.npz"),
        np.load(second / "tiles" / f"{CMU_ID}.coordinates.npz"),
    )
    assert all(np.array_equal(theirs[k], mine[k]) for k in theirs.files)
    copied = json.loads((second / "tiles" / f"{CMU_ID}.coordinates.meta.json").read_text())
    assert copied["artifact"]["reused_from"].endswith(f"tiled/tiles/{CMU_ID}.coordinates.meta.json")
    with np.load(second / "tile_embeddings" / f"{CMU_ID}.npz") as archive:
        npz_features = archive["features"]
    pt_features = torch.load(tiled / "tile_embeddings" / f"{CMU_ID}.pt", weights_only=True)
    np.testing.assert_array_equal(npz_features, pt_features.numpy())
    assert check_output_dir(second, require=("tile_embeddings",)) == []


def test_slide2vec_714_coordinates_are_reused_in_their_own_row_order(tmp_path: Path):
    pipelines = {
        "own": {"tiling": TILING, "model": BASELINE},
        "lab": {"tiling": {**TILING, "read_coordinates_from": str(SLIDE2VEC)}, "model": BASELINE},
    }
    config, defs = _setup(tmp_path, pipelines)
    with instance_for_test() as instance:
        register(instance, read_manifests(config.manifests))
        assert _run(defs, instance, CMU_ID).success
    lab, own = config.output_dir("lab"), config.output_dir("own")
    meta = json.loads((lab / "tile_embeddings" / f"{CMU_ID}.meta.json").read_text())
    assert meta["tile_order"] == "x_then_y" and meta["coordinates_source"].startswith("slide2vec-7.1")
    reused_npz = SLIDE2VEC / "tiles" / f"{CMU_ID}.coordinates.npz"
    assert meta["coordinates_npz_path"] == str(reused_npz)
    assert not (lab / "tiles").exists()  # what we write stays the seed's layout: their x-then-y file is not copied
    # Row i of the embeddings is row i of slide2vec's file: the same tile's features as in our own run.
    theirs = np.load(reused_npz)
    ours = np.load(own / "tiles" / f"{CMU_ID}.coordinates.npz")
    assert not np.array_equal(theirs["x"], ours["x"])  # a different order...
    where = {(int(x), int(y)): i for i, (x, y) in enumerate(zip(ours["x"], ours["y"], strict=True))}
    order = [where[(int(x), int(y))] for x, y in zip(theirs["x"], theirs["y"], strict=True)]  # ...of the same tiles
    lab_features = torch.load(lab / "tile_embeddings" / f"{CMU_ID}.pt", weights_only=True)
    own_features = torch.load(own / "tile_embeddings" / f"{CMU_ID}.pt", weights_only=True)
    torch.testing.assert_close(lab_features, own_features[order])


def test_reused_coordinates_tiled_differently_are_refused_at_config_load(tmp_path: Path):
    other = {"params": {"requested_spacing_um": 1.0, "requested_tile_size_px": 224}}
    with pytest.raises(ConfigError, match=r"requested_spacing_um: tiled with 0\.5, the pipeline asks for 1\.0"):
        _setup(tmp_path, {"lab": {"tiling": {**other, "read_coordinates_from": str(SLIDE2VEC)}, "model": BASELINE}})
    pipelines = {
        "tiled": {"tiling": TILING, "model": BASELINE},
        "second": {"tiling": {**other, "read_coordinates_from": "tiled"}, "model": BASELINE},
    }
    with pytest.raises(ConfigError, match="'tiled' tiles differently"):
        _setup(tmp_path, pipelines)
    with pytest.raises(ConfigError, match="neither a pipeline of this config"):
        _setup(tmp_path, {"p": {"tiling": {**TILING, "read_coordinates_from": "no/such/folder"}, "model": BASELINE}})


def test_a_slide_missing_from_the_reused_folder_fails_alone(tmp_path: Path):
    rows = [*ROWS, {"sample_id": "absent", "image_path": str(DATA / "CMU-1-Small-Region.svs")}]
    pipelines = {"lab": {"tiling": {**TILING, "read_coordinates_from": str(SLIDE2VEC)}, "model": BASELINE}}
    config, defs = _setup(tmp_path, pipelines, rows)
    with instance_for_test() as instance:
        register(instance, read_manifests(config.manifests))
        assert not _run(defs, instance, "absent").success
        assert _run(defs, instance, CMU_ID).success
    import csv

    with (config.output_dir("lab") / "process_list.csv").open() as handle:
        rows_by_id = {r["sample_id"]: r for r in csv.DictReader(handle)}
    assert rows_by_id["absent"]["status"] == "failed"
    assert (
        rows_by_id["absent"]["error"].startswith("MissingCoordinatesError:")
        and "absent" in rows_by_id["absent"]["error"]
    )
    assert rows_by_id[CMU_ID]["status"] == "done" and rows_by_id[CMU_ID]["num_tiles"] == "67"
