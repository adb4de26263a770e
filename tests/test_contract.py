"""The contract checker (tests/contract.py) itself: it passes a valid output_dir and catches broken ones."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from slide2vec_dagster.artifacts import atomic, process_list
from slide2vec_dagster.artifacts.config_file import write_config_yaml
from slide2vec_dagster.artifacts.coordinates import Coordinates, write_coordinates
from slide2vec_dagster.artifacts.previews import write_png
from slide2vec_dagster.config import PipelineConfig
from slide2vec_dagster.layout import OutputLayout
from tests.contract import KINDS, check_output_dir

TILING_KINDS = ("tiles", "process_list", "config", "mask_preview", "tiling_preview")


def coordinates_meta(sample_id: str, n_tiles: int, image_path: str, **tiling: object) -> dict:
    """A sidecar that honours section 4: a 0.25 µm/px slide tiled at 0.5 µm/px, 224 px.

    No level is within tolerance of 0.5 (0.25, 1.0, 4.0), so it reads level 0 with 448 px tiles.
    """
    block = {
        "requested_tile_size_px": 224,
        "requested_spacing_um": 0.5,
        "effective_tile_size_px": 448,
        "effective_spacing_um": 0.5,
        "tile_size_lv0": 448,
        "n_tiles": n_tiles,
        "read_level": 0,
        "read_spacing_um": 0.25,
        "read_tile_size_px": 448,
        "step_px_lv0": 448,
        "tolerance": 0.05,
        "overlap": 0.0,
        "min_tissue_fraction": 0.1,
        "is_within_tolerance": False,
    }
    block.update(tiling)
    return {
        "provenance": {
            "sample_id": sample_id,
            "image_path": image_path,
            "mask_path": None,
            "backend": "cucim",
            "requested_backend": "auto",
            "spacing_at_level_0": None,
            "mask_backend": None,
            "requested_mask_backend": None,
        },
        "slide": {"dimensions": [4096, 3072], "base_spacing_um": 0.25, "level_downsamples": [1.0, 4.0, 16.0]},
        "tiling": block,
        "segmentation": {
            "tissue_method": "hsv",
            "requested_seg_downsample": 64,
            "seg_downsample": 16.0,
            "seg_level": 2,
            "seg_spacing_um": 4.0,
            "sthresh": 8,
            "sthresh_up": 255,
            "mthresh": 7,
            "close": 4,
            "mask_path": None,
            "ref_tile_size_px": 224,
            "tissue_mask_tissue_value": None,
            "mask_level": None,
            "mask_spacing_um": None,
        },
        "filtering": {
            "a_t": 4,
            "a_h": 2,
            "filter_white": False,
            "filter_black": False,
            "white_threshold": 220,
            "black_threshold": 25,
            "fraction_threshold": 0.9,
            "filter_grayspace": False,
            "grayspace_saturation_threshold": 0.05,
            "grayspace_fraction_threshold": 0.6,
            "filter_blur": False,
            "blur_threshold": 50.0,
            "qc_spacing_um": 2.0,
        },
        "artifact": {
            "coordinate_space": "level_0",
            "tile_order": "row_major",
            "annotation": None,
            "output_mode": None,
            "selection_strategy": "tissue_coverage",
        },
    }


S1_TILES = {"x": [448, 896, 0, 448], "y": [0, 0, 448, 448], "tissue_fractions": [0.5, 1.0, 0.25, 0.75]}


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """A valid output_dir written with the project's own writers: s1 with 4 tiles, s0 with none, a failure."""
    layout = OutputLayout(tmp_path / "out")
    image = str(tmp_path / "slides" / "x.svs")
    coords = Coordinates(*(np.array(S1_TILES[k]) for k in ("x", "y", "tissue_fractions")))
    write_coordinates(
        layout.coordinates_npz("s1"), layout.coordinates_meta("s1"), coords, coordinates_meta("s1", 4, image)
    )
    empty = Coordinates(np.array([]), np.array([]), np.array([]))
    write_coordinates(
        layout.coordinates_npz("s0"), layout.coordinates_meta("s0"), empty, coordinates_meta("s0", 0, image)
    )
    rgb = np.full((24, 32, 3), 240, dtype=np.uint8)
    for sample_id in ("s1", "s0"):
        write_png(layout.mask_preview(sample_id), rgb)
    write_png(layout.tiling_preview("s1"), rgb)  # none for s0: it has no tiles
    process_list.update(layout.process_list, "s1", "done", num_tiles=4, image_path=image)
    process_list.update(layout.process_list, "s0", "done", num_tiles=0, image_path=image)
    process_list.update(layout.process_list, "bad", "failed", error="FileNotFoundError: slide file not found: /x")
    block = PipelineConfig.model_validate({"tiling": {"params": {"requested_spacing_um": 0.5}}}).model_dump(mode="json")
    write_config_yaml(layout.config_yaml, {**block, "output_dir": str(layout.output_dir)})
    return layout.output_dir


