"""Artifact paths and writers: layout, atomic writes, coordinates, process_list.csv, config.yaml,
previews and slide fingerprints."""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from slide2vec_dagster.artifacts import atomic, process_list
from slide2vec_dagster.artifacts.config_file import write_config_yaml
from slide2vec_dagster.artifacts.coordinates import (
    COORDINATE_DTYPES,
    META_SECTIONS,
    Coordinates,
    read_coordinates,
    write_coordinates,
)
from slide2vec_dagster.artifacts.previews import png_bytes, thumbnail_markdown, write_png
from slide2vec_dagster.fingerprint import file_fingerprint, fingerprint, identity, matches
from slide2vec_dagster.layout import OutputLayout, id_problem

# ------------------------------------------------------------------------------------------ layout


def test_layout_paths_are_exactly_those_of_the_contract(tmp_path: Path):
    layout = OutputLayout(tmp_path / "out")
    out = tmp_path / "out"
    assert layout.output_dir == out
    assert layout.process_list == out / "process_list.csv"
    assert layout.config_yaml == out / "config.yaml"
    assert layout.coordinates_npz("007") == out / "tiles" / "007.coordinates.npz"
    assert layout.coordinates_meta("007") == out / "tiles" / "007.coordinates.meta.json"
    assert layout.mask_preview("S 1.x") == out / "preview" / "mask" / "S 1.x.png"
    assert layout.tiling_preview("S 1.x") == out / "preview" / "tiling" / "S 1.x.png"


def test_layout_makes_a_relative_output_dir_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    assert OutputLayout(Path("rel")).output_dir == tmp_path / "rel"


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "a\\b", "a\x00b", " x", "x ", "\tx"])
def test_unsafe_ids_have_a_problem_and_no_path(tmp_path: Path, bad: str):
    assert id_problem(bad)
    layout = OutputLayout(tmp_path)
    for method in (layout.coordinates_npz, layout.coordinates_meta, layout.mask_preview, layout.tiling_preview):
        with pytest.raises(ValueError, match="cannot be used as a file name"):
            method(bad)


@pytest.mark.parametrize("good", ["007", "a.b", "TCGA-AA-0001-01Z", "slide 1", "é", "...", ".hidden"])
def test_safe_ids_have_no_problem(good: str):
    assert id_problem(good) is None


# ------------------------------------------------------------------------------------------ atomic


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


def test_atomic_writes_leave_no_temporary_file(tmp_path: Path):
    target = tmp_path / "deep" / "er" / "file.json"  # parents are created
    atomic.write_json(target, {"b": 1, "a": "é"})
    assert target.read_text(encoding="utf-8") == '{\n  "a": "é",\n  "b": 1\n}\n'
    atomic.write_bytes(tmp_path / "x.bin", b"\x00\x01")
    atomic.write_text(tmp_path / "x.txt", "hello")
    atomic.write_buffer(tmp_path / "x.npz", lambda buffer: np.savez(buffer, a=np.arange(3)))
    with np.load(tmp_path / "x.npz") as archive:
        assert archive["a"].tolist() == [0, 1, 2]
    assert _leftovers(tmp_path) == [] and _leftovers(target.parent) == []
    assert (tmp_path / "x.bin").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("name", ["s1.png", "s1.coordinates.npz", "s1.pt", "s1.meta.json", "process_list.csv"])
def test_a_write_in_flight_never_looks_like_an_artifact(tmp_path: Path, name: str):
    """What a kill -9 mid-write leaves must not end in an artifact extension, and must say whose it is."""
    seen: list[str] = []
    atomic.write_with(tmp_path / name, lambda handle: seen.extend(p.name for p in tmp_path.iterdir()))
    (temporary,) = seen
    assert temporary.startswith(f".{name}.") and temporary.endswith(".tmp")
    assert f".{os.getpid()}." in temporary and not any(
        temporary.endswith(ext) for ext in (".png", ".npz", ".pt", ".json")
    )
    assert not atomic.is_debris(tmp_path / temporary)  # this process is alive: a sweep leaves it alone


class Boom(RuntimeError):
    pass


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path: Path):
    target = tmp_path / "file.txt"
    atomic.write_text(target, "old")

    def half_then_fail(handle):
        handle.write(b"partial new content")
        raise Boom("disk on fire")

    with pytest.raises(Boom):
        atomic.write_with(target, half_then_fail)
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []
    with pytest.raises(Boom):
        atomic.write_buffer(target, lambda buffer: (_ for _ in ()).throw(Boom("no")))
    assert target.read_text() == "old" and _leftovers(tmp_path) == []


