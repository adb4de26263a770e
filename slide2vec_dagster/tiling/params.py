"""Tiling configuration in slide2vec's vocabulary, with slide2vec's defaults.

The platform config embeds :class:`TilingConfig` as ``pipelines.<name>.tiling``. Every model forbids
unknown keys so a typo is an error that names the key, and ``model_dump(mode="json")`` gives the
fully resolved block (``filter_params.ref_tile_size`` is filled from ``params.requested_tile_size_px``
the way slide2vec's ``${tiling.params.requested_tile_size_px}`` interpolation does).

Defaults: slide2vec 7.1's ``configs/default.yaml`` (tiling section) and hs2p 6.1's config models,
except where ARTIFACTS.md fixes a value (``masks.min_coverage.tissue`` 0.1).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Backend = Literal["auto", "cucim", "openslide", "tifffile"]
SegMethod = Literal["hsv", "otsu", "threshold"]

DEFAULT_PIXEL_MAPPING: dict[str, int] = {"background": 0, "tissue": 1}
DEFAULT_MIN_COVERAGE: dict[str, float | None] = {"background": None, "tissue": 0.1}
DEFAULT_COLORS: dict[str, list[int] | None] = {"background": None, "tissue": [157, 219, 129]}


class UnsupportedConfigError(ValueError):
    """A valid slide2vec setting that this platform does not implement yet (refused, never ignored)."""


class _Strict(BaseModel):
    # NaN / Infinity pass ``gt=0`` style bounds in pydantic unless refused here.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class TilingParams(_Strict):
    """Tile geometry (slide2vec ``tiling.params``)."""

    # Filled from the model preset in slide2vec; the pipeline must set them before tiling.
    requested_spacing_um: float | None = Field(default=None, gt=0, le=100)
    requested_tile_size_px: int | None = Field(default=None, ge=8, le=8192)
    tolerance: float = Field(default=0.05, ge=0, le=1)
    # Above 0.9 the stride is a few pixels and a slide yields millions of near-identical tiles.
    overlap: float = Field(default=0.0, ge=0, le=0.9)
    requested_region_size_px: int | None = Field(default=None, ge=16, le=32768)
    region_tile_multiple: int | None = Field(default=None, ge=2, le=64)

    @model_validator(mode="after")
    def _region_consistent(self) -> TilingParams:
        t, m, r = self.requested_tile_size_px, self.region_tile_multiple, self.requested_region_size_px
        if m is not None and t is not None and r is not None and r != t * m:
            raise ValueError(
                f"requested_region_size_px ({r}) must equal requested_tile_size_px * region_tile_multiple "
                f"({t} * {m} = {t * m}); set only one of them"
            )
        if r is not None and m is None and t is not None and r % t != 0:
            raise ValueError(f"requested_region_size_px ({r}) must be a multiple of requested_tile_size_px ({t})")
        return self

    @property
    def is_hierarchical(self) -> bool:
        return self.region_tile_multiple is not None or self.requested_region_size_px is not None

    @property
    def tiling_tile_size_px(self) -> int:
        """The size tiling lays its grid with: the region size in hierarchical mode (ARTIFACTS.md 6)."""
        t = self.requested_tile_size_px
        if t is None:
            raise ValueError(
                "tiling.params.requested_tile_size_px is not set: set it in the pipeline's tiling block "
                "or use a model preset that provides it"
            )
        if self.requested_region_size_px is not None:
            return int(self.requested_region_size_px)
        if self.region_tile_multiple is not None:
            return int(t * self.region_tile_multiple)
        return int(t)


class SegParams(_Strict):
    """Tissue segmentation (slide2vec ``tiling.seg_params``)."""

    method: SegMethod = "hsv"
    downsample: int = Field(default=64, ge=1, le=4096)
    sthresh: int = Field(default=8, ge=0, le=255)
    sthresh_up: int = Field(default=255, ge=0, le=255)
    mthresh: int = Field(default=7, ge=1, le=255)
    close: int = Field(default=4, ge=0, le=255)

    @field_validator("mthresh")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 != 1:
            raise ValueError(f"mthresh is a median filter size and must be a positive odd integer, got {v}")
        return v


class FilterParams(_Strict):
    """Contour and tile filtering (slide2vec ``tiling.filter_params``)."""

    # None resolves to params.requested_tile_size_px (slide2vec's interpolation).
    ref_tile_size: int | None = Field(default=None, ge=8, le=8192)
    a_t: int = Field(default=4, ge=0, le=1_000_000)
    a_h: int = Field(default=2, ge=0, le=1_000_000)
    filter_white: bool = False
    filter_black: bool = False
    white_threshold: int = Field(default=220, ge=0, le=255)
    black_threshold: int = Field(default=25, ge=0, le=255)
    fraction_threshold: float = Field(default=0.9, ge=0, le=1)
    filter_grayspace: bool = False
    grayspace_saturation_threshold: float = Field(default=0.05, ge=0, le=1)
    grayspace_fraction_threshold: float = Field(default=0.6, ge=0, le=1)
    filter_blur: bool = False
    blur_threshold: float = Field(default=50.0, ge=0, le=1e6)
    qc_spacing_um: float = Field(default=2.0, gt=0, le=100)

    @property
    def needs_pixel_qc(self) -> bool:
        return self.filter_white or self.filter_black or self.filter_grayspace or self.filter_blur


class PreviewParams(_Strict):
    """Preview rendering (slide2vec ``tiling.preview``)."""

    save_mask_preview: bool = True
    save_tiling_preview: bool = True
    downsample: int = Field(default=32, ge=1, le=4096)
    tissue_contour_color: tuple[int, int, int] = (157, 219, 129)
    mask_overlay_alpha: float = Field(default=0.5, ge=0, le=1)

    @field_validator("tissue_contour_color")
    @classmethod
    def _rgb(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(c < 0 or c > 255 for c in v):
            raise ValueError(f"tissue_contour_color must be RGB values in [0, 255], got {list(v)}")
        return v


class MaskParams(_Strict):
    """Mask vocabulary (slide2vec ``tiling.masks``). Only binary tissue tiling is supported so far."""

    output_mode: Literal["per_annotation", "merged"] = "per_annotation"
    strategy: Literal["joint", "independent"] = "joint"
    pixel_mapping: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_PIXEL_MAPPING))
    colors: dict[str, tuple[int, int, int] | None] = Field(
        default_factory=lambda: {k: None if v is None else tuple(v) for k, v in DEFAULT_COLORS.items()}
    )
    min_coverage: dict[str, float | None] = Field(default_factory=lambda: dict(DEFAULT_MIN_COVERAGE))

    @model_validator(mode="after")
    def _check(self) -> MaskParams:
        seen: dict[int, str] = {}
        for name, value in self.pixel_mapping.items():
            if name in ("", ".", "..", "merged") or "/" in name or "\\" in name or name != name.strip():
                raise ValueError(f"masks.pixel_mapping label {name!r} is not a safe class name")
            if not 0 <= value <= 255:
                raise ValueError(f"masks.pixel_mapping[{name!r}]={value} is outside [0, 255]")
            if value in seen:
                raise ValueError(f"masks.pixel_mapping: {name!r} and {seen[value]!r} both map to {value}")
            seen[value] = name
        if "colors" not in self.model_fields_set:
            # Default colours follow a user's own vocabulary instead of failing on its labels.
            self.__dict__["colors"] = {k: self.colors.get(k) for k in self.pixel_mapping}
        for key in ("min_coverage", "colors"):
            unknown = sorted(set(getattr(self, key)) - set(self.pixel_mapping))
            if unknown:
                raise ValueError(f"masks.{key} names labels missing from pixel_mapping: {unknown}")
        for name, cov in self.min_coverage.items():
            if cov is not None and not 0.0 <= cov <= 1.0:
                raise ValueError(f"masks.min_coverage[{name!r}]={cov} is outside [0, 1]")
        return self

    @property
    def sampled(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.min_coverage.items() if v is not None}

    @property
    def is_binary_tissue(self) -> bool:
        """The shipped vocabulary sampling only ``tissue``: plain tissue tiling, not annotation mode."""
        return not self.sampled or (self.pixel_mapping == DEFAULT_PIXEL_MAPPING and set(self.sampled) == {"tissue"})

    @property
    def tissue_fraction(self) -> float:
        value = self.min_coverage.get("tissue")
        if value is None:
            raise ValueError("tiling.masks.min_coverage.tissue is required for tissue tiling (e.g. 0.1)")
        return float(value)

    def require_binary_tissue(self) -> None:
        if not self.is_binary_tissue:
            raise UnsupportedConfigError(
                "annotation-aware sampling (tiling.masks other than pixel_mapping {background: 0, tissue: 1} "
                "sampling only 'tissue') is not supported yet; use the default masks block, and a binary "
                "tissue mask whose tissue value is 1 (or 255)"
            )


class TilingConfig(_Strict):
    """slide2vec's ``tiling`` block, restricted to what tissue tiling uses."""

    backend: Backend = "auto"
    mask_backend: Backend = "auto"
    read_coordinates_from: str | None = None
    params: TilingParams = Field(default_factory=TilingParams)
    seg_params: SegParams = Field(default_factory=SegParams)
    filter_params: FilterParams = Field(default_factory=FilterParams)
    preview: PreviewParams = Field(default_factory=PreviewParams)
    masks: MaskParams = Field(default_factory=MaskParams)

    @model_validator(mode="after")
    def _resolve_ref_tile_size(self) -> TilingConfig:
        # slide2vec: ref_tile_size: ${tiling.params.requested_tile_size_px}
        if self.filter_params.ref_tile_size is None and self.params.requested_tile_size_px is not None:
            self.filter_params.ref_tile_size = int(self.params.requested_tile_size_px)
        return self

    def require_resolved(self) -> None:
        """Raise a clear error when the geometry the tiling needs is still unset."""
        missing = [
            f"tiling.params.{k}"
            for k in ("requested_spacing_um", "requested_tile_size_px")
            if getattr(self.params, k) is None
        ]
        if missing:
            raise ValueError(
                f"{', '.join(missing)} not set: set them in the pipeline's tiling block or use a model "
                "preset that provides them"
            )
        self.masks.require_binary_tissue()


__all__ = [
    "FilterParams",
    "MaskParams",
    "PreviewParams",
    "SegParams",
    "TilingConfig",
    "TilingParams",
    "UnsupportedConfigError",
]
