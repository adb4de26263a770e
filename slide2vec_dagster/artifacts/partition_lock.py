"""One writer per partition: an exclusive ``flock`` on ``<output_dir>/.locks/<dimension>/<id>.lock`` while a
slide's (or patient's) step runs. Celery redelivers a task whose worker was lost (``task_acks_late``): should
the first worker still be alive, the second waits here, then finds the outputs current and skips them. The
kernel drops the lock when its process dies, so a ``kill -9`` never leaves a slide locked. ``flock`` holds
across hosts on NFSv4 and CephFS.

The holder writes who it is into the lock file and empties it when it is done, failed or not. A record found
on taking the lock therefore means the previous holder died mid-partition (killed, out of memory): the grant
says so, and counts how many holders in a row died on this partition, so that a slide that kills every
worker that takes it (a redelivered task, again and again) can be failed instead of retried forever.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class PartitionLockTimeout(TimeoutError):
    """Another process kept the partition's lock for longer than we are willing to wait."""


@dataclass(frozen=True)
class LockGrant:
    waited_s: float
    # The record of the holder that died holding the lock (None: the last holder finished).
    died_holder: dict[str, Any] | None = None
    # How many holders in a row died on this partition before this one.
    deaths: int = 0

    def describe_died_holder(self) -> str:
        holder = self.died_holder or {}
        parts = [f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"]
        if holder.get("run_id"):
            parts.append(f"run {str(holder['run_id'])[:8]}")
        if holder.get("since"):
            parts.append(f"since {holder['since']}")
        return ", ".join(parts)


def _read_record(handle: Any) -> dict[str, Any] | None:
    handle.seek(0)
    text = handle.read().strip()
    if not text:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return {"unreadable": text[:200]}
    return record if isinstance(record, dict) else {"unreadable": text[:200]}


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def _write_record(handle: Any, record: dict[str, Any] | None) -> None:
    handle.seek(0)
    handle.truncate()
    if record is not None:
        handle.write(json.dumps(record))
    handle.flush()


@contextlib.contextmanager
def partition_lock(
    path: Path, owner: dict[str, Any] | None = None, timeout_s: float = 24 * 3600, poll_s: float = 0.2
) -> Iterator[LockGrant]:
    """Hold the lock file ``path`` exclusively while the block runs; ``owner`` (e.g. the run id) is written
    into it for whoever finds it left behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    with os.fdopen(fd, "r+") as handle:
        warned = False
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not warned:
                    logger.warning("%s is held by another worker writing this partition; waiting for it", path)
                    warned = True
                if time.monotonic() - started > timeout_s:
                    raise PartitionLockTimeout(
                        f"{path} stayed locked by another process for {timeout_s:.0f} s; if no worker is "
                        "processing this partition, check the shared filesystem's lock support"
                    ) from None
                time.sleep(poll_s)
        try:
            died = _read_record(handle)
            deaths = 0 if died is None else _count(died.get("deaths")) + 1
            record = {
                **(owner or {}),
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "since": datetime.now(UTC).isoformat(timespec="seconds"),
                "deaths": deaths,
            }
            _write_record(handle, record)
            yield LockGrant(time.monotonic() - started, died, deaths)
            _write_record(handle, None)
        except BaseException:
            # Failed, but alive to say so: not a death. (A kill -9 never reaches this line.)
            with contextlib.suppress(OSError):
                _write_record(handle, None)
            raise
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
