"""Where a pipeline's coordinates come from: its own tiling, or ``tiling.read_coordinates_from``.

Reused coordinates written by this platform (another pipeline, or a folder of ours) are copied into the
pipeline's own ``tiles/`` when its embeddings are written, so every output_dir stays complete and in the
contract's layout. Coordinates written by slide2vec 7.1.4 (``tile_order: x_then_y``) are not copied — what
we write stays the seed's layout — and the embeddings follow that file's row order; their sidecars point at
the reused files and say so (``coordinates_source``, ``tile_order``).
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slide2vec_dagster.artifacts.coordinates import read_coordinates
from slide2vec_dagster.artifacts.foreign import (
    SOURCE_OURS,
    CoordinateReuseError,
    geometry_mismatch,
    read_reusable_coordinates,
)
from slide2vec_dagster.config import PipelineConfig
from slide2vec_dagster.layout import OutputLayout


@dataclass(frozen=True)
class SlideCoordinates:
    """One slide's coordinates as the embedding steps use them, and where they came from."""

    arrays: dict[str, np.ndarray]  # x, y, tile_index, tissue_fractions, in the file's row order
    meta: dict[str, Any]  # the sidecar (artifact.inputs_fingerprint always set)
    source_format: str  # slide2vec-dagster | slide2vec-7.1
    tile_order: str  # row_major | x_then_y
    npz_path: Path | None
    meta_path: Path
    reused_from: Path | None = None  # the folder read, when reused

    @property
    def pair(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return self.arrays, self.meta

    @property
    def copied_into_layout(self) -> bool:
        """Reused coordinates of our own layout are copied into the pipeline's tiles/ (row-major already)."""
        return self.reused_from is not None and self.source_format == SOURCE_OURS


def own_coordinates(layout: OutputLayout, sample_id: str, pair: tuple[dict, dict]) -> SlideCoordinates:
    return SlideCoordinates(
        pair[0],
        pair[1],
        SOURCE_OURS,
        "row_major",
        layout.coordinates_npz(sample_id),
        layout.coordinates_meta(sample_id),
    )


def _content_hash(*paths: Path | None) -> str:
    digest = hashlib.sha256()
    for path in paths:
        if path is not None:
            digest.update(path.read_bytes())
    return digest.hexdigest()[:24]


def reused_coordinates(pipeline: PipelineConfig, sample_id: str) -> SlideCoordinates:
    """Read ``sample_id``'s coordinates from the folder the pipeline reuses, checking they were tiled the
    way the pipeline asks (a mismatch is an error naming both values and the file, never a silent reuse)."""
    folder = pipeline.reuse_dir
    if folder is None:
        raise ValueError("this pipeline tiles its own slides; it has no tiling.read_coordinates_from")
    reused = read_reusable_coordinates(folder, sample_id)
    problems = geometry_mismatch(reused, **pipeline.tiling_geometry())
    if problems:
        raise CoordinateReuseError(
            f"{'; '.join(problems)}: re-tile the slide or point tiling.read_coordinates_from at a matching folder"
        )
    meta = copy.deepcopy(reused.meta)
    artifact = meta.setdefault("artifact", {})
    if not artifact.get("inputs_fingerprint"):
        # slide2vec's sidecars carry no fingerprint: the files' content identifies what was reused.
        artifact["inputs_fingerprint"] = "reused-" + _content_hash(reused.meta_path, reused.npz_path)
    arrays = {
        "x": reused.x,
        "y": reused.y,
        "tile_index": reused.tile_index,
        "tissue_fractions": reused.tissue_fractions,
    }
    return SlideCoordinates(
        arrays, meta, reused.source_format, reused.tile_order, reused.npz_path, reused.meta_path, folder
    )


def load_coordinates(pipeline: PipelineConfig, layout: OutputLayout, sample_id: str) -> SlideCoordinates:
    """The slide's coordinates from wherever the pipeline takes them."""
    if pipeline.reuse_dir is not None:
        return reused_coordinates(pipeline, sample_id)
    pair = read_coordinates(layout.coordinates_npz(sample_id), layout.coordinates_meta(sample_id))
    return own_coordinates(layout, sample_id, pair)
