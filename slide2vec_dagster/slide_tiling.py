"""Tile one slide of a manifest for one pipeline: open, segment, tile, build the sidecar, render previews.

Plain Python (no Dagster): the assets call ``tile_sample`` and hand the outcome to the IO managers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from slide2vec_dagster import __version__
from slide2vec_dagster.artifacts.coordinates import Coordinates, read_coordinates
from slide2vec_dagster.config import PipelineConfig
from slide2vec_dagster.fingerprint import file_fingerprint
from slide2vec_dagster.layout import OutputLayout
from slide2vec_dagster.manifest import SlideEntry
from slide2vec_dagster.tiling import render_previews, tile_slide
from slide2vec_dagster.wsi import MASK_AUTO_ORDER, open_reader, open_slide


@dataclass
class TilingOutcome:
    """What the IO managers write for one slide. ``status`` is ``done`` or ``skipped``."""

    sample_id: str
    status: str
    coordinates: Coordinates
    meta: dict[str, Any]
    mask_preview: np.ndarray | None
    tiling_preview: np.ndarray | None

    @property
    def n_tiles(self) -> int:
        return self.coordinates.n_tiles


def inputs_fingerprint(entry: SlideEntry, pipeline: PipelineConfig) -> str:
    """Everything that decides a slide's tiling: the config, the slide and mask files, the override."""
    parts = {
        "tiling": pipeline.fingerprint(),
        "slide": file_fingerprint(entry.image_path),
        "mask": file_fingerprint(entry.mask_path) if entry.mask_path else None,
        "spacing_at_level_0": entry.spacing_at_level_0,
        "code": __version__,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def _reusable(
    entry: SlideEntry, pipeline: PipelineConfig, layout: OutputLayout, fingerprint: str
) -> TilingOutcome | None:
    """The outputs already on disk, if they are complete and were made from the same inputs."""
    npz, meta_path = layout.coordinates_npz(entry.sample_id), layout.coordinates_meta(entry.sample_id)
    if not (npz.exists() and meta_path.exists()):
        return None
    try:
        arrays, meta = read_coordinates(npz, meta_path)
    except (OSError, ValueError, KeyError):
        return None  # unreadable or inconsistent: tile again
    if meta.get("artifact", {}).get("inputs_fingerprint") != fingerprint:
        return None
    preview = pipeline.tiling.preview
    if preview.save_mask_preview and not layout.mask_preview(entry.sample_id).exists():
        return None
    if preview.save_tiling_preview and len(arrays["x"]) and not layout.tiling_preview(entry.sample_id).exists():
        return None
    coordinates = Coordinates(arrays["x"], arrays["y"], arrays["tissue_fractions"])
    return TilingOutcome(entry.sample_id, "skipped", coordinates, meta, None, None)


def tile_sample(
    entry: SlideEntry,
    pipeline: PipelineConfig,
    layout: OutputLayout,
    run_id: str | None = None,
    reuse_existing: bool = True,
) -> TilingOutcome:
    """Tile ``entry`` with ``pipeline``'s tiling config.

    With ``reuse_existing`` a slide whose outputs exist for the same inputs is not tiled again and
    comes back with status ``skipped``. Errors propagate with the slide named in the message.
    """
    tiling = pipeline.tiling
    tiling.require_resolved()
    fingerprint = inputs_fingerprint(entry, pipeline) if entry.image_path.exists() else ""
    if reuse_existing and fingerprint:
        reused = _reusable(entry, pipeline, layout, fingerprint)
        if reused is not None:
            return reused

    with open_slide(entry.image_path, tiling.backend, entry.spacing_at_level_0) as reader:
        mask_reader = None
        try:
            if entry.mask_path is not None:
                # A mask needs no spacing of its own: its size relative to the slide places it.
                mask_reader = open_reader(entry.mask_path, tiling.mask_backend, MASK_AUTO_ORDER)
            result = tile_slide(
                reader,
                reader.base_spacing_um,
                tiling,
                mask_reader=mask_reader,
                mask_spacing_um=mask_reader.info.native_spacing_um if mask_reader else None,
            )
            mask_rgb, tiling_rgb = render_previews(
                reader,
                result,
                mask=tiling.preview.save_mask_preview,
                tiling=tiling.preview.save_tiling_preview,
            )
        finally:
            if mask_reader is not None:
                mask_reader.close()
        sections = result.meta_sections()
        meta = {
            "provenance": {
                "sample_id": entry.sample_id,
                "image_path": str(entry.image_path),
                "mask_path": str(entry.mask_path) if entry.mask_path else None,
                "backend": reader.backend,
                "requested_backend": tiling.backend,
                "spacing_at_level_0": entry.spacing_at_level_0,
                "mask_backend": mask_reader.backend if mask_reader is not None else None,
                "requested_mask_backend": tiling.mask_backend if mask_reader is not None else None,
            },
            **sections,
            "artifact": {
                "coordinate_space": "level_0",
                "tile_order": "row_major",
                "annotation": None,
                "output_mode": None,
                "selection_strategy": "tissue_coverage",
                # Beyond the contract's keys (the page shows `...` here): what the skip check and
                # lineage need.
                "inputs_fingerprint": fingerprint,
                "tiling_config_hash": pipeline.fingerprint(),
                "code_version": __version__,
                "run_id": run_id,
            },
        }
    coordinates = Coordinates(result.x, result.y, result.tissue_fractions)
    return TilingOutcome(entry.sample_id, "done", coordinates, meta, mask_rgb, tiling_rgb)


def describe(outcome: TilingOutcome) -> dict[str, Any]:
    """The numbers a person wants to see next to a materialisation."""
    tiling = outcome.meta.get("tiling", {})
    return {
        "status": outcome.status,
        "num_tiles": outcome.n_tiles,
        "backend": outcome.meta.get("provenance", {}).get("backend"),
        "base_spacing_um": outcome.meta.get("slide", {}).get("base_spacing_um"),
        "read_level": tiling.get("read_level"),
        "read_spacing_um": tiling.get("read_spacing_um"),
        "read_tile_size_px": tiling.get("read_tile_size_px"),
        "tile_size_lv0": tiling.get("tile_size_lv0"),
    }
