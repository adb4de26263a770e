"""Fingerprints of slide and mask files, for skip decisions, staleness and lineage.

What a fingerprint reads: the file's full content (SHA-256), its resolved path, and a stat key (size,
mtime, ctime, inode, device). The content hash is what identifies the slide; the stat key is only a
cache key: when a previous fingerprint is passed in and the stat key is unchanged, its hash is reused
without reading the file. An in-place edit that restores size and mtime still changes ctime (which no
user call can set back), so the file is hashed again and the edit is seen. A copy, a ``chmod`` or a
restore from backup changes the stat key but not the hash: one re-read, nothing recomputed.

Cost, measured on this 2-core machine: a 3 GB file took 1.9 s to hash from the page cache and 2.6 s
after dropping the caches (one sequential read; on network storage, the time to read the file once),
and 0.1 ms when its stat key is unchanged. It is paid once per slide, and again only when the stat key
changes. A DICOM series (a folder) is the hash of its files' hashes in name order.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

STAT_FIELDS = ("size", "mtime_ns", "ctime_ns", "inode", "device")


def stat_key(path: Path) -> dict[str, int]:
    stat = path.stat()
    return {
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "ctime_ns": stat.st_ctime_ns,
        "inode": stat.st_ino,
        "device": stat.st_dev,
    }


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def files_of(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def fingerprint(path: str | Path, known: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"path", "sha256", "files": [{"name", "sha256", <stat key>}...]}`` of a file or a DICOM folder.

    ``known`` (an earlier result for the same path) lets unchanged files skip the read.
    """
    path = Path(os.path.abspath(path))
    previous = {}
    if known and known.get("path") == str(path):
        previous = {entry.get("name"): entry for entry in known.get("files", []) if isinstance(entry, dict)}
    files = []
    for file in files_of(path):
        name = file.relative_to(path).as_posix() if path.is_dir() else file.name
        key = stat_key(file)
        old = previous.get(name)
        if old and all(old.get(field) == key[field] for field in STAT_FIELDS) and old.get("sha256"):
            digest = old["sha256"]
        else:
            digest = _sha256(file)
        files.append({"name": name, "sha256": digest, **key})
    if len(files) == 1 and not path.is_dir():
        combined = files[0]["sha256"]
    else:
        combined = hashlib.sha256("".join(f"{f['name']}\0{f['sha256']}\n" for f in files).encode()).hexdigest()
    return {"path": str(path), "sha256": combined, "size": sum(f["size"] for f in files), "files": files}


def stat_unchanged(record: dict[str, Any] | None, path: Path | None) -> bool:
    """Whether a fingerprint record's stat keys still describe the file(s) at ``path`` (no read: a cheap
    "unchanged" that a replaced, touched or moved file fails)."""
    if path is None:
        return record is None
    if not record or record.get("path") != str(path):
        return False
    recorded = {entry.get("name"): entry for entry in record.get("files", []) if isinstance(entry, dict)}
    try:
        files = files_of(path)
        if len(files) != len(recorded):
            return False
        for file in files:
            old = recorded.get(file.relative_to(path).as_posix() if path.is_dir() else file.name)
            key = stat_key(file)
            if old is None or any(old.get(field) != key[field] for field in STAT_FIELDS):
                return False
    except OSError:
        return False
    return True


def identity(record: dict[str, Any] | None) -> str | None:
    """What decides staleness: the content and where it is (a moved slide gets sidecars with its new path)."""
    if record is None:
        return None
    return f"{record['path']}\0{record['sha256']}"


def matches(record: dict[str, Any] | None, path: str | Path) -> bool | None:
    """Whether the file at ``path`` still has the fingerprinted content (None: no record to compare)."""
    if not record:
        return None
    try:
        return fingerprint(path, record)["sha256"] == record.get("sha256")
    except OSError:
        return False


def file_fingerprint(path: str | Path) -> str:
    """Short content hash of a file or folder (kept for callers that only need an id)."""
    return fingerprint(path)["sha256"][:32]
