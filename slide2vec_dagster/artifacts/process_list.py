"""``process_list.csv``: one row per sample, first columns ``sample_id,status,error`` (ARTIFACTS.md s9).

Several runs of one pipeline may finish at the same moment (run concurrency, backfills), so every
update is a read-modify-write under an exclusive ``flock`` on a sibling lock file, committed with an
atomic replace: concurrent runs never lose each other's rows and readers never see a half file.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from slide2vec_dagster.artifacts import atomic

COLUMNS = (
    "sample_id",
    "status",
    "error",
    "num_tiles",
    "image_path",
    "coordinates_npz_path",
    "mask_preview_path",
    "tiling_preview_path",
    "encoder_name",
    "feature_path",
    "run_id",
    "updated_at",
)
STATUSES = ("done", "failed", "skipped")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def read_rows(path: Path) -> dict[str, dict[str, str]]:
    if not path.exists():
        return {}
    with path.open(newline="", encoding="utf-8") as handle:
        return {row["sample_id"]: row for row in csv.DictReader(handle)}


def format_error(exc: BaseException) -> str:
    """``<ExceptionType>: <message>`` on one line, as the contract asks."""
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}"


def update(path: Path, sample_id: str, status: str, error: str = "", **fields: object) -> None:
    """Insert or update the row of ``sample_id`` (columns not given keep their value); other rows are
    kept as they are."""
    if status not in STATUSES:
        raise ValueError(f"status {status!r} not in {STATUSES}")
    if status == "failed" and not error:
        raise ValueError("a failed row needs an error message")
    unknown = set(fields) - set(COLUMNS)
    if unknown:
        raise ValueError(f"unknown process_list columns {sorted(unknown)}")
    with _locked(path):
        rows = read_rows(path)
        # A later step (embedding) adds to the row an earlier step (tiling) wrote; it does not erase it.
        row = {column: rows.get(sample_id, {}).get(column, "") for column in COLUMNS}
        row.update({key: "" if value is None else str(value) for key, value in fields.items()})
        row.update(sample_id=sample_id, status=status, error=error)
        row["updated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        rows[sample_id] = row
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for existing in rows.values():
            writer.writerow({column: existing.get(column, "") for column in COLUMNS})
        atomic.write_text(path, buffer.getvalue())
