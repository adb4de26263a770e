"""Cohort manifests: one CSV row per slide (``sample_id, image_path`` + optional columns)."""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

from slide2vec_dagster.layout import id_problem

REQUIRED_COLUMNS = ("sample_id", "image_path")
OPTIONAL_COLUMNS = ("mask_path", "spacing_at_level_0", "patient_id")


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file, the row and the fix."""


@dataclass(frozen=True)
class SlideEntry:
    sample_id: str
    image_path: Path
    mask_path: Path | None
    spacing_at_level_0: float | None
    patient_id: str | None
    manifest_path: Path
    row_number: int  # 1-based data row (header excluded), for messages


def _resolve(value: str, base: Path) -> Path:
    # abspath also folds "..", so sidecars and process_list.csv show clean absolute paths.
    return Path(os.path.abspath(base / Path(value).expanduser()))


def _spacing(value: str, where: str) -> float | None:
    if value.strip() == "":
        return None
    try:
        spacing = float(value)
    except ValueError:
        raise ManifestError(f"{where}: spacing_at_level_0 {value!r} is not a number (µm/px, e.g. 0.25)") from None
    if not math.isfinite(spacing) or spacing <= 0:
        raise ManifestError(f"{where}: spacing_at_level_0 must be a positive number of µm/px, got {value!r}")
    return spacing


def read_manifest(path: str | Path) -> list[SlideEntry]:
    """Parse and validate one manifest. Every value is read as text, so ids keep leading zeros.

    Relative ``image_path`` / ``mask_path`` resolve against the manifest's folder.
    """
    path = Path(path).absolute()
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}; fix the path under `manifests:` in the platform config")
    try:
        return _read_rows(path)
    except UnicodeDecodeError as exc:
        raise ManifestError(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save the manifest as UTF-8 CSV"
        ) from None
    except csv.Error as exc:
        raise ManifestError(f"{path}: not a readable CSV file ({exc})") from None


def _read_rows(path: Path) -> list[SlideEntry]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip() for name in (reader.fieldnames or [])]
        missing = [col for col in REQUIRED_COLUMNS if col not in header]
        if missing:
            raise ManifestError(
                f"{path}: missing required column(s) {missing}; the header must contain "
                f"{', '.join(REQUIRED_COLUMNS)} (optional: {', '.join(OPTIONAL_COLUMNS)}), found {header}"
            )
        reader.fieldnames = header
        entries: list[SlideEntry] = []
        first_row_of: dict[str, int] = {}
        for number, row in enumerate(reader, start=1):
            # line_num counts physical lines, so blank lines and quoted line breaks do not shift it.
            where = f"{path} row {number} (line {reader.line_num})"
            if None in row:
                raise ManifestError(f"{where}: more fields than the header has columns")
            values = {key: (value if value is not None else "") for key, value in row.items()}
            if not any(v.strip() for v in values.values()):
                continue  # blank line
            sample_id = values["sample_id"]
            problem = id_problem(sample_id)
            if problem:
                raise ManifestError(f"{where}: sample_id {sample_id!r} is not a safe file name: {problem}")
            if sample_id in first_row_of:
                raise ManifestError(
                    f"{where}: duplicate sample_id {sample_id!r} (first seen in row {first_row_of[sample_id]}); "
                    "every slide needs its own id"
                )
            first_row_of[sample_id] = number
            if values["image_path"].strip() == "":
                raise ManifestError(f"{where}: image_path is empty for sample_id {sample_id!r}")
            patient_id = values.get("patient_id", "")
            if patient_id != "" and (problem := id_problem(patient_id)):
                raise ManifestError(f"{where}: patient_id {patient_id!r} is not a safe file name: {problem}")
            mask = values.get("mask_path", "").strip()
            entries.append(
                SlideEntry(
                    sample_id=sample_id,
                    image_path=_resolve(values["image_path"].strip(), path.parent),
                    mask_path=_resolve(mask, path.parent) if mask else None,
                    spacing_at_level_0=_spacing(values.get("spacing_at_level_0", ""), where),
                    patient_id=patient_id or None,
                    manifest_path=path,
                    row_number=number,
                )
            )
    if not entries:
        raise ManifestError(f"{path}: the manifest has no slide rows; add one row per slide under the header")
    return entries


def read_manifests(paths: list[Path]) -> dict[str, SlideEntry]:
    """All slides of all manifests by sample_id; an id in two manifests is an error."""
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


def patients_of(slides: dict[str, SlideEntry]) -> dict[str, list[str]]:
    """patient_id -> its sample_ids in manifest order."""
    patients: dict[str, list[str]] = {}
    for entry in slides.values():
        if entry.patient_id:
            patients.setdefault(entry.patient_id, []).append(entry.sample_id)
    return patients
