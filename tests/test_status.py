"""``status``: done / missing / stale / failed per pipeline and asset, from the instance and the files."""

from __future__ import annotations

import shutil
from pathlib import Path

from dagster import instance_for_test, materialize

from slide2vec_dagster.config import load_config
from slide2vec_dagster.defs.build import build_definitions
from slide2vec_dagster.defs.instance_queries import InstanceQueries, pipeline_assets
from slide2vec_dagster.defs.partitions import register
from slide2vec_dagster.manifest import read_manifests
from slide2vec_dagster.status import (
    FailureInfo,
    FileStaleness,
    PartitionStates,
    Verdict,
    format_status,
    pipeline_status,
)
from tests.dagster_helpers import DATA, write_manifest, write_platform_config

PIPELINES = {
    "p1": {
        "tiling": {
            "params": {"requested_spacing_um": 1.0, "requested_tile_size_px": 224},
            "preview": {"save_mask_preview": True, "save_tiling_preview": False},
        },
        "model": {
            "name": "baseline-color-texture",
            "slide_encoder": "mean-pool",
            "patient_encoder": "mean-pool",
            "save_tile_embeddings": True,
            "save_slide_embeddings": True,
            "batch_size": 16,
        },
    }
}


def _counts(status, asset: str) -> tuple[int, int, int, int]:
    (found,) = [a for a in status.assets if a.asset == asset]
    return len(found.done), len(found.missing), len(found.stale), len(found.failed)


def test_status_of_a_cohort_with_a_failed_and_a_changed_slide(tmp_path: Path):
    slides = tmp_path / "slides"
    slides.mkdir()
    for name in ("a", "b", "never"):
        shutil.copy(DATA / "synthetic-he-0.5mpp.tiff", slides / f"{name}.tiff")
    rows = [
        {"sample_id": "a", "image_path": str(slides / "a.tiff"), "patient_id": "pa"},
        {"sample_id": "b", "image_path": str(slides / "b.tiff"), "patient_id": "pb"},
        {"sample_id": "bad", "image_path": str(slides / "missing.tiff"), "patient_id": "pb"},
        {"sample_id": "never", "image_path": str(slides / "never.tiff"), "patient_id": "pc"},
    ]
    write_manifest(tmp_path / "cohort.csv", rows)
    config = load_config(write_platform_config(tmp_path, ["cohort.csv"], PIPELINES))
    defs = build_definitions(config)
    sample_assets = [a for a in defs.assets if a.partitions_def and a.partitions_def.name == "sample_id"]
    patient_assets = [a for a in defs.assets if a.partitions_def and a.partitions_def.name == "patient_id"]
    out = config.output_dir("p1")
    slides_of = read_manifests(config.manifests)
    with instance_for_test() as instance:
        register(instance, slides_of)
        runs = {}
        for sample_id in ("a", "b", "bad"):
            runs[sample_id] = materialize(
                sample_assets, partition_key=sample_id, instance=instance, resources=defs.resources,
                raise_on_error=False,
            )  # fmt: skip
        for patient_id in ("pa", "pb"):
            materialize(patient_assets, partition_key=patient_id, instance=instance, resources=defs.resources)
        assert not runs["bad"].success and runs["a"].success

        queries = InstanceQueries(instance)
        assets = pipeline_assets(config, "p1")
        assert assets == [
            ("coordinates", "sample_id"), ("mask_preview", "sample_id"), ("tile_embeddings", "sample_id"),
            ("slide_embeddings", "sample_id"), ("patient_embeddings", "patient_id"),
        ]  # fmt: skip

        fresh = pipeline_status("p1", out, assets, queries, FileStaleness(config, slides_of))
        assert _counts(fresh, "coordinates") == (2, 1, 0, 1)  # a, b done; never missing; bad failed
        assert _counts(fresh, "patient_embeddings") == (2, 1, 0, 0)

        # Slide a changes on disk; b's tile embedding sidecar is deleted.
        data = bytearray((slides / "a.tiff").read_bytes())
        data[-1] ^= 0xFF
        (slides / "a.tiff").write_bytes(bytes(data))
        (out / "tile_embeddings" / "b.meta.json").unlink()

        status = pipeline_status("p1", out, assets, queries, FileStaleness(config, slides_of))

    coordinates = next(a for a in status.assets if a.asset == "coordinates")
    assert _counts(status, "coordinates") == (1, 1, 1, 1)
    assert coordinates.done == ["b"] and coordinates.missing == ["never"]
    assert coordinates.stale == {"a": "the slide file changed (or moved)"}
    (failed,) = coordinates.failed
    assert failed.partition == "bad" and failed.run_id == runs["bad"].run_id
    assert failed.error.startswith("FileNotFoundError") and "missing.tiff" in failed.error
    assert failed.source == "process_list.csv"
    assert _counts(status, "mask_preview") == (1, 1, 1, 1)
    # Downstream of the changed slide: stale through its coordinates; b's embeddings lost their sidecar.
    tiles = next(a for a in status.assets if a.asset == "tile_embeddings")
    assert tiles.stale == {"a": "its coordinates are stale (the slide file changed (or moved))"}
    assert sorted(tiles.missing) == ["b", "never"] and "b.meta.json" in tiles.gone["b"]
    assert [f.partition for f in tiles.failed] == ["bad"]
    slide_level = next(a for a in status.assets if a.asset == "slide_embeddings")
    assert list(slide_level.stale) == ["a"] and slide_level.done == ["b"]
    patients = next(a for a in status.assets if a.asset == "patient_embeddings")
    assert list(patients.stale) == ["pa"] and patients.missing == ["pc"]

    text = format_status([status])
    assert "pipeline p1" in text and "failed:" in text and "p1/coordinates sample_id=bad" in text
    assert "FileNotFoundError" in text and "slide file changed" in text
    header = next(line for line in text.splitlines() if "done" in line and "missing" in line)
    assert header.split()[-4:] == ["done", "missing", "stale", "failed"]
    row = next(line for line in text.splitlines() if line.strip().startswith("coordinates"))
    assert row.split()[-4:] == ["1", "1", "1", "1"]


class _FakeLookup:
    """An instance that knows a failure the process list has no row for (a patient)."""

    def registered(self, partitions: str) -> list[str]:
        return ["p1", "p2"] if partitions == "patient_id" else []

    def partition_states(self, asset_key, partitions: str) -> PartitionStates:
        return PartitionStates(materialized={"p1"}, failed={"p2"}, in_progress={"p1"})

    def failure(self, asset_key, partition: str) -> FailureInfo | None:
        return FailureInfo("run-2", "PatientWithoutSlidesError: patient 'p2' has no slide")


def test_status_takes_errors_from_the_instance_and_any_staleness_check(tmp_path: Path):
    seen = []

    def staleness(pipeline: str, asset: str, partition: str) -> Verdict:
        seen.append((pipeline, asset, partition))
        return Verdict("stale", "upstream data version changed")

    status = pipeline_status("P", tmp_path / "P", [("patient_embeddings", "patient_id")], _FakeLookup(), staleness)
    (asset,) = status.assets
    assert seen == [("P", "patient_embeddings", "p1")]  # only materialised partitions are checked
    assert asset.stale == {"p1": "upstream data version changed"} and asset.running == ["p1"]
    (failed,) = asset.failed
    assert (failed.partition, failed.run_id, failed.source) == ("p2", "run-2", "the instance")
    assert "running now" in format_status([status])
