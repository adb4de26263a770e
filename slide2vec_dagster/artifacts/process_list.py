"""``process_list.csv``: one row per sample, first columns ``sample_id,status,error`` (ARTIFACTS.md s9).

Several runs of one pipeline may finish at the same moment (run concurrency, backfills), so every
update is a read-modify-write under an exclusive ``flock`` on a sibling lock file, committed with an
atomic replace: concurrent runs never lose each other's rows and readers never see a half file.

A hand-edited or damaged file (not UTF-8, NUL bytes, wrong header, short rows, unknown statuses,
repeated ids) is never a crash: the readable rows are kept, the original is set aside as
``process_list.csv.damaged-<time>`` and the problems are returned so the run can report them.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from slide2vec_dagster.artifacts import atomic

logger = logging.getLogger(__name__)

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
    "slide_feature_path",
    "run_id",
    "updated_at",
)
# What the tiling step writes: an embedding failure keeps these (they describe this run's tiling).
TILING_COLUMNS = ("num_tiles", "image_path", "coordinates_npz_path", "mask_preview_path", "tiling_preview_path")
# What the tile embedding step adds: a slide-level failure keeps these too.
TILE_EMBEDDING_COLUMNS = (*TILING_COLUMNS, "encoder_name", "feature_path")
STATUSES = ("done", "failed", "skipped")


@dataclass
class ProcessList:
    rows: dict[str, dict[str, str]]
    problems: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _parse(path: Path) -> ProcessList:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ProcessList({})
    except UnicodeDecodeError as exc:
        # Keep what decodes: a stray byte should cost one row, not the file.
        text = path.read_bytes().decode("utf-8", errors="replace")
        problems = [f"not UTF-8 ({exc.reason} at byte {exc.start})"]
        return ProcessList(_parse_text(text, problems), problems)
    problems: list[str] = []
    return ProcessList(_parse_text(text, problems), problems)


def _parse_text(text: str, problems: list[str]) -> dict[str, dict[str, str]]:
    if "\x00" in text:
        problems.append("NUL bytes in the file")
        text = text.replace("\x00", "")
    try:
        records = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        problems.append(f"not readable as CSV ({exc})")
        return {}
    if not records:
        return {}
    header = [name.strip() for name in records[0]]
    if header[:3] != ["sample_id", "status", "error"]:
        problems.append(f"header starts {header[:3]}, not ['sample_id', 'status', 'error']")
        return {}
    rows: dict[str, dict[str, str]] = {}
    for line, record in enumerate(records[1:], start=2):
        if not record or not any(value.strip() for value in record):
            continue
        if len(record) != len(header):
            problems.append(f"record {line} has {len(record)} fields, the header {len(header)}: dropped")
            continue
        row = dict(zip(header, record, strict=True))
        sample_id, status = row["sample_id"], row["status"]
        if not sample_id or status not in STATUSES or (status == "failed" and not row["error"].strip()):
            problems.append(f"record {line} ({sample_id!r}, status {status!r}) is not a valid row: dropped")
            continue
        if sample_id in rows:
            problems.append(f"record {line} repeats {sample_id!r}: the later row is kept")
        rows[sample_id] = {column: row.get(column, "") for column in COLUMNS}
    return rows


def read(path: Path) -> ProcessList:
    """The rows (valid ones only) and what was wrong with the file, if anything."""
    return _parse(path)


def read_rows(path: Path) -> dict[str, dict[str, str]]:
    return _parse(path).rows


def format_error(exc: BaseException) -> str:
    """``<ExceptionType>: <message>`` on one line, as the contract asks."""
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}"


def _set_aside(path: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return atomic.set_aside(path, f"{path.name}.damaged-{stamp}")


def update(
    path: Path,
    sample_id: str,
    status: str,
    error: str = "",
    *,
    keep: tuple[str, ...] | None = None,
    recover: Callable[[], dict[str, dict[str, str]]] | None = None,
    **fields: object,
) -> list[str]:
    """Insert or update the row of ``sample_id``; other rows are kept as they are.

    ``keep=None`` keeps the row's other columns (a later step adds to the row an earlier step of the
    same run wrote); ``keep=(...)`` keeps only those columns and clears the rest, so a failure or a
    fresh tiling never shows another run's numbers or paths. Returns the problems found in a damaged
    file, which is then rebuilt from its readable rows plus, through ``recover``, rows describing the
    artifacts on disk that lost theirs; the original is set aside beside it.
    """
    if status not in STATUSES:
        raise ValueError(f"status {status!r} not in {STATUSES}")
    if status == "failed" and not error:
        raise ValueError("a failed row needs an error message")
    unknown = set(fields) - set(COLUMNS)
    if unknown:
        raise ValueError(f"unknown process_list columns {sorted(unknown)}")
    with _locked(path):
        current = _parse(path)
        problems = list(current.problems)
        rows = current.rows
        if problems:
            damaged = _set_aside(path)
            recovered = {sid: row for sid, row in (recover() if recover else {}).items() if sid not in rows}
            rows.update(recovered)
            problems.append(
                f"rebuilt from its {len(current.rows) - len(recovered)} readable row(s) and {len(recovered)} row(s) "
                f"recovered from the artifacts on disk; the original is kept as {damaged}"
            )
            logger.warning("%s was damaged: %s", path, "; ".join(problems))
        previous = rows.get(sample_id, {})
        kept = COLUMNS if keep is None else keep
        row = {column: previous.get(column, "") if column in kept else "" for column in COLUMNS}
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
    return [f"{path}: {problem}" for problem in problems]
