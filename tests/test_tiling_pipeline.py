"""Segmentation, contours, grid/coverage, QC, previews and sidecar sections on synthetic slides."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from slide2vec_dagster.tiling import TilingConfig, draw_tiling_preview, render_previews, tile_slide
from slide2vec_dagster.tiling.grid import find_contours, grid_tiles, min_contour_area
from slide2vec_dagster.tiling.params import SegParams
from slide2vec_dagster.tiling.preview import HOLE_COLOR
from slide2vec_dagster.tiling.segmentation import segment_tissue

from .tiling_helpers import GLASS, ArrayReader, blob_slide, pyramid

# The sidecar keys ARTIFACTS.md section 4 requires of the sections tile_slide produces.
REQUIRED = {
    "slide": {"dimensions", "base_spacing_um", "level_downsamples"},
    "tiling": {
        "requested_tile_size_px", "requested_spacing_um", "effective_tile_size_px",
        "effective_spacing_um",
        "tile_size_lv0", "n_tiles", "read_level", "read_spacing_um", "read_tile_size_px", "step_px_lv0",
        "tolerance", "overlap", "min_tissue_fraction", "is_within_tolerance",
    },
    "segmentation": {
        "tissue_method", "requested_seg_downsample", "seg_downsample", "seg_level", "seg_spacing_um",
        "sthresh",
        "sthresh_up", "mthresh", "close", "mask_path", "ref_tile_size_px", "tissue_mask_tissue_value",
        "mask_level", "mask_spacing_um",
    },
    "filtering": {
        "a_t", "a_h", "filter_white", "filter_black", "white_threshold", "black_threshold",
        "fraction_threshold",
        "filter_grayspace", "grayspace_saturation_threshold", "grayspace_fraction_threshold", "filter_blur",
        "blur_threshold", "qc_spacing_um",
    },
}  # fmt: skip


def config(**over) -> TilingConfig:
    base: dict = {"params": {"requested_spacing_um": 0.5, "requested_tile_size_px": 224}}
    for key, value in over.items():
        base.setdefault(key, {}).update(value)
    return TilingConfig.model_validate(base)


@pytest.fixture(scope="module")
def slide() -> tuple[ArrayReader, np.ndarray]:
    img, truth = blob_slide(seed=1)
    return ArrayReader(pyramid(img, 6), spacing_um=0.5), truth


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return float((a & b).sum() / max(1, (a | b).sum()))


@pytest.mark.parametrize("method", ["hsv", "otsu", "threshold"])
def test_segmentation_iou_against_ground_truth(slide, method: str) -> None:
    reader, truth = slide
    level = 4  # downsample 16
    mask = segment_tissue(reader.read_level(level), SegParams(method=method))
    small = cv2.resize(truth, mask.shape[::-1], interpolation=cv2.INTER_NEAREST)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
    assert iou(mask, small) > 0.95


def test_blank_slide_segments_to_nothing_and_gives_empty_arrays() -> None:
    blank = np.empty((1024, 1024, 3), np.uint8)
    blank[:] = GLASS
    reader = ArrayReader(pyramid(blank, 4))
    res = tile_slide(reader, 0.5, config())
    assert res.n_tiles == 0
    assert res.x.dtype == np.int64 and res.y.dtype == np.int64 and res.tissue_fractions.dtype == np.float32
    assert res.meta_sections()["tiling"]["n_tiles"] == 0
    assert len(res.contours) == 0


def test_tiles_row_major_unique_and_above_threshold(slide) -> None:
    reader, truth = slide
    res = tile_slide(reader, 0.5, config())
    n = res.n_tiles
    assert n > 50
    assert np.array_equal(np.lexsort((res.x, res.y)), np.arange(n))  # sorted by y, then x
    assert len(set(zip(res.x.tolist(), res.y.tolist(), strict=True))) == n
    assert res.tissue_fractions.min() >= 0.1 and res.tissue_fractions.max() <= 1.0
    # Every tile really touches tissue in the ground truth, and interior tissue is covered.
    t = res.geometry.tile_size_lv0
    for x, y in zip(res.x[::7], res.y[::7], strict=True):
        assert truth[y : y + t, x : x + t].any()
    arrays = res.coordinate_arrays()
    assert np.array_equal(arrays["tile_index"], np.arange(n, dtype=np.int32))


def test_coverage_fraction_matches_ground_truth(slide) -> None:
    reader, truth = slide
    res = tile_slide(reader, 0.5, config(masks={"min_coverage": {"tissue": 0.0}}))
    t = res.geometry.tile_size_lv0
    errs = [
        abs(float(f) - truth[y : y + t, x : x + t].mean())
        for x, y, f in zip(res.x, res.y, res.tissue_fractions, strict=True)
        if x + t <= truth.shape[1] and y + t <= truth.shape[0]
    ]
    # The mask is at downsample 32 (the level closest to 64 here), so edges are quantised.
    assert np.median(errs) < 0.08
    full = [
        float(f)
        for x, y, f in zip(res.x, res.y, res.tissue_fractions, strict=True)
        if truth[y : y + t, x : x + t].size == t * t and truth[y : y + t, x : x + t].all()
    ]
    assert full and min(full) >= 0.9


def test_overlap_halves_the_stride(slide) -> None:
    reader, _ = slide
    plain = tile_slide(reader, 0.5, config())
    dense = tile_slide(reader, 0.5, config(params={"overlap": 0.5}))
    assert dense.geometry.step_px_lv0 == plain.geometry.tile_size_lv0 // 2
    assert dense.n_tiles > 3 * plain.n_tiles
    assert len(set(zip(dense.x.tolist(), dense.y.tolist(), strict=True))) == dense.n_tiles


def test_a_t_filter_drops_small_contours_and_holes_are_kept() -> None:
    mask = np.zeros((400, 600), np.uint8)
    cv2.rectangle(mask, (20, 20), (220, 220), 255, -1)  # big square with a hole
    cv2.rectangle(mask, (100, 100), (140, 140), 0, -1)
    cv2.rectangle(mask, (400, 300), (404, 304), 255, -1)  # 5x5 speck
    dims = (6000, 4000)  # mask is 1/10 of level 0
    small_area = min_contour_area(
        a_t=4,
        ref_tile_size_px=16,
        read_spacing_um=0.5,
        base_spacing_um=0.5,
        slide_dimensions=dims,
        mask_shape=(400, 600),
    )
    assert small_area == 4 * int(1.6 * 1.6)
    kept = find_contours(mask, slide_dimensions=dims, min_area=small_area)
    assert len(kept) == 2  # the speck (area 16) exceeds 4 ref tiles of 1.6 x 1.6 mask px
    big_area = min_contour_area(
        a_t=4,
        ref_tile_size_px=224,
        read_spacing_um=0.5,
        base_spacing_um=0.5,
        slide_dimensions=dims,
        mask_shape=(400, 600),
    )
    kept = find_contours(mask, slide_dimensions=dims, min_area=big_area)
    assert len(kept) == 1 and len(kept.holes[0]) == 1
    # Contours are in level-0 pixels.
    x, y, w, _ = cv2.boundingRect(kept.outer[0])
    assert (x, y) == (200, 200) and 1990 <= w <= 2010
    # No tile is kept inside the hole: coverage counts the contour's own tissue only.
    xs, ys, fr = grid_tiles(
        kept, mask, slide_dimensions=dims, tile_size_lv0=200, step_px_lv0=200, min_tissue_fraction=0.5
    )
    inside_hole = (xs >= 1000) & (xs + 200 <= 1410) & (ys >= 1000) & (ys + 200 <= 1410)
    assert xs.size > 0 and not inside_hole.any()
    assert np.all(fr >= 0.5)


def test_precomputed_mask_replaces_segmentation(slide) -> None:
    reader, truth = slide
    small = (truth[::16, ::16] * 255).astype(np.uint8)  # a 0/255 mask at 1/16 scale
    mask_reader = ArrayReader([np.repeat(small[:, :, None], 3, axis=2)], spacing_um=8.0)
    res = tile_slide(reader, 0.5, config(), mask_reader=mask_reader, mask_spacing_um=8.0)
    seg = res.meta_sections()["segmentation"]
    assert seg["tissue_method"] == "precomputed_mask"
    assert seg["tissue_mask_tissue_value"] == 255 and seg["sthresh"] is None
    assert seg["mask_level"] == 0 and seg["mask_spacing_um"] == pytest.approx(8.0)
    segmented = tile_slide(reader, 0.5, config())
    # Grids start at each contour's bounding box, so compare amounts, not positions.
    assert abs(res.n_tiles - segmented.n_tiles) <= 0.15 * segmented.n_tiles
    # A 0/1 mask gives the same tiles.
    ones = ArrayReader([np.repeat((small > 0).astype(np.uint8)[:, :, None], 3, axis=2)])
    res01 = tile_slide(reader, 0.5, config(), mask_reader=ones)
    assert np.array_equal(res01.x, res.x) and np.array_equal(res01.y, res.y)


def test_bad_masks_are_refused(slide) -> None:
    reader, truth = slide
    labels = truth[::16, ::16].astype(np.uint8) * 3
    with pytest.raises(ValueError, match="binary"):
        tile_slide(reader, 0.5, config(), mask_reader=ArrayReader([np.repeat(labels[:, :, None], 3, axis=2)]))
    half = np.zeros((50, 50, 3), np.uint8)
    with pytest.raises(ValueError, match="cover"):
        tile_slide(reader, 0.5, config(), mask_reader=ArrayReader([half]))
    good = np.repeat((truth[::16, ::16] > 0).astype(np.uint8)[:, :, None], 3, axis=2)
    with pytest.raises(ValueError, match="spacing"):
        tile_slide(reader, 0.5, config(), mask_reader=ArrayReader([good]), mask_spacing_um=2.0)


def test_qc_drops_white_and_black_tiles() -> None:
    img, truth = blob_slide(seed=2, blobs=2, hole=False)
    # Paint one blob's left half black and the other's white-ish but still "tissue" for the mask.
    w = truth.shape[1]
    black = (truth > 0) & (np.arange(w)[None, :] < w // 4)
    img[black] = (5, 5, 5)
    reader = ArrayReader(pyramid(img, 6))
    small = (truth[::16, ::16] * 255).astype(np.uint8)
    mask_reader = ArrayReader([np.repeat(small[:, :, None], 3, axis=2)])
    base = tile_slide(reader, 0.5, config(), mask_reader=mask_reader)
    qc = tile_slide(reader, 0.5, config(filter_params={"filter_black": True}), mask_reader=mask_reader)
    assert base.n_tiles > qc.n_tiles > 0
    t = base.geometry.tile_size_lv0
    dropped = set(zip(base.x.tolist(), base.y.tolist(), strict=True)) - set(
        zip(qc.x.tolist(), qc.y.tolist(), strict=True)
    )
    for x, y in dropped:
        tile = img[y : y + t, x : x + t]
        assert np.all(tile < 25, axis=-1).mean() > 0.9 * 0.9  # mostly black
    # QC on a tissue-only slide keeps what segmentation found; white tiles go with filter_white.
    white = tile_slide(reader, 0.5, config(filter_params={"filter_white": True}), mask_reader=mask_reader)
    assert white.n_tiles <= base.n_tiles
    # Reads happen at the QC level (2.0 um -> downsample 4), not at level 0.
    assert {lvl for (_, _, lvl, _, _) in reader.reads} >= {2}
    assert qc.meta_sections()["filtering"]["filter_black"] is True


def test_previews_shapes_and_colours(slide) -> None:
    reader, _ = slide
    cfg = config(preview={"downsample": 32}, filter_params={"a_h": 0})
    res = tile_slide(reader, 0.5, cfg)
    mask_img, tiling_img = render_previews(reader, res)
    level_dims = reader.info.level_dimensions[5]  # downsample 32
    assert mask_img is not None and mask_img.shape == (level_dims[1], level_dims[0], 3)
    assert mask_img.dtype == np.uint8
    green = np.all(mask_img == (157, 219, 129), axis=-1)
    orange = np.all(mask_img == HOLE_COLOR, axis=-1)
    assert green.sum() > 50 and orange.sum() > 5
    # Outlines only: the interior of the first blob keeps the slide's own pink pixels.
    assert tiling_img is not None and tiling_img.shape == mask_img.shape
    black = np.all(tiling_img == 0, axis=-1)
    assert black.sum() > res.n_tiles * 4
    # One tile -> exactly a 1-px rectangle outline of side ceil(tile/ds).
    canvas = np.full((100, 100, 3), 255, np.uint8)
    out = draw_tiling_preview(canvas, np.array([320]), np.array([640]), tile_size_lv0=448, level_downsample=32.0)
    ys, xs = np.nonzero(np.all(out == 0, axis=-1))
    assert (xs.min(), ys.min(), xs.max(), ys.max()) == (10, 20, 23, 33)
    assert len(xs) == 4 * 14 - 4
    empty = tile_slide(ArrayReader(pyramid(np.full((512, 512, 3), 245, np.uint8), 2)), 0.5, cfg)
    assert render_previews(reader, empty)[1] is None


def test_meta_sections_have_every_contract_key(slide) -> None:
    reader, _ = slide
    res = tile_slide(reader, 0.5, config())
    meta = res.meta_sections()
    for section, keys in REQUIRED.items():
        assert keys <= set(meta[section]), (section, keys - set(meta[section]))
    til, sl = meta["tiling"], meta["slide"]
    assert til["n_tiles"] == res.n_tiles and til["min_tissue_fraction"] == 0.1
    assert til["tile_size_lv0"] == round(til["read_tile_size_px"] * til["read_spacing_um"] / sl["base_spacing_um"])
    assert sl["dimensions"] == [4096, 3072] and sl["level_downsamples"][:2] == [1.0, 2.0]
    assert meta["segmentation"]["seg_level"] == 5  # downsample 32 is the closest to 64 here
    import json

    json.dumps(meta)  # JSON-ready


def test_parallel_strip_reads_only_on_exact_integer_levels() -> None:
    from slide2vec_dagster.tiling.segmentation import read_level_image

    img, _ = blob_slide(2048, 1536, seed=3)
    reader = ArrayReader([img])
    out = read_level_image(reader, 0, workers=2)
    assert np.array_equal(out, img) and len(reader.reads) == 3  # 512-row strips at level 0
    # Level 1 of an odd-sized slide: x and y ratios differ, so one single read.
    odd = ArrayReader([img[:1535, :2047], cv2.resize(img, (1024, 768))])
    read_level_image(odd, 1, workers=2)
    assert len(odd.reads) == 1