def _rewrite_npz(path: Path, **changes: np.ndarray) -> None:
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files}
    arrays.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del arrays[key]
    np.savez(path, **arrays)


def _edit_meta(path: Path, edit: Callable[[dict], None]) -> None:
    meta = json.loads(path.read_text(encoding="utf-8"))
    edit(meta)
    atomic.write_json(path, meta)


def _edit_rows(path: Path, text_edit: Callable[[str], str]) -> None:
    path.write_text(text_edit(path.read_text(encoding="utf-8")), encoding="utf-8")


NPZ = "tiles/s1.coordinates.npz"
META = "tiles/s1.coordinates.meta.json"


def test_a_valid_output_dir_has_no_problems(out: Path):
    assert check_output_dir(out) == []
    assert check_output_dir(out, require=TILING_KINDS) == []
    assert check_output_dir(str(out)) == []


def test_the_worked_case_of_the_contract_passes(out: Path):
    """s0 = 0.252, one level, r = 0.5, T = 224, tol = 0.07 -> read 444 px at level 0."""

    def worked(meta: dict) -> None:
        meta["slide"].update(base_spacing_um=0.252, level_downsamples=[1.0])
        meta["tiling"].update(
            tolerance=0.07, read_spacing_um=0.252, read_tile_size_px=444, tile_size_lv0=444, step_px_lv0=444,
            effective_tile_size_px=444, effective_spacing_um=0.252 * 444 / 224, is_within_tolerance=False,
        )  # fmt: skip

    _edit_meta(out / META, worked)
    _rewrite_npz(out / NPZ, x=np.array([444, 888, 0, 444]), y=np.array([0, 0, 444, 444]))
    assert check_output_dir(out) == []


def test_a_within_tolerance_read_at_a_coarser_level_passes(out: Path):
    def coarser(meta: dict) -> None:
        meta["slide"].update(base_spacing_um=0.25, level_downsamples=[1.0, 2.0, 8.0])
        meta["tiling"].update(
            read_level=1, read_spacing_um=0.5, read_tile_size_px=224, tile_size_lv0=448, step_px_lv0=448,
            effective_tile_size_px=224, effective_spacing_um=0.5, is_within_tolerance=True,
        )  # fmt: skip

    _edit_meta(out / META, coarser)
    assert check_output_dir(out) == []


def test_overlap_shortens_the_step(out: Path):
    _edit_meta(out / META, lambda m: m["tiling"].update(overlap=0.25, step_px_lv0=336))
    _rewrite_npz(out / NPZ, x=np.array([336, 672, 0, 336]), y=np.array([0, 0, 336, 336]))
    assert check_output_dir(out) == []


BREAKAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    # coordinates npz (section 3)
    "wrong dtype": (lambda o: _rewrite_npz(o / NPZ, x=np.array(S1_TILES["x"], np.int32)), "x has dtype int32"),
    "float fractions64": (
        lambda o: _rewrite_npz(o / NPZ, tissue_fractions=np.array(S1_TILES["tissue_fractions"], np.float64)),
        "tissue_fractions has dtype float64",
    ),
    "extra array": (lambda o: _rewrite_npz(o / NPZ, features=np.zeros(4)), "the contract has exactly"),
    "missing array": (lambda o: _rewrite_npz(o / NPZ, tile_index=None), "the contract has exactly"),
    "unsorted": (
        lambda o: _rewrite_npz(o / NPZ, x=np.array([896, 448, 0, 448]), y=np.array([0, 0, 448, 448])),
        "not in row-major order",
    ),
    "column major": (
        lambda o: _rewrite_npz(o / NPZ, x=np.array([0, 448, 448, 896]), y=np.array([448, 0, 448, 0])),
        "not in row-major order",
    ),
    "duplicate": (
        lambda o: _rewrite_npz(o / NPZ, x=np.array([448, 448, 0, 448]), y=np.array([0, 0, 448, 448])),
        "duplicate (x, y) tiles",
    ),
    "tile_index": (lambda o: _rewrite_npz(o / NPZ, tile_index=np.array([1, 2, 3, 4], np.int32)), "tile_index"),
    "fraction above 1": (
        lambda o: _rewrite_npz(o / NPZ, tissue_fractions=np.array([0.5, 1.5, 0.2, 0.7], np.float32)),
        "outside [0, 1]",
    ),
    "fraction below minimum": (
        lambda o: _rewrite_npz(o / NPZ, tissue_fractions=np.array([0.5, 0.05, 0.2, 0.7], np.float32)),
        "below min_tissue_fraction",
    ),
    "tile outside slide": (
        lambda o: _rewrite_npz(o / NPZ, x=np.array([448, 5000, 0, 448])),
        "outside the level-0 slide",
    ),
    "unreadable npz": (lambda o: (o / NPZ).write_bytes(b"not a zip"), "numpy.load cannot read it"),
    "lonely npz": (lambda o: (o / META).unlink(), "must exist together"),
    "stray file": (lambda o: (o / "tiles" / ".s1.coordinates.npz.x.tmp.npz").write_bytes(b""), "unexpected file"),
    # coordinates sidecar (section 4)
    "missing key": (lambda o: _edit_meta(o / META, lambda m: m["tiling"].pop("step_px_lv0")), "['step_px_lv0']"),
    "missing provenance key": (
        lambda o: _edit_meta(o / META, lambda m: m["provenance"].pop("requested_backend")),
        "lacks required key(s) ['requested_backend']",
    ),
    "missing section": (lambda o: _edit_meta(o / META, lambda m: m.pop("filtering")), "missing section 'filtering'"),
    "extra section": (lambda o: _edit_meta(o / META, lambda m: m.update(extras={})), "beyond the six sections"),
    "n_tiles": (lambda o: _edit_meta(o / META, lambda m: m["tiling"].update(n_tiles=5)), "tiling.n_tiles 5"),
    "not sorted keys": (
        lambda o: (o / META).write_text(json.dumps(json.loads((o / META).read_text()), indent=4) + "\n"),
        "indent=2",
    ),
    "not json": (lambda o: (o / META).write_text("{"), "not readable as UTF-8 JSON"),
    "tile order": (
        lambda o: _edit_meta(o / META, lambda m: m["artifact"].update(tile_order="column_major")),
        "tile_order 'column_major'",
    ),
    "coordinate space": (
        lambda o: _edit_meta(o / META, lambda m: m["artifact"].update(coordinate_space="level_1")),
        "coordinate_space",
    ),
    "sample id": (lambda o: _edit_meta(o / META, lambda m: m["provenance"].update(sample_id="s2")), "file stem"),
    "relative image path": (
        lambda o: _edit_meta(o / META, lambda m: m["provenance"].update(image_path="slides/x.svs")),
        "must be an absolute path",
    ),
    "override ignored": (
        lambda o: _edit_meta(o / META, lambda m: m["provenance"].update(spacing_at_level_0=0.3)),
        "spacing_at_level_0 when it is set",
    ),
    "mask backend without mask": (
        lambda o: _edit_meta(o / META, lambda m: m["provenance"].update(mask_backend="tifffile")),
        "null without a mask",
    ),
    # geometry (section 4)
    "read spacing": (
        lambda o: _edit_meta(o / META, lambda m: m["tiling"].update(read_spacing_um=0.26)),
        "read_spacing_um 0.26 != base_spacing_um * level_downsamples[read_level]",
    ),
    "tile_size_lv0": (
        lambda o: _edit_meta(o / META, lambda m: m["tiling"].update(tile_size_lv0=224, step_px_lv0=224)),
        "tile_size_lv0 224 != round(read_tile_size_px * read_spacing_um / base_spacing_um)",
    ),
    "step": (lambda o: _edit_meta(o / META, lambda m: m["tiling"].update(step_px_lv0=224)), "step_px_lv0 224"),
    "read size": (
        lambda o: _edit_meta(o / META, lambda m: m["tiling"].update(read_tile_size_px=224)),
        "read_tile_size_px 224",
    ),
    "effective size": (
        lambda o: _edit_meta(o / META, lambda m: m["tiling"].update(effective_tile_size_px=224)),
        "effective_tile_size_px 224",
    ),
    "effective spacing": (
        lambda o: _edit_meta(o / META, lambda m: m["tiling"].update(effective_spacing_um=0.25)),
        "effective_spacing_um 0.25",
    ),
    "within tolerance flag": (
        lambda o: _edit_meta(o / META, lambda m: m["tiling"].update(is_within_tolerance=True)),
        "is_within_tolerance True",
    ),
    "upsampled level": (
        lambda o: _edit_meta(
            o / META,
            lambda m: m["tiling"].update(
                read_level=1, read_spacing_um=1.0, read_tile_size_px=112, tile_size_lv0=448, effective_tile_size_px=112
            ),
        ),
        "the rule of section 4 picks level 0",
    ),
    # process_list.csv (section 9)
    "failed without error": (
        lambda o: _edit_rows(
            o / "process_list.csv", lambda t: t.replace("FileNotFoundError: slide file not found: /x", "")
        ),
        "a failed row needs an error",
    ),
    "failed with a bare message": (
        lambda o: _edit_rows(o / "process_list.csv", lambda t: t.replace("FileNotFoundError: slide", "slide")),
        "a failed row needs an error",
    ),
    "bad status": (
        lambda o: _edit_rows(o / "process_list.csv", lambda t: t.replace(",done,", ",ok,", 1)),
        "status 'ok'",
    ),
    "bad header": (
        lambda o: _edit_rows(
            o / "process_list.csv", lambda t: t.replace("sample_id,status,error", "sample_id,error,status")
        ),
        "must begin with sample_id,status,error",
    ),
    "repeated row": (
        lambda o: _edit_rows(o / "process_list.csv", lambda t: t + t.splitlines()[1] + "\n"),
        "already has a row",
    ),
    "done without coordinates": (
        lambda o: process_list.update(o / "process_list.csv", "ghost", "done"),
        "tiles/ghost.coordinates.npz is missing",
    ),
    "coordinates without row": (
        lambda o: _edit_rows(
            o / "process_list.csv", lambda t: "\n".join(r for r in t.splitlines() if not r.startswith("s1,")) + "\n"
        ),
        "no process_list.csv row",
    ),
    "num_tiles disagrees": (
        lambda o: process_list.update(o / "process_list.csv", "s1", "done", num_tiles=3),
        "num_tiles 3",
    ),
    "missing process list": (lambda o: (o / "process_list.csv").unlink(), "process_list.csv: missing"),
    # config.yaml (section 10)
    "empty config": (lambda o: (o / "config.yaml").write_text(""), "config.yaml: empty"),
    "config not yaml": (lambda o: (o / "config.yaml").write_text("tiling: [\n"), "not readable YAML"),
    "config unknown key": (
        lambda o: (o / "config.yaml").write_text(yaml.safe_dump({"tiling": {"tile_size": 3}})),
        "not loadable again as a pipeline configuration (tiling.tile_size",
    ),
    "config not resolved": (
        lambda o: (o / "config.yaml").write_text(yaml.safe_dump({"tiling": {"backend": "auto"}})),
        "not fully resolved",
    ),
    "missing config": (lambda o: (o / "config.yaml").unlink(), "config.yaml: missing"),
    # previews (section 8b)
    "fake png": (lambda o: (o / "preview" / "mask" / "s1.png").write_text("hello"), "not a PNG file"),
    "jpeg preview": (
        lambda o: Image.new("RGB", (4, 4)).save(o / "preview" / "tiling" / "s1.jpg"),
        "previews are PNG files",
    ),
    "gray png": (
        lambda o: Image.new("L", (4, 4)).save(o / "preview" / "mask" / "s1.png"),
        "preview must be an RGB PNG",
    ),
    "truncated png": (
        lambda o: (o / "preview" / "mask" / "s1.png").write_bytes(
            (o / "preview" / "mask" / "s1.png").read_bytes()[:40]
        ),
        "PIL cannot decode it",
    ),
    "tiling preview of an empty slide": (
        lambda o: write_png(o / "preview" / "tiling" / "s0.png", np.zeros((4, 4, 3), np.uint8)),
        "only when the slide has tiles",
    ),
    "namespaced mask preview": (
        lambda o: write_png(o / "preview" / "mask" / "tumor" / "s1.png", np.zeros((4, 4, 3), np.uint8)),
        "too deeply nested",
    ),
    "preview of an unknown slide": (
        lambda o: write_png(o / "preview" / "mask" / "stranger.png", np.zeros((4, 4, 3), np.uint8)),
        "did not fail",
    ),
    "temporary file of a killed write": (
        lambda o: (o / "preview" / "mask" / ".s1.png.host.4242.0badc0de.tmp").write_bytes(b"\x89PNG half"),
        "interrupted write",
    ),
}


