"""Reusing coordinates written by slide2vec 7.1.4 (real fixtures) or by us (``artifacts.foreign``)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from slide2vec_dagster.artifacts.coordinates import write_coordinates
from slide2vec_dagster.artifacts.foreign import (
    SOURCE_OURS,
    SOURCE_SLIDE2VEC,
    CoordinateReuseError,
    MissingCoordinatesError,
    ReusedCoordinates,
    geometry_mismatch,
    read_reusable_coordinates,
)

DATA = Path(__file__).parent / "data"
FIXTURES = DATA / "slide2vec-7.1.4"  # made by scripts/make_slide2vec_fixtures.py; see its ORIGINS.md
SAMPLES = {  # sample_id -> (slide in tests/data, spacing_at_level_0 override)
    "CMU-1-Small-Region": ("CMU-1-Small-Region.svs", None),
    "synthetic-he-0.5mpp": ("synthetic-he-0.5mpp.tiff", None),
    "tcga-cr-7395-01a-01-ts1": ("tcga-cr-7395-01a-01-ts1.svs", 0.5),
}
CMU = "CMU-1-Small-Region"


def fixture_rows() -> dict[str, dict[str, str]]:
    with (FIXTURES / "process_list.csv").open(newline="", encoding="utf-8") as handle:
        return {row["sample_id"]: row for row in csv.DictReader(handle)}


def copy_pair(sample_id: str, folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix in (".coordinates.npz", ".coordinates.meta.json"):
        paths.append(
            Path(shutil.copyfile(FIXTURES / "tiles" / f"{sample_id}{suffix}", folder / f"{sample_id}{suffix}"))
        )
    return paths[0], paths[1]


def edit_meta(meta_path: Path, change: Any) -> None:
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    change(meta)
    meta_path.write_text(json.dumps(meta), encoding="utf-8")


def rewrite_npz(npz_path: Path, **replace: np.ndarray) -> None:
    with np.load(npz_path) as archive:
        arrays = {key: archive[key] for key in archive.files}
    arrays.update(replace)
    with npz_path.open("wb") as handle:
        np.savez(handle, **arrays)


# --------------------------------------------------------------------------- the real slide2vec 7.1.4 files
@pytest.mark.parametrize("sample_id", sorted(SAMPLES))
@pytest.mark.parametrize("where", [".", "tiles"])
def test_slide2vec_files_read_in_their_own_row_order(sample_id: str, where: str) -> None:
    reused = read_reusable_coordinates(FIXTURES / where, sample_id)
    assert reused.source_format == SOURCE_SLIDE2VEC
    assert reused.tile_order == "x_then_y"
    assert reused.npz_path == FIXTURES / "tiles" / f"{sample_id}.coordinates.npz"
    with np.load(reused.npz_path) as raw:
        for key in ("x", "y", "tile_index", "tissue_fractions"):
            got = getattr(reused, key)
            assert got.dtype == raw[key].dtype
            assert np.array_equal(got, raw[key])  # same rows, same order: nothing re-sorted
    assert np.array_equal(np.lexsort((reused.y, reused.x)), np.arange(reused.n_tiles))  # sorted by x, then y
    row = fixture_rows()[sample_id]
    assert row["tiling_status"] == "success"
    assert reused.n_tiles == int(row["num_tiles"]) > 0


def test_slide2vec_order_is_not_ours() -> None:
    # Guards the test above: on CMU the two orders differ, so a reader that re-sorted would be caught.
    reused = read_reusable_coordinates(FIXTURES, CMU)
    assert not np.array_equal(np.lexsort((reused.x, reused.y)), np.arange(reused.n_tiles))


def test_slide2vec_geometry_is_normalised() -> None:
    reused = read_reusable_coordinates(FIXTURES, CMU)
    assert reused.geometry == {
        "read_level": 0,
        "read_tile_size_px": 224,
        "read_spacing_um": 0.499,
        "tile_size_lv0": 224,
        "step_px_lv0": 224,
        "requested_tile_size_px": 224,
        "requested_spacing_um": 0.5,
        "tolerance": 0.05,
        "overlap": 0.0,
        "min_tissue_fraction": 0.1,
        "base_spacing_um": 0.499,
        "level_downsamples": [1.0],
        "dimensions": (2220, 2967),
        "backend": "openslide",
    }
    tcga = read_reusable_coordinates(FIXTURES, "tcga-cr-7395-01a-01-ts1")
    assert tcga.geometry["base_spacing_um"] == 0.5 and tcga.meta["provenance"]["spacing_at_level_0"] == 0.5
    assert len(tcga.geometry["level_downsamples"]) == 2


def test_slide2vec_layout_differences_are_the_known_ones() -> None:
    # What the reader has to absorb; a regenerated fixture from another slide2vec version shows up here.
    meta = json.loads((FIXTURES / "tiles" / f"{CMU}.coordinates.meta.json").read_text(encoding="utf-8"))
    assert meta["artifact"]["coordinate_space"] == "level0_px" and meta["artifact"]["tile_order"] == "x_then_y"
    assert not {"effective_spacing_um", "effective_tile_size_px"} & set(meta["tiling"])
    assert {"sam2_checkpoint_path", "sam2_config_path"} <= set(meta["segmentation"])
    for kind in ("mask", "tiling"):
        assert (FIXTURES / "preview" / kind / "synthetic-he-0.5mpp.jpg").read_bytes()[:2] == b"\xff\xd8"  # JPEG
    columns = set(next(iter(fixture_rows().values())))
    assert {"tiling_status", "num_tiles", "coordinates_meta_path", "backend"} <= columns
    assert "status" not in columns


def test_reader_does_not_need_the_recorded_image_path(tmp_path: Path) -> None:
    _, meta_path = copy_pair(CMU, tmp_path)
    edit_meta(meta_path, lambda m: m["provenance"].update(image_path="/elsewhere/lab-disk/CMU-1-Small-Region.svs"))
    reused = read_reusable_coordinates(tmp_path, CMU)
    assert reused.n_tiles == 67 and reused.meta["provenance"]["image_path"].startswith("/elsewhere/")


@pytest.mark.parametrize("sample_id", sorted(SAMPLES))
def test_slide2vec_tile_set_equals_our_tiler(sample_id: str) -> None:
    # Both follow hs2p 6.1, so with the same parameters and backend the tiles must be the same set.
    pytest.importorskip("openslide")
    from slide2vec_dagster.tiling import TilingConfig, tile_slide
    from slide2vec_dagster.wsi import open_slide

    reused = read_reusable_coordinates(FIXTURES, sample_id)
    g = reused.geometry
    config = TilingConfig.model_validate(
        {
            "backend": g["backend"],
            "params": {
                "requested_spacing_um": g["requested_spacing_um"],
                "requested_tile_size_px": g["requested_tile_size_px"],
                "tolerance": g["tolerance"],
                "overlap": g["overlap"],
            },
            "masks": {"min_coverage": {"tissue": g["min_tissue_fraction"]}},
        }
    )
    name, spacing = SAMPLES[sample_id]
    with open_slide(DATA / name, g["backend"], spacing) as reader:
        ours = tile_slide(reader, reader.base_spacing_um, config)
    theirs = dict(zip(zip(reused.x.tolist(), reused.y.tolist(), strict=True), reused.tissue_fractions, strict=True))
    mine = dict(zip(zip(ours.x.tolist(), ours.y.tolist(), strict=True), ours.tissue_fractions, strict=True))
    assert set(mine) == set(theirs)
    assert all(abs(float(mine[key]) - float(theirs[key])) < 1e-6 for key in mine)
    assert (ours.geometry.tile_size_lv0, ours.geometry.read_level) == (g["tile_size_lv0"], g["read_level"])


# ------------------------------------------------------------------------------------------- our own layout
@pytest.fixture(scope="module")
def our_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("openslide")
    from slide2vec_dagster.config import PipelineConfig
    from slide2vec_dagster.layout import OutputLayout
    from slide2vec_dagster.manifest import SlideEntry
    from slide2vec_dagster.slide_tiling import tile_sample

    out = tmp_path_factory.mktemp("ours")
    pipeline = PipelineConfig.model_validate(
        {
            "tiling": {
                "backend": "openslide",
                "params": {"requested_spacing_um": 0.5, "requested_tile_size_px": 224},
                "preview": {"save_mask_preview": False, "save_tiling_preview": False},
            }
        }
    )
    entry = SlideEntry(CMU, DATA / "CMU-1-Small-Region.svs", None, None, None, out / "manifest.csv", 1)
    layout = OutputLayout(out)
    outcome = tile_sample(entry, pipeline, layout, reuse_existing=False)
    write_coordinates(layout.coordinates_npz(CMU), layout.coordinates_meta(CMU), outcome.coordinates, outcome.meta)
    return out


@pytest.mark.parametrize("where", [".", "tiles"])
def test_our_layout_reads_back(our_output: Path, where: str) -> None:
    reused = read_reusable_coordinates(our_output / where, CMU)
    assert reused.source_format == SOURCE_OURS and reused.tile_order == "row_major"
    with np.load(our_output / "tiles" / f"{CMU}.coordinates.npz") as raw:
        assert np.array_equal(reused.x, raw["x"]) and np.array_equal(reused.y, raw["y"])
    assert np.array_equal(np.lexsort((reused.x, reused.y)), np.arange(reused.n_tiles))  # y, then x
    tiling = reused.meta["tiling"]
    for key in ("read_level", "read_tile_size_px", "tile_size_lv0", "requested_spacing_um", "tolerance", "overlap"):
        assert reused.geometry[key] == tiling[key]
    assert reused.geometry["dimensions"] == (2220, 2967)


def test_our_layout_and_slide2vec_agree_on_cmu(our_output: Path) -> None:
    ours = read_reusable_coordinates(our_output, CMU)
    theirs = read_reusable_coordinates(FIXTURES, CMU)
    assert set(zip(ours.x.tolist(), ours.y.tolist(), strict=True)) == set(
        zip(theirs.x.tolist(), theirs.y.tolist(), strict=True)
    )
    shared = ("read_level", "read_tile_size_px", "read_spacing_um", "tile_size_lv0", "base_spacing_um", "dimensions")
    assert {k: ours.geometry[k] for k in shared} == {k: theirs.geometry[k] for k in shared}


# ---------------------------------------------------------------------------------------------- mismatches
@pytest.fixture
def cmu() -> ReusedCoordinates:
    return read_reusable_coordinates(FIXTURES, CMU)


def test_geometry_mismatch_empty_when_parameters_agree(cmu: ReusedCoordinates) -> None:
    assert geometry_mismatch(cmu, 0.5, 224, 0.05, 0.0) == []
    assert geometry_mismatch(cmu, 0.5 + 1e-12, 224, 0.05, 0.0) == []  # float noise is not a mismatch


@pytest.mark.parametrize(
    ("args", "key"),
    [
        ((1.0, 224, 0.05, 0.0), "requested_spacing_um"),
        ((0.5, 256, 0.05, 0.0), "requested_tile_size_px"),
        ((0.5, 224, 0.07, 0.0), "tolerance"),
        ((0.5, 224, 0.05, 0.25), "overlap"),
    ],
)
def test_geometry_mismatch_names_each_difference(cmu: ReusedCoordinates, args: tuple, key: str) -> None:
    problems = geometry_mismatch(cmu, *args)
    assert len(problems) == 1 and problems[0].startswith(f"{key}:")
    assert CMU in problems[0] and str(cmu.meta_path) in problems[0]


def test_geometry_mismatch_lists_all_differences(cmu: ReusedCoordinates) -> None:
    assert len(geometry_mismatch(cmu, 1.0, 256, 0.07, 0.25)) == 4


# -------------------------------------------------------------------------------------------------- errors
def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(MissingCoordinatesError, match="not a directory"):
        read_reusable_coordinates(tmp_path / "nowhere", CMU)


def test_missing_sample_names_both_places(tmp_path: Path) -> None:
    with pytest.raises(MissingCoordinatesError, match=r"no coordinates for sample 'other'.*tiles/ folder"):
        read_reusable_coordinates(FIXTURES, "other")


def test_payload_without_sidecar(tmp_path: Path) -> None:
    _, meta_path = copy_pair(CMU, tmp_path)
    meta_path.unlink()
    with pytest.raises(MissingCoordinatesError, match="has no sidecar"):
        read_reusable_coordinates(tmp_path, CMU)


def test_sidecar_without_payload(tmp_path: Path) -> None:
    npz_path, _ = copy_pair(CMU, tmp_path)
    npz_path.unlink()
    with pytest.raises(MissingCoordinatesError, match=r"describes 67 tiles but .*coordinates\.npz is missing"):
        read_reusable_coordinates(tmp_path, CMU)


def test_zero_tile_slide2vec_sidecar_has_no_payload(tmp_path: Path) -> None:
    # hs2p 6.1 writes only the sidecar for a slide without tiles.
    npz_path, meta_path = copy_pair(CMU, tmp_path)
    npz_path.unlink()
    edit_meta(meta_path, lambda m: m["tiling"].update(n_tiles=0))
    reused = read_reusable_coordinates(tmp_path, CMU)
    assert reused.n_tiles == 0 and reused.npz_path is None
    assert (
        reused.x.dtype == np.int64
        and reused.tile_index.dtype == np.int32
        and reused.tissue_fractions.dtype == np.float32
    )


def test_truncated_payload(tmp_path: Path) -> None:
    npz_path, _ = copy_pair(CMU, tmp_path)
    npz_path.write_bytes(npz_path.read_bytes()[: npz_path.stat().st_size // 2])
    with pytest.raises(CoordinateReuseError, match=r"CMU-1-Small-Region\.coordinates\.npz: unreadable payload"):
        read_reusable_coordinates(tmp_path, CMU)


def test_truncated_sidecar(tmp_path: Path) -> None:
    _, meta_path = copy_pair(CMU, tmp_path)
    meta_path.write_text(meta_path.read_text(encoding="utf-8")[:200], encoding="utf-8")
    with pytest.raises(CoordinateReuseError, match=r"coordinates\.meta\.json: unreadable sidecar"):
        read_reusable_coordinates(tmp_path, CMU)


def test_wrong_dtype(tmp_path: Path) -> None:
    npz_path, _ = copy_pair(CMU, tmp_path)
    with np.load(npz_path) as archive:
        x = archive["x"].astype(np.float64)
    rewrite_npz(npz_path, x=x)
    with pytest.raises(CoordinateReuseError, match="x has dtype float64, expected int64"):
        read_reusable_coordinates(tmp_path, CMU)


def test_length_disagrees_with_sidecar(tmp_path: Path) -> None:
    _, meta_path = copy_pair(CMU, tmp_path)
    edit_meta(meta_path, lambda m: m["tiling"].update(n_tiles=66))
    with pytest.raises(CoordinateReuseError, match="n_tiles disagrees"):
        read_reusable_coordinates(tmp_path, CMU)


def test_arrays_of_different_lengths(tmp_path: Path) -> None:
    npz_path, _ = copy_pair(CMU, tmp_path)
    with np.load(npz_path) as archive:
        fractions = archive["tissue_fractions"][:-1]
    rewrite_npz(npz_path, tissue_fractions=fractions)
    with pytest.raises(CoordinateReuseError, match=r"tissue_fractions has shape \(66,\), expected \(67,\)"):
        read_reusable_coordinates(tmp_path, CMU)


def test_rows_contradicting_the_declared_order(tmp_path: Path) -> None:
    npz_path, _ = copy_pair(CMU, tmp_path)
    with np.load(npz_path) as archive:
        x, y = archive["x"], archive["y"]
    order = np.lexsort((x, y))  # row-major rows under an x_then_y label
    rewrite_npz(npz_path, x=x[order], y=y[order])
    with pytest.raises(CoordinateReuseError, match="not in the declared tile_order 'x_then_y'"):
        read_reusable_coordinates(tmp_path, CMU)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m["artifact"].update(coordinate_space="level2_px"), "'level2_px'/'x_then_y' is not a known format"),
        (lambda m: m["provenance"].update(sample_id="someone-else"), "written for sample 'someone-else'"),
        (lambda m: m.pop("slide"), r"lacks section\(s\) \['slide'\]"),
        (lambda m: m["tiling"].update(read_level=3), "tiling.read_level is 3, expected a level of the slide"),
        (lambda m: m["artifact"].update(annotation="tumor"), "annotation 'tumor'"),
    ],
)
def test_inconsistent_sidecar(tmp_path: Path, change: Any, message: str) -> None:
    _, meta_path = copy_pair(CMU, tmp_path)
    edit_meta(meta_path, change)
    with pytest.raises(CoordinateReuseError, match=message):
        read_reusable_coordinates(tmp_path, CMU)


def test_files_in_both_places_are_ambiguous(tmp_path: Path) -> None:
    copy_pair(CMU, tmp_path)
    copy_pair(CMU, tmp_path / "tiles")
    with pytest.raises(CoordinateReuseError, match="exist both in"):
        read_reusable_coordinates(tmp_path, CMU)


@pytest.mark.parametrize("sample_id", ["../CMU-1-Small-Region", "", "a/b"])
def test_unsafe_sample_id(sample_id: str) -> None:
    with pytest.raises(ValueError, match="cannot name a coordinates file"):
        read_reusable_coordinates(FIXTURES, sample_id)
