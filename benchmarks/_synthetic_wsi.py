"""A large H&E-like pyramidal TIFF written in seconds, for the benchmarks (no shared tooling needed)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def write_synthetic_wsi(path: Path, width: int, height: int, mpp: float = 0.5, seed: int = 0) -> None:
    """H&E-like pyramidal TIFF (JPEG tiles, 4x downsampled levels as separate IFDs, resolution tags).

    Tissue is a few ellipses on glass; each 256 px tile is one of a small set of pre-encoded texture
    tiles (H&E-coloured blobs with nuclei, or glass), so writing even a large pyramid takes seconds
    while every tile still has to be JPEG-decoded when read.
    """
    import imagecodecs
    import tifffile

    rng = np.random.default_rng(seed)
    size = 256
    yy, xx = np.mgrid[0:size, 0:size] / size
    glass = np.array([242, 240, 245], np.float32)
    eosin, haem = np.array([234, 160, 190], np.float32), np.array([80, 50, 140], np.float32)

    def texture(k: int) -> bytes:
        r = np.random.default_rng((seed, k))
        if k == 0:
            img = glass + r.normal(0, 2, (size, size, 3))
        else:
            field = 0.5 + 0.5 * np.sin(2 * np.pi * (r.uniform(2, 6) * xx + r.random())) * np.cos(
                2 * np.pi * (r.uniform(2, 6) * yy + r.random())
            )
            img = eosin * (1 - 0.3 * field[..., None]) + r.normal(0, 8, (size, size, 1))
            nuclei = r.random((size, size)) < 0.015
            nuclei = nuclei | np.roll(nuclei, 1, 0) | np.roll(nuclei, 1, 1) | np.roll(nuclei, (1, 1), (0, 1))
            img[nuclei] = haem
        return imagecodecs.jpeg_encode(np.clip(img, 0, 255).astype(np.uint8), level=80)

    tiles = [texture(k) for k in range(13)]  # 0 = glass, 1..12 = tissue variants
    blobs = [
        (rng.uniform(0.25, 0.75), rng.uniform(0.25, 0.75), rng.uniform(0.15, 0.3), rng.uniform(0.15, 0.3))
        for _ in range(3)
    ]

    def level_tiles(lw: int, lh: int):
        for ty in range(math.ceil(lh / size)):
            for tx in range(math.ceil(lw / size)):
                u, v = (tx + 0.5) * size / lw, (ty + 0.5) * size / lh
                inside = any(((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2 < 1 for cx, cy, rx, ry in blobs)
                yield tiles[1 + (tx * 7 + ty * 3) % 12] if inside else tiles[0]

    px_per_cm = 1e4 / mpp
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        scale = 1
        while True:
            lw, lh = math.ceil(width / scale), math.ceil(height / scale)
            tif.write(
                level_tiles(lw, lh), shape=(lh, lw, 3), dtype=np.uint8, tile=(size, size), photometric="rgb",
                compression="jpeg", resolution=(px_per_cm / scale, px_per_cm / scale), resolutionunit="CENTIMETER",
                subfiletype=0 if scale == 1 else 1, metadata=None, software=False,
            )  # fmt: skip
            if max(lw, lh) <= 2048:
                break
            scale *= 4
