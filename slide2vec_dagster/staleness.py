"""Which slides' outputs are missing or stale for a pipeline, and the slides' data versions.

A slide's **data version** is what the ``slides`` source asset reports to Dagster: its file's stat key
(size, mtime, ctime, inode; every file of a DICOM folder) and path, plus its manifest row (spacing
override, mask path and the mask's stat key, patient). It costs one ``stat`` per file, never a read, so a
sensor can observe a whole cohort. Anything that rewrites a file moves its ctime, so an edit is always
seen; whether the content really changed is then decided by the run, from the content hash
(``fingerprint.py``): an untouched slide whose file was only copied or ``chmod``-ed is re-checked and
``skipped``, not recomputed.

**Stale** means: the outputs on disk were made from other inputs than the current ones — the slide's
stat key or manifest row differ from what the coordinates sidecar recorded, or the settings that
change the numbers (tiling, encoder, weights, precision, output dtype / format) differ from the
recorded config hashes. Settings that do not change the numbers (batch size, reader threads, device)
are not part of any hash, so changing them makes nothing stale.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slide2vec_dagster.config import PipelineConfig
from slide2vec_dagster.fingerprint import files_of, stat_key, stat_unchanged
from slide2vec_dagster.layout import SLIDE_KIND, OutputLayout
from slide2vec_dagster.manifest import SlideEntry


def _stat_key(path: Path | None) -> list[Any] | None:
    if path is None:
        return None
    try:
        keys = []
        for file in files_of(path):
            key = stat_key(file)
            keys.append([file.name, key["size"], key["mtime_ns"], key["ctime_ns"], key["inode"], key["device"]])
        return keys
    except OSError:
        return ["missing"]


def slide_data_version(entry: SlideEntry) -> str:
    """The slide's data version for Dagster: its file's stat key + path + its manifest row."""
    payload = {
        "image": [str(entry.image_path), _stat_key(entry.image_path)],
        "mask": [str(entry.mask_path), _stat_key(entry.mask_path)] if entry.mask_path else None,
        "spacing_at_level_0": entry.spacing_at_level_0,
        "patient_id": entry.patient_id,
        "problem": entry.problem,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class Due:
    sample_id: str
    reason: str  # missing: ... | stale: ...


def tiling_staleness(entry: SlideEntry, pipeline: PipelineConfig, layout: OutputLayout) -> str | None:
    """Why the slide's coordinates are missing or stale (None: current)."""
    meta = _read(layout.coordinates_meta(entry.sample_id))
    if meta is None or not layout.coordinates_npz(entry.sample_id).exists():
        return "missing: no coordinates"
    artifact, provenance = meta.get("artifact", {}), meta.get("provenance", {})
    if artifact.get("tiling_config_hash") != pipeline.fingerprint():
        return "stale: the tiling settings changed"
    if provenance.get("spacing_at_level_0") != entry.spacing_at_level_0:
        return "stale: the manifest's spacing_at_level_0 changed"
    if (provenance.get("mask_path") or None) != (str(entry.mask_path) if entry.mask_path else None):
        return "stale: the manifest's mask_path changed"
    if not stat_unchanged(artifact.get("slide_fingerprint"), entry.image_path):
        return "stale: the slide file changed (or moved)"
    if entry.mask_path and not stat_unchanged(artifact.get("mask_fingerprint"), entry.mask_path):
        return "stale: the mask file changed"
    return None


def tile_embedding_staleness(
    sample_id: str, pipeline: PipelineConfig, layout: OutputLayout, coords_meta: dict
) -> str | None:
    """Why the slide's tile (or hierarchical) embeddings are missing or stale (None: current): the same test
    the embedding step makes before it reuses them."""
    from slide2vec_dagster.slide_embedding import embedding_kind, inputs_fingerprint

    kind = embedding_kind(pipeline)
    meta = _read(layout.embedding_meta(kind, sample_id))
    if meta is None:
        return f"missing: no {kind}"
    provenance = meta.get("provenance", {})
    if provenance.get("settings_hash") != pipeline.embedding_fingerprint():
        return "stale: the encoder settings changed"
    if provenance.get("coordinates_inputs_fingerprint") != coords_meta.get("artifact", {}).get("inputs_fingerprint"):
        return "stale: its coordinates changed"
    if provenance.get("inputs_fingerprint") != inputs_fingerprint(pipeline, coords_meta):
        return "stale: its inputs changed (code version)"
    return None


def slide_embedding_staleness(
    sample_id: str, pipeline: PipelineConfig, layout: OutputLayout, coords_meta: dict
) -> str | None:
    """Why the slide embedding is missing or stale (None: current): the same test the slide step makes
    before it reuses it."""
    from slide2vec_dagster.slide_level import slide_inputs_fingerprint

    meta = _read(layout.embedding_meta(SLIDE_KIND, sample_id))
    if meta is None:
        return "missing: no slide embedding"
    provenance = meta.get("provenance", {})
    if provenance.get("settings_hash") != pipeline.slide_fingerprint():
        return "stale: the slide encoder settings changed"
    if provenance.get("coordinates_inputs_fingerprint") != coords_meta.get("artifact", {}).get("inputs_fingerprint"):
        return "stale: its coordinates changed"
    if provenance.get("inputs_fingerprint") != slide_inputs_fingerprint(pipeline, coords_meta):
        return "stale: its inputs changed (tile encoder settings or code version)"
    return None


def embedding_staleness(
    sample_id: str, pipeline: PipelineConfig, layout: OutputLayout, coords_meta: dict
) -> str | None:
    """Why the slide's kept tile / slide embeddings are missing or stale (None: current)."""
    if pipeline.writes_tile_embeddings:
        reason = tile_embedding_staleness(sample_id, pipeline, layout, coords_meta)
        if reason:
            return reason
    if pipeline.writes_slide_embeddings:
        return slide_embedding_staleness(sample_id, pipeline, layout, coords_meta)
    return None


def due_samples(
    pipeline: PipelineConfig,
    layout: OutputLayout,
    entries: list[SlideEntry],
    failed: set[str] = frozenset(),  # type: ignore[assignment]
) -> list[Due]:
    """The slides whose outputs for ``pipeline`` are missing or stale, with the reason (manifest order).

    ``failed`` slides whose failure was their input's fault are not due again until their row changes
    (their data version moves): re-running a corrupt slide every night helps nobody.
    """
    due = []
    for entry in entries:
        if entry.sample_id in failed:
            continue
        if pipeline.reuse_dir is None:
            reason = tiling_staleness(entry, pipeline, layout)
            if reason:
                due.append(Due(entry.sample_id, reason))
                continue
            coords_meta = _read(layout.coordinates_meta(entry.sample_id)) or {}
        else:
            from slide2vec_dagster.coordinates_source import reused_coordinates

            try:
                coords_meta = reused_coordinates(pipeline, entry.sample_id).meta
            except (OSError, ValueError):
                continue  # nothing to reuse for this slide: running it would only fail
        if pipeline.model is None:
            continue
        reason = embedding_staleness(entry.sample_id, pipeline, layout, coords_meta)
        if reason:
            due.append(Due(entry.sample_id, reason))
    return due


__all__ = [
    "Due",
    "due_samples",
    "embedding_staleness",
    "slide_data_version",
    "slide_embedding_staleness",
    "tile_embedding_staleness",
    "tiling_staleness",
]
