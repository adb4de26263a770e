"""Hierarchical (region) embeddings: each region of ``m x m`` tiles, subtiles in row-major order.

Tiling ran at the region size, so the coordinates are region origins. Each region is cut into
``m * m`` subtiles of ``tile_size_lv0_sub`` level-0 pixels (ARTIFACTS.md section 6); subtile
``t = row * m + col`` sits at ``(x + col * s, y + row * s)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slide2vec_dagster.embedding.loop import ReadPlan
from slide2vec_dagster.tiling.geometry import TileGeometry, plan_tiles


@dataclass(frozen=True)
class SubtileGeometry:
    region_tile_multiple: int
    tile: TileGeometry  # geometry of one subtile (planned for the encoder's tile size)

    @property
    def tiles_per_region(self) -> int:
        return self.region_tile_multiple**2

    @property
    def tile_size_lv0(self) -> int:
        return self.tile.tile_size_lv0


def plan_subtiles(
    *,
    requested_spacing_um: float,
    requested_tile_size_px: int,
    region_tile_multiple: int,
    base_spacing_um: float,
    level_downsamples: tuple[float, ...],
    tolerance: float,
) -> SubtileGeometry:
    if region_tile_multiple < 2:
        raise ValueError(f"region_tile_multiple must be >= 2, got {region_tile_multiple}")
    tile = plan_tiles(
        requested_spacing_um=requested_spacing_um,
        requested_tile_size_px=requested_tile_size_px,
        base_spacing_um=base_spacing_um,
        level_downsamples=level_downsamples,
        tolerance=tolerance,
        overlap=0.0,
    )
    return SubtileGeometry(region_tile_multiple, tile)


def subtile_origins(
    region_x: np.ndarray, region_y: np.ndarray, geometry: SubtileGeometry
) -> tuple[np.ndarray, np.ndarray]:
    """Level-0 origins of every subtile, shape ``(R * m * m,)``, region-major then row-major."""
    m, step = geometry.region_tile_multiple, geometry.tile_size_lv0
    offsets = np.arange(m, dtype=np.int64) * step
    col_offsets = np.tile(offsets, m)  # t = row * m + col: the column varies fastest
    row_offsets = np.repeat(offsets, m)
    xs = (np.asarray(region_x, np.int64)[:, None] + col_offsets[None, :]).reshape(-1)
    ys = (np.asarray(region_y, np.int64)[:, None] + row_offsets[None, :]).reshape(-1)
    return xs, ys


def subtile_read_plan(region_x: np.ndarray, region_y: np.ndarray, geometry: SubtileGeometry) -> ReadPlan:
    xs, ys = subtile_origins(region_x, region_y, geometry)
    return ReadPlan(
        x=xs,
        y=ys,
        read_level=geometry.tile.read_level,
        read_size_px=geometry.tile.read_tile_size_px,
        target_size_px=geometry.tile.requested_tile_size_px,
    )
