"""Embedding assets: tile and hierarchical payloads + sidecars, blocking checks, zero tiles, failures."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from dagster import AssetKey, instance_for_test, materialize

from slide2vec_dagster import slide_embedding
from slide2vec_dagster.config import load_config
from slide2vec_dagster.defs.build import build_definitions
from slide2vec_dagster.defs.partitions import register
from slide2vec_dagster.encoders import BASELINE_FEATURE_DIM
from slide2vec_dagster.manifest import read_manifests
from tests.contract import check_output_dir
from tests.dagster_helpers import GOOD_ROWS, blank_slide, write_manifest, write_platform_config

BASELINE = {"name": "baseline-color-texture", "batch_size": 16}


def _setup(tmp_path: Path, pipelines: dict, rows: list[dict]):
    write_manifest(tmp_path / "cohort.csv", rows)
    config = load_config(write_platform_config(tmp_path, ["cohort.csv"], pipelines))
    return config, build_definitions(config)


def _run(defs, instance, sample_id: str):
    return materialize(
        list(defs.assets), partition_key=sample_id, instance=instance, resources=defs.resources, raise_on_error=False
    )


def _checks(result) -> dict[str, bool]:
    return {evaluation.check_name: evaluation.passed for evaluation in result.get_asset_check_evaluations()}


def test_tile_embeddings_pt_with_checks(tmp_path: Path):
    pipelines = {
        "p1": {"tiling": {"params": {"requested_spacing_um": 1.0, "requested_tile_size_px": 224}}, "model": BASELINE}
    }
    config, defs = _setup(tmp_path, pipelines, GOOD_ROWS)
    out = config.output_dir("p1")
    with instance_for_test() as instance:
        register(instance, read_manifests(config.manifests))
        result = _run(defs, instance, "001")
        assert result.success
        evaluations = result.get_asset_check_evaluations()
        assert {e.check_name for e in evaluations} == {
            "rows_match_coordinates", "all_finite", "feature_dim_matches_registry", "dtype_matches_feature_dtype",
        }  # fmt: skip
        assert all(e.passed for e in evaluations)
        assert {e.partition for e in evaluations} == {"001"}  # listed under the slide's partition
        assert instance.get_materialized_partitions(AssetKey(["p1", "tile_embeddings"])) == {"001"}

    features = torch.load(out / "tile_embeddings" / "001.pt", weights_only=True)
    coords = np.load(out / "tiles" / "001.coordinates.npz")
    assert features.shape == (len(coords["x"]), BASELINE_FEATURE_DIM) and features.dtype == torch.float32
    meta = json.loads((out / "tile_embeddings" / "001.meta.json").read_text())
    assert meta["num_tiles"] == len(coords["x"]) and meta["feature_dtype"] == "fp32"
    assert meta["encoder_name"] == "baseline-color-texture" and meta["encoder_level"] == "tile"
    assert meta["read_tile_size_px"] == 224 and meta["tile_size_lv0"] == 448  # 1.0 µm/px on a 0.5 µm/px slide
    assert meta["provenance"]["model_weights"] == "none (baseline)"
    assert check_output_dir(out, require=("tile_embeddings",)) == []
    with (out / "process_list.csv").open() as handle:
        row = next(r for r in csv.DictReader(handle) if r["sample_id"] == "001")
    assert row["status"] == "done" and row["feature_path"].endswith("tile_embeddings/001.pt")
    assert row["coordinates_npz_path"].endswith("tiles/001.coordinates.npz")  # tiling columns kept


def test_hierarchical_npz_fp16_and_zero_tiles(tmp_path: Path):
    pipelines = {
        "h": {
            "tiling": {
                "params": {"requested_spacing_um": 1.0, "requested_tile_size_px": 112, "region_tile_multiple": 2}
            },
            "model": BASELINE,
            "speed": {"output_dtype": "fp16"},
            "output_format": "npz",
        }
    }
    rows = [GOOD_ROWS[0], {"sample_id": "blank", "image_path": str(blank_slide(tmp_path / "blank.tiff"))}]
    config, defs = _setup(tmp_path, pipelines, rows)
    out = config.output_dir("h")
    with instance_for_test() as instance:
        register(instance, read_manifests(config.manifests))
        for sample_id in ("001", "blank"):
            result = _run(defs, instance, sample_id)
            assert result.success, sample_id
            assert all(_checks(result).values()), _checks(result)

    regions = np.load(out / "tiles" / "001.coordinates.npz")
    with np.load(out / "hierarchical_embeddings" / "001.npz") as archive:
        features, tile_index = archive["features"], archive["tile_index"]
    assert features.shape == (len(regions["x"]), 4, BASELINE_FEATURE_DIM) and features.dtype == np.float16
    np.testing.assert_array_equal(tile_index, np.arange(len(regions["x"])))
    meta = json.loads((out / "hierarchical_embeddings" / "001.meta.json").read_text())
    assert (meta["num_regions"], meta["tiles_per_region"], meta["region_tile_multiple"]) == (len(regions["x"]), 4, 2)
    # 1.0 µm/px is level 1 of this 0.5 µm/px slide: regions of 224 px read there, subtiles of 112 px,
    # each covering 224 level-0 pixels.
    region = (meta["requested_region_size_px"], meta["read_region_size_px"], meta["subtile_order"])
    assert region == (224, 224, "row_major")
    assert (meta["read_tile_size_px"], meta["tile_size_lv0"]) == (112, 224)
    assert meta["feature_dtype"] == "fp16" and meta["format"] == "npz"

    with np.load(out / "hierarchical_embeddings" / "blank.npz") as archive:
        assert archive["features"].shape == (0, 4, BASELINE_FEATURE_DIM)
    assert json.loads((out / "tiles" / "blank.coordinates.meta.json").read_text())["tiling"]["n_tiles"] == 0
    assert check_output_dir(out, require=("hierarchical_embeddings",)) == []


def test_nan_features_are_refused_before_they_are_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An encoder that emits NaN fails its slide with a row saying so; no embedding file is written."""
    pipelines = {
        "p1": {"tiling": {"params": {"requested_spacing_um": 1.0, "requested_tile_size_px": 224}}, "model": BASELINE}
    }
    config, defs = _setup(tmp_path, pipelines, GOOD_ROWS)
    monkeypatch.setattr(slide_embedding, "cached_encoder", lambda pipeline: _NaNEncoder())
    with instance_for_test() as instance:
        register(instance, read_manifests(config.manifests))
        result = _run(defs, instance, "001")
        assert not result.success
        assert instance.get_materialized_partitions(AssetKey(["p1", "tile_embeddings"])) == set()
    out = config.output_dir("p1")
    assert not list((out / "tile_embeddings").glob("001.*"))
    with (out / "process_list.csv").open() as handle:
        row = next(r for r in csv.DictReader(handle) if r["sample_id"] == "001")
    assert row["status"] == "failed" and row["error"].startswith("EmbeddingCheckError:")
    assert "NaN or Inf" in row["error"] and "'001'" in row["error"]
    assert row["coordinates_npz_path"].endswith("001.coordinates.npz")  # this run's tiling is still described
    assert row["feature_path"] == ""


