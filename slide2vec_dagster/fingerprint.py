"""Cheap, stable fingerprints of slide files, for skip decisions and lineage.

Hashing a multi-GB slide on every run is too slow; name, size, mtime and the first and last 64 KiB
change whenever a slide is replaced or rewritten, which is what a fingerprint has to notice.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_EDGE = 64 * 1024


def _update(digest: hashlib._Hash, path: Path) -> None:  # type: ignore[name-defined]
    stat = path.stat()
    digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    with path.open("rb") as handle:
        digest.update(handle.read(_EDGE))
        if stat.st_size > 2 * _EDGE:
            handle.seek(-_EDGE, 2)
            digest.update(handle.read(_EDGE))


def file_fingerprint(path: str | Path) -> str:
    """sha256-based fingerprint of a file, or of every file of a directory (DICOM series)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        _update(digest, file)
    return digest.hexdigest()[:32]
