"""Cohort manifests: one CSV row per slide (``sample_id, image_path`` + optional columns)."""

from __future__ import annotations

import csv
import math
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from slide2vec_dagster.layout import id_problem

REQUIRED_COLUMNS = ("sample_id", "image_path")
OPTIONAL_COLUMNS = ("mask_path", "spacing_at_level_0", "patient_id")


class ManifestError(ValueError):
    """A manifest that cannot be used at all; the message names the file, the row and the fix."""


class ManifestRowError(ValueError):
    """One row of a manifest cannot be processed; only that slide fails, with this message."""


@dataclass(frozen=True)
class SlideEntry:
    sample_id: str
    image_path: Path
    mask_path: Path | None
    spacing_at_level_0: float | None
    patient_id: str | None
    manifest_path: Path
    row_number: int  # 1-based data row (header excluded), for messages
    line_number: int = 0  # physical line in the file (what an editor shows)
    problem: str | None = None  # why this row cannot be processed (its slide fails with it)

    @property
    def where(self) -> str:
        return f"{self.manifest_path} row {self.row_number} (line {self.line_number})"

    def checked(self) -> SlideEntry:
        """The entry, or ManifestRowError when its row cannot be processed."""
        if self.problem:
            raise ManifestRowError(f"{self.where}: {self.problem}")
        return self


def _resolve(value: str, base: Path) -> Path:
    # abspath also folds "..", so sidecars and process_list.csv show clean absolute paths.
    return Path(os.path.abspath(base / Path(value).expanduser()))


def _spacing(value: str) -> tuple[float | None, str | None]:
    if value.strip() == "":
        return None, None
    try:
        spacing = float(value)
    except ValueError:
        return None, f"spacing_at_level_0 {value!r} is not a number (µm/px, e.g. 0.25); fix it in the manifest"
    if not math.isfinite(spacing) or spacing <= 0:
        return None, f"spacing_at_level_0 must be a positive number of µm/px, got {value!r}; fix it in the manifest"
    return spacing, None