@pytest.mark.parametrize("name", list(BREAKAGES))
def test_the_checker_catches_a_broken_output(out: Path, name: str):
    breaker, expected = BREAKAGES[name]
    breaker(out)
    problems = check_output_dir(out)
    assert problems, f"{name}: the checker found nothing"
    assert any(expected in problem for problem in problems), problems


def test_problems_name_the_file_relative_to_the_output_dir(out: Path):
    _rewrite_npz(out / NPZ, x=np.array(S1_TILES["x"], np.int32))
    (out / "config.yaml").write_text("")
    problems = check_output_dir(out)
    assert any(p.startswith("tiles/s1.coordinates.npz: ") for p in problems), problems
    assert any(p.startswith("config.yaml: ") for p in problems), problems


def test_require_reports_missing_artifact_kinds(out: Path):
    (out / "preview" / "mask" / "s0.png").unlink()
    problems = check_output_dir(out, require=("mask_preview",))
    assert problems == ["preview/mask: required, but missing for 's0'"]
    assert check_output_dir(out, require=("tiling_preview",)) == []  # s0 has no tiles: no tiling preview
    problems = check_output_dir(out, require=("tile_embeddings",))
    assert any("tile_embeddings: required" in p for p in problems)
    with pytest.raises(ValueError, match="unknown artifact kind"):
        check_output_dir(out, require=("tile",))
    assert set(TILING_KINDS) <= set(KINDS)


