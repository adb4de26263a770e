"""The inference loop and the hierarchical subtile geometry (no real model needed)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from slide2vec_dagster.embedding.hierarchical import plan_subtiles, subtile_origins, subtile_read_plan
from slide2vec_dagster.embedding.loop import ReadPlan, read_tile, run_encoder
from slide2vec_dagster.wsi import open_slide

SLIDE = Path(__file__).resolve().parent / "data" / "synthetic-he-0.5mpp.tiff"


def mean_colour(batch: np.ndarray) -> torch.Tensor:
    """A transparent 'encoder' for loop tests: the mean RGB of each tile."""
    return torch.from_numpy(batch.reshape(len(batch), -1, 3).mean(axis=1))


@pytest.fixture(scope="module")
def reader():
    with open_slide(SLIDE, "openslide") as slide:
        yield slide


def _plan(n: int, read: int = 64, target: int = 64) -> ReadPlan:
    rng = np.random.default_rng(0)
    return ReadPlan(
        x=rng.integers(0, 4000, n), y=rng.integers(0, 3000, n), read_level=0, read_size_px=read, target_size_px=target
    )


@pytest.mark.parametrize(("batch_size", "workers", "prefetch"), [(1, 1, 1), (7, 2, 3), (64, 4, 2)])
def test_rows_follow_the_plan_whatever_the_parallelism(reader, batch_size, workers, prefetch):
    plan = _plan(37)
    features, stats = run_encoder(
        reader, plan, mean_colour, 3, batch_size=batch_size, num_workers=workers, prefetch_batches=prefetch
    )
    expected = torch.stack(
        [mean_colour(read_tile(reader, x, y, plan)[None])[0] for x, y in zip(plan.x, plan.y, strict=True)]
    )
    assert features.shape == (37, 3) and features.dtype == torch.float32
    torch.testing.assert_close(features, expected.float())
    assert stats.tiles == 37


def test_reads_are_area_resized_to_the_encoder_size(reader):
    plan = _plan(3, read=128, target=64)
    tile = read_tile(reader, plan.x[0], plan.y[0], plan)
    assert tile.shape == (64, 64, 3)
    raw = reader.read_region(int(plan.x[0]), int(plan.y[0]), 0, 128, 128)
    np.testing.assert_array_equal(tile, cv2.resize(raw, (64, 64), interpolation=cv2.INTER_AREA))


def test_zero_tiles_give_an_empty_matrix(reader):
    features, stats = run_encoder(reader, _plan(0), mean_colour, 3)
    assert features.shape == (0, 3) and stats.tiles == 0


def test_a_wrong_encoder_output_shape_is_an_error(reader):
    with pytest.raises(RuntimeError, match="expected"):
        run_encoder(reader, _plan(4), lambda batch: torch.zeros(len(batch), 5), 3)


def test_subtiles_are_row_major_inside_each_region():
    geometry = plan_subtiles(
        requested_spacing_um=0.5,
        requested_tile_size_px=224,
        region_tile_multiple=2,
        base_spacing_um=0.25,
        level_downsamples=(1.0, 4.0),
        tolerance=0.05,
    )
    assert geometry.tile_size_lv0 == 448 and geometry.tiles_per_region == 4
    xs, ys = subtile_origins(np.array([1000, 5000]), np.array([2000, 100]), geometry)
    assert list(zip(xs.tolist(), ys.tolist(), strict=True)) == [
        (1000, 2000), (1448, 2000), (1000, 2448), (1448, 2448),
        (5000, 100), (5448, 100), (5000, 548), (5448, 548),
    ]  # fmt: skip
    plan = subtile_read_plan(np.array([0]), np.array([0]), geometry)
    # 0.5 um/px is between level 0 (0.25) and level 1 (1.0) beyond tolerance: read 448 px at level 0.
    assert (plan.read_level, plan.read_size_px, plan.target_size_px) == (0, 448, 224)


def test_region_multiple_below_two_is_refused():
    with pytest.raises(ValueError, match=">= 2"):
        plan_subtiles(
            requested_spacing_um=0.5,
            requested_tile_size_px=224,
            region_tile_multiple=1,
            base_spacing_um=0.5,
            level_downsamples=(1.0,),
            tolerance=0.05,
        )
