"""``lineage_of``: from an artifact file to its run, code, config, encoder, slide and upstream files."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from dagster import instance_for_test, materialize

from slide2vec_dagster.artifacts.config_file import text_hash
from slide2vec_dagster.config import load_config
from slide2vec_dagster.defs.build import build_definitions
from slide2vec_dagster.defs.instance_queries import InstanceQueries
from slide2vec_dagster.defs.partitions import register
from slide2vec_dagster.layout import CONFIG_HISTORY as HISTORY_DIR
from slide2vec_dagster.lineage import NoRuns, format_lineage, lineage_of
from slide2vec_dagster.manifest import read_manifests
from tests.dagster_helpers import DATA, write_manifest, write_platform_config

UI = "http://ui.example:3000"
PIPELINES = {
    "p1": {
        "tiling": {
            "params": {"requested_spacing_um": 1.0, "requested_tile_size_px": 224},
            "preview": {"save_mask_preview": True, "save_tiling_preview": True},
        },
        "model": {"name": "baseline-color-texture", "batch_size": 16},
    }
}


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_lineage_of_a_materialised_tile_embedding(tmp_path: Path):
    slide = tmp_path / "slides" / "a.tiff"
    slide.parent.mkdir()
    shutil.copy(DATA / "synthetic-he-0.5mpp.tiff", slide)
    write_manifest(tmp_path / "cohort.csv", [{"sample_id": "a", "image_path": str(slide)}])
    config = load_config(write_platform_config(tmp_path, ["cohort.csv"], PIPELINES))
    defs = build_definitions(config)
    out = config.output_dir("p1")
    with instance_for_test() as instance:
        register(instance, read_manifests(config.manifests))
        result = materialize(list(defs.assets), partition_key="a", instance=instance, resources=defs.resources)
        queries = InstanceQueries(instance, UI + "/")
        payload = out / "tile_embeddings" / "a.pt"
        found = lineage_of(payload, queries)

        assert found.platform_file, found.summary
        assert (found.artifact, found.role, found.pipeline) == ("tile_embeddings", "payload", "p1")
        assert found.asset_key == ["p1", "tile_embeddings"] and found.partition == {"sample_id": "a"}
        assert found.sidecar == str(out / "tile_embeddings" / "a.meta.json")
        assert found.run is not None and found.run.run_id == result.run_id
        assert found.run.found and found.run.status == "SUCCESS" and found.run.started and found.run.ended
        assert found.run.url == f"{UI}/runs/{result.run_id}"
        assert found.encoder is not None and found.encoder["name"] == "baseline-color-texture"
        assert found.encoder["weights"] == "none (baseline)"
        assert found.code is not None and found.code["package_version"]
        # The slide, with its full fingerprint, still matching the file on disk.
        (slide_source,) = found.inputs
        assert slide_source.path == str(slide) and slide_source.current is True
        assert slide_source.fingerprint["sha256"] == hashlib.sha256(slide.read_bytes()).hexdigest()
        assert slide_source.fingerprint["files"][0]["size"] == slide.stat().st_size
        # Upstream: the coordinates it was made from (with their run), then the slide.
        (coordinates,) = found.upstream
        assert coordinates.role == "coordinates" and coordinates.path == str(out / "tiles" / "a.coordinates.npz")
        assert coordinates.current is True and coordinates.run is not None and coordinates.run.run_id == result.run_id
        assert [s.path for s in coordinates.upstream] == [str(slide)]
        json.dumps(found.to_json())  # --json prints it
        text = format_lineage(found)
        assert result.run_id in text and "p1/tile_embeddings" in text and "matches the recorded fingerprint" in text

        # The sidecar, the coordinates and a preview trace back to the same run.
        for path, artifact in (
            (out / "tile_embeddings" / "a.meta.json", "tile_embeddings"),
            (out / "tiles" / "a.coordinates.npz", "coordinates"),
            (out / "tiles" / "a.coordinates.meta.json", "coordinates"),
            (out / "preview" / "tiling" / "a.png", "tiling_preview"),
        ):
            other = lineage_of(path, queries)
            assert other.platform_file and other.artifact == artifact, other.summary
            assert other.run is not None and other.run.run_id == result.run_id
        preview = lineage_of(out / "preview" / "mask" / "a.png", queries)
        assert preview.sidecar == str(out / "tiles" / "a.coordinates.meta.json")
        assert preview.process_list_row is not None and preview.process_list_row["status"] == "done"

        # The config hash a sidecar records resolves to config_history/<hash>.yaml.
        current = text_hash((out / "config.yaml").read_text(encoding="utf-8"))
        assert (out / HISTORY_DIR / f"{current}.yaml").is_file()
        sidecar = out / "tile_embeddings" / "a.meta.json"
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
        meta["provenance"]["config_hash"] = current
        sidecar.write_text(json.dumps(meta), encoding="utf-8")
        resolved = lineage_of(payload, queries).config
        assert resolved is not None and resolved.found and resolved.hash == current
        assert resolved.resolved == yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
        meta["provenance"]["config_hash"] = "0" * 16
        sidecar.write_text(json.dumps(meta), encoding="utf-8")
        missing = lineage_of(payload, queries).config
        assert missing is not None and not missing.found and "0" * 16 in (missing.problem or "")

        # The slide changes after the run: lineage says the file no longer matches.
        _flip_last_byte(slide)
        changed = lineage_of(payload, queries)
        assert changed.platform_file and changed.inputs[0].current is False
        assert "CHANGED" in changed.inputs[0].detail and "changed or missing" in changed.summary
        assert "CHANGED" in format_lineage(changed)

        # Runs this instance does not know are said so, the files' facts still come through.
        offline = lineage_of(payload, NoRuns())
        assert offline.platform_file and offline.run is not None and not offline.run.found
        assert any("was not looked up" in note for note in offline.notes)

        # A payload whose sidecar was deleted is not vouched for.
        sidecar.unlink()
        orphan = lineage_of(payload, queries)
        assert not orphan.platform_file and "no sidecar" in orphan.summary and str(sidecar) in orphan.summary
        assert "NOT A PLATFORM ARTIFACT" in format_lineage(orphan)


def test_lineage_of_files_the_platform_did_not_write(tmp_path: Path):
    stray = tmp_path / "random.pt"
    torch.save(torch.zeros(3), stray)
    found = lineage_of(stray, NoRuns())
    assert not found.platform_file and "not where this platform writes" in found.summary

    # In a folder that looks like a layout, but with no sidecar.
    lookalike = tmp_path / "out" / "tile_embeddings" / "s1.pt"
    lookalike.parent.mkdir(parents=True)
    torch.save(torch.zeros(2, 3), lookalike)
    found = lineage_of(lookalike, NoRuns())
    assert not found.platform_file and "no sidecar" in found.summary
    assert found.artifact == "tile_embeddings" and found.partition == {"sample_id": "s1"}

    # A coordinates pair written by another tool (slide2vec itself): no platform provenance.
    tiles = tmp_path / "s2v" / "tiles"
    tiles.mkdir(parents=True)
    (tiles / "s1.coordinates.npz").write_bytes(b"PK")
    (tiles / "s1.coordinates.meta.json").write_text(
        json.dumps({"provenance": {"sample_id": "s1"}, "artifact": {"coordinate_space": "level0_px"}})
    )
    found = lineage_of(tiles / "s1.coordinates.npz", NoRuns())
    assert not found.platform_file and "another tool" in found.summary

    # A temporary file of an atomic write.
    temporary = tmp_path / "out" / "tile_embeddings" / ".s1.pt.host.123.abcdef01.tmp"
    temporary.write_bytes(b"")
    found = lineage_of(temporary, NoRuns())
    assert not found.platform_file and "temporary" in found.summary

    with pytest.raises(FileNotFoundError, match="does not exist"):
        lineage_of(tmp_path / "missing.pt", NoRuns())


def test_the_pipeline_comes_from_the_sidecar_then_the_config_then_the_folder(tmp_path: Path):
    out = tmp_path / "custom_dir"
    (out / "tiles").mkdir(parents=True)
    npz, sidecar = out / "tiles" / "s1.coordinates.npz", out / "tiles" / "s1.coordinates.meta.json"
    npz.write_bytes(b"PK")
    artifact = {"run_id": "r1", "inputs_fingerprint": "f"}
    sidecar.write_text(json.dumps({"provenance": {"sample_id": "s1"}, "artifact": artifact}))
    found = lineage_of(npz, NoRuns())
    assert (found.pipeline, found.pipeline_from) == ("custom_dir", "the output folder's name")
    found = lineage_of(npz, NoRuns(), pipelines={out: "from_config"})
    assert found.pipeline == "from_config" and found.asset_key == ["from_config", "coordinates"]
    sidecar.write_text(json.dumps({"provenance": {"sample_id": "s1"}, "artifact": {**artifact, "pipeline": "p9"}}))
    found = lineage_of(npz, NoRuns(), pipelines={out: "from_config"})
    assert (found.pipeline, found.pipeline_from) == ("p9", "recorded in the sidecar")
    # Renamed by hand: the sidecar describes another slide.
    renamed = out / "tiles" / "s2.coordinates.npz"
    npz.rename(renamed)
    sidecar.rename(out / "tiles" / "s2.coordinates.meta.json")
    found = lineage_of(renamed, NoRuns())
    assert not found.platform_file and "'s1'" in found.summary
