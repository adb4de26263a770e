"""Mask and tiling previews (ARTIFACTS.md 8b): size, level, line width, holes, bounded reads.

Size rule: ``(round(level-0 width / preview.downsample), round(level-0 height / preview.downsample))``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from slide2vec_dagster.tiling import TilingConfig, render_previews, tile_slide
from slide2vec_dagster.tiling.preview import HOLE_COLOR, THICK_LINE_FROM_PX, preview_image, preview_level
from slide2vec_dagster.wsi import base as wsi_base
from slide2vec_dagster.wsi import open_slide, read_level_resized

from .tiling_helpers import GLASS, PINK, ArrayReader, blob_slide, pyramid

DATA = Path(__file__).resolve().parent / "data"
GREEN = (157, 219, 129)


def config(**over) -> TilingConfig:
    base: dict = {"params": {"requested_spacing_um": 0.5, "requested_tile_size_px": 224}}
    for key, value in over.items():
        base.setdefault(key, {}).update(value)
    return TilingConfig.model_validate(base)


def coloured(image: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    return np.all(image == color, axis=-1).astype(np.uint8)


def widest_line_px(lines: np.ndarray) -> int:
    """The largest n in 1..4 such that some n x n square is entirely line pixels (4 means 4 or more)."""
    widest = 0
    for n in range(1, 5):
        if cv2.erode(lines, np.ones((n, n), np.uint8), borderValue=0).any():
            widest = n
    return widest


def real_slide(name: str, **over):
    path = DATA / name
    if not path.exists():
        pytest.skip(f"{path} is not present")
    spacing = 0.5 if name.startswith("tcga") else None
    reader = open_slide(path, "auto", spacing)
    return reader, tile_slide(reader, reader.base_spacing_um, config(**over))


def _hole_slide(radius: int) -> tuple[ArrayReader, np.ndarray]:
    img = np.empty((3072, 4096, 3), np.uint8)
    img[:] = GLASS
    truth = np.zeros((3072, 4096), np.uint8)
    cv2.circle(truth, (2048, 1536), 1200, 1, -1)
    cv2.circle(truth, (2048, 1536), radius, 0, -1)
    img[truth > 0] = PINK
    return ArrayReader(pyramid(img, 6), spacing_um=0.5), truth


# ------------------------------------------------------------------------------------------- size


@pytest.mark.parametrize(
    ("name", "downsample", "levels"),
    [
        ("CMU-1-Small-Region.svs", 32, 1),  # single level: reduced from level 0, not drawn at full size
        ("CMU-1-Small-Region.svs", 7, 1),
        ("tcga-cr-7395-01a-01-ts1.svs", 32, 2),  # closest level is downsample 2
        ("synthetic-he-0.5mpp.tiff", 32, 4),  # closest level is downsample 8
        ("synthetic-he-0.5mpp.tiff", 8, 4),  # a level of exactly the requested downsample
        ("dicom-cmu-1-small-region", 32, 12),  # closest level (32.2) is a little coarser: enlarged
        ("hamamatsu-fluorescence-dapi.ndpi", 64, 7),
    ],
)
def test_preview_size_is_level0_over_downsample_rounded(name: str, downsample: int, levels: int):
    reader, result = real_slide(name, preview={"downsample": downsample})
    with reader:
        assert reader.info.level_count == levels
        mask_img, tiling_img = render_previews(reader, result)
    w0, h0 = result.slide_dimensions
    expected = (round(h0 / downsample), round(w0 / downsample), 3)
    assert mask_img is not None and mask_img.shape == expected and mask_img.dtype == np.uint8
    assert tiling_img is not None and tiling_img.shape == expected


def test_previews_read_the_closest_level_not_level_0():
    img, _ = blob_slide(seed=3)
    reader = ArrayReader(pyramid(img, 6), spacing_um=0.5)
    res = tile_slide(reader, 0.5, config(preview={"downsample": 16}))
    reader.reads.clear()
    mask_img, _ = render_previews(reader, res)
    assert {level for (_, _, level, _, _) in reader.reads} == {preview_level(reader, 16)} == {4}
    assert mask_img is not None and mask_img.shape == (3072 // 16, 4096 // 16, 3)


# ------------------------------------------------------------------------------------- line width


@pytest.mark.parametrize(("downsample", "width"), [(32, 1), (2, 3)])
def test_contour_lines_are_1_or_3_px_wide_whatever_the_level(downsample: int, width: int):
    # A disc with a large hole: clean outlines whose width is the stroke itself.
    reader, _ = _hole_slide(400)
    res = tile_slide(reader, 0.5, config(preview={"downsample": downsample}))
    mask_img, _ = render_previews(reader, res, tiling=False)
    assert mask_img is not None
    assert (max(mask_img.shape[:2]) >= THICK_LINE_FROM_PX) == (width == 3)
    for color in (GREEN, HOLE_COLOR):
        lines = coloured(mask_img, color)
        assert lines.sum() > 50
        assert widest_line_px(lines) == width


@pytest.mark.parametrize(("downsample", "typical", "max_fraction"), [(32, 1.0, 0.1), (8, 1.0, 0.05), (2, 2.0, 0.05)])
def test_cmu_single_level_preview_is_outlined_not_painted(downsample: int, typical: float, max_fraction: float):
    # Before: drawn at full resolution with 64-px strokes, 39 % of the preview orange and 4 % green.
    reader, result = real_slide("CMU-1-Small-Region.svs", preview={"downsample": downsample})
    with reader:
        mask_img, _ = render_previews(reader, result, tiling=False)
    assert mask_img is not None
    lines = coloured(mask_img, GREEN)
    assert 0 < lines.mean() < max_fraction
    assert coloured(mask_img, HOLE_COLOR).sum() == 0  # no hole reaches a_h = 2 reference tiles
    # Typical half-width: distance from a line pixel to the nearest other pixel, 1 for a 1-px stroke and 2 for
    # a 3-px one (places where a contour folds onto itself, in a tiny preview, are the exceptions).
    inside = cv2.distanceTransform(lines, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[lines > 0]
    assert np.percentile(inside, 90) == typical


def test_contours_sit_on_the_tissue_boundary_of_a_single_level_slide():
    img, truth = blob_slide(seed=5)
    reader = ArrayReader([img], spacing_um=0.5)  # one level: the preview must be reduced, then drawn
    res = tile_slide(reader, 0.5, config(preview={"downsample": 32}))
    mask_img, tiling_img = render_previews(reader, res)
    assert mask_img is not None and mask_img.shape == (96, 128, 3)
    small = cv2.resize(truth, (128, 96), interpolation=cv2.INTER_NEAREST)
    boundary = cv2.morphologyEx(small, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    distance = cv2.distanceTransform((boundary == 0).astype(np.uint8), cv2.DIST_L2, 3)
    green = coloured(mask_img, GREEN) > 0
    assert green.sum() > 100 and np.percentile(distance[green], 95) <= 2.0
    assert widest_line_px(coloured(mask_img, GREEN)) == 1
    # Tiles: 1-px black outlines at their level-0 position / 32.
    assert tiling_img is not None
    x, y, side = -(-int(res.x[0]) // 32), -(-int(res.y[0]) // 32), res.geometry.tile_size_lv0 // 32
    assert (tiling_img[y : y + side, x] == 0).all() and (tiling_img[y, x : x + side] == 0).all()


# ------------------------------------------------------------------------------------------ holes


@pytest.mark.parametrize(
    ("radius", "a_h", "drawn"),
    [
        (128, 2, False),  # ~0.9 reference tile (224 px at 0.5 um): below a_h = 2, not drawn
        (128, 0, True),
        (400, 2, True),  # ~10 reference tiles
    ],
)
def test_holes_below_a_h_reference_tiles_are_not_drawn(radius: int, a_h: int, drawn: bool):
    reader, _ = _hole_slide(radius)
    res = tile_slide(reader, 0.5, config(preview={"downsample": 32}, filter_params={"a_h": a_h}))
    assert len(res.contours.holes) == 1 and len(res.contours.holes[0]) == 1  # tiling keeps the hole either way
    mask_img, _ = render_previews(reader, res, tiling=False)
    assert mask_img is not None
    assert bool(coloured(mask_img, HOLE_COLOR).sum() > 10) == drawn
    assert coloured(mask_img, GREEN).sum() > 100


# --------------------------------------------------------------------------------- bounded reads


def test_a_large_single_level_is_read_in_blocks_with_the_same_pixels(monkeypatch):
    img, _ = blob_slide(2048, 1536, seed=2)
    reader = ArrayReader([img], spacing_um=0.5)
    whole = read_level_resized(reader, 0, (64, 48))
    assert np.array_equal(whole, cv2.resize(img, (64, 48), interpolation=cv2.INTER_AREA))
    monkeypatch.setattr(wsi_base, "WHOLE_READ_MAX_PX", 256 * 256)
    monkeypatch.setattr(wsi_base, "BLOCK_SIDE_PX", 256)
    reader.reads.clear()
    image, ds = preview_image(reader, 32)
    assert ds == (32.0, 32.0)
    assert len(reader.reads) == 48 and max(w * h for (_, _, _, w, h) in reader.reads) <= 256 * 256
    assert np.array_equal(image, whole)  # an integer factor: blocks give exactly the whole-level resize
    # A fractional factor: block edges round to whole level pixels, close to the one-piece resize.
    blocks = read_level_resized(reader, 0, (85, 64))
    assert np.abs(blocks.astype(int) - cv2.resize(img, (85, 64), interpolation=cv2.INTER_AREA)).mean() < 2


def test_read_level_resized_rejects_an_empty_size():
    reader = ArrayReader([np.zeros((8, 8, 3), np.uint8)])
    with pytest.raises(ValueError, match="at least 1 x 1"):
        read_level_resized(reader, 0, (0, 4))
