"""Tissue tiling: pure numpy / OpenCV, no Dagster.

Reproduces the tile selection of slide2vec's tiling library (hs2p 6.1): segmentation on a
low-resolution level, contour filtering, per-contour grids with tissue coverage, optional pixel
QC; output in the platform's contract order (row-major, ARTIFACTS.md sections 3-4, 8b).
"""

import importlib
from typing import Any

# The parameters are light (pydantic only) and the config imports them; the numpy / OpenCV machinery is
# imported on first use, so loading a platform config (or the Dagster code location) does not pull it in.
from .params import FilterParams, MaskParams, PreviewParams, SegParams, TilingConfig, TilingParams

_LAZY = {
    "SpacingTooFineError": "geometry",
    "TileGeometry": "geometry",
    "choose_image_level": "geometry",
    "choose_level": "geometry",
    "plan_tiles": "geometry",
    "Contours": "grid",
    "TilingResult": "pipeline",
    "tile_slide": "pipeline",
    "draw_mask_preview": "preview",
    "draw_tiling_preview": "preview",
    "render_mask_preview": "preview",
    "render_previews": "preview",
    "render_tiling_preview": "preview",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


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
