"""Cohort manifests (slide2vec_dagster.manifest): parsing, path resolution and every rejection."""

from __future__ import annotations

from pathlib import Path

import pytest

from slide2vec_dagster.layout import MAX_ID_BYTES
from slide2vec_dagster.manifest import (
    ManifestError,
    ManifestRowError,
    find_slide,
    inspect_manifest,
    patients_of,
    read_manifest,
    read_manifests,
)


def _write(folder: Path, text: str, name: str = "cohort.csv", encoding: str = "utf-8") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(text.encode(encoding))
    return path


def _rejects(path: Path, *fragments: str) -> str:
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    message = str(info.value)
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_ids_are_text_and_keep_leading_zeros(tmp_path: Path):
    path = _write(tmp_path, "sample_id,image_path,patient_id\n007,a.svs,0042\n1e3,b.svs,\n")
    entries = read_manifest(path)
    assert [e.sample_id for e in entries] == ["007", "1e3"]
    assert entries[0].patient_id == "0042" and entries[1].patient_id is None
    assert [e.row_number for e in entries] == [1, 2]
    assert all(e.manifest_path == path for e in entries)


def test_relative_paths_resolve_against_the_manifest_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    folder = tmp_path / "cohorts" / "site-a"
    path = _write(
        folder,
        "sample_id,image_path,mask_path\n"
        "s1,../slides/s1.svs,masks/s1.tiff\n"
        f"s2,{tmp_path / 'abs' / 's2.svs'},\n"
        "s3,./s3.svs, \n",
    )
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    s1, s2, s3 = read_manifest(Path("cohorts/site-a/cohort.csv"))
    assert s1.image_path == tmp_path / "cohorts" / "slides" / "s1.svs"  # ".." folded: a clean absolute path
    assert s1.mask_path == folder / "masks" / "s1.tiff"
    assert s2.image_path == tmp_path / "abs" / "s2.svs" and s2.mask_path is None
    assert s3.image_path == folder / "s3.svs" and s3.mask_path is None
    assert all(e.image_path.is_absolute() for e in (s1, s2, s3))
    assert s1.manifest_path == path


def test_optional_columns_may_be_absent_empty_or_in_any_order(tmp_path: Path):
    minimal = read_manifest(_write(tmp_path / "a", "sample_id,image_path\ns1,s1.svs\n"))
    assert minimal[0].mask_path is None and minimal[0].spacing_at_level_0 is None and minimal[0].patient_id is None
    full = read_manifest(
        _write(
            tmp_path / "b",
            "patient_id, spacing_at_level_0 ,image_path,sample_id,mask_path,notes\n"
            "p1,0.25,s1.svs,s1,m1.tiff,extra columns are ignored\n"
            "p1,,s2.svs,s2,,\n",
        )
    )
    assert full[0].spacing_at_level_0 == 0.25 and full[0].patient_id == "p1"
    assert full[0].mask_path == tmp_path / "b" / "m1.tiff"
    assert full[1].spacing_at_level_0 is None and full[1].mask_path is None


def test_a_byte_order_mark_and_blank_lines_are_tolerated(tmp_path: Path):
    path = _write(tmp_path, "\ufeffsample_id,image_path\n\ns1,s1.svs\n,\n\ns2,s2.svs\n")
    assert [e.sample_id for e in read_manifest(path)] == ["s1", "s2"]


def test_patients_of_groups_slides_in_manifest_order(tmp_path: Path):
    path = _write(tmp_path, "sample_id,image_path,patient_id\nb,b.svs,p2\na,a.svs,p1\nc,c.svs,p2\nd,d.svs,\n")
    slides = read_manifests([path])
    assert list(slides) == ["b", "a", "c", "d"]
    assert patients_of(slides) == {"p2": ["b", "c"], "p1": ["a"]}


def test_duplicate_ids_are_rejected_naming_both_rows(tmp_path: Path):
    path = _write(tmp_path, "sample_id,image_path\ns1,a.svs\ns2,b.svs\ns1,c.svs\n")
    message = _rejects(path, "row 3", "duplicate sample_id 's1'", "row 1")
    assert "line 4" in message


@pytest.mark.parametrize(
    ("sample_id", "why"),
    [
        ("", "empty"),
        (".", "relative path component"),
        ("..", "relative path component"),
        ("a/b", "'/'"),
        ("a\\b", "'\\\\'"),
        ("a\x00b", "NUL"),
        (" x", "whitespace"),
        ("x ", "whitespace"),
    ],
)
def test_unsafe_sample_ids_are_rejected(tmp_path: Path, sample_id: str, why: str):
    quoted = '"' + sample_id + '"'
    path = _write(tmp_path, f"sample_id,image_path\nok,ok.svs\n{quoted},x.svs\n")
    _rejects(path, "row 2", "line 3", "sample_id", "not a safe file name", why.replace("\\\\", "\\"))


def _row_problem(path: Path, sample_id: str, *fragments: str) -> None:
    """A problem of one row: the manifest still loads, only that row carries it (and its slide fails)."""
    entries = {e.sample_id: e for e in read_manifest(path)}
    bad = entries[sample_id]
    assert bad.problem is not None
    for fragment in fragments:
        assert fragment in bad.problem, bad.problem
    assert all(e.problem is None for e in entries.values() if e.sample_id != sample_id)
    with pytest.raises(ManifestRowError) as info:
        bad.checked()
    assert str(path) in str(info.value) and "row" in str(info.value)