def test_a_failing_replace_leaves_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    target = tmp_path / "file.txt"
    atomic.write_text(target, "old")

    def refuse(src, dst):
        raise OSError("read-only file system")

    monkeypatch.setattr(atomic.os, "replace", refuse)
    with pytest.raises(OSError, match="read-only"):
        atomic.write_text(target, "new")
    assert target.read_text() == "old" and _leftovers(tmp_path) == []


def test_a_failed_first_write_creates_nothing(tmp_path: Path):
    with pytest.raises(Boom):
        atomic.write_with(tmp_path / "new.txt", lambda handle: (_ for _ in ()).throw(Boom("x")))
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------- coordinates


def _meta(n_tiles: int, sample_id: str = "s1") -> dict:
    return {
        "provenance": {"sample_id": sample_id},
        "slide": {"dimensions": [1000, 800]},
        "tiling": {"n_tiles": n_tiles, "min_tissue_fraction": 0.1},
        "segmentation": {},
        "filtering": {},
        "artifact": {"coordinate_space": "level_0", "tile_order": "row_major"},
    }


def test_coordinates_round_trip_sorted_row_major_with_contract_dtypes(tmp_path: Path):
    # Given column-major (x, then y) as hs2p writes it; stored row-major (y, then x).
    x = [0, 0, 224, 224, 448]
    y = [0, 224, 0, 224, 0]
    fractions = [0.5, 0.6, 0.7, 0.8, 0.9]
    npz, meta_path = tmp_path / "tiles" / "s1.coordinates.npz", tmp_path / "tiles" / "s1.coordinates.meta.json"
    write_coordinates(npz, meta_path, Coordinates(np.array(x), np.array(y), np.array(fractions)), _meta(5))
    arrays, meta = read_coordinates(npz, meta_path)
    assert set(arrays) == set(COORDINATE_DTYPES) == {"x", "y", "tile_index", "tissue_fractions"}
    for key, dtype in COORDINATE_DTYPES.items():
        assert arrays[key].dtype == dtype
    assert arrays["y"].tolist() == [0, 0, 0, 224, 224]
    assert arrays["x"].tolist() == [0, 224, 448, 0, 224]
    assert arrays["tissue_fractions"].tolist() == pytest.approx([0.5, 0.7, 0.9, 0.6, 0.8])  # moved with their tile
    assert arrays["tile_index"].tolist() == [0, 1, 2, 3, 4]
    assert meta == _meta(5)
    # A user reads them with plain numpy and json.
    with np.load(npz) as archive:
        assert sorted(archive.files) == ["tile_index", "tissue_fractions", "x", "y"]
    assert meta_path.read_text(encoding="utf-8").endswith("}\n")
    assert json.loads(meta_path.read_text(encoding="utf-8")) == _meta(5)


def test_zero_tiles_write_empty_arrays(tmp_path: Path):
    npz, meta_path = tmp_path / "z.coordinates.npz", tmp_path / "z.coordinates.meta.json"
    write_coordinates(npz, meta_path, Coordinates(np.array([]), np.array([]), np.array([])), _meta(0))
    arrays, _ = read_coordinates(npz, meta_path)
    assert all(len(a) == 0 for a in arrays.values())
    assert {k: a.dtype for k, a in arrays.items()} == {k: np.dtype(d) for k, d in COORDINATE_DTYPES.items()}


def test_coordinates_reject_a_wrong_n_tiles_or_section_and_write_nothing(tmp_path: Path):
    npz, meta_path = tmp_path / "s.coordinates.npz", tmp_path / "s.coordinates.meta.json"
    coords = Coordinates(np.array([0, 1]), np.array([0, 0]), np.array([1.0, 1.0]))
    with pytest.raises(ValueError, match="n_tiles"):
        write_coordinates(npz, meta_path, coords, _meta(3))
    meta = _meta(2)
    del meta["filtering"]
    with pytest.raises(ValueError, match="filtering"):
        write_coordinates(npz, meta_path, coords, meta)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="same length"):
        Coordinates(np.array([0, 1]), np.array([0]), np.array([1.0, 1.0]))
    assert set(META_SECTIONS) == {"provenance", "slide", "tiling", "segmentation", "filtering", "artifact"}


