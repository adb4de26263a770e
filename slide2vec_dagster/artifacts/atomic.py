"""The one place that writes files: temporary sibling + fsync + ``os.replace``.

A reader therefore sees either the old file or the complete new one, never a partial write.
Callers that write a payload and its sidecar write the payload first and the sidecar last.

Temporary names are ``.<name>.<host>.<pid>.<random>.tmp``: they never end in an artifact extension
(so nothing mistakes one for a preview or a payload), and they say which process wrote them, so that
``sweep_debris`` can remove the leftovers of a killed writer without touching the in-flight files of
a concurrent run of the same output directory.
"""

from __future__ import annotations

import contextlib
import glob
import io
import json
import os
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

TEMP_SUFFIX = ".tmp"
# A leftover from another host cannot be checked for liveness; after this long nobody is writing it.
FOREIGN_DEBRIS_AGE_S = 24 * 3600
# Host names may hold dots; the pid and the random part never do.
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<host>[^/]+?)\.(?P<pid>\d+)\.(?P<rand>[0-9a-f]{8})\.tmp$")
# Names of the earlier scheme (``.<name>.<random>.tmp<ext>``), written before the host/pid were added.
_LEGACY_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?$")


# The host part is cut so that a temporary name fits NAME_MAX with the longest id layout allows.
HOST_CHARS = 20


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:HOST_CHARS] or "host"


# Characters a temporary name adds to the file name: "." + "." + host + "." + pid + "." + 8 hex + ".tmp".
TEMP_NAME_OVERHEAD = 1 + 1 + HOST_CHARS + 1 + 10 + 1 + 8 + len(TEMP_SUFFIX)


def temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{_host()}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


@contextlib.contextmanager
def _temporary_sibling(path: Path) -> Iterator[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _commit(tmp: Path, path: Path) -> None:
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def write_with(path: str | Path, writer: Callable[[IO[bytes]], Any]) -> Path:
    """Write ``path`` atomically by letting ``writer`` fill a binary file object."""
    path = Path(path)
    with _temporary_sibling(path) as tmp:
        with open(tmp, "xb") as handle:
            writer(handle)
        _commit(tmp, path)
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    return write_with(path, lambda handle: handle.write(data))


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, payload: dict[str, Any]) -> Path:
    """Sidecar convention of the contract: UTF-8, indent=2, sort_keys, trailing newline."""
    return write_text(path, json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def write_buffer(path: str | Path, fill: Callable[[io.BytesIO], Any]) -> Path:
    """For libraries that need a seekable target (zip-based npz, torch.save): build in memory first."""
    buffer = io.BytesIO()
    fill(buffer)
    return write_bytes(path, buffer.getvalue())


def set_aside(path: Path, new_name: str) -> Path:
    """Rename ``path`` beside itself (e.g. a damaged file kept for the user); atomic on one filesystem."""
    target = path.with_name(new_name)
    os.replace(path, target)
    return target


def remove(*paths: Path) -> list[Path]:
    """Delete files (missing ones are fine); returns those that existed. Used to withdraw an artifact."""
    removed = []
    for path in paths:
        try:
            path.unlink()
            removed.append(path)
        except FileNotFoundError:
            continue
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def is_debris(path: Path, now: float | None = None) -> bool:
    """True for a temporary file whose writer is gone: a dead pid on this host, or (other hosts, old
    schemes) a file untouched for ``FOREIGN_DEBRIS_AGE_S``."""
    match = _TEMP_NAME.match(path.name)
    if match is None and not _LEGACY_TEMP_NAME.match(path.name):
        return False
    if match is not None and match["host"] == _host():
        pid = int(match["pid"])
        return pid != os.getpid() and not _pid_alive(pid)
    try:
        age = (now or time.time()) - path.stat().st_mtime
    except FileNotFoundError:
        return False
    return age > FOREIGN_DEBRIS_AGE_S or (match is None and age > 60)


def sweep_debris(directory: Path) -> list[Path]:
    """Remove the temporary files that killed writers left anywhere under ``directory``."""
    if not directory.is_dir():
        return []
    now = time.time()
    return [removed for path in directory.rglob(".*") if is_debris(path, now) for removed in remove(path)]


def sweep_debris_of(targets: list[Path]) -> list[Path]:
    """Remove the leftovers of killed writes of these files only: what one slide's run does, so a
    cohort's runs never scan the whole output directory."""
    now = time.time()
    removed = []
    for target in targets:
        if not target.parent.is_dir():
            continue
        for path in target.parent.glob(f".{glob.escape(target.name)}.*"):
            if is_debris(path, now):
                removed += remove(path)
    return removed