def test_a_payload_that_fails_the_checks_on_disk_is_withdrawn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """If what lands on disk differs from what was computed (a writer bug, a bad disk), the blocking
    checks catch it, the slide fails with a row, and the bad files are withdrawn."""
    from slide2vec_dagster.artifacts import embeddings as embedding_io
    from slide2vec_dagster.defs import io_managers

    pipelines = {
        "p1": {"tiling": {"params": {"requested_spacing_um": 1.0, "requested_tile_size_px": 224}}, "model": BASELINE}
    }
    config, defs = _setup(tmp_path, pipelines, GOOD_ROWS)

    def corrupting_writer(payload, meta_path, features, meta):
        embedding_io.write_embedding(payload, meta_path, features * float("nan"), meta)

    monkeypatch.setattr(io_managers, "write_embedding", corrupting_writer)
    with instance_for_test() as instance:
        register(instance, read_manifests(config.manifests))
        result = _run(defs, instance, "001")
    assert not result.success
    assert _checks(result)["all_finite"] is False and _checks(result)["rows_match_coordinates"] is True
    out = config.output_dir("p1")
    assert sorted(p.name for p in (out / "tile_embeddings").iterdir()) == []
    row = next(r for r in csv.DictReader((out / "process_list.csv").open()) if r["sample_id"] == "001")
    assert row["status"] == "failed" and row["error"].startswith("EmbeddingCheckError:")
    assert "all_finite" in row["error"]
    assert check_output_dir(out) == []


class _NaNEncoder:
    weights_origin = "test"

    def __call__(self, batch: np.ndarray) -> torch.Tensor:
        return torch.full((len(batch), BASELINE_FEATURE_DIM), float("nan"))


def test_embedding_failure_fails_its_partition_with_a_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    pipelines = {
        "p1": {"tiling": {"params": {"requested_spacing_um": 1.0, "requested_tile_size_px": 224}}, "model": BASELINE}
    }
    config, defs = _setup(tmp_path, pipelines, GOOD_ROWS)

    def unavailable(pipeline):
        raise RuntimeError("weights for uni are not in /models/uni; set model.weights")

    monkeypatch.setattr(slide_embedding, "cached_encoder", unavailable)
    with instance_for_test() as instance:
        register(instance, read_manifests(config.manifests))
        assert not _run(defs, instance, "001").success
        assert instance.get_materialized_partitions(AssetKey(["p1", "coordinates"])) == {"001"}
        assert instance.get_materialized_partitions(AssetKey(["p1", "tile_embeddings"])) == set()
    with (config.output_dir("p1") / "process_list.csv").open() as handle:
        row = next(r for r in csv.DictReader(handle) if r["sample_id"] == "001")
    assert row["status"] == "failed" and row["error"].startswith("RuntimeError: weights for uni")
    assert not (config.output_dir("p1") / "tile_embeddings").exists()