def test_read_coordinates_rejects_a_wrong_dtype_extra_array_or_count(tmp_path: Path):
    npz, meta_path = tmp_path / "s.coordinates.npz", tmp_path / "s.coordinates.meta.json"
    atomic.write_json(meta_path, _meta(2))
    good = {
        "x": np.array([0, 1], np.int64),
        "y": np.array([0, 0], np.int64),
        "tile_index": np.arange(2, dtype=np.int32),
        "tissue_fractions": np.ones(2, np.float32),
    }
    np.savez(npz, **{**good, "x": good["x"].astype(np.int32)})
    with pytest.raises(ValueError, match="x has dtype int32"):
        read_coordinates(npz, meta_path)
    np.savez(npz, **good, extra=np.zeros(2))
    with pytest.raises(ValueError, match="arrays"):
        read_coordinates(npz, meta_path)
    np.savez(npz, **good)
    atomic.write_json(meta_path, _meta(5))
    with pytest.raises(ValueError, match="n_tiles"):
        read_coordinates(npz, meta_path)


def test_the_payload_is_replaced_before_the_sidecar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    order: list[str] = []
    real_replace = os.replace

    def recording(src, dst):
        # When the sidecar lands, its payload must already be complete on disk.
        if str(dst).endswith(".meta.json"):
            with np.load(tmp_path / "s.coordinates.npz") as archive:
                assert len(archive["x"]) == 2
        order.append(Path(dst).name)
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", recording)
    coords = Coordinates(np.array([0, 1]), np.array([0, 0]), np.array([1.0, 1.0]))
    write_coordinates(tmp_path / "s.coordinates.npz", tmp_path / "s.coordinates.meta.json", coords, _meta(2))
    assert order == ["s.coordinates.npz", "s.coordinates.meta.json"]


