"""The one place that writes files: temporary sibling + fsync + ``os.replace``.

A reader therefore sees either the old file or the complete new one, never a partial write.
Callers that write a payload and its sidecar write the payload first and the sidecar last.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def _temporary_sibling(path: Path) -> Iterator[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    # The suffix is kept so libraries that infer a format from the name (np.savez) do not rename it.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
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
        with open(tmp, "wb") as handle:
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
