"""Mask and tiling previews (ARTIFACTS.md 8b), returned as RGB uint8 arrays; the artifact IO writes PNGs.

Both are drawn on the slide read at the level whose downsample is closest to ``preview.downsample``.
"""

from __future__ import annotations

import cv2
import numpy as np

from .geometry import closest_level_for_downsample
from .grid import Contours
from .params import PreviewParams

HOLE_COLOR = (242, 107, 58)
TILE_COLOR = (0, 0, 0)


def preview_level(reader, downsample: int) -> int:
    return closest_level_for_downsample(float(downsample), [float(d) for d in reader.info.level_downsamples])


def _stroke(level_downsample: float) -> int:
    # About 4 px at downsample 16, thinner on coarser previews, never below 1 px.
    return max(1, round(4 * 16.0 / level_downsample)) if level_downsample > 0 else 4


def _scaled(contour: np.ndarray, ds: float) -> np.ndarray:
    return np.rint(contour.astype(np.float64) / ds).astype(np.int32)


def draw_mask_preview(
    image: np.ndarray,
    contours: Contours,
    *,
    level_downsample: float,
    contour_color: tuple[int, int, int] = (157, 219, 129),
    hole_color: tuple[int, int, int] = HOLE_COLOR,
) -> np.ndarray:
    """Outline kept contours (outer ``contour_color``, holes ``hole_color``) on ``image``; not filled."""
    canvas = np.ascontiguousarray(image[:, :, :3], dtype=np.uint8).copy()
    stroke = _stroke(level_downsample)
    for outer, holes in zip(contours.outer, contours.holes, strict=True):
        cv2.drawContours(canvas, [_scaled(outer, level_downsample)], -1, tuple(int(c) for c in contour_color), stroke)
        if holes:
            scaled = [_scaled(h, level_downsample) for h in holes]
            cv2.drawContours(canvas, scaled, -1, tuple(int(c) for c in hole_color), stroke)
    return canvas


def draw_tiling_preview(
    image: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    *,
    tile_size_lv0: int,
    level_downsample: float,
    color: tuple[int, int, int] = TILE_COLOR,
) -> np.ndarray:
    """Outline every tile with a 1-px rectangle at its level-0 position scaled to the preview level."""
    canvas = np.ascontiguousarray(image[:, :, :3], dtype=np.uint8).copy()
    if len(x) == 0:
        return canvas
    h, w = canvas.shape[:2]
    side = max(1, int(np.ceil(tile_size_lv0 / level_downsample)))
    px = np.ceil(np.asarray(x, np.float64) / level_downsample).astype(np.int64)
    py = np.ceil(np.asarray(y, np.float64) / level_downsample).astype(np.int64)
    x2 = np.minimum(px + side - 1, w - 1)
    y2 = np.minimum(py + side - 1, h - 1)
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


def render_mask_preview(reader, result, preview: PreviewParams | None = None) -> np.ndarray:
    """The mask preview (RGB uint8) of a :class:`~slide2vec_dagster.tiling.TilingResult`."""
    pv = preview or result.config.preview
    level = preview_level(reader, pv.downsample)
    ds = float(reader.info.level_downsamples[level])
    return draw_mask_preview(
        reader.read_level(level), result.contours, level_downsample=ds, contour_color=pv.tissue_contour_color
    )


def render_tiling_preview(reader, result, preview: PreviewParams | None = None) -> np.ndarray:
    """The tiling preview (RGB uint8): every kept tile outlined with a 1-px black rectangle."""
    pv = preview or result.config.preview
    level = preview_level(reader, pv.downsample)
    ds = float(reader.info.level_downsamples[level])
    return draw_tiling_preview(
        reader.read_level(level),
        result.x,
        result.y,
        tile_size_lv0=result.geometry.tile_size_lv0,
        level_downsample=ds,
    )


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
    level = preview_level(reader, pv.downsample)
    ds = float(reader.info.level_downsamples[level])
    base = reader.read_level(level)
    mask_img = None
    if mask:
        mask_img = draw_mask_preview(base, result.contours, level_downsample=ds, contour_color=pv.tissue_contour_color)
    tiling_img = None
    if tiling and result.n_tiles > 0:
        tiling_img = draw_tiling_preview(
            base, result.x, result.y, tile_size_lv0=result.geometry.tile_size_lv0, level_downsample=ds
        )
    return mask_img, tiling_img


__all__ = [
    "HOLE_COLOR",
    "draw_mask_preview",
    "draw_tiling_preview",
    "preview_level",
    "render_mask_preview",
    "render_previews",
    "render_tiling_preview",
]
