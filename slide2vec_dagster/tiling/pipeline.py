"""Tile one slide: segmentation (or a precomputed mask) -> contours -> grid + coverage -> QC.

Memory stays bounded by the segmentation level: coverage comes from the low-resolution mask, never
from level-0 pixels, and QC reads windows of tiles at ``qc_spacing_um``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slide2vec_dagster.wsi.modality import ModalityAssessment, assess_modality

from .geometry import TileGeometry, closest_level_for_downsample, plan_tiles
from .grid import Contours, find_contours, grid_tiles, min_contour_area
from .params import TilingConfig
from .preview import preview_image
from .qc import qc_keep
from .segmentation import mask_on_grid, read_level_image, segment_tissue


@dataclass
class TilingResult:
    """Selected tiles (row-major, unique) plus everything the sidecar and the previews need."""

    x: np.ndarray  # int64, level-0 left edges
    y: np.ndarray  # int64, level-0 top edges
    tissue_fractions: np.ndarray  # float32 in [0, 1]
    geometry: TileGeometry
    config: TilingConfig
    slide_dimensions: tuple[int, int]
    level_downsamples: tuple[float, ...]
    base_spacing_um: float
    tissue_method: str
    seg_level: int
    seg_spacing_um: float
    seg_downsample: int
    contours: Contours
    tissue_mask: np.ndarray  # segmentation-level uint8 mask (0 / non-zero)
    mask_path: str | None = None
    mask_level: int | None = None
    mask_spacing_um: float | None = None
    tissue_mask_tissue_value: int | None = None
    n_candidates_before_qc: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    modality: ModalityAssessment | None = None  # brightfield / fluorescence evidence of the slide

    @property
    def n_tiles(self) -> int:
        return int(self.x.shape[0])

    @property
    def tile_index(self) -> np.ndarray:
        return np.arange(self.n_tiles, dtype=np.int32)

    @property
    def min_tissue_fraction(self) -> float:
        return self.config.masks.tissue_fraction

    def coordinate_arrays(self) -> dict[str, np.ndarray]:
        """The four arrays of ``tiles/<sample_id>.coordinates.npz`` (ARTIFACTS.md section 3)."""
        return {
            "x": self.x.astype(np.int64, copy=False),
            "y": self.y.astype(np.int64, copy=False),
            "tile_index": self.tile_index,
            "tissue_fractions": self.tissue_fractions.astype(np.float32, copy=False),
        }

    def meta_sections(self) -> dict[str, dict[str, Any]]:
        """Sidecar sections ``slide``, ``tiling``, ``segmentation`` and ``filtering`` (JSON-ready)."""
        g, cfg = self.geometry, self.config
        seg, fp = cfg.seg_params, cfg.filter_params
        precomputed = self.tissue_method == "precomputed_mask"
        return {
            "slide": {
                "dimensions": [int(self.slide_dimensions[0]), int(self.slide_dimensions[1])],
                "base_spacing_um": float(self.base_spacing_um),
                "level_downsamples": [float(d) for d in self.level_downsamples],
            },
            "tiling": {
                "requested_tile_size_px": g.requested_tile_size_px,
                "requested_spacing_um": g.requested_spacing_um,
                "effective_tile_size_px": g.effective_tile_size_px,
                "effective_spacing_um": g.effective_spacing_um,
                "tile_size_lv0": g.tile_size_lv0,
                "n_tiles": self.n_tiles,
                "read_level": g.read_level,
                "read_spacing_um": g.read_spacing_um,
                "read_tile_size_px": g.read_tile_size_px,
                "step_px_lv0": g.step_px_lv0,
                "tolerance": g.tolerance,
                "overlap": g.overlap,
                "min_tissue_fraction": self.min_tissue_fraction,
                "is_within_tolerance": g.is_within_tolerance,
            },
            "segmentation": {
                "tissue_method": self.tissue_method,
                "requested_seg_downsample": int(seg.downsample),
                "seg_downsample": int(self.seg_downsample),
                "seg_level": int(self.seg_level),
                "seg_spacing_um": float(self.seg_spacing_um),
                # Thresholds are recorded only when segmentation produced the mask.
                "sthresh": None if precomputed else seg.sthresh,
                "sthresh_up": None if precomputed else seg.sthresh_up,
                "mthresh": None if precomputed else seg.mthresh,
                "close": None if precomputed else seg.close,
                "mask_path": self.mask_path,
                "ref_tile_size_px": int(fp.ref_tile_size or g.requested_tile_size_px),
                "tissue_mask_tissue_value": self.tissue_mask_tissue_value,
                "mask_level": self.mask_level,
                "mask_spacing_um": self.mask_spacing_um,
            },
            "filtering": {
                "a_t": fp.a_t,
                "a_h": fp.a_h,
                "filter_white": fp.filter_white,
                "filter_black": fp.filter_black,
                "white_threshold": fp.white_threshold,
                "black_threshold": fp.black_threshold,
                "fraction_threshold": fp.fraction_threshold,
                "filter_grayspace": fp.filter_grayspace,
                "grayspace_saturation_threshold": fp.grayspace_saturation_threshold,
                "grayspace_fraction_threshold": fp.grayspace_fraction_threshold,
                "filter_blur": fp.filter_blur,
                "blur_threshold": fp.blur_threshold,
                "qc_spacing_um": fp.qc_spacing_um,
            },
        }


def tile_slide(
    reader,
    base_spacing_um: float,
    config: TilingConfig,
    *,
    mask_reader=None,
    mask_spacing_um: float | None = None,
    workers: int = 2,
) -> TilingResult:
    """Select the tiles of one slide.

    ``reader`` is a :class:`~slide2vec_dagster.wsi.base.SlideReader`; ``base_spacing_um`` is the
    level-0 spacing already resolved by the caller (manifest override or file metadata).
    ``mask_reader`` opens a binary tissue mask that replaces segmentation; ``mask_spacing_um`` is
    its file spacing, used only as a cross-check (the mask's size relative to the slide decides).
    Zero tissue gives empty arrays. ``workers`` bounds the reader threads.
    """
    config.require_resolved()
    if not base_spacing_um or base_spacing_um <= 0:
        raise ValueError(f"base_spacing_um must be a positive number, got {base_spacing_um!r}")
    s0 = float(base_spacing_um)
    info = reader.info
    dims = (int(info.level_dimensions[0][0]), int(info.level_dimensions[0][1]))
    downsamples = tuple(float(d) for d in info.level_downsamples)
    params, seg, fp = config.params, config.seg_params, config.filter_params
    timings: dict[str, float] = {}
    t_start = time.perf_counter()

    geometry = plan_tiles(
        requested_spacing_um=float(params.requested_spacing_um),  # type: ignore[arg-type]
        requested_tile_size_px=params.tiling_tile_size_px,
        base_spacing_um=s0,
        level_downsamples=downsamples,
        tolerance=params.tolerance,
        overlap=params.overlap,
    )
    seg_level = closest_level_for_downsample(float(seg.downsample), downsamples)
    seg_spacing = s0 * downsamples[seg_level]
    seg_dims = tuple(int(v) for v in info.level_dimensions[seg_level])

    mask_path = mask_level = mask_spacing = tissue_value = None
    t0 = time.perf_counter()
    if mask_reader is not None:
        mapping = config.masks.pixel_mapping
        on_grid = mask_on_grid(
            mask_reader,
            slide_dimensions=dims,
            base_spacing_um=s0,
            target_spacing_um=seg_spacing,
            target_dimensions=seg_dims,  # type: ignore[arg-type]
            background_value=mapping.get("background", 0),
            tissue_value=mapping.get("tissue", 1),
            mask_file_spacing_um=mask_spacing_um,
        )
        timings["read_s"] = time.perf_counter() - t0
        tissue_mask = on_grid.tissue_mask
        method = "precomputed_mask"
        modality = assess_modality(preview_image(reader, seg.downsample)[0])
        mask_path = str(Path(mask_reader.path).resolve()) if getattr(mask_reader, "path", None) else None
        mask_level, mask_spacing, tissue_value = (
            on_grid.mask_level,
            on_grid.mask_spacing_um,
            on_grid.tissue_value,
        )
    else:
        image = read_level_image(reader, seg_level, workers=workers)
        timings["read_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        tissue_mask = segment_tissue(image, seg)
        # The image is in memory already: checking the stain costs nothing here.
        modality = assess_modality(image)
        del image
        timings["segment_s"] = time.perf_counter() - t1
        method = seg.method

    t2 = time.perf_counter()
    min_area = min_contour_area(
        a_t=fp.a_t,
        ref_tile_size_px=int(fp.ref_tile_size or params.requested_tile_size_px),  # type: ignore[arg-type]
        read_spacing_um=geometry.read_spacing_um,
        base_spacing_um=s0,
        slide_dimensions=dims,
        mask_shape=tissue_mask.shape[:2],
    )
    contours = find_contours(tissue_mask, slide_dimensions=dims, min_area=min_area)
    x, y, fractions = grid_tiles(
        contours,
        tissue_mask,
        slide_dimensions=dims,
        tile_size_lv0=geometry.tile_size_lv0,
        step_px_lv0=geometry.step_px_lv0,
        min_tissue_fraction=config.masks.tissue_fraction,
    )
    timings["grid_s"] = time.perf_counter() - t2
    n_candidates = int(x.shape[0])

    if fp.needs_pixel_qc and n_candidates:
        t3 = time.perf_counter()
        keep = qc_keep(
            reader,
            x,
            y,
            fp=fp,
            requested_tile_size_px=geometry.requested_tile_size_px,
            requested_spacing_um=geometry.requested_spacing_um,
            base_spacing_um=s0,
            tolerance=geometry.tolerance,
            workers=workers,
            timings=timings,
        )
        x, y, fractions = x[keep], y[keep], fractions[keep]
        timings["qc_s"] = time.perf_counter() - t3
    timings["total_s"] = time.perf_counter() - t_start

    return TilingResult(
        x=np.ascontiguousarray(x, dtype=np.int64),
        y=np.ascontiguousarray(y, dtype=np.int64),
        tissue_fractions=np.ascontiguousarray(fractions, dtype=np.float32),
        geometry=geometry,
        config=config,
        slide_dimensions=dims,
        level_downsamples=downsamples,
        base_spacing_um=s0,
        tissue_method=method,
        seg_level=seg_level,
        seg_spacing_um=seg_spacing,
        seg_downsample=max(1, round(seg_spacing / s0)),
        contours=contours,
        tissue_mask=tissue_mask,
        mask_path=mask_path,
        mask_level=mask_level,
        mask_spacing_um=mask_spacing,
        tissue_mask_tissue_value=tissue_value,
        n_candidates_before_qc=n_candidates,
        timings=timings,
        modality=modality,
    )


__all__ = ["TilingResult", "tile_slide"]
