"""The fault catalogue: what happens when slides, manifests, configs, disks and processes go wrong.

Every case drives a real entry point (the ``slide2vec-dagster`` CLI's ``main`` or ``dagster.materialize``)
and checks the four promises of the README's "When things go wrong" table:
- the bad slide's partition fails with a ``failed`` row ``<ExceptionType>: <message>`` naming the slide or
  file, the column or key, and the fix, with no columns left over from an earlier success;
- no artifact file of that slide is incomplete or unpaired, and no temporary file is left anywhere;
- every other slide of the run completes;
- damaged outputs are recomputed, never skipped or failed forever.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter, instance_for_test, materialize

from slide2vec_dagster import slide_embedding
from slide2vec_dagster.artifacts import atomic
from slide2vec_dagster.cli import main
from slide2vec_dagster.config import CONFIG_ENV_VAR, load_config
from slide2vec_dagster.defs.build import build_definitions
from slide2vec_dagster.defs.partitions import register
from slide2vec_dagster.encoders import BASELINE_FEATURE_DIM
from slide2vec_dagster.layout import MAX_ID_BYTES, OutputLayout
from slide2vec_dagster.manifest import read_manifests
from tests.contract import check_output_dir
from tests.dagster_helpers import DATA, blank_slide, write_manifest

CMU = DATA / "CMU-1-Small-Region.svs"
SYNTHETIC = DATA / "synthetic-he-0.5mpp.tiff"
MASK = DATA / "synthetic-he-0.5mpp-mask.tiff"
# Coarse tiles keep each slide well under a second; the baseline encoder needs no weights.
PIPELINE = {
    "tiling": {"params": {"requested_spacing_um": 1.0, "requested_tile_size_px": 224}},
    "model": {"name": "baseline-color-texture", "batch_size": 32},
}
COLUMNS = ["sample_id", "image_path", "mask_path", "spacing_at_level_0", "patient_id"]


def _config(folder: Path, manifest_rows: list[dict[str, str]], pipelines: dict | None = None) -> Path:
    write_manifest(folder / "cohort.csv", manifest_rows)
    path = folder / "platform.yaml"
    raw = {"manifests": ["cohort.csv"], "output_root": "out", "pipelines": pipelines or {"p": PIPELINE}}
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with (out / "process_list.csv").open(newline="", encoding="utf-8") as handle:
        return {row["sample_id"]: row for row in csv.DictReader(handle)}


def _files_of(out: Path, sample_id: str) -> list[str]:
    layout = OutputLayout(out)
    return sorted(
        {
            str(path.relative_to(out))
            for pair in layout.slide_artifacts(sample_id)
            for path in pair
            if path and path.exists()
        }
    )


def _debris(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob(".*") if p.is_file() and ".tmp" in p.name)


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(CONFIG_ENV_VAR, "unset-by-test")
    return tmp_path


# ============================================================ 1. bad inputs, one CLI run over them all
# Each case: a manifest row, and what its failed row must say (exception type, fragments).
def _input_cases(root: Path) -> dict[str, tuple[dict[str, str], str, tuple[str, ...]]]:
    slides = root / "slides"
    slides.mkdir()
    (slides / "empty.svs").write_bytes(b"")
    (slides / "random.svs").write_bytes(np.random.default_rng(0).bytes(300_000))
    (slides / "notes.svs").write_text("this is a text file, not a slide\n")
    truncated = CMU.read_bytes()
    (slides / "truncated.svs").write_bytes(truncated[: len(truncated) // 2])
    (slides / "folder").mkdir()
    (slides / "folder" / "readme.txt").write_text("no DICOM here")
    os.mkfifo(slides / "pipe.svs")
    os.mkfifo(slides / "pipe-mask.tiff")
    (slides / "random-mask.tiff").write_bytes(np.random.default_rng(1).bytes(50_000))
    (slides / "mask-folder").mkdir()
    tcga = DATA / "tcga-cr-7395-01a-01-ts1.svs"
    return {
        "missing-slide": (
            {"image_path": str(slides / "absent.svs")},
            "FileNotFoundError",
            ("absent.svs", "image_path"),
        ),
        "empty-file": ({"image_path": str(slides / "empty.svs")}, "SlideOpenError", ("empty.svs", "no reader")),
        "random-bytes": ({"image_path": str(slides / "random.svs")}, "SlideOpenError", ("random.svs",)),
        "text-renamed-svs": ({"image_path": str(slides / "notes.svs")}, "SlideOpenError", ("notes.svs",)),
        "truncated-svs": (
            {"image_path": str(slides / "truncated.svs")},
            "SlideOpenError",
            ("truncated.svs", "not truncated"),
        ),
        "folder-not-dicom": ({"image_path": str(slides / "folder")}, "SlideInputError", ("directory", "DICOM")),
        "fifo-slide": ({"image_path": str(slides / "pipe.svs")}, "SlideInputError", ("not a regular file",)),
        "char-device": ({"image_path": "/dev/zero"}, "SlideInputError", ("/dev/zero", "not a regular file")),
        "no-spacing": ({"image_path": str(tcga)}, "MissingSpacingError", ("spacing_at_level_0",)),
        "spacing-typo": (
            {"image_path": str(CMU), "spacing_at_level_0": "0.5um"},
            "ManifestRowError",
            ("spacing_at_level_0", "'0.5um'", "row"),
        ),
        "spacing-negative": (
            {"image_path": str(CMU), "spacing_at_level_0": "-0.25"},
            "ManifestRowError",
            ("positive",),
        ),
        "spacing-too-coarse-for-request": (
            # A 4 µm/px slide cannot give 1 µm/px tiles without upsampling, which is refused.
            {"image_path": str(CMU), "spacing_at_level_0": "4.0"},
            "SpacingTooFineError",
            ("tiling.params.requested_spacing_um", "spacing_at_level_0"),
        ),
        "empty-image-path": ({"image_path": ""}, "ManifestRowError", ("image_path is empty",)),
        "unsafe-patient-id": ({"image_path": str(CMU), "patient_id": "../p"}, "ManifestRowError", ("patient_id",)),
        "missing-mask": (
            {"image_path": str(SYNTHETIC), "mask_path": str(slides / "absent-mask.tiff")},
            "FileNotFoundError",
            ("mask file not found", "mask_path"),
        ),
        "random-mask": (
            {"image_path": str(SYNTHETIC), "mask_path": str(slides / "random-mask.tiff")},
            "SlideOpenError",
            ("mask_path", "random-mask.tiff"),
        ),
        "mask-is-folder": (
            {"image_path": str(SYNTHETIC), "mask_path": str(slides / "mask-folder")},
            "SlideInputError",
            ("mask_path", "directory"),
        ),
        "fifo-mask": (
            {"image_path": str(SYNTHETIC), "mask_path": str(slides / "pipe-mask.tiff")},
            "SlideInputError",
            ("mask_path", "not a regular file"),
        ),
    }


GOOD = {
    "good-cmu": {"image_path": str(CMU)},
    "good-masked": {"image_path": str(SYNTHETIC), "mask_path": str(MASK)},
    "good-unicode-é": {"image_path": str(SYNTHETIC)},
    "good spaces": {"image_path": str(CMU)},
}


@pytest.fixture(scope="module")
def input_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict, int, str]]:
    root = tmp_path_factory.mktemp("inputs")
    cases = _input_cases(root)
    rows = [{"sample_id": sid, **row} for sid, row in GOOD.items()]
    rows += [{"sample_id": sid, **row} for sid, (row, _, _) in cases.items()]
    rows.append({"sample_id": "zero-tissue", "image_path": str(blank_slide(root / "slides" / "blank.tiff"))})
    config = _config(root, rows)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAGSTER_HOME", str(root / "home"))
        patch.setenv(CONFIG_ENV_VAR, "unset-by-test")
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            started = time.perf_counter()
            code = main(["materialize", "--config", str(config)])
        assert time.perf_counter() - started < 240, "a bad input blocked the run"
    yield root / "out" / "p", cases, code, stdout.getvalue()


INPUT_CASES = [
    "missing-slide", "empty-file", "random-bytes", "text-renamed-svs", "truncated-svs", "folder-not-dicom",
    "fifo-slide", "char-device", "no-spacing", "spacing-typo", "spacing-negative",
    "spacing-too-coarse-for-request", "empty-image-path", "unsafe-patient-id", "missing-mask", "random-mask",
    "mask-is-folder", "fifo-mask",
]  # fmt: skip


@pytest.mark.parametrize("case", INPUT_CASES)
def test_a_bad_input_fails_only_its_own_slide(input_run, case: str):
    out, cases, code, stdout = input_run
    _, error_type, fragments = cases[case]
    row = _rows(out)[case]
    assert row["status"] == "failed", row
    assert row["error"].startswith(f"{error_type}: "), row["error"]
    for fragment in fragments:
        assert fragment in row["error"], (fragment, row["error"])
    # No stale or partial columns and no files for the failed slide.
    assert row["num_tiles"] == row["coordinates_npz_path"] == row["feature_path"] == ""
    assert _files_of(out, case) == []
    # The CLI reports the slide's own error (not the shared list's, not "see the run log").
    line = next(line for line in stdout.splitlines() if f"p/{case}:" in line)
    assert "failed" in line and error_type in line
    assert code == 1


def test_every_good_slide_of_the_bad_cohort_completes(input_run):
    out, cases, _, _ = input_run
    assert sorted(cases) == sorted(INPUT_CASES)
    rows = _rows(out)
    for sample_id in GOOD:
        assert rows[sample_id]["status"] == "done", rows[sample_id]
        assert len(_files_of(out, sample_id)) == 6  # coordinates pair, 2 previews, tile payload + sidecar
    assert rows["zero-tissue"]["status"] == "done" and rows["zero-tissue"]["num_tiles"] == "0"
    assert torch.load(out / "tile_embeddings" / "zero-tissue.pt", weights_only=True).shape == (0, BASELINE_FEATURE_DIM)
    assert check_output_dir(out, require=("tile_embeddings",)) == [] and _debris(out) == []
    assert len(rows) == len(GOOD) + len(cases) + 1


# ============================================================ 2. manifest and registration faults
@pytest.mark.parametrize(
    ("bad_row", "fragments"),
    [
        ({"sample_id": "x" * 220, "image_path": str(CMU)}, (f"limited to {MAX_ID_BYTES} bytes",)),
        ({"sample_id": "../escape", "image_path": str(CMU)}, ("not a safe file name",)),
        ({"sample_id": "good-cmu", "image_path": str(SYNTHETIC)}, ("duplicate sample_id",)),
    ],
    ids=["overlong-id", "unsafe-id", "duplicate-id"],
)
def test_an_id_that_cannot_be_a_file_is_refused_before_anything_is_written(
    cli_env: Path, capsys: pytest.CaptureFixture[str], bad_row: dict, fragments: tuple[str, ...]
):
    config = _config(cli_env, [{"sample_id": "good-cmu", "image_path": str(CMU)}, bad_row])
    assert main(["materialize", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "cohort.csv row 2" in err and all(f in err for f in fragments), err
    assert not (cli_env / "out").exists()


def test_a_bad_row_appended_during_a_backfill_fails_no_registered_slide(tmp_path: Path):
    config_path = _config(tmp_path, [{"sample_id": s, "image_path": str(CMU)} for s in ("a", "b")])
    config = load_config(config_path)
    defs = build_definitions(config)
    with instance_for_test() as instance:
        register(instance, read_manifests(config.manifests))
        assert _materialize(defs, instance, "a").success
        # Someone appends a typo (and a duplicate id) while the backfill is still running.
        with (tmp_path / "cohort.csv").open("a", encoding="utf-8") as handle:
            handle.write(f"c,{CMU},,0.5um,\na,{SYNTHETIC},,,\n")
        result = _materialize(defs, instance, "b")
        assert result.success
    rows = _rows(config.output_dir("p"))
    assert rows["a"]["status"] == "done" and rows["b"]["status"] == "done"


def test_a_slide_removed_from_the_manifest_fails_with_the_fix(tmp_path: Path):
    config_path = _config(tmp_path, [{"sample_id": s, "image_path": str(CMU)} for s in ("a", "gone")])
    config = load_config(config_path)
    defs = build_definitions(config)
    with instance_for_test() as instance:
        register(instance, read_manifests(config.manifests))
        write_manifest(tmp_path / "cohort.csv", [{"sample_id": "a", "image_path": str(CMU)}])
        assert not _materialize(defs, instance, "gone").success
        assert _materialize(defs, instance, "a").success
    row = _rows(config.output_dir("p"))["gone"]
    assert row["error"].startswith("SampleNotInManifestError:") and "add its row back" in row["error"]


def _materialize(defs, instance, sample_id: str):
    return materialize(
        list(defs.assets), partition_key=sample_id, instance=instance, resources=defs.resources, raise_on_error=False
    )


# ============================================================ 3. config faults (check-config)
@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        (
            lambda raw: raw["pipelines"].update(
                p={**raw["pipelines"]["p"], "output_dir": "shared"}, q={**raw["pipelines"]["p"], "output_dir": "shared"}
            ),
            ("pipelines.p and pipelines.q", "own output_dir"),
        ),
        (lambda raw: raw["pipelines"]["p"]["tiling"]["params"].update(requested_spacing_um=float("nan")), ("finite",)),
        (lambda raw: raw["pipelines"]["p"]["tiling"]["params"].update(overlap=0.99), ("overlap",)),
        (lambda raw: raw["pipelines"]["p"]["tiling"]["params"].update(requested_tile_size_px=10**6), ("tile_size",)),
        (lambda raw: raw["pipelines"]["p"]["tiling"]["params"].update(requested_spacing_um=float("inf")), ("finite",)),
        (lambda raw: raw["pipelines"]["p"]["model"].update(batch_size=0), ("batch_size",)),
        (lambda raw: raw["pipelines"]["p"].update(speed={"num_workers": 10_000}), ("num_workers",)),
        (lambda raw: raw["pipelines"]["p"]["tiling"].update(seg_params={"mthresh": 4}), ("mthresh", "odd")),
        (lambda raw: raw["pipelines"]["p"]["tiling"].update(preview={"downsample": 0}), ("preview.downsample",)),
    ],
    ids=[
        "shared-output-dir",
        "nan-spacing",
        "overlap-0.99",
        "huge-tile",
        "inf-spacing",
        "batch-0",
        "workers-10k",
        "even-median-filter",
        "preview-downsample-0",
    ],
)
def test_check_config_refuses_values_that_cannot_work(
    cli_env: Path, capsys: pytest.CaptureFixture[str], edit, fragments: tuple[str, ...]
):
    config = _config(cli_env, [{"sample_id": "a", "image_path": str(CMU)}])
    raw = yaml.safe_load(config.read_text())
    edit(raw)
    config.write_text(yaml.safe_dump(raw))
    assert main(["check-config", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert str(config) in err and all(fragment in err for fragment in fragments), err


def test_check_config_refuses_an_output_root_that_is_a_file(cli_env: Path, capsys: pytest.CaptureFixture[str]):
    config = _config(cli_env, [{"sample_id": "a", "image_path": str(CMU)}])
    (cli_env / "out").write_text("not a folder")
    assert main(["check-config", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "output_root" in err and "is not a directory" in err
    assert main(["materialize", "--config", str(config)]) == 2


def test_check_config_lists_the_rows_that_will_fail(cli_env: Path, capsys: pytest.CaptureFixture[str]):
    config = _config(cli_env, [{"sample_id": "a", "image_path": str(CMU), "spacing_at_level_0": "abc"}])
    assert main(["check-config", "--config", str(config)]) == 1
    assert "cohort.csv row 1" in capsys.readouterr().err


# ============================================================ 4. disks, writers, process list, encoders
@pytest.fixture
def two_slides(tmp_path: Path):
    config = load_config(_config(tmp_path, [{"sample_id": s, "image_path": str(CMU)} for s in ("bad", "ok")]))
    defs = build_definitions(config)
    with instance_for_test() as instance:
        register(instance, read_manifests(config.manifests))
        yield config.output_dir("p"), defs, instance


def _fail_writes(monkeypatch: pytest.MonkeyPatch, predicate) -> None:
    """Make atomic writes of matching paths fail as a full disk would, for the slide 'bad' only."""
    real = atomic.write_bytes

    def write_bytes(path, data):
        if predicate(Path(path)):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(atomic, "write_bytes", write_bytes)


@pytest.mark.parametrize(
    ("name", "predicate", "error", "kept"),
    [
        ("coordinates-npz", lambda p: p.name == "bad.coordinates.npz", "OSError", False),
        ("coordinates-sidecar", lambda p: p.name == "bad.coordinates.meta.json", "OSError", False),
        ("mask-preview", lambda p: p.parent.name == "mask" and p.name == "bad.png", "OSError", False),
        ("embedding-payload", lambda p: p.name == "bad.pt", "OSError", True),
        (
            "embedding-sidecar",
            lambda p: p.parent.name == "tile_embeddings" and p.name == "bad.meta.json",
            "OSError",
            True,
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_a_full_disk_during_a_write_fails_the_slide_and_withdraws_its_partial_files(
    two_slides, monkeypatch: pytest.MonkeyPatch, name: str, predicate, error: str, kept: bool
):
    out, defs, instance = two_slides
    _fail_writes(monkeypatch, predicate)
    assert not _materialize(defs, instance, "bad").success
    assert _materialize(defs, instance, "ok").success
    rows = _rows(out)
    assert rows["bad"]["status"] == "failed" and rows["bad"]["error"].startswith(f"{error}: ")
    assert "No space left on device" in rows["bad"]["error"]
    files = _files_of(out, "bad")
    if kept:  # an embedding failure keeps this run's complete tiling, and the row still describes it
        assert files == ["preview/mask/bad.png", "preview/tiling/bad.png", "tiles/bad.coordinates.meta.json",
                         "tiles/bad.coordinates.npz"]  # fmt: skip
        assert rows["bad"]["coordinates_npz_path"].endswith("bad.coordinates.npz")
    else:
        assert files == []
        assert rows["bad"]["coordinates_npz_path"] == ""
    assert rows["bad"]["feature_path"] == ""
    assert rows["ok"]["status"] == "done"
    assert check_output_dir(out) == [] and _debris(out) == []


def test_a_failure_after_a_success_leaves_no_stale_columns(two_slides, monkeypatch: pytest.MonkeyPatch):
    out, defs, instance = two_slides
    assert _materialize(defs, instance, "bad").success
    assert _rows(out)["bad"]["num_tiles"] != ""
    # The slide is then replaced by a broken file: the failed row must not keep the old numbers.
    monkeypatch.setattr(slide_embedding, "cached_encoder", lambda pipeline: _raise(RuntimeError("GPU fell off")))
    (out / "tile_embeddings" / "bad.meta.json").unlink()  # force a fresh embedding, which then fails
    assert not _materialize(defs, instance, "bad").success
    row = _rows(out)["bad"]
    assert row["status"] == "failed" and row["feature_path"] == "" and row["encoder_name"] == ""
    assert row["error"].startswith("RuntimeError: GPU fell off") and "'bad'" in row["error"]


def _raise(exc: Exception):
    raise exc


def test_an_unwritable_process_list_still_fails_the_slide_with_its_own_error(two_slides, monkeypatch):
    from slide2vec_dagster.artifacts import process_list

    out, defs, instance = two_slides

    def broken_update(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", "process_list.csv")

    monkeypatch.setattr(process_list, "update", broken_update)
    result = _materialize(defs, instance, "bad")
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data
    text = failure.user_failure_data.description if failure.user_failure_data else failure.error.message
    assert "PermissionError" in text and "'bad'" in text
    notes = failure.user_failure_data.metadata["notes"].value
    assert "could not record the failed row" in notes
    assert _files_of(out, "bad") == [] and _debris(out) == []


@pytest.mark.parametrize(
    "damage",
    [b"\x00\x01\x02 garbage \xff\xfe", b"id,state\nbad,done\n", b"sample_id,status,error\nbad,weird,\n,done,\nx\n"],
    ids=["binary-garbage", "wrong-header", "bad-rows"],
)
def test_a_damaged_process_list_is_reported_and_rebuilt(two_slides, damage: bytes):
    out, defs, instance = two_slides
    assert _materialize(defs, instance, "ok").success
    (out / "process_list.csv").write_bytes(damage)
    result = _materialize(defs, instance, "bad")
    assert result.success
    metadata = next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if "process_list" in e.materialization.metadata
    )
    assert "process_list_repaired" in metadata and "rebuilt" in metadata["process_list_repaired"].value
    assert _rows(out)["bad"]["status"] == "done"
    assert len(list(out.glob("process_list.csv.damaged-*"))) == 1
    assert check_output_dir(out) == []


@pytest.mark.parametrize(
    ("encoder", "error", "fragments"),
    [
        (
            lambda batch: _raise(RuntimeError("weights for uni not found; set model.weights")),
            "RuntimeError",
            ("model.weights",),
        ),
        (lambda batch: torch.full((len(batch), BASELINE_FEATURE_DIM), float("nan")), "EmbeddingCheckError", ("NaN",)),
        (lambda batch: torch.zeros((len(batch), 3)), "RuntimeError", ("shape", "expected")),
        (lambda batch: _raise(torch.OutOfMemoryError("CUDA out of memory")), "OutOfMemoryError", ("out of memory",)),
    ],
    ids=["weights-missing", "nan-features", "wrong-dimension", "out-of-memory"],
)
def test_an_encoder_failure_fails_only_that_slide_and_keeps_its_tiling(
    two_slides, monkeypatch: pytest.MonkeyPatch, encoder, error: str, fragments: tuple[str, ...]
):
    out, defs, instance = two_slides
    real = slide_embedding.cached_encoder

    class Faulty:
        weights_origin = "test"

        def __call__(self, batch):
            return encoder(batch)

    monkeypatch.setattr(slide_embedding, "cached_encoder", lambda p: Faulty())
    assert not _materialize(defs, instance, "bad").success
    monkeypatch.setattr(slide_embedding, "cached_encoder", real)
    assert _materialize(defs, instance, "ok").success
    row = _rows(out)["bad"]
    assert row["error"].startswith(f"{error}: ") and all(f in row["error"] for f in fragments), row["error"]
    assert row["num_tiles"] != "" and row["feature_path"] == ""
    assert not (out / "tile_embeddings" / "bad.pt").exists() and check_output_dir(out) == []


def test_a_fluorescence_slide_is_processed_with_a_warning_in_the_metadata_and_the_log(tmp_path: Path):
    ndpi = DATA / "hamamatsu-fluorescence-dapi.ndpi"
    config = load_config(_config(tmp_path, [{"sample_id": "dapi", "image_path": str(ndpi)}]))
    with instance_for_test() as instance:
        register(instance, read_manifests(config.manifests))
        result = _materialize(build_definitions(config), instance, "dapi")
        assert result.success
        coordinates = next(
            e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == "coordinates"
        )
        assert coordinates.materialization.metadata["modality"].value == "fluorescence"
        warnings = [
            record.user_message
            for record in instance.all_logs(result.run_id)
            if record.level == logging.WARNING and "fluorescence" in record.user_message
        ]
        assert warnings and "dapi" in warnings[0]
    meta = json.loads((config.output_dir("p") / "tiles" / "dapi.coordinates.meta.json").read_text())
    assert meta["artifact"]["modality"]["modality"] == "fluorescence" and meta["artifact"]["modality"]["warning"]


# ============================================================ 5. damaged or changed outputs are redone
def _status_after(defs, instance, out: Path, sample_id: str = "ok") -> dict[str, str]:
    result = _materialize(defs, instance, sample_id)
    assert result.success
    return {
        e.asset_key.path[-1]: e.materialization.metadata["status"].value
        for e in result.get_asset_materialization_events()
        if "status" in e.materialization.metadata
    }


@pytest.mark.parametrize(
    ("damage", "redone"),
    [
        (lambda o: _truncate(o / "tiles" / "ok.coordinates.npz"), {"coordinates": "done"}),
        (lambda o: (o / "tiles" / "ok.coordinates.meta.json").write_text("{not json"), {"coordinates": "done"}),
        (lambda o: _truncate(o / "tile_embeddings" / "ok.pt"), {"coordinates": "skipped", "tile_embeddings": "done"}),
        (lambda o: (o / "tile_embeddings" / "ok.pt").write_bytes(b"not a tensor"), {"tile_embeddings": "done"}),
        (
            lambda o: torch.save(torch.zeros(3, BASELINE_FEATURE_DIM), o / "tile_embeddings" / "ok.pt"),
            {"tile_embeddings": "done"},
        ),
        (lambda o: (o / "tile_embeddings" / "ok.meta.json").unlink(), {"tile_embeddings": "done"}),
        (lambda o: _truncate(o / "preview" / "mask" / "ok.png"), {"coordinates": "done"}),
    ],
    ids=[
        "truncated-coordinates",
        "broken-coordinates-json",
        "truncated-payload",
        "payload-not-a-tensor",
        "payload-wrong-shape",
        "sidecar-deleted",
        "truncated-preview",
    ],
)
def test_damaged_outputs_are_recomputed_not_skipped_or_failed_forever(two_slides, damage, redone: dict[str, str]):
    out, defs, instance = two_slides
    assert _status_after(defs, instance, out) == {"coordinates": "done", "tile_embeddings": "done"}
    assert _status_after(defs, instance, out) == {"coordinates": "skipped", "tile_embeddings": "skipped"}
    damage(out)
    statuses = _status_after(defs, instance, out)
    assert {k: statuses[k] for k in redone} == redone
    assert check_output_dir(out, require=("tile_embeddings",)) == []


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_an_in_place_edit_that_keeps_size_and_mtime_is_seen(tmp_path: Path):
    slide = tmp_path / "slide.svs"
    shutil.copyfile(CMU, slide)
    config = load_config(_config(tmp_path, [{"sample_id": "ok", "image_path": str(slide)}]))
    defs = build_definitions(config)
    with instance_for_test() as instance:
        register(instance, read_manifests(config.manifests))
        out = config.output_dir("p")
        assert _status_after(defs, instance, out)["coordinates"] == "done"
        stat = slide.stat()
        data = bytearray(slide.read_bytes())
        data[len(data) // 2] ^= 0x01  # one bit deep inside the image data
        slide.write_bytes(bytes(data))
        os.utime(slide, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert slide.stat().st_size == stat.st_size and slide.stat().st_mtime_ns == stat.st_mtime_ns
        assert _status_after(defs, instance, out) == {"coordinates": "done", "tile_embeddings": "done"}
        meta = json.loads((out / "tiles" / "ok.coordinates.meta.json").read_text())
        assert meta["artifact"]["slide_fingerprint"]["sha256"] != ""


def test_a_payload_of_the_other_format_is_removed_when_the_format_changes(tmp_path: Path):
    rows = [{"sample_id": "ok", "image_path": str(CMU)}]
    config = load_config(_config(tmp_path, rows))
    with instance_for_test() as instance:
        register(instance, read_manifests(config.manifests))
        assert _materialize(build_definitions(config), instance, "ok").success
        npz_config = load_config(_config(tmp_path, rows, {"p": {**PIPELINE, "output_format": "npz"}}))
        assert _materialize(build_definitions(npz_config), instance, "ok").success
    out = config.output_dir("p")
    assert sorted(p.name for p in (out / "tile_embeddings").iterdir()) == ["ok.meta.json", "ok.npz"]
    assert check_output_dir(out) == []


def test_leftovers_of_killed_writers_are_removed_by_the_next_run(two_slides):
    out, defs, instance = two_slides
    assert _materialize(defs, instance, "ok").success
    dead = _dead_pid()
    host = atomic._host()
    leftovers = [
        out / "preview" / "mask" / f".ok.png.{host}.{dead}.0badc0de.tmp",
        out / "tiles" / f".ok.coordinates.npz.{host}.{dead}.0badc0de.tmp",
        out / f".process_list.csv.{host}.{dead}.0badc0de.tmp",
        out / "preview" / "mask" / ".ok.png.x1y2z3w4.tmp.png",  # the earlier naming scheme, an old leftover
    ]
    for path in leftovers:
        path.write_bytes(b"half")
    os.utime(leftovers[-1], (time.time() - 3600, time.time() - 3600))
    alive = out / "tiles" / f".ok.coordinates.npz.{host}.{os.getpid()}.0badc0de.tmp"  # a live writer's: kept
    alive.write_bytes(b"in flight")
    (out / "tile_embeddings" / "ok.meta.json").unlink()  # a payload whose sidecar never landed
    assert _materialize(defs, instance, "ok").success
    assert not any(p.exists() for p in leftovers) and alive.exists()
    alive.unlink()
    assert check_output_dir(out) == [] and _debris(out) == []


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# ============================================================ 6. kill -9 at any moment, then run again
@pytest.mark.e2e
def test_kill_9_during_a_run_then_run_again(tmp_path: Path):
    """A real CLI process is killed at several moments of its run; each time the next run marks the
    orphaned run failed, removes the debris and ends with the contract holding."""
    rows = [{"sample_id": f"s{i}", "image_path": str(CMU if i % 2 else SYNTHETIC)} for i in range(4)]
    config = _config(tmp_path, rows)
    out = tmp_path / "out" / "p"
    env = dict(os.environ, DAGSTER_HOME=str(tmp_path / "home"), SLIDE2VEC_DAGSTER_CONFIG=str(config))
    command = [sys.executable, "-m", "slide2vec_dagster.cli", "materialize", "--config", str(config)]
    for delay in (3.0, 4.5, 6.0):
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while not (out / "tiles").exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(delay - 3.0)
        process.send_signal(signal.SIGKILL)
        process.wait()
        # Simulate the worst moment too: a half-written temporary file of the killed process.
        (out / "tiles").mkdir(parents=True, exist_ok=True)
        (out / "tiles" / f".s0.coordinates.npz.{atomic._host()}.{process.pid}.0badc0de.tmp").write_bytes(b"half")
        rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        assert check_output_dir(out, require=("tile_embeddings",)) == [] and _debris(out) == []
        assert all(row["status"] in ("done", "skipped") for row in _rows(out).values())
    # The killed runs were marked failed by the next command, none shows as running forever.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
        with DagsterInstance.get() as instance:
            assert instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED])) == []
            failed = instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.FAILURE]))
            assert len(failed) >= 1