def input_file_problem(path: Path, column: str) -> str | None:
    """Why ``path`` (a slide or mask named in ``column``) cannot be read, or None.

    Only regular files, or a folder of DICOM files, are accepted: a FIFO, a device or a socket would
    block or never end, so they are refused before anything opens them.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return f"{column} {path} does not exist; fix the path in the manifest or restore the file"
    except OSError as exc:
        return f"{column} {path} cannot be read ({exc.strerror or exc}); check the path and its permissions"
    if stat.S_ISDIR(mode):
        if column == "image_path" and any(path.glob("*.dcm")):
            return None
        return f"{column} {path} is a directory; give a slide file, or a folder of DICOM (.dcm) files"
    if not stat.S_ISREG(mode):
        return f"{column} {path} is not a regular file (a pipe, device or socket); give the slide file itself"
    if not os.access(path, os.R_OK):
        return f"{column} {path} is not readable by this user; fix its permissions"
    return None


@dataclass
class ManifestReport:
    """Every row of one manifest (rows with a ``problem`` included) and the file-level problems."""

    path: Path
    entries: list[SlideEntry] = field(default_factory=list)
    file_problems: list[str] = field(default_factory=list)
    duplicate_ids: set[str] = field(default_factory=set)

    @property
    def row_problems(self) -> list[str]:
        return [f"{e.where}: {e.problem}" for e in self.entries if e.problem]


def inspect_manifest(path: str | Path) -> ManifestReport:
    """Parse a manifest without raising: file-level problems (missing columns, unreadable file,
    unsafe or duplicate ids, no rows) and per-row problems are both returned."""
    path = Path(path).absolute()
    report = ManifestReport(path)
    if not path.is_file():
        report.file_problems.append(
            f"manifest not found: {path}; fix the path under `manifests:` in the platform config"
        )
        return report
    try:
        _read_rows(path, report)
    except UnicodeDecodeError as exc:
        report.file_problems.append(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save the manifest as UTF-8 CSV"
        )
    except csv.Error as exc:
        report.file_problems.append(f"{path}: not a readable CSV file ({exc})")
    if not report.file_problems and not report.entries:
        report.file_problems.append(f"{path}: the manifest has no slide rows; add one row per slide under the header")
    return report


def read_manifest(path: str | Path) -> list[SlideEntry]:
    """Parse and validate one manifest; file-level problems raise ManifestError.

    Every value is read as text, so ids keep leading zeros. Relative ``image_path`` / ``mask_path``
    resolve against the manifest's folder. Rows with a problem of their own are returned with
    ``problem`` set: their slide fails alone when it runs.
    """
    report = inspect_manifest(path)
    if report.file_problems:
        raise ManifestError(report.file_problems[0])
    return report.entries


def _read_rows(path: Path, report: ManifestReport) -> None:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip() for name in (reader.fieldnames or [])]
        missing = [col for col in REQUIRED_COLUMNS if col not in header]
        if missing:
            report.file_problems.append(
                f"{path}: missing required column(s) {missing}; the header must contain "
                f"{', '.join(REQUIRED_COLUMNS)} (optional: {', '.join(OPTIONAL_COLUMNS)}), found {header}"
            )
            return
        reader.fieldnames = header
        first_row_of: dict[str, int] = {}
        for number, row in enumerate(reader, start=1):
            # line_num counts physical lines, so blank lines and quoted line breaks do not shift it.
            where = f"{path} row {number} (line {reader.line_num})"
            values = {key: (value if value is not None else "") for key, value in row.items() if key is not None}
            if not any(v.strip() for v in values.values()) and None not in row:
                continue  # blank line
            sample_id = values["sample_id"]
            # Ids become file names and partition keys: a bad one cannot be a slide of its own.
            problem = id_problem(sample_id)
            if problem:
                report.file_problems.append(f"{where}: sample_id {sample_id!r} is not a safe file name: {problem}")
                continue
            if sample_id in first_row_of:
                report.file_problems.append(
                    f"{where}: duplicate sample_id {sample_id!r} (first seen in row {first_row_of[sample_id]}); "
                    "every slide needs its own id"
                )
                report.duplicate_ids.add(sample_id)
                continue
            first_row_of[sample_id] = number
            problems = []
            if None in row:
                problems.append("more fields than the header has columns (an unquoted comma?)")
            image = values["image_path"].strip()
            if image == "":
                problems.append(f"image_path is empty for sample_id {sample_id!r}; add the slide's path")
            patient_id = values.get("patient_id", "")
            if patient_id != "" and (why := id_problem(patient_id)):
                problems.append(f"patient_id {patient_id!r} is not a safe file name: {why}")
                patient_id = ""
            spacing, spacing_problem = _spacing(values.get("spacing_at_level_0", ""))
            if spacing_problem:
                problems.append(spacing_problem)
            mask = values.get("mask_path", "").strip()
            report.entries.append(
                SlideEntry(
                    sample_id=sample_id,
                    # An empty path leaves the manifest itself as a placeholder; ``problem`` stops its use.
                    image_path=_resolve(image, path.parent) if image else path,
                    mask_path=_resolve(mask, path.parent) if mask else None,
                    spacing_at_level_0=spacing,
                    patient_id=patient_id or None,
                    manifest_path=path,
                    row_number=number,
                    line_number=reader.line_num,
                    problem="; ".join(problems) or None,
                )
            )


def read_manifests(paths: list[Path]) -> dict[str, SlideEntry]:
    """All slides of all manifests by sample_id; a file-level problem or an id in two manifests raises."""
    slides: dict[str, SlideEntry] = {}
    for manifest in paths:
        for entry in read_manifest(manifest):
            previous = slides.get(entry.sample_id)
            if previous is not None:
                raise ManifestError(
                    f"{entry.manifest_path} row {entry.row_number}: sample_id {entry.sample_id!r} is already "
                    f"registered by {previous.manifest_path} row {previous.row_number}; sample ids must be "
                    "unique across all manifests"
                )
            slides[entry.sample_id] = entry
    return slides


def find_slide(reports: Sequence[ManifestReport], sample_id: str) -> SlideEntry | None:
    """The row of one slide, for its own run (None: in no manifest). Problems of other rows or files do
    not matter here (registration refuses them), so a row appended with a typo never fails this slide."""
    found: list[SlideEntry] = []
    for report in reports:
        if sample_id in report.duplicate_ids:
            raise ManifestRowError(
                f"sample_id {sample_id!r} appears in more than one row of {report.path}; every slide needs its "
                "own id: remove or rename the extra row"
            )
        found += [entry for entry in report.entries if entry.sample_id == sample_id]
    if len(found) > 1:
        raise ManifestRowError(
            f"sample_id {sample_id!r} appears in {' and '.join(e.where for e in found)}; sample ids must be unique "
            "across all manifests"
        )
    return found[0].checked() if found else None


def patients_of(slides: dict[str, SlideEntry]) -> dict[str, list[str]]:
    """patient_id -> its sample_ids in manifest order."""
    patients: dict[str, list[str]] = {}
    for entry in slides.values():
        if entry.patient_id:
            patients.setdefault(entry.patient_id, []).append(entry.sample_id)
    return patients
