"""Optional pixel QC of candidate tiles at ``qc_spacing_um`` (all filters off by default).

A tile is dropped when its white fraction (all RGB > white_threshold) or black fraction (all RGB <
black_threshold) exceeds ``fraction_threshold``, when its grayspace fraction (HSV saturation <
grayspace_saturation_threshold) exceeds ``grayspace_fraction_threshold``, or when the variance of
its Laplacian is below ``blur_threshold``. Fractions count only pixels inside the slide.

Tiles are read in batches: the read level is cut into windows of 8 x 8 QC tiles, each window is read
once (in parallel across windows) and its tiles are cropped from it. The window layout is the same
as hs2p's so that every tile sees exactly the same pixels.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from .geometry import choose_level
from .params import FilterParams
from .segmentation import exact_integer_downsample

_WINDOW_TILES = 8
_STRIP_PX = 512


@dataclass(frozen=True)
class QCGeometry:
    level: int
    read_spacing_um: float
    read_tile_size_px: int  # tile side read at ``level``
    qc_tile_size_px: int  # tile side after resizing to qc_spacing_um


def qc_geometry(
    *,
    requested_tile_size_px: int,
    requested_spacing_um: float,
    qc_spacing_um: float,
    base_spacing_um: float,
    level_downsamples: Sequence[float],
    tolerance: float,
) -> QCGeometry:
    choice = choose_level(qc_spacing_um, base_spacing_um, level_downsamples, tolerance)
    physical_um = float(requested_tile_size_px) * float(requested_spacing_um)
    return QCGeometry(
        level=choice.level,
        read_spacing_um=choice.spacing_um,
        read_tile_size_px=max(1, round(physical_um / float(choice.spacing_um))),
        qc_tile_size_px=max(1, round(physical_um / float(qc_spacing_um))),
    )


def _fraction(flags: np.ndarray, valid: np.ndarray) -> float:
    n = int(valid.sum())
    return 0.0 if n == 0 else float(flags[valid].mean())


def tile_passes(tile: np.ndarray, valid: np.ndarray, fp: FilterParams) -> bool:
    """Apply the enabled filters to one RGB tile; ``valid`` marks pixels inside the slide."""
    if fp.filter_white:
        white = np.all(tile > int(fp.white_threshold), axis=-1)
        if _fraction(white, valid) > float(fp.fraction_threshold):
            return False
    if fp.filter_black:
        black = np.all(tile < int(fp.black_threshold), axis=-1)
        if _fraction(black, valid) > float(fp.fraction_threshold):
            return False
    if fp.filter_grayspace:
        sat = cv2.cvtColor(tile, cv2.COLOR_RGB2HSV)[:, :, 1].astype(np.float32) / 255.0
        if _fraction(sat < float(fp.grayspace_saturation_threshold), valid) > float(fp.grayspace_fraction_threshold):
            return False
    if fp.filter_blur:
        rows, cols = np.nonzero(valid)
        if rows.size:  # no valid pixel scores as infinitely sharp
            crop = tile[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
            gray = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY)
            if float(cv2.Laplacian(gray, cv2.CV_64F).var()) < float(fp.blur_threshold):
                return False
    return True


def qc_keep(
    reader,
    x: np.ndarray,
    y: np.ndarray,
    *,
    fp: FilterParams,
    requested_tile_size_px: int,
    requested_spacing_um: float,
    base_spacing_um: float,
    tolerance: float,
    workers: int = 2,
    timings: dict[str, float] | None = None,
) -> np.ndarray:
    """Boolean keep-flags for tiles at level-0 origins ``(x, y)``."""
    n = len(x)
    keep = np.ones(n, dtype=bool)
    if n == 0 or not fp.needs_pixel_qc:
        return keep
    downsamples = [float(d) for d in reader.info.level_downsamples]
    geo = qc_geometry(
        requested_tile_size_px=requested_tile_size_px,
        requested_spacing_um=requested_spacing_um,
        qc_spacing_um=fp.qc_spacing_um,
        base_spacing_um=base_spacing_um,
        level_downsamples=downsamples,
        tolerance=tolerance,
    )
    img_w, img_h = reader.info.level_dimensions[geo.level]
    ds = downsamples[geo.level]
    inv = 1.0 / ds
    lx = np.floor(np.asarray(x, np.float64) * inv).astype(np.int64)
    ly = np.floor(np.asarray(y, np.float64) * inv).astype(np.int64)
    rt = geo.read_tile_size_px
    span = rt * _WINDOW_TILES
    wkey_x, wkey_y = lx // span, ly // span
    order = np.lexsort((wkey_x, wkey_y))
    keys = np.stack([wkey_x[order], wkey_y[order]], axis=1)
    bounds = np.flatnonzero(np.any(np.diff(keys, axis=0) != 0, axis=1)) + 1
    groups = np.split(order, bounds)
    read_s = [0.0]

    exact_ds = exact_integer_downsample(reader, geo.level)
    pool = ThreadPoolExecutor(max_workers=max(1, workers))

    def _read(lv0x: int, lv0y: int, w: int, h: int, split: bool) -> np.ndarray:
        t0 = time.perf_counter()
        if split and exact_ds is not None and h > _STRIP_PX and workers > 1:
            # Integer downsample: strips start on exact level rows, so they equal one big read.
            ids = exact_ds
            starts = list(range(0, h, _STRIP_PX))
            parts = pool.map(
                lambda r: np.asarray(reader.read_region(lv0x, lv0y + r * ids, geo.level, w, min(_STRIP_PX, h - r)))[
                    :, :, :3
                ],
                starts,
            )
            window = np.concatenate(list(parts), axis=0)
        else:
            window = np.asarray(reader.read_region(lv0x, lv0y, geo.level, w, h))[:, :, :3]
        read_s[0] += time.perf_counter() - t0
        return window

    def _window(members: np.ndarray, split: bool) -> list[tuple[int, bool]]:
        wx0 = int(wkey_x[members[0]] * span)
        wy0 = int(wkey_y[members[0]] * span)
        read_w = int(min(span + rt, max(0, img_w - wx0)))
        read_h = int(min(span + rt, max(0, img_h - wy0)))
        # Level-0 origin as the reference computes it: round to level 0, floor back onto the level,
        # then the smallest level-0 pixel that floors onto that level pixel.
        lvx = math.floor(round(wx0 * ds) / ds)
        lvy = math.floor(round(wy0 * ds) / ds)
        window = _read(math.ceil(lvx * ds), math.ceil(lvy * ds), read_w, read_h, split)
        out = []
        for idx in members.tolist():
            ox, oy = int(lx[idx]) - wx0, int(ly[idx]) - wy0
            tile = np.zeros((rt, rt, 3), np.uint8)
            view = window[oy : oy + rt, ox : ox + rt]
            tile[: view.shape[0], : view.shape[1]] = view
            valid = np.zeros((rt, rt), bool)
            vw = int(min(rt, max(0, img_w - lx[idx])))
            vh = int(min(rt, max(0, img_h - ly[idx])))
            valid[:vh, :vw] = True
            q = geo.qc_tile_size_px
            if rt != q:
                interp = cv2.INTER_LINEAR if q > rt else cv2.INTER_AREA
                tile = cv2.resize(tile, (q, q), interpolation=interp)
                valid = cv2.resize(valid.view(np.uint8), (q, q), interpolation=cv2.INTER_NEAREST).astype(bool)
            out.append((idx, tile_passes(tile, valid, fp)))
        return out

    with pool:
        if exact_ds is not None:
            # Few, large windows (typically the level-0 reads of single-level slides): parallel strips.
            batches = [_window(g, True) for g in groups]
        else:
            # Fractional downsample: each window must be one read; parallelise across windows.
            batches = list(pool.map(lambda g: _window(g, False), groups))
    for results in batches:
        for idx, ok in results:
            keep[idx] = ok
    if timings is not None:
        timings["qc_read_s"] = timings.get("qc_read_s", 0.0) + read_s[0]
    return keep


__all__ = ["QCGeometry", "qc_geometry", "qc_keep", "tile_passes"]
