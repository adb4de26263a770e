"""Tissue segmentation on a low-resolution pyramid level, and precomputed tissue masks.

Methods (OpenCV HSV conventions: H in [0, 180), S and V in [0, 255]):
- ``hsv``: tissue is the box H 90-180, S 8-255, V 103-255;
- ``otsu``: Otsu threshold of the median-blurred saturation;
- ``threshold``: median-blurred saturation > ``sthresh``;
then a morphological closing with a ``close`` x ``close`` square kernel. Tissue pixels carry
``sthresh_up`` (255 by default), background 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np

from .geometry import choose_level
from .params import SegParams

# HSV box of the default method (OpenCV scale).
HSV_LOWER = np.array((90, 8, 103))
HSV_UPPER = np.array((180, 255, 255))
# A level whose spacing is within 1% of the target counts as exact when picking a mask level.
MASK_LEVEL_TOLERANCE = 0.01
# Mask file spacing may disagree with the slide-derived spacing by at most this much.
MASK_SPACING_FAIL = 0.05
# Strip height (level pixels) for parallel reads of the segmentation level.
_STRIP_PX = 512


@contextmanager
def _single_threaded_opencv() -> Iterator[None]:
    """On a low-resolution level OpenCV's thread pool costs more than it saves, and it competes with the
    slide readers' decode threads (measured here: 1.8 ms on one thread vs 3.5-4 ms on two once cuCIM is
    loaded, for a 1250 x 938 level)."""
    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(previous)


def segment_tissue(image: np.ndarray, seg: SegParams) -> np.ndarray:
    """Binary tissue mask (uint8, 0 / ``sthresh_up``) of an RGB uint8 image."""
    with _single_threaded_opencv():
        return _segment(image, seg)


def _segment(image: np.ndarray, seg: SegParams) -> np.ndarray:
    rgb = np.ascontiguousarray(image[:, :, :3], dtype=np.uint8)
    method = seg.method
    if method == "hsv":
        hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
        mask = cv2.inRange(hsv, HSV_LOWER, HSV_UPPER)
        if seg.sthresh_up != 255:
            mask = np.where(mask > 0, seg.sthresh_up, 0).astype(np.uint8)
    elif method in ("otsu", "threshold"):
        sat = np.ascontiguousarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[:, :, 1])
        blurred = cv2.medianBlur(sat, int(seg.mthresh))
        if method == "otsu":
            _, mask = cv2.threshold(blurred, 0, int(seg.sthresh_up), cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        else:
            _, mask = cv2.threshold(blurred, int(seg.sthresh), int(seg.sthresh_up), cv2.THRESH_BINARY)
    else:  # pragma: no cover - the config model rejects other methods
        raise ValueError(f"unknown tissue segmentation method {method!r}; use hsv, otsu or threshold")
    if seg.close > 0:
        kernel = np.ones((int(seg.close), int(seg.close)), np.uint8)
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    return mask.astype(np.uint8, copy=False)


def exact_integer_downsample(reader, level: int) -> int | None:
    """The level's downsample when it is the same exact integer on both axes, else ``None``.

    Only then does a level-0 origin ``row * ds`` land exactly on a level row for every backend
    (OpenSlide, for one, resamples a fractional origin, and may use a downsample averaged over both
    axes that differs from the reader's reported x ratio).
    """
    (w0, h0), (w, h) = reader.info.level_dimensions[0], reader.info.level_dimensions[level]
    ds = float(reader.info.level_downsamples[level])
    if w <= 0 or h <= 0 or w0 % w or h0 % h or w0 // w != h0 // h or ds != w0 // w:
        return None
    return w0 // w


def read_level_image(reader, level: int, *, workers: int = 2) -> np.ndarray:
    """The whole of one level as RGB uint8.

    With an exact integer downsample, horizontal strips map onto exact level rows and are read in
    parallel (readers decode in C and release the GIL); otherwise one read, because a fractional
    level-0 origin may be resampled by the reader and change pixels.
    """
    width, height = reader.info.level_dimensions[level]
    ids = exact_integer_downsample(reader, level)
    if workers <= 1 or height <= _STRIP_PX or ids is None:
        return reader.read_region(0, 0, level, width, height)
    starts = list(range(0, height, _STRIP_PX))
    out = np.empty((height, width, 3), dtype=np.uint8)

    def _strip(y0: int) -> None:
        h = min(_STRIP_PX, height - y0)
        out[y0 : y0 + h] = reader.read_region(0, y0 * ids, level, width, h)[:, :, :3]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_strip, starts))
    return out


@dataclass(frozen=True)
class MaskOnGrid:
    """A precomputed tissue mask resampled onto the segmentation grid (255 tissue, 0 background)."""

    tissue_mask: np.ndarray
    mask_level: int
    mask_spacing_um: float
    tissue_value: int


def _labels_2d(native: np.ndarray) -> np.ndarray:
    if native.ndim == 3:
        first = native[..., 0]
        for c in range(1, native.shape[-1]):
            if not np.array_equal(first, native[..., c]):
                raise ValueError("mask channels differ; a tissue mask must be single-channel (gray)")
        native = first
    if native.ndim != 2:
        raise ValueError(f"expected a 2-D mask raster, got shape {native.shape}")
    return np.ascontiguousarray(native, dtype=np.uint8)


def mask_on_grid(
    mask_reader,
    *,
    slide_dimensions: tuple[int, int],
    base_spacing_um: float,
    target_spacing_um: float,
    target_dimensions: tuple[int, int],
    background_value: int = 0,
    tissue_value: int = 1,
    mask_file_spacing_um: float | None = None,
) -> MaskOnGrid:
    """Read a binary tissue mask onto the slide's segmentation grid.

    The mask's spacing comes from its size relative to the slide (it must cover the whole slide at
    one scale); a file spacing, when given, is only cross-checked. The coarsest mask level not
    coarser than the target (1% slack) is read whole and nearest-neighbour resized to the grid.
    A mask holding only 0 and 255 is accepted as tissue=255 when the configured tissue value is 1.
    """
    ref_w, ref_h = (int(v) for v in slide_dimensions)
    mask_dims: Sequence[tuple[int, int]] = mask_reader.info.level_dimensions
    mask_w, mask_h = (int(v) for v in mask_dims[0])
    # One scale s must satisfy |mask - ref / s| <= 1 on both axes.
    s_min = max(ref_w / (mask_w + 1), ref_h / (mask_h + 1))
    s_max = min(ref_w / (mask_w - 1) if mask_w > 1 else math.inf, ref_h / (mask_h - 1) if mask_h > 1 else math.inf)
    if s_min > s_max:
        raise ValueError(
            f"mask of {mask_w}x{mask_h} px does not cover the slide ({ref_w}x{ref_h} px) at one scale; "
            "a tissue mask must span the whole slide"
        )
    mask_s0 = float(base_spacing_um) * ref_w / mask_w
    if mask_file_spacing_um is not None:
        diff = abs(float(mask_file_spacing_um) - mask_s0) / mask_s0
        if diff > MASK_SPACING_FAIL:
            raise ValueError(
                f"mask file spacing {mask_file_spacing_um} um/px differs from the spacing implied by its "
                "size "
                f"({mask_s0:.4f} um/px) by {diff:.1%}, above the {MASK_SPACING_FAIL:.0%} limit"
            )
    downsamples = [float(d) for d in mask_reader.info.level_downsamples]
    # Labels may be replicated (nearest neighbour), so finer-than-level-0 targets are allowed here.
    choice = choose_level(target_spacing_um, mask_s0, downsamples, MASK_LEVEL_TOLERANCE)
    labels = _labels_2d(np.asarray(mask_reader.read_level(choice.level)))
    present = set(np.flatnonzero(cv2.calcHist([labels], [0], None, [256], [0, 256])).tolist())
    declared = {int(background_value), int(tissue_value)}
    if not present <= declared:
        if tissue_value == 1 and background_value == 0 and present <= {0, 255}:
            tissue_value = 255
        else:
            raise ValueError(
                f"mask holds values {sorted(present - declared)} besides background {background_value} and "
                f"tissue {tissue_value}; a tissue mask must be binary (0 and 1, or 0 and 255)"
            )
    tw, th = (int(v) for v in target_dimensions)
    if labels.shape != (th, tw):
        labels = cv2.resize(labels, (tw, th), interpolation=cv2.INTER_NEAREST)
    tissue = np.where(labels == tissue_value, np.uint8(255), np.uint8(0))
    return MaskOnGrid(
        tissue_mask=tissue,
        mask_level=choice.level,
        mask_spacing_um=choice.spacing_um,
        tissue_value=tissue_value,
    )


__all__ = ["HSV_LOWER", "HSV_UPPER", "MaskOnGrid", "mask_on_grid", "read_level_image", "segment_tissue"]
