"""Tile one slide of a manifest for one pipeline: open, segment, tile, build the sidecar, render previews.

Plain Python (no Dagster): the assets call ``tile_sample`` and hand the outcome to the IO managers.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from slide2vec_dagster import __version__
from slide2vec_dagster.artifacts.coordinates import Coordinates, read_coordinates
from slide2vec_dagster.config import PipelineConfig
from slide2vec_dagster.fingerprint import fingerprint, identity
from slide2vec_dagster.layout import OutputLayout
from slide2vec_dagster.manifest import SlideEntry, input_file_problem
from slide2vec_dagster.tiling import render_previews, tile_slide
from slide2vec_dagster.wsi import MASK_AUTO_ORDER, SlideOpenError, open_reader, open_slide

logger = logging.getLogger(__name__)


@dataclass
class TilingOutcome:
    """What the IO managers write for one slide. ``status`` is ``done`` or ``skipped``."""

    sample_id: str
    status: str
    coordinates: Coordinates
    meta: dict[str, Any]
    mask_preview: np.ndarray | None
    tiling_preview: np.ndarray | None
    refresh_sidecar: bool = False  # skipped, but the sidecar's fingerprint records need the new stat keys

    @property
    def n_tiles(self) -> int:
        return self.coordinates.n_tiles


class SlideInputError(ValueError):
    """A slide or mask path that cannot be read as one (a pipe, a device, an unreadable file...)."""


def check_inputs(entry: SlideEntry) -> None:
    """Refuse a row whose slide or mask is not a readable file before anything opens it (a FIFO or a
    device would block the run); the message names the sample, the manifest row, the column and the fix."""
    entry.checked()
    for column, path in (("image_path", entry.image_path), ("mask_path", entry.mask_path)):
        if path is None:
            continue
        problem = input_file_problem(path, column)
        if problem is None:
            continue
        message = f"sample {entry.sample_id!r} ({entry.where}): {problem}"
        if not path.exists():
            kind = "slide" if column == "image_path" else "mask"
            raise FileNotFoundError(f"{kind} file not found: {path}; check {column} in {entry.where}")
        raise SlideInputError(message)


def fingerprints_of(entry: SlideEntry, known: dict[str, Any] | None = None) -> dict[str, Any]:
    """The slide's and mask's fingerprints; ``known`` (a previous sidecar's ``artifact`` section) spares
    re-reading files whose stat key is unchanged."""
    known = known or {}
    return {
        "slide_fingerprint": fingerprint(entry.image_path, known.get("slide_fingerprint")),
        "mask_fingerprint": fingerprint(entry.mask_path, known.get("mask_fingerprint")) if entry.mask_path else None,
    }


def inputs_fingerprint(entry: SlideEntry, pipeline: PipelineConfig, fingerprints: dict[str, Any]) -> str:
    """Everything that decides a slide's tiling: the config, the slide and mask contents and paths, the
    spacing override and the code version."""
    parts = {
        "tiling": pipeline.fingerprint(),
        "slide": identity(fingerprints["slide_fingerprint"]),
        "mask": identity(fingerprints["mask_fingerprint"]),
        "spacing_at_level_0": entry.spacing_at_level_0,
        "code": __version__,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def _previous_artifact_section(layout: OutputLayout, sample_id: str) -> dict[str, Any]:
    try:
        meta = json.loads(layout.coordinates_meta(sample_id).read_text(encoding="utf-8"))
        section = meta.get("artifact", {})
        return section if isinstance(section, dict) else {}
    except (OSError, ValueError, AttributeError):
        return {}


def _png_ok(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            image.verify()
        return True
    except Exception:
        return False


def _reusable(
    entry: SlideEntry, pipeline: PipelineConfig, layout: OutputLayout, fingerprint: str
) -> TilingOutcome | None:
    """The outputs already on disk, if they are complete, loadable and were made from the same inputs.
    Anything unreadable (truncated npz, broken JSON, damaged PNG) means: tile again."""
    npz, meta_path = layout.coordinates_npz(entry.sample_id), layout.coordinates_meta(entry.sample_id)
    if not (npz.exists() and meta_path.exists()):
        return None
    try:
        arrays, meta = read_coordinates(npz, meta_path)
        if meta.get("artifact", {}).get("inputs_fingerprint") != fingerprint:
            return None
        preview = pipeline.tiling.preview
        mask_png, tiling_png = layout.mask_preview(entry.sample_id), layout.tiling_preview(entry.sample_id)
        if preview.save_mask_preview and not _png_ok(mask_png):
            return None
        if preview.save_tiling_preview and len(arrays["x"]) and not _png_ok(tiling_png):
            return None
        coordinates = Coordinates(arrays["x"], arrays["y"], arrays["tissue_fractions"])
    except Exception as exc:  # any damage: recompute rather than fail or skip forever
        logger.warning("%s: outputs on disk are unreadable (%s); tiling again", entry.sample_id, exc)
        return None
    return TilingOutcome(entry.sample_id, "skipped", coordinates, meta, None, None)


def tile_sample(
    entry: SlideEntry,
    pipeline: PipelineConfig,
    layout: OutputLayout,
    run_id: str | None = None,
    reuse_existing: bool = True,
    lineage: dict[str, Any] | None = None,
) -> TilingOutcome:
    """Tile ``entry`` with ``pipeline``'s tiling config.

    With ``reuse_existing`` a slide whose outputs exist for the same inputs is not tiled again and
    comes back with status ``skipped``. Errors propagate with the slide named in the message.
    """
    tiling = pipeline.tiling
    tiling.require_resolved()
    check_inputs(entry)
    fingerprints = fingerprints_of(entry, _previous_artifact_section(layout, entry.sample_id))
    inputs_hash = inputs_fingerprint(entry, pipeline, fingerprints)
    if reuse_existing:
        reused = _reusable(entry, pipeline, layout, inputs_hash)
        if reused is not None:
            artifact = reused.meta.setdefault("artifact", {})
            if any(artifact.get(name) != record for name, record in fingerprints.items()):
                # Same content, new stat key (a copy, a chmod): record it, or the slide would look changed
                # (and be re-hashed) on every later check.
                artifact.update(fingerprints)
                reused.refresh_sidecar = True
            return reused

    with open_slide(entry.image_path, tiling.backend, entry.spacing_at_level_0) as reader:
        mask_reader = None
        try:
            if entry.mask_path is not None:
                # A mask needs no spacing of its own: its size relative to the slide places it.
                try:
                    mask_reader = open_reader(entry.mask_path, tiling.mask_backend, MASK_AUTO_ORDER)
                except SlideOpenError as exc:
                    raise SlideOpenError(
                        f"the mask of sample {entry.sample_id!r} ({entry.where}, column mask_path) cannot be "
                        f"read: {exc}; fix mask_path or regenerate the mask"
                    ) from exc
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
                "inputs_fingerprint": inputs_hash,
                **fingerprints,
                # Said wherever the pixels were not what a brightfield H&E model expects.
                "modality": result.modality.as_dict() if result.modality else None,
                "colour_correction": reader.colour_correction,
                "tiling_config_hash": pipeline.fingerprint(),
                "code_version": __version__,
                "run_id": run_id,
                # The pipeline, the config_history/ hash of its config, the code and library versions.
                **(lineage or {}),
            },
        }
    coordinates = Coordinates(result.x, result.y, result.tissue_fractions)
    return TilingOutcome(entry.sample_id, "done", coordinates, meta, mask_rgb, tiling_rgb)


def warnings_of(outcome: TilingOutcome) -> list[str]:
    """What a user must know about how this slide was read: a non-brightfield stain, corrected colours."""
    artifact = outcome.meta.get("artifact", {})
    found = []
    modality = artifact.get("modality") or {}
    if modality.get("warning"):
        found.append(f"{outcome.sample_id}: {modality['warning']}")
    if artifact.get("colour_correction"):
        found.append(f"{outcome.sample_id}: colours corrected on read ({artifact['colour_correction']})")
    return found


def describe(outcome: TilingOutcome) -> dict[str, Any]:
    """The numbers a person wants to see next to a materialisation."""
    tiling = outcome.meta.get("tiling", {})
    artifact = outcome.meta.get("artifact", {})
    return {
        "modality": (artifact.get("modality") or {}).get("modality") or "not assessed",
        "colour_correction": artifact.get("colour_correction") or "none",
        "status": outcome.status,
        "num_tiles": outcome.n_tiles,
        "backend": outcome.meta.get("provenance", {}).get("backend"),
        "base_spacing_um": outcome.meta.get("slide", {}).get("base_spacing_um"),
        "read_level": tiling.get("read_level"),
        "read_spacing_um": tiling.get("read_spacing_um"),
        "read_tile_size_px": tiling.get("read_tile_size_px"),
        "tile_size_lv0": tiling.get("tile_size_lv0"),
    }
