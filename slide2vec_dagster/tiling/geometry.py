"""Tile geometry: level choice, read size, level-0 footprint and stride (ARTIFACTS.md section 4).

Every rounding here is Python's ``round`` (half to even) on the same float expressions hs2p 6.1
evaluates, because a one-pixel difference in ``tile_size_lv0`` or the stride changes the tile set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class SpacingTooFineError(ValueError):
    """The requested spacing is finer than the slide's level 0 beyond the tolerance (no upsampling)."""


@dataclass(frozen=True)
class LevelChoice:
    level: int
    spacing_um: float
    is_within_tolerance: bool


@dataclass(frozen=True)
class TileGeometry:
    """How tiles are read and laid out; field names match the sidecar's ``tiling`` section."""

    requested_spacing_um: float
    requested_tile_size_px: int
    tolerance: float
    overlap: float
    read_level: int
    read_spacing_um: float
    read_tile_size_px: int
    is_within_tolerance: bool
    tile_size_lv0: int
    read_step_px: int
    step_px_lv0: int

    @property
    def effective_tile_size_px(self) -> int:
        return self.read_tile_size_px

    @property
    def effective_spacing_um(self) -> float:
        # The true um/px of a tile once it is resized to the requested size.
        return self.read_spacing_um * self.read_tile_size_px / self.requested_tile_size_px


def level_spacings(base_spacing_um: float, level_downsamples: Sequence[float]) -> list[float]:
    return [float(base_spacing_um) * float(ds) for ds in level_downsamples]


def closest_level_for_downsample(requested_downsample: float, level_downsamples: Sequence[float]) -> int:
    """The level whose downsample is closest to ``requested_downsample`` (first one on ties)."""
    if not level_downsamples:
        raise ValueError("the slide reports no pyramid levels")
    diffs = [abs(float(ds) - float(requested_downsample)) for ds in level_downsamples]
    return diffs.index(min(diffs))


def choose_level(
    requested_spacing_um: float,
    base_spacing_um: float,
    level_downsamples: Sequence[float],
    tolerance: float,
) -> LevelChoice:
    """Closest level by spacing; outside tolerance, step to finer levels so a read is never upsampled."""
    spacings = level_spacings(base_spacing_um, level_downsamples)
    r = float(requested_spacing_um)
    diffs = [abs(s - r) for s in spacings]
    level = diffs.index(min(diffs))

    def within(s: float) -> bool:
        return abs(s - r) / r <= tolerance

    ok = within(spacings[level])
    if not ok:
        while level > 0 and spacings[level] > r:
            level -= 1
            ok = within(spacings[level])
    return LevelChoice(level=level, spacing_um=spacings[level], is_within_tolerance=ok)


def choose_image_level(
    requested_spacing_um: float,
    base_spacing_um: float,
    level_downsamples: Sequence[float],
    tolerance: float,
) -> LevelChoice:
    """:func:`choose_level` for image pixels: a spacing finer than level 0 beyond tolerance is an error."""
    choice = choose_level(requested_spacing_um, base_spacing_um, level_downsamples, tolerance)
    if requested_spacing_um < base_spacing_um and not choice.is_within_tolerance:
        finest_ok = base_spacing_um / (1.0 + tolerance)
        raise SpacingTooFineError(
            f"requested spacing {requested_spacing_um} um/px is finer than the slide's level 0 "
            f"({base_spacing_um} um/px) beyond tolerance {tolerance}, and tiles are never upsampled. "
            f"Set tiling.params.requested_spacing_um >= {finest_ok:.4g}, raise tiling.params.tolerance to at least "
            f"{abs(base_spacing_um - requested_spacing_um) / requested_spacing_um:.4g}, or check the slide's "
            "spacing_at_level_0 in the manifest"
        )
    return choice


def plan_tiles(
    *,
    requested_spacing_um: float,
    requested_tile_size_px: int,
    base_spacing_um: float,
    level_downsamples: Sequence[float],
    tolerance: float,
    overlap: float,
) -> TileGeometry:
    """Resolve the full tile geometry for one slide."""
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    choice = choose_image_level(requested_spacing_um, base_spacing_um, level_downsamples, tolerance)
    t = int(requested_tile_size_px)
    if choice.is_within_tolerance:
        read_px = t
    else:
        read_px = round(t * (float(requested_spacing_um) / float(choice.spacing_um)))
    tile_lv0 = round(read_px * choice.spacing_um / float(base_spacing_um))
    if read_px <= 0 or tile_lv0 <= 0:
        raise ValueError(f"tile geometry collapsed to zero pixels (read {read_px}, level-0 {tile_lv0})")
    # The stride is fixed at the read level, then projected to level 0, so grouped reads at the read
    # level land exactly on the tile origins.
    read_step = max(1, round(read_px * (1.0 - float(overlap))))
    step_lv0 = max(1, round(read_step * tile_lv0 / read_px))
    return TileGeometry(
        requested_spacing_um=float(requested_spacing_um),
        requested_tile_size_px=t,
        tolerance=float(tolerance),
        overlap=float(overlap),
        read_level=choice.level,
        read_spacing_um=choice.spacing_um,
        read_tile_size_px=int(read_px),
        is_within_tolerance=choice.is_within_tolerance,
        tile_size_lv0=int(tile_lv0),
        read_step_px=int(read_step),
        step_px_lv0=int(step_lv0),
    )


__all__ = [
    "LevelChoice",
    "SpacingTooFineError",
    "TileGeometry",
    "choose_image_level",
    "choose_level",
    "closest_level_for_downsample",
    "level_spacings",
    "plan_tiles",
]
