"""Tissue tiling: pure numpy / OpenCV, no Dagster.

Reproduces the tile selection of slide2vec's tiling library (hs2p 6.1): segmentation on a
low-resolution level, contour filtering, per-contour grids with tissue coverage, optional pixel
QC; output in the platform's contract order (row-major, ARTIFACTS.md sections 3-4, 8b).
"""

from .geometry import SpacingTooFineError, TileGeometry, choose_image_level, choose_level, plan_tiles
from .grid import Contours
from .params import FilterParams, MaskParams, PreviewParams, SegParams, TilingConfig, TilingParams
from .pipeline import TilingResult, tile_slide
from .preview import (
    draw_mask_preview,
    draw_tiling_preview,
    render_mask_preview,
    render_previews,
    render_tiling_preview,
)

__all__ = [
    "Contours",
    "FilterParams",
    "MaskParams",
    "PreviewParams",
    "SegParams",
    "SpacingTooFineError",
    "TileGeometry",
    "TilingConfig",
    "TilingParams",
    "TilingResult",
    "choose_image_level",
    "choose_level",
    "draw_mask_preview",
    "draw_tiling_preview",
    "plan_tiles",
    "render_mask_preview",
    "render_previews",
    "render_tiling_preview",
    "tile_slide",
]
