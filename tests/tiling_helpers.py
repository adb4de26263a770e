"""Synthetic slides for the tiling tests (in-memory pyramid reader, tiny TIFF writer) and the hs2p fixture sets."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from slide2vec_dagster.wsi.base import PyramidInfo, SlideReader, white_padded

GLASS = (242, 240, 245)
PINK = (234, 160, 190)


class ArrayReader(SlideReader):
    """A SlideReader over in-memory levels (level 0 first), with OpenSlide's lv0-coordinate reads."""

    backend = "array"

    def __init__(self, levels: list[np.ndarray], spacing_um: float | None = 0.5) -> None:
        super().__init__(Path("memory.tiff"))
        self.levels = levels
        w0 = levels[0].shape[1]
        self.info = PyramidInfo(
            level_dimensions=tuple((lv.shape[1], lv.shape[0]) for lv in levels),
            level_downsamples=tuple(w0 / lv.shape[1] for lv in levels),
            native_spacing_um=spacing_um,
        )
        self.reads: list[tuple[int, int, int, int, int]] = []

    def read_region(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        self.reads.append((x, y, level, width, height))
        ds = self.info.level_downsamples[level]
        lx, ly = int(np.floor(x / ds)), int(np.floor(y / ds))
        arr = self.levels[level]
        crop = arr[max(ly, 0) : ly + height, max(lx, 0) : lx + width]
        return white_padded(np.ascontiguousarray(crop), width, height)


def pyramid(image: np.ndarray, n_levels: int) -> list[np.ndarray]:
    levels = [image]
    for _ in range(n_levels - 1):
        prev = levels[-1]
        levels.append(cv2.resize(prev, (prev.shape[1] // 2, prev.shape[0] // 2), interpolation=cv2.INTER_AREA))
    return levels


def blob_slide(
    width: int = 4096, height: int = 3072, *, seed: int = 0, blobs: int = 3, hole: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """H&E-like RGB image with elliptical tissue blobs (one with a hole) and its ground-truth mask."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((height, width), np.uint8)
    centres = [(width // 4, height // 3), (3 * width // 4, height // 2), (width // 3, 3 * height // 4)]
    for cx, cy in centres[:blobs]:
        axes = (width // 8, height // 8)
        cv2.ellipse(truth, (cx, cy), axes, 0, 0, 360, 1, -1)
    if hole:
        cx, cy = centres[0]
        cv2.circle(truth, (cx, cy), width // 32, 0, -1)
    img = np.empty((height, width, 3), np.uint8)
    img[:] = GLASS
    noise = rng.integers(-15, 15, size=(height, width, 1), dtype=np.int16)
    pink = np.clip(np.array(PINK, np.int16) + noise, 0, 255).astype(np.uint8)
    img[truth > 0] = pink[truth > 0]
    return img, truth


def write_tiff_pyramid(path: Path, image: np.ndarray, *, mpp: float = 0.5, levels: int = 3) -> Path:
    """A tiled, JPEG-compressed pyramidal TIFF with resolution tags (readable by OpenSlide and tifffile)."""
    import tifffile

    px_per_cm = 1e4 / mpp
    with tifffile.TiffWriter(path) as tif:
        for i, level in enumerate(pyramid(image, levels)):
            tif.write(
                level,
                photometric="rgb",
                tile=(256, 256),
                compression="jpeg",
                resolution=(px_per_cm / 2**i, px_per_cm / 2**i),
                resolutionunit="CENTIMETER",
                subfiletype=0 if i == 0 else 1,
                metadata=None,
            )
    return path


_QC_ALL = {"filter_white": True, "filter_black": True, "filter_grayspace": True, "filter_blur": True}
_R05_T256 = {"requested_spacing_um": 0.5, "requested_tile_size_px": 256, "tolerance": 0.07, "overlap": 0.25}

# Parameter sets of tiling_hs2p_expected.json ("slide|set" keys), shared by tests/test_tiling_real.py and
# scripts/regenerate_hs2p_fixtures.py so the fixture and its check cannot drift apart.
HS2P_SETS: dict[str, dict[str, Any]] = {
    "default": {"params": {"requested_spacing_um": 0.5, "requested_tile_size_px": 224}},
    "r1-T256-tol07-ov25-otsu": {
        "params": {"requested_spacing_um": 1.0, "requested_tile_size_px": 256, "tolerance": 0.07, "overlap": 0.25},
        "seg_params": {"method": "otsu"},
    },
    "r1-T128-tol07-ov25-otsu": {
        "params": {"requested_spacing_um": 1.0, "requested_tile_size_px": 128, "tolerance": 0.07, "overlap": 0.25},
        "seg_params": {"method": "otsu"},
    },
    "r05-T256-tol07-ov25-qc": {"params": _R05_T256, "filter_params": _QC_ALL},
    "r05-T256-tol07-ov25-at1-qc": {"params": _R05_T256, "filter_params": {**_QC_ALL, "a_t": 1}},
}


def tile_digest(x: np.ndarray, y: np.ndarray, tissue_fractions: np.ndarray) -> str:
    """Digest of a tile set, sorted row-major (y, then x) so it does not depend on the tiler's output order."""
    order = np.lexsort((x, y))
    x, y, f = (np.asarray(a)[order] for a in (x, y, tissue_fractions))
    data = x.astype(np.int64).tobytes() + y.astype(np.int64).tobytes() + f.astype(np.float32).tobytes()
    return hashlib.sha256(data).hexdigest()[:16]