def test_a_missing_or_empty_output_dir(tmp_path: Path):
    assert check_output_dir(tmp_path / "absent") == [f"{tmp_path / 'absent'}: output directory does not exist"]
    assert check_output_dir(tmp_path) == []  # nothing written yet, nothing wrong
    problems = check_output_dir(tmp_path, require=("tiles", "process_list", "config"))
    assert len(problems) == 3


def test_a_masked_slide_records_its_mask(out: Path, tmp_path: Path):
    mask = str(tmp_path / "slides" / "x-mask.tiff")

    def masked(meta: dict) -> None:
        meta["provenance"].update(mask_path=mask, mask_backend="tifffile", requested_mask_backend="auto")
        meta["segmentation"].update(mask_path=mask, tissue_method="precomputed_mask", tissue_mask_tissue_value=255)

    _edit_meta(out / META, masked)
    assert check_output_dir(out) == []
    _edit_meta(out / META, lambda m: m["segmentation"].update(tissue_method="hsv"))
    assert any("precomputed_mask" in p for p in check_output_dir(out))


def test_annotation_runs_nest_by_class(out: Path):
    tumor = out / "tiles" / "tumor"
    tumor.mkdir()
    for suffix in (".coordinates.npz", ".coordinates.meta.json"):
        (out / "tiles" / f"s1{suffix}").rename(tumor / f"s1{suffix}")
    _edit_meta(
        tumor / "s1.coordinates.meta.json",
        lambda m: m["artifact"].update(annotation="tumor", output_mode="per_annotation"),
    )
    text = (out / "process_list.csv").read_text(encoding="utf-8")
    header, *rows = text.splitlines()
    (out / "process_list.csv").write_text(
        "\n".join([header + ",annotation", *(r + (",tumor" if r.startswith("s1,") else ",") for r in rows)]) + "\n"
    )
    (out / "preview" / "tiling" / "s1.png").rename(out / "preview" / "tiling" / "s1-flat.png")
    (out / "preview" / "tiling" / "tumor").mkdir()
    (out / "preview" / "tiling" / "s1-flat.png").rename(out / "preview" / "tiling" / "tumor" / "s1.png")
    assert check_output_dir(out) == []
    _edit_meta(tumor / "s1.coordinates.meta.json", lambda m: m["artifact"].update(annotation="stroma"))
    assert any("artifact.annotation is 'stroma'" in p for p in check_output_dir(out))


