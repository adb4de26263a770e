"""Mask and tiling previews (ARTIFACTS.md 8b), returned as RGB uint8 arrays; the artifact IO writes PNGs.

The slide is read at the level whose downsample is closest to ``preview.downsample`` and resized to
``round(level-0 size / preview.downsample)`` pixels per axis (at least 1): the preview's own downsample is
``preview.downsample`` whatever the pyramid, a single-level slide included. A level coarser than requested
is enlarged (linear) to that size rather than kept, so the size rule holds for every slide. Large levels
are read in blocks (:func:`~slide2vec_dagster.wsi.base.read_level_resized`), never whole.

Contours are drawn with 1-px lines on previews under ``THICK_LINE_FROM_PX`` on their long side and 3-px
lines on larger ones; tiles always as 1-px rectangles.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from slide2vec_dagster.wsi.base import read_level_resized

from .geometry import closest_level_for_downsample
from .grid import Contours, min_contour_area
from .params import PreviewParams

HOLE_COLOR = (242, 107, 58)
TILE_COLOR = (0, 0, 0)
# Previews at least this long on one side get 3-px contour lines (OpenCV thickness 2); smaller ones 1 px,
# where a 3-px line would hide small tissue pieces.
THICK_LINE_FROM_PX = 1000

Downsample = float | tuple[float, float]


def preview_level(reader, downsample: int) -> int:
    return closest_level_for_downsample(float(downsample), [float(d) for d in reader.info.level_downsamples])


def preview_size(dimensions: tuple[int, int], downsample: float) -> tuple[int, int]:
    """``(width, height)`` of a preview: level-0 size / ``downsample``, rounded, at least 1 px."""
    return max(1, round(dimensions[0] / downsample)), max(1, round(dimensions[1] / downsample))


def preview_image(reader, downsample: int) -> tuple[np.ndarray, tuple[float, float]]:
    """The slide at ``downsample`` (RGB uint8) and its exact ``(x, y)`` downsample from level 0."""
    dims = reader.info.level_dimensions[0]
    width, height = preview_size(dims, downsample)
    image = read_level_resized(reader, preview_level(reader, downsample), (width, height))
    return image, (dims[0] / width, dims[1] / height)


def _pair(downsample: Downsample) -> tuple[float, float]:
    if isinstance(downsample, tuple):
        return float(downsample[0]), float(downsample[1])
    return float(downsample), float(downsample)


def _stroke(shape: tuple[int, ...]) -> int:
    return 2 if max(shape[0], shape[1]) >= THICK_LINE_FROM_PX else 1


def _scaled(contours: list[np.ndarray], ds: tuple[float, float]) -> list[np.ndarray]:
    return [np.rint(c.astype(np.float64) / np.array(ds)).astype(np.int32) for c in contours]


def min_hole_area_lv0(result) -> int:
    """``a_h`` reference tiles in level-0 pixels: smaller holes are not drawn (ARTIFACTS.md 8b).

    The same reference-tile area as the ``a_t`` contour filter, on a "mask" as large as level 0. Tiling
    itself keeps every hole, as slide2vec's tiling library does.
    """
    fp, dims = result.config.filter_params, result.slide_dimensions
    return min_contour_area(
        a_t=fp.a_h,
        ref_tile_size_px=int(fp.ref_tile_size or result.geometry.requested_tile_size_px),
        read_spacing_um=result.geometry.read_spacing_um,
        base_spacing_um=result.base_spacing_um,
        slide_dimensions=dims,
        mask_shape=(dims[1], dims[0]),
    )


def draw_mask_preview(
    image: np.ndarray,
    contours: Contours,
    *,
    level_downsample: Downsample,
    contour_color: tuple[int, int, int] = (157, 219, 129),
    hole_color: tuple[int, int, int] = HOLE_COLOR,
    min_hole_area_lv0: float = 0.0,
) -> np.ndarray:
    """Outline kept contours (outer ``contour_color``, holes ``hole_color``) on ``image``; not filled.

    Holes whose level-0 area is below ``min_hole_area_lv0`` are not drawn.
    """
    canvas = np.ascontiguousarray(image[:, :, :3], dtype=np.uint8).copy()
    ds, stroke = _pair(level_downsample), _stroke(canvas.shape)
    holes = [h for group in contours.holes for h in group if cv2.contourArea(h) >= min_hole_area_lv0]
    cv2.drawContours(canvas, _scaled(contours.outer, ds), -1, tuple(int(c) for c in contour_color), stroke)
    if holes:
        cv2.drawContours(canvas, _scaled(holes, ds), -1, tuple(int(c) for c in hole_color), stroke)
    return canvas


def draw_tiling_preview(
    image: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    *,
    tile_size_lv0: int,
    level_downsample: Downsample,
    color: tuple[int, int, int] = TILE_COLOR,
) -> np.ndarray:
    """Outline every tile with a 1-px rectangle at its level-0 position scaled to the preview level."""
    canvas = np.ascontiguousarray(image[:, :, :3], dtype=np.uint8).copy()
    if len(x) == 0:
        return canvas
    h, w = canvas.shape[:2]
    ds_x, ds_y = _pair(level_downsample)
    side_x = max(1, math.ceil(tile_size_lv0 / ds_x))
    side_y = max(1, math.ceil(tile_size_lv0 / ds_y))
    px = np.ceil(np.asarray(x, np.float64) / ds_x).astype(np.int64)
    py = np.ceil(np.asarray(y, np.float64) / ds_y).astype(np.int64)
    x2 = np.minimum(px + side_x - 1, w - 1)
    y2 = np.minimum(py + side_y - 1, h - 1)
    inside = (px < w) & (py < h)
    px, py, x2, y2 = px[inside], py[inside], x2[inside], y2[inside]
    # Vectorised 1-px outlines with difference arrays: +1 where an edge starts, -1 past its end, then a
    # cumulative sum marks every edge pixel (no per-tile Python loop).
    rows = np.zeros((h, w + 1), np.int32)
    for yy in (py, y2):
        np.add.at(rows, (yy, px), 1)
        np.add.at(rows, (yy, x2 + 1), -1)
    cols = np.zeros((h + 1, w), np.int32)
    for xx in (px, x2):
        np.add.at(cols, (py, xx), 1)
        np.add.at(cols, (y2 + 1, xx), -1)
    edge = (np.cumsum(rows, axis=1)[:, :w] > 0) | (np.cumsum(cols, axis=0)[:h] > 0)
    canvas[edge] = color
    return canvas


def _mask(image: np.ndarray, ds: tuple[float, float], result, pv: PreviewParams) -> np.ndarray:
    return draw_mask_preview(
        image,
        result.contours,
        level_downsample=ds,
        contour_color=pv.tissue_contour_color,
        min_hole_area_lv0=min_hole_area_lv0(result),
    )


def _tiling(image: np.ndarray, ds: tuple[float, float], result) -> np.ndarray:
    return draw_tiling_preview(
        image, result.x, result.y, tile_size_lv0=result.geometry.tile_size_lv0, level_downsample=ds
    )


def render_mask_preview(reader, result, preview: PreviewParams | None = None) -> np.ndarray:
    """The mask preview (RGB uint8) of a :class:`~slide2vec_dagster.tiling.TilingResult`."""
    pv = preview or result.config.preview
    image, ds = preview_image(reader, pv.downsample)
    return _mask(image, ds, result, pv)


def render_tiling_preview(reader, result, preview: PreviewParams | None = None) -> np.ndarray:
    """The tiling preview (RGB uint8): every kept tile outlined with a 1-px black rectangle."""
    pv = preview or result.config.preview
    image, ds = preview_image(reader, pv.downsample)
    return _tiling(image, ds, result)


def render_previews(
    reader,
    result,
    *,
    mask: bool = True,
    tiling: bool = True,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(mask_preview, tiling_preview)`` for a :class:`~slide2vec_dagster.tiling.TilingResult`.

    The tiling preview is ``None`` when there are no tiles (ARTIFACTS.md writes it only when n > 0).
    """
    pv = result.config.preview
    want_tiling = tiling and result.n_tiles > 0
    if not mask and not want_tiling:
        return None, None
    image, ds = preview_image(reader, pv.downsample)
    mask_img = _mask(image, ds, result, pv) if mask else None
    tiling_img = _tiling(image, ds, result) if want_tiling else None
    return mask_img, tiling_img


__all__ = [
    "HOLE_COLOR",
    "THICK_LINE_FROM_PX",
    "draw_mask_preview",
    "draw_tiling_preview",
    "min_hole_area_lv0",
    "preview_image",
    "preview_level",
    "preview_size",
    "render_mask_preview",
    "render_previews",
    "render_tiling_preview",
]