@pytest.mark.parametrize("patient_id", ["..", "p/1", " p1"])
def test_unsafe_patient_ids_fail_their_row(tmp_path: Path, patient_id: str):
    path = _write(tmp_path, f'sample_id,image_path,patient_id\ns1,s1.svs,"{patient_id}"\ns2,s2.svs,p2\n')
    _row_problem(path, "s1", "patient_id", "not a safe file name")


@pytest.mark.parametrize(
    ("header", "missing"),
    [("image_path", "sample_id"), ("sample_id", "image_path"), ("id,path", "sample_id")],
)
def test_missing_required_columns_are_rejected(tmp_path: Path, header: str, missing: str):
    path = _write(tmp_path, f"{header}\nvalue\n")
    _rejects(path, "missing required column", missing, "header must contain")


@pytest.mark.parametrize("text", ["", "sample_id,image_path\n", "sample_id,image_path\n\n,\n"])
def test_an_empty_manifest_is_rejected(tmp_path: Path, text: str):
    path = _write(tmp_path, text)
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("value", "why"),
    [("abc", "not a number"), ("0", "positive"), ("-0.5", "positive"), ("nan", "positive"), ("inf", "positive")],
)
def test_bad_spacing_values_fail_their_row(tmp_path: Path, value: str, why: str):
    path = _write(tmp_path, f"sample_id,image_path,spacing_at_level_0\ns1,s1.svs,0.5\ns2,s2.svs,{value}\n")
    _row_problem(path, "s2", "spacing_at_level_0", repr(value), why)


def test_an_empty_image_path_fails_its_row(tmp_path: Path):
    _row_problem(_write(tmp_path, "sample_id,image_path\ns1, \ns2,s2.svs\n"), "s1", "image_path is empty", "'s1'")


def test_a_row_with_more_fields_than_the_header_fails_its_row(tmp_path: Path):
    _row_problem(_write(tmp_path, "sample_id,image_path\ns1,s1.svs,surplus\ns2,s2.svs\n"), "s1", "more fields")


def test_an_overlong_id_is_refused_with_the_limit(tmp_path: Path):
    long_id = "x" * (MAX_ID_BYTES + 1)
    path = _write(tmp_path, f"sample_id,image_path\nok,ok.svs\n{long_id},x.svs\n")
    _rejects(path, "row 2", f"limited to {MAX_ID_BYTES} bytes")
    # The longest id allowed still gives file names (and their temporary twins) within NAME_MAX.
    longest = "é" * (MAX_ID_BYTES // 2)
    assert read_manifest(_write(tmp_path / "ok", f"sample_id,image_path\n{longest},x.svs\n"))[0].problem is None


def test_find_slide_ignores_other_rows_problems(tmp_path: Path):
    """A typo appended while a backfill runs must not fail the slides already registered."""
    path = _write(tmp_path, "sample_id,image_path,spacing_at_level_0\ns1,s1.svs,\ns2,s2.svs,0,5\n../x,y.svs,\n")
    report = inspect_manifest(path)
    assert report.file_problems and "'../x'" in report.file_problems[0]
    assert find_slide([report], "s1").sample_id == "s1"
    with pytest.raises(ManifestRowError, match="more fields"):
        find_slide([report], "s2")
    assert find_slide([report], "nope") is None
    dup = _write(tmp_path / "dup", "sample_id,image_path\ns1,a.svs\ns2,b.svs\ns1,c.svs\n")
    with pytest.raises(ManifestRowError, match="more than one row"):
        find_slide([inspect_manifest(dup)], "s1")
    assert find_slide([inspect_manifest(dup)], "s2").image_path == tmp_path / "dup" / "b.svs"


def test_rows_and_lines_count_blank_lines_and_quoted_line_breaks(tmp_path: Path):
    # Line numbers are what an editor shows: blank lines and a quoted multi-line field count.
    path = _write(tmp_path, 'sample_id,image_path,patient_id\n\ns1,s1.svs,"two\nlines"\n\ns1,again.svs,\n')
    _rejects(path, "row 2 (line 6)", "duplicate")


def test_a_missing_manifest_is_a_manifest_error(tmp_path: Path):
    path = tmp_path / "absent.csv"
    _rejects(path, "manifest not found")


def test_a_manifest_that_is_not_utf8_is_a_manifest_error(tmp_path: Path):
    path = _write(tmp_path, "sample_id,image_path\ncafé,s1.svs\n", encoding="latin-1")
    _rejects(path, "UTF-8")


def test_an_id_in_two_manifests_is_rejected_naming_both(tmp_path: Path):
    first = _write(tmp_path / "a", "sample_id,image_path\ns1,s1.svs\nshared,x.svs\n")
    second = _write(tmp_path / "b", "sample_id,image_path\nshared,y.svs\n")
    with pytest.raises(ManifestError) as info:
        read_manifests([first, second])
    message = str(info.value)
    assert str(second) in message and "row 1" in message
    assert str(first) in message and "row 2" in message
    assert "'shared'" in message and "unique across all manifests" in message


def test_two_manifests_with_distinct_ids_merge(tmp_path: Path):
    first = _write(tmp_path / "a", "sample_id,image_path\ns1,s1.svs\n")
    second = _write(tmp_path / "b", "sample_id,image_path\ns2,s2.svs\n")
    slides = read_manifests([first, second])
    assert list(slides) == ["s1", "s2"]
    assert slides["s2"].image_path == tmp_path / "b" / "s2.svs"


def test_the_demo_cohort_is_valid():
    demo = Path(__file__).resolve().parent.parent / "demo" / "cohort.csv"
    entries = read_manifest(demo)
    assert len(entries) == len({e.sample_id for e in entries}) >= 1
    for entry in entries:
        assert entry.image_path.exists(), f"demo slide {entry.image_path} is missing"