# ------------------------------------------------------------------------------------ embeddings (s5)


def _tile_embedding_meta(out: Path, fmt: str, rows: int, dtype: str = "fp16") -> dict:
    return {
        "sample_id": "s1",
        "artifact_type": "tile_embeddings",
        "backend": "cucim",
        "coordinates_meta_path": str(out / META),
        "coordinates_npz_path": str(out / NPZ),
        "encoder_level": "tile",
        "encoder_name": "dummy",
        "feature_dim": 8,
        "format": fmt,
        "image_path": "/slides/x.svs",
        "mask_path": None,
        "num_tiles": rows,
        "tile_size_lv0": 448,
        "annotation": None,
        "feature_dtype": dtype,
        "requested_spacing_um": 0.5,
        "requested_tile_size_px": 224,
        "read_tile_size_px": 448,
        "encoder_input_size_px": 224,
        "tiles_tar_path": "",
    }


@pytest.mark.parametrize("fmt", ["npz", "pt"])
def test_tile_embeddings_are_checked_against_their_coordinates(out: Path, fmt: str):
    import torch

    folder = out / "tile_embeddings"
    folder.mkdir()
    features = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float16)
    if fmt == "npz":
        np.savez_compressed(folder / "s1.npz", features=features, tile_index=np.arange(4))
    else:
        torch.save(torch.from_numpy(features), folder / "s1.pt")
    atomic.write_json(folder / "s1.meta.json", _tile_embedding_meta(out, fmt, 4))
    assert check_output_dir(out, require=("tile_embeddings",)) == [
        "tile_embeddings: required, but missing for 's0'"
    ]  # s0 (zero tiles) still needs a (0, D) payload
    atomic.write_json(folder / "s1.meta.json", _tile_embedding_meta(out, fmt, 4, dtype="fp32"))
    assert any("feature_dtype 'fp32'" in p for p in check_output_dir(out))
    atomic.write_json(folder / "s1.meta.json", _tile_embedding_meta(out, fmt, 3))
    assert any("num_tiles 3 but the payload has 4 rows" in p for p in check_output_dir(out))
    moved = {**_tile_embedding_meta(out, fmt, 4), "coordinates_npz_path": str(out / "tiles" / "gone.npz")}
    atomic.write_json(folder / "s1.meta.json", moved)
    assert any("coordinates_npz_path points to a missing file" in p for p in check_output_dir(out))
