"""Tissue contours and the per-contour tile grid with tissue coverage.

Contours are found on the segmentation-level mask (outer contours with their holes, two-level
hierarchy), kept when their area minus their holes exceeds ``a_t`` reference tiles, and carried in
level-0 pixels. Each kept contour lays its own grid from its bounding-box origin; a candidate's
tissue fraction is measured on that contour's own tissue (the contour filled, its holes cut out,
intersected with the mask) with an integral image, so every candidate costs O(1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np


@dataclass
class Contours:
    """Kept tissue contours in level-0 pixels (OpenCV layout ``(N, 1, 2)`` int32)."""

    outer: list[np.ndarray] = field(default_factory=list)
    holes: list[list[np.ndarray]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.outer)


def min_contour_area(
    *,
    a_t: int,
    ref_tile_size_px: int,
    read_spacing_um: float,
    base_spacing_um: float,
    slide_dimensions: tuple[int, int],
    mask_shape: tuple[int, int],
) -> int:
    """``a_t`` reference tiles (``ref_tile_size_px`` at the read spacing), in mask pixels."""
    if a_t <= 0:
        return 0
    mask_h, mask_w = mask_shape
    lv0_per_mask_x = slide_dimensions[0] / mask_w
    lv0_per_mask_y = slide_dimensions[1] / mask_h
    scale = read_spacing_um / base_spacing_um
    ref_w = ref_tile_size_px * scale / lv0_per_mask_x
    ref_h = ref_tile_size_px * scale / lv0_per_mask_y
    return int(a_t) * int(ref_w * ref_h)


def _rescale_many(contours: list[np.ndarray], fx: float, fy: float, *, rounding: bool) -> list[np.ndarray]:
    """Scale many contours at once (one numpy pass instead of one per contour).

    ``rounding=False`` truncates (mask -> level 0), ``True`` rounds half to even (level 0 -> mask), the
    two conversions the reference applies.
    """
    if not contours:
        return []
    lengths = [len(c) for c in contours]
    pts = np.concatenate(contours, axis=0).astype(np.float64)
    pts[:, 0, 0] *= fx
    pts[:, 0, 1] *= fy
    if rounding:
        pts = np.round(pts)
    return np.split(pts.astype(np.int32), np.cumsum(lengths)[:-1])


def find_contours(tissue_mask: np.ndarray, *, slide_dimensions: tuple[int, int], min_area: float) -> Contours:
    """Outer contours (with all their holes) whose net area exceeds ``min_area``, in level-0 pixels."""
    if tissue_mask.size == 0 or not tissue_mask.any():
        return Contours()
    mask_h, mask_w = tissue_mask.shape[:2]
    fx = slide_dimensions[0] / mask_w
    fy = slide_dimensions[1] / mask_h
    raw, hierarchy = cv2.findContours(tissue_mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    if hierarchy is None or len(raw) == 0:
        return Contours()
    parents = hierarchy[0][:, 3]
    # Group hole indices by parent once instead of scanning the hierarchy per contour.
    children: dict[int, list[int]] = {}
    for idx in np.flatnonzero(parents != -1).tolist():
        children.setdefault(int(parents[idx]), []).append(idx)
    kept: list[int] = []
    kept_holes: list[list[int]] = []
    for idx in np.flatnonzero(parents == -1).tolist():
        kids = children.get(idx, [])
        area = cv2.contourArea(raw[idx])
        if kids:
            area -= float(np.sum([cv2.contourArea(raw[k]) for k in kids]))
        if area == 0 or area <= min_area:
            continue
        kept.append(idx)
        kept_holes.append(kids)
    flat = [raw[i] for i in kept] + [raw[k] for kids in kept_holes for k in kids]
    scaled = _rescale_many(flat, fx, fy, rounding=False)
    out = Contours(outer=scaled[: len(kept)])
    pos = len(kept)
    for kids in kept_holes:
        out.holes.append(scaled[pos : pos + len(kids)])
        pos += len(kids)
    return out


def _empty() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)


def contour_tiles(
    outer: np.ndarray,
    holes: list[np.ndarray],
    tissue_mask: np.ndarray,
    *,
    slide_dimensions: tuple[int, int],
    tile_size_lv0: int,
    step_px_lv0: int,
    min_tissue_fraction: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid candidates of one contour kept by coverage: ``(x, y, fractions)``."""
    slide_w, slide_h = slide_dimensions
    bx, by, bw, bh = cv2.boundingRect(outer)
    x0, y0 = max(bx, 0), max(by, 0)
    x1, y1 = min(bx + bw, slide_w), min(by + bh, slide_h)
    if x1 <= x0 or y1 <= y0:
        return _empty()
    xs = np.arange(x0, x1, step_px_lv0, dtype=np.int64)
    ys = np.arange(y0, y1, step_px_lv0, dtype=np.int64)
    mask_h, mask_w = tissue_mask.shape[:2]
    sx, sy = mask_w / slide_w, mask_h / slide_h
    # Crop of the mask that holds the contour; bounds rounded on the full mask grid.
    cx0 = min(mask_w, max(0, round(bx * sx)))
    cy0 = min(mask_h, max(0, round(by * sy)))
    cx1 = min(mask_w, max(0, round((bx + bw - 1) * sx) + 1))
    cy1 = min(mask_h, max(0, round((by + bh - 1) * sy) + 1))
    crop_h, crop_w = cy1 - cy0, cx1 - cx0
    if crop_h <= 0 or crop_w <= 0:
        return _empty()
    own = np.zeros((crop_h, crop_w), np.uint8)
    scaled = _rescale_many([outer, *holes], sx, sy, rounding=True)
    cv2.drawContours(own, scaled[:1], -1, 1, thickness=-1, offset=(-cx0, -cy0))
    if holes:
        scaled = scaled[1:]
        # Filling a hole also clears the tissue ring its contour runs through; redraw the ring.
        cv2.drawContours(own, scaled, -1, 0, thickness=-1, offset=(-cx0, -cy0))
        cv2.drawContours(own, scaled, -1, 1, thickness=1, offset=(-cx0, -cy0))
    tissue_crop = tissue_mask[cy0:cy1, cx0:cx1]
    own &= (tissue_crop > 0).view(np.uint8)
    integral = cv2.integral(own, sdepth=cv2.CV_32S)

    tw = max(1, round(tile_size_lv0 * sx))
    th = max(1, round(tile_size_lv0 * sy))
    # Per-axis projections: the grid is separable, so project xs and ys once.
    mx = np.floor(xs.astype(np.float64) * sx).astype(np.int64) - cx0
    my = np.floor(ys.astype(np.float64) * sy).astype(np.int64) - cy0
    ax1 = np.clip(mx, 0, crop_w)
    ax2 = np.clip(mx + tw, 0, crop_w)
    ay1 = np.clip(my, 0, crop_h)
    ay2 = np.clip(my + th, 0, crop_h)
    sums = (
        integral[np.ix_(ay2, ax2)].astype(np.int64)
        - integral[np.ix_(ay1, ax2)]
        - integral[np.ix_(ay2, ax1)]
        + integral[np.ix_(ay1, ax1)]
    )
    fractions = np.clip((sums / (tw * th)).astype(np.float32), 0.0, 1.0)
    keep_y, keep_x = np.nonzero(fractions >= min_tissue_fraction)
    return xs[keep_x], ys[keep_y], fractions[keep_y, keep_x]


def grid_tiles(
    contours: Contours,
    tissue_mask: np.ndarray,
    *,
    slide_dimensions: tuple[int, int],
    tile_size_lv0: int,
    step_px_lv0: int,
    min_tissue_fraction: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All contours' kept tiles, de-duplicated (first contour wins), in row-major order."""
    parts = [
        contour_tiles(
            outer,
            holes,
            tissue_mask,
            slide_dimensions=slide_dimensions,
            tile_size_lv0=tile_size_lv0,
            step_px_lv0=step_px_lv0,
            min_tissue_fraction=min_tissue_fraction,
        )
        for outer, holes in zip(contours.outer, contours.holes, strict=True)
    ]
    parts = [p for p in parts if p[0].size]
    if not parts:
        return _empty()
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    fr = np.concatenate([p[2] for p in parts])
    # One int64 key per tile ordered (y, x): unique() both de-duplicates (first occurrence keeps its
    # fraction) and sorts row-major.
    key = y * (int(slide_dimensions[0]) + 1) + x
    _, first = np.unique(key, return_index=True)
    return x[first], y[first], fr[first]


__all__ = ["Contours", "contour_tiles", "find_contours", "grid_tiles", "min_contour_area"]
