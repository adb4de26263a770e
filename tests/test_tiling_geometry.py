"""Tile geometry (ARTIFACTS.md section 4) and the tiling config model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from slide2vec_dagster.tiling import SpacingTooFineError, TilingConfig, choose_level, plan_tiles
from slide2vec_dagster.tiling.geometry import closest_level_for_downsample
from slide2vec_dagster.tiling.params import UnsupportedConfigError

CASES = json.loads((Path(__file__).parent / "tiling_geometry_cases.json").read_text())


def test_worked_case_444() -> None:
    g = plan_tiles(
        requested_spacing_um=0.5,
        requested_tile_size_px=224,
        base_spacing_um=0.252,
        level_downsamples=[1.0],
        tolerance=0.07,
        overlap=0.0,
    )
    assert not g.is_within_tolerance
    assert (g.read_level, g.read_tile_size_px, g.tile_size_lv0, g.step_px_lv0) == (0, 444, 444, 444)
    assert g.effective_tile_size_px == 444
    assert g.effective_spacing_um == pytest.approx(0.252 * 444 / 224)


def test_within_tolerance_reads_requested_size_at_native_spacing() -> None:
    g = plan_tiles(
        requested_spacing_um=0.5,
        requested_tile_size_px=224,
        base_spacing_um=0.2527,
        level_downsamples=[1.0, 2.0003, 4.0011],
        tolerance=0.05,
        overlap=0.0,
    )
    assert g.is_within_tolerance and g.read_level == 1
    assert g.read_tile_size_px == 224  # not rescaled: the small spacing difference is accepted
    assert g.tile_size_lv0 == round(224 * 0.2527 * 2.0003 / 0.2527)


def test_never_upsample_steps_to_finer_level() -> None:
    # Closest level (ds 4 -> 1.0 um) is coarser than 0.7 um and out of tolerance: read level 1 (0.5 um).
    g = plan_tiles(
        requested_spacing_um=0.7,
        requested_tile_size_px=256,
        base_spacing_um=0.25,
        level_downsamples=[1.0, 2.0, 4.0],
        tolerance=0.05,
        overlap=0.0,
    )
    assert g.read_level == 1 and g.read_spacing_um == 0.5
    assert g.read_tile_size_px == round(256 * (0.7 / 0.5)) == 358
    assert g.read_spacing_um <= 0.7


def test_finer_than_level0_is_an_error_that_says_what_to_do() -> None:
    with pytest.raises(SpacingTooFineError, match="never upsampled") as exc:
        plan_tiles(
            requested_spacing_um=0.25,
            requested_tile_size_px=224,
            base_spacing_um=0.5,
            level_downsamples=[1.0, 4.0],
            tolerance=0.05,
            overlap=0.0,
        )
    assert "spacing_at_level_0" in str(exc.value) and "tolerance" in str(exc.value)
    # Within tolerance it is fine (read at level 0, no rescale).
    g = plan_tiles(
        requested_spacing_um=0.49,
        requested_tile_size_px=224,
        base_spacing_um=0.5,
        level_downsamples=[1.0],
        tolerance=0.05,
        overlap=0.0,
    )
    assert g.is_within_tolerance and g.read_tile_size_px == 224


def test_overlap_stride() -> None:
    g = plan_tiles(
        requested_spacing_um=0.5,
        requested_tile_size_px=224,
        base_spacing_um=0.25,
        level_downsamples=[1.0, 2.0],
        tolerance=0.05,
        overlap=0.25,
    )
    assert g.tile_size_lv0 == 448 and g.read_step_px == 168 and g.step_px_lv0 == 336


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_matches_hs2p_geometry(case: dict) -> None:
    """300 random cases whose expected values were computed with hs2p 6.1's geometry functions."""
    kwargs = dict(
        requested_spacing_um=case["r"],
        requested_tile_size_px=case["T"],
        base_spacing_um=case["s0"],
        level_downsamples=case["downsamples"],
        tolerance=case["tol"],
        overlap=case["overlap"],
    )
    if case["expect"] == "error":
        with pytest.raises(SpacingTooFineError):
            plan_tiles(**kwargs)
        return
    g = plan_tiles(**kwargs)
    e = case["expect"]
    assert g.read_level == e["read_level"]
    assert g.read_spacing_um == e["read_spacing_um"]
    assert g.is_within_tolerance == e["is_within_tolerance"]
    assert g.read_tile_size_px == e["read_tile_size_px"]
    assert g.tile_size_lv0 == e["tile_size_lv0"]
    assert g.step_px_lv0 == e["step_px_lv0"]


def test_level_choice_helpers() -> None:
    assert closest_level_for_downsample(64, [1.0, 4.0, 16.0, 32.0]) == 3
    assert closest_level_for_downsample(64, [1.0, 4.0, 16.0, 64.1, 63.9]) == 3  # first of the closest
    c = choose_level(2.0, 0.25, [1.0, 4.0, 16.0], 0.05)
    assert c.level == 1 and not c.is_within_tolerance  # 1.0 um: finer, never coarser than requested


def test_config_defaults_and_resolution() -> None:
    cfg = TilingConfig(params={"requested_spacing_um": 0.5, "requested_tile_size_px": 224})
    dumped = cfg.model_dump(mode="json")
    assert dumped["filter_params"]["ref_tile_size"] == 224  # slide2vec's interpolation, resolved
    assert dumped["seg_params"] == {
        "method": "hsv",
        "downsample": 64,
        "sthresh": 8,
        "sthresh_up": 255,
        "mthresh": 7,
        "close": 4,
    }
    assert dumped["params"]["tolerance"] == 0.05 and dumped["params"]["overlap"] == 0.0
    assert dumped["masks"]["min_coverage"]["tissue"] == 0.1
    assert dumped["preview"]["tissue_contour_color"] == [157, 219, 129]
    assert dumped["preview"]["downsample"] == 32
    assert TilingConfig.model_validate(dumped) == cfg  # round-trips


def test_config_typo_names_the_key() -> None:
    with pytest.raises(ValidationError, match="tolerence"):
        TilingConfig(params={"requested_spacing_um": 0.5, "requested_tile_size_px": 224, "tolerence": 0.1})
    with pytest.raises(ValidationError, match="mthresh"):
        TilingConfig(seg_params={"mthresh": 4})


def test_unresolved_and_annotation_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="requested_spacing_um"):
        TilingConfig().require_resolved()
    cfg = TilingConfig(
        params={"requested_spacing_um": 0.5, "requested_tile_size_px": 224},
        masks={"pixel_mapping": {"background": 0, "tumor": 2}, "min_coverage": {"tumor": 0.5}},
    )
    with pytest.raises(UnsupportedConfigError, match="not supported yet"):
        cfg.require_resolved()


def test_region_size_is_tiled_in_hierarchical_mode() -> None:
    cfg = TilingConfig(params={"requested_spacing_um": 0.5, "requested_tile_size_px": 224, "region_tile_multiple": 4})
    assert cfg.params.tiling_tile_size_px == 896
    with pytest.raises(ValidationError, match="must equal"):
        TilingConfig(
            params={
                "requested_spacing_um": 0.5,
                "requested_tile_size_px": 224,
                "region_tile_multiple": 4,
                "requested_region_size_px": 800,
            }
        )
