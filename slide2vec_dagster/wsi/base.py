"""The one small interface every slide reader implements.

Readers know pixels and pyramid geometry; they do not know about tiling, manifests or Dagster.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

# read_level_resized reads levels up to this many pixels in one piece (48 MiB of RGB); larger ones in blocks.
WHOLE_READ_MAX_PX = 1 << 24
# Side, in level pixels, of the blocks a large level is read and reduced in.
BLOCK_SIDE_PX = 4096


class SlideOpenError(RuntimeError):
    """A slide could not be opened by a reader (missing, unreadable, unsupported format)."""


class MissingSpacingError(ValueError):
    """Neither the slide file nor the manifest gives the level-0 spacing."""


@dataclass(frozen=True)
class PyramidInfo:
    """Geometry of a slide pyramid as the reader sees it.

    ``level_dimensions[i]`` is ``(width, height)``; ``level_downsamples[i]`` is the x downsample
    (level-0 width / level width), the convention OpenSlide and slide2vec use.
    """

    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    native_spacing_um: float | None

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)


class SlideReader(ABC):
    """Read-only access to one whole-slide image.

    Subclasses set ``backend`` and fill ``info`` when opened. ``read_region`` takes level-0 pixel
    coordinates for the top-left corner and a size in pixels *at the requested level*, and returns
    an RGB ``uint8`` array of shape ``(height, width, 3)``. Areas outside the slide read as white.
    """

    backend: str = ""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.info: PyramidInfo
        # Filled by ``open_slide``: level-0 µm/px after the manifest override, and what was asked for.
        self.base_spacing_um: float = float("nan")
        self.requested_backend: str = self.backend
        self.spacing_override: float | None = None
        # Set by a reader that corrects the pixels the file or its decoder gets wrong, e.g.
        # "ycbcr_to_rgb: ..." for DICOM JPEG frames labelled RGB that hold YCbCr; None when read as stored.
        self.colour_correction: str | None = None

    @abstractmethod
    def read_region(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray: ...

    def read_level(self, level: int) -> np.ndarray:
        """The whole of one pyramid level as RGB ``uint8`` (only sensible for small levels)."""
        width, height = self.info.level_dimensions[level]
        return self.read_region(0, 0, level, width, height)

    def close(self) -> None:  # noqa: B027 - optional hook, most readers hold no handle worth closing
        """Release file handles."""

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Convenience accessors used throughout the tiling code.
    @property
    def dimensions(self) -> tuple[int, int]:
        return self.info.dimensions

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return self.info.level_downsamples

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return self.info.level_dimensions


def read_level_resized(
    reader: SlideReader, level: int, size: tuple[int, int], *, max_read_px: int | None = None
) -> np.ndarray:
    """The whole of ``level`` resized to ``size`` = ``(width, height)``, RGB ``uint8``, in bounded memory.

    Area interpolation when reducing (linear when the level is smaller than ``size``). A level larger than
    ``max_read_px`` pixels (default ``WHOLE_READ_MAX_PX``; the level 0 of a single-level gigapixel slide)
    is read in blocks of about ``BLOCK_SIDE_PX`` square, each reduced to its share of the output before the
    next is read: memory is one block plus the output, never the whole level.
    """
    out_w, out_h = (int(v) for v in size)
    if out_w < 1 or out_h < 1:
        raise ValueError(f"output size must be at least 1 x 1 px, got {out_w} x {out_h}")
    level_w, level_h = reader.info.level_dimensions[level]
    downsample = float(reader.info.level_downsamples[level])
    if level_w * level_h <= (WHOLE_READ_MAX_PX if max_read_px is None else max_read_px):
        return _resized(reader.read_level(level), out_w, out_h)
    fx, fy = level_w / out_w, level_h / out_h
    # Output blocks whose level footprint is about BLOCK_SIDE_PX square; block edges land on whole level
    # pixels, so an integer reduction factor gives exactly the pixels of one whole-level resize.
    step_x, step_y = max(1, int(BLOCK_SIDE_PX / fx)), max(1, int(BLOCK_SIDE_PX / fy))
    out = np.empty((out_h, out_w, 3), np.uint8)
    for r0 in range(0, out_h, step_y):
        r1 = min(out_h, r0 + step_y)
        y0, y1 = round(r0 * fy), max(round(r0 * fy) + 1, round(r1 * fy))
        for c0 in range(0, out_w, step_x):
            c1 = min(out_w, c0 + step_x)
            x0, x1 = round(c0 * fx), max(round(c0 * fx) + 1, round(c1 * fx))
            block = reader.read_region(round(x0 * downsample), round(y0 * downsample), level, x1 - x0, y1 - y0)
            out[r0:r1, c0:c1] = _resized(block, c1 - c0, r1 - r0)
    return out


def _resized(image: np.ndarray, width: int, height: int) -> np.ndarray:
    image = np.ascontiguousarray(image[:, :, :3])
    if image.shape[:2] == (height, width):
        return image
    shrink = width <= image.shape[1] and height <= image.shape[0]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def white_padded(region: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pad a short read (tile hanging over the slide edge) with white to ``(height, width, 3)``."""
    if region.shape[0] == height and region.shape[1] == width:
        return region
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    h, w = min(height, region.shape[0]), min(width, region.shape[1])
    canvas[:h, :w] = region[:h, :w]
    return canvas


def to_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """Normalise a decoded region to RGB uint8: drop alpha (composited on white), expand gray."""
    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    if array.shape[2] == 4:
        alpha = array[:, :, 3]
        if alpha.min() == 255:
            # The common case (every pixel inside the scanned area): compositing would be a no-op, and
            # doing it in floating point costs more than the JPEG decode itself.
            array = array[:, :, :3]
        else:
            a = alpha[:, :, None].astype(np.uint16)
            rgb = array[:, :, :3].astype(np.uint16)
            array = ((rgb * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)
    elif array.shape[2] > 4 or array.shape[2] == 2:
        array = array[:, :, :3] if array.shape[2] > 3 else np.repeat(array[:, :, :1], 3, axis=2)
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(array)
