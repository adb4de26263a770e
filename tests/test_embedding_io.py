"""Embedding payload + sidecar writing, and the reuse decision, tested directly (not only through the assets)."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from slide2vec_dagster import slide_embedding
from slide2vec_dagster.artifacts import atomic
from slide2vec_dagster.artifacts.embeddings import read_embedding, write_embedding
from slide2vec_dagster.artifacts.slide_state import begin_slide
from slide2vec_dagster.layout import OutputLayout

META = {"artifact_type": "tile_embeddings", "feature_dtype": "fp32", "format": "pt"}


def _paths(tmp_path: Path, fmt: str = "pt") -> tuple[OutputLayout, Path, Path]:
    layout = OutputLayout(tmp_path)
    return (
        layout,
        layout.embedding_payload("tile_embeddings", "s1", fmt),
        layout.embedding_meta("tile_embeddings", "s1"),
    )


def test_the_old_sidecar_goes_first_then_the_payload_then_the_new_sidecar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    _, payload, meta = _paths(tmp_path)
    write_embedding(payload, meta, torch.zeros(2, 3), META)
    events: list[tuple[str, str]] = []
    real_write, real_remove = atomic.write_bytes, atomic.remove
    monkeypatch.setattr(atomic, "write_bytes", lambda p, d: events.append(("write", Path(p).name)) or real_write(p, d))
    monkeypatch.setattr(
        atomic, "remove", lambda *ps: events.extend(("remove", Path(p).name) for p in ps) or real_remove(*ps)
    )
    write_embedding(payload, meta, torch.ones(4, 3), META)
    assert events.index(("remove", "s1.meta.json")) < events.index(("write", "s1.pt"))
    assert events.index(("write", "s1.pt")) < events.index(("write", "s1.meta.json"))
    assert events[-1] == ("write", "s1.meta.json")
    assert read_embedding(payload).shape == (4, 3)


def test_a_crash_before_the_sidecar_never_leaves_an_old_sidecar_beside_a_new_payload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    layout, payload, meta = _paths(tmp_path)
    write_embedding(payload, meta, torch.zeros(2, 3), {**META, "num_tiles": 2})
    real_write = atomic.write_bytes

    def full_disk_for_json(path, data):
        if Path(path).suffix == ".json":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, data)

    monkeypatch.setattr(atomic, "write_bytes", full_disk_for_json)
    with pytest.raises(OSError):
        write_embedding(payload, meta, torch.ones(5, 3), {**META, "num_tiles": 5})
    # The new payload landed, the old sidecar (num_tiles 2) is gone: nothing describes the wrong file.
    assert read_embedding(payload).shape == (5, 3) and not meta.exists()
    monkeypatch.undo()
    # The slide's next run withdraws the unpaired payload before writing.
    assert begin_slide(layout, "s1") == [payload] and not payload.exists()


def test_a_payload_of_the_other_format_is_removed_before_the_sidecar_lands(tmp_path: Path):
    _, pt, meta = _paths(tmp_path, "pt")
    write_embedding(pt, meta, torch.zeros(2, 3), META)
    _, npz, _ = _paths(tmp_path, "npz")
    write_embedding(npz, meta, torch.zeros(2, 3), {**META, "format": "npz"})
    assert not pt.exists() and npz.exists()
    with np.load(npz) as archive:
        assert archive["tile_index"].tolist() == [0, 1]
    write_embedding(pt, meta, torch.zeros(2, 3), META)
    assert not npz.exists() and pt.exists() and json.loads(meta.read_text())["format"] == "pt"


def test_an_unknown_format_is_refused_before_anything_is_touched(tmp_path: Path):
    _, payload, meta = _paths(tmp_path)
    write_embedding(payload, meta, torch.zeros(2, 3), META)
    with pytest.raises(ValueError, match="unknown payload format"):
        write_embedding(payload.with_suffix(".h5"), meta, torch.zeros(2, 3), META)
    assert meta.exists() and payload.exists()


@pytest.fixture
def written(tmp_path: Path):
    from slide2vec_dagster.config import PipelineConfig

    pipeline = PipelineConfig.model_validate(
        {
            "tiling": {"params": {"requested_spacing_um": 0.5, "requested_tile_size_px": 224}},
            "model": {"name": "baseline-color-texture"},
        }
    )
    layout, payload, meta = _paths(tmp_path)
    write_embedding(payload, meta, torch.zeros(3, 70), {**META, "provenance": {"inputs_fingerprint": "abc"}})
    return pipeline, layout, payload, meta


def test_reuse_needs_the_same_inputs_fingerprint(written):
    pipeline, layout, _, _ = written
    reuse = slide_embedding.reusable_embedding
    assert reuse("tile_embeddings", "s1", pipeline, layout, "abc", (3, 70)) is not None
    assert reuse("tile_embeddings", "s1", pipeline, layout, "other-inputs", (3, 70)) is None


@pytest.mark.parametrize(
    "damage",
    [
        lambda payload, meta: payload.write_bytes(payload.read_bytes()[:50]),
        lambda payload, meta: torch.save(torch.zeros(4, 70), payload),
        lambda payload, meta: torch.save(torch.zeros(3, 70, dtype=torch.float16), payload),
        lambda payload, meta: payload.unlink(),
        lambda payload, meta: meta.write_text("{"),
    ],
    ids=["truncated", "wrong-rows", "wrong-dtype", "payload-missing", "broken-json"],
)
def test_reuse_loads_the_payload_and_refuses_anything_that_does_not_match(written, damage):
    pipeline, layout, payload, meta = written
    damage(payload, meta)
    assert slide_embedding.reusable_embedding("tile_embeddings", "s1", pipeline, layout, "abc", (3, 70)) is None


def test_a_failed_step_withdraws_its_files_and_what_was_computed_from_them(tmp_path: Path):
    from slide2vec_dagster.artifacts.slide_state import failed_step_files
    from slide2vec_dagster.layout import LATENTS_KIND, SLIDE_KIND

    layout = OutputLayout(tmp_path)

    def dirs(artifact: str) -> set[str]:
        return {path.parent.name for path in failed_step_files(layout, artifact, "s1")}

    assert dirs("tile_embeddings") == {"tile_embeddings", SLIDE_KIND, LATENTS_KIND}
    assert dirs("hierarchical_embeddings") == {"hierarchical_embeddings", SLIDE_KIND, LATENTS_KIND}
    assert dirs(SLIDE_KIND) == dirs(LATENTS_KIND) == {SLIDE_KIND, LATENTS_KIND}
    tiling = dirs("coordinates")
    assert {"tiles", "mask", "tiling", "tile_embeddings", "hierarchical_embeddings", SLIDE_KIND} <= tiling