def test_a_failed_sidecar_write_keeps_no_sidecar_for_the_new_payload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    coords = Coordinates(np.array([0]), np.array([0]), np.array([1.0]))
    monkeypatch.setattr(atomic, "write_json", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        write_coordinates(tmp_path / "s.coordinates.npz", tmp_path / "s.coordinates.meta.json", coords, _meta(1))
    assert not (tmp_path / "s.coordinates.meta.json").exists()
    assert _leftovers(tmp_path) == []


# ------------------------------------------------------------------------------------ process list


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def test_process_list_header_and_rows(tmp_path: Path):
    path = tmp_path / "out" / "process_list.csv"
    process_list.update(path, "007", "done", num_tiles=12, image_path="/data/a.svs", run_id="r1")
    process_list.update(path, "b", "failed", error="ValueError: bad slide\nsecond line")
    header, rows = _read_csv(path)
    assert header[:3] == ["sample_id", "status", "error"]
    assert path.read_text(encoding="utf-8").startswith("sample_id,status,error,")
    assert [r["sample_id"] for r in rows] == ["007", "b"]
    assert rows[0]["num_tiles"] == "12" and rows[0]["error"] == "" and rows[0]["run_id"] == "r1"
    assert rows[1]["error"] == "ValueError: bad slide\nsecond line"  # quoted, still one row
    assert rows[0]["updated_at"].endswith("+00:00")
    assert process_list.read_rows(path)["007"]["status"] == "done"


def test_process_list_update_replaces_the_row_of_the_sample(tmp_path: Path):
    path = tmp_path / "process_list.csv"
    process_list.update(path, "a", "failed", error="OSError: gone")
    process_list.update(path, "b", "done", num_tiles=1)
    process_list.update(path, "a", "done", num_tiles=5)
    _, rows = _read_csv(path)
    assert [(r["sample_id"], r["status"], r["error"], r["num_tiles"]) for r in rows] == [
        ("a", "done", "", "5"),
        ("b", "done", "", "1"),
    ]


def test_process_list_rejects_bad_updates(tmp_path: Path):
    path = tmp_path / "process_list.csv"
    with pytest.raises(ValueError, match="needs an error"):
        process_list.update(path, "a", "failed")
    with pytest.raises(ValueError, match="status 'ok'"):
        process_list.update(path, "a", "ok")
    with pytest.raises(ValueError, match="unknown process_list columns"):
        process_list.update(path, "a", "done", colour="blue")
    assert not path.exists()


def test_format_error_is_type_colon_message_on_one_line():
    assert process_list.format_error(FileNotFoundError("slide\n  missing:  /x.svs")) == (
        "FileNotFoundError: slide missing: /x.svs"
    )
    assert process_list.format_error(ValueError()) == "ValueError: "


def _hammer(path: str, worker: int, count: int) -> None:
    for i in range(count):
        process_list.update(Path(path), f"w{worker}-{i:02d}", "done", num_tiles=i, run_id=f"run-{worker}")


def test_concurrent_updates_from_several_processes_lose_no_rows(tmp_path: Path):
    path = tmp_path / "process_list.csv"
    workers, count = 4, 25
    context = multiprocessing.get_context("spawn")  # no fork of a process that holds reader threads
    processes = [context.Process(target=_hammer, args=(str(path), w, count)) for w in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    _, rows = _read_csv(path)
    assert len(rows) == workers * count
    assert {r["sample_id"] for r in rows} == {f"w{w}-{i:02d}" for w in range(workers) for i in range(count)}
    assert [p.name for p in tmp_path.iterdir() if ".tmp" in p.name] == []


# ------------------------------------------------------------------------------- config and previews


def test_config_yaml_is_written_once_and_reloads(tmp_path: Path):
    path = tmp_path / "config.yaml"
    block = {"output_dir": "/o", "tiling": {"backend": "auto", "preview": {"tissue_contour_color": [1, 2, 3]}}}
    write_config_yaml(path, block)
    assert yaml.safe_load(path.read_text(encoding="utf-8")) == block
    assert path.read_text(encoding="utf-8").startswith("output_dir:")  # key order kept, block style
    first = path.stat().st_mtime_ns
    time.sleep(0.01)
    write_config_yaml(path, block)  # unchanged: not rewritten
    assert path.stat().st_mtime_ns == first
    write_config_yaml(path, {**block, "output_dir": "/p"})
    assert yaml.safe_load(path.read_text(encoding="utf-8"))["output_dir"] == "/p"


def test_previews_are_rgb_pngs(tmp_path: Path):
    rgb = np.zeros((5, 7, 3), dtype=np.uint8)
    rgb[1, 2] = (157, 219, 129)
    path = write_png(tmp_path / "preview" / "mask" / "s1.png", rgb)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode == "RGB" and image.size == (7, 5)
        assert np.array_equal(np.asarray(image), rgb)
    assert png_bytes(rgb)[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="RGB"):
        write_png(tmp_path / "gray.png", np.zeros((5, 7), dtype=np.uint8))
    markdown = thumbnail_markdown(np.zeros((900, 600, 3), dtype=np.uint8), "s1")
    assert markdown.startswith("![s1](data:image/png;base64,")


# ------------------------------------------------------------------------------------- fingerprint


def test_the_fingerprint_follows_the_content_not_the_timestamps(tmp_path: Path):
    path = tmp_path / "slide.svs"
    data = bytearray(os.urandom(300_000))
    path.write_bytes(bytes(data))
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    first = fingerprint(path)
    assert first["sha256"] == fingerprint(path)["sha256"] and file_fingerprint(path) == first["sha256"][:32]
    # An edit in the middle that keeps size and mtime (what a cheap head/tail fingerprint misses).
    data[150_000] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert fingerprint(path, known=first)["sha256"] != first["sha256"]
    assert matches(first, path) is False
    # Same bytes again, new mtime (the slide was replaced by a copy): the same slide.
    data[150_000] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(2_000_000_000, 2_000_000_000))
    assert fingerprint(path, known=first)["sha256"] == first["sha256"] and matches(first, path) is True
    # Appended bytes.
    path.write_bytes(bytes(data) + b"x")
    assert fingerprint(path)["sha256"] != first["sha256"]


def test_an_unchanged_stat_key_reuses_the_known_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The hash is the identity; the stat key only decides whether the file must be read again."""
    from slide2vec_dagster import fingerprint as fingerprint_module

    path = tmp_path / "slide.svs"
    path.write_bytes(b"abc" * 1000)
    first = fingerprint(path)
    reads = []
    real = fingerprint_module._sha256
    monkeypatch.setattr(fingerprint_module, "_sha256", lambda p: reads.append(p) or real(p))
    assert fingerprint(path, known=first) == first and reads == []
    os.chmod(path, 0o600)  # ctime moves: read again, same identity
    again = fingerprint(path, known=first)
    assert reads == [path] and again["sha256"] == first["sha256"] and identity(again) == identity(first)
    moved = tmp_path / "moved.svs"
    path.rename(moved)
    assert identity(fingerprint(moved)) != identity(first)  # sidecars must then show the new path


def test_the_fingerprint_of_a_folder_covers_every_file(tmp_path: Path):
    folder = tmp_path / "dicom"
    folder.mkdir()
    for i in range(3):
        (folder / f"level-{i}.dcm").write_bytes(bytes([i]) * 100)
    first = file_fingerprint(folder)
    (folder / "level-1.dcm").write_bytes(b"\x09" * 100)
    assert file_fingerprint(folder) != first
    (folder / "level-3.dcm").write_bytes(b"new level")
    assert len({first, file_fingerprint(folder)}) == 2
