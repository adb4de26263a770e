"""One writer per partition (artifacts/partition_lock.py): exclusive across processes, and a holder that dies
mid-partition is noticed (and counted) by the next one."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slide2vec_dagster.artifacts.partition_lock import partition_lock

HOLD_AND_WAIT = """
import sys, time
from pathlib import Path
from slide2vec_dagster.artifacts.partition_lock import partition_lock
with partition_lock(Path(sys.argv[1]), {"run_id": sys.argv[2]}):
    print("held", flush=True)
    time.sleep(600)
"""


def _hold(path: str, log: str, hold_s: float) -> None:
    with partition_lock(Path(path), {"run_id": str(os.getpid())}, poll_s=0.01):
        with open(log, "a") as handle:
            handle.write(f"enter {os.getpid()} {time.monotonic()}\n")
        time.sleep(hold_s)
        with open(log, "a") as handle:
            handle.write(f"exit {os.getpid()} {time.monotonic()}\n")


def test_two_processes_never_hold_the_same_partition_at_once(tmp_path: Path):
    lock, log = tmp_path / ".locks" / "sample_id" / "s1.lock", tmp_path / "log.txt"
    processes = [
        multiprocessing.get_context("fork").Process(target=_hold, args=(str(lock), str(log), 0.3)) for _ in range(4)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(30)
        assert process.exitcode == 0
    events = [line.split() for line in log.read_text().splitlines()]
    assert len(events) == 8
    # Strictly alternating enter / exit of the same process: no two holders overlap.
    for enter, leave in zip(events[::2], events[1::2], strict=True):
        assert enter[0] == "enter" and leave[0] == "exit" and enter[1] == leave[1]
    assert lock.read_text() == ""  # every holder finished: no record left


def test_a_finished_or_failed_holder_leaves_no_record(tmp_path: Path):
    lock = tmp_path / "a.lock"
    with partition_lock(lock, {"run_id": "r1"}) as grant:
        assert grant.deaths == 0 and grant.died_holder is None
        record = json.loads(lock.read_text())
        assert record["run_id"] == "r1" and record["pid"] == os.getpid() and record["deaths"] == 0
    assert lock.read_text() == ""
    with pytest.raises(ValueError, match="bad slide"):
        with partition_lock(lock, {"run_id": "r2"}):
            raise ValueError("bad slide")
    assert lock.read_text() == ""  # a failure is not a death
    with partition_lock(lock) as grant:
        assert grant.deaths == 0


def _start_holder(lock: Path, run_id: str) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_AND_WAIT, str(lock), run_id], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_killed_holders_are_noticed_counted_and_forgotten_after_a_success(tmp_path: Path):
    lock = tmp_path / "b.lock"
    first = _start_holder(lock, "run-1")
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    # The kernel dropped the lock with the process; its record stays, so the next holder knows.
    second = _start_holder(lock, "run-2")
    assert json.loads(lock.read_text())["deaths"] == 1
    os.kill(second.pid, signal.SIGKILL)
    second.wait(10)
    with partition_lock(lock, {"run_id": "run-3"}, timeout_s=5) as grant:
        assert grant.deaths == 2  # two holders in a row died on this partition
        assert grant.died_holder is not None
        assert grant.died_holder["pid"] == second.pid and grant.died_holder["run_id"] == "run-2"
        assert f"pid {second.pid}" in grant.describe_died_holder()
    with partition_lock(lock) as grant:
        assert grant.deaths == 0  # run-3 finished: the count starts again


def test_an_unreadable_record_counts_as_one_death(tmp_path: Path):
    lock = tmp_path / "c.lock"
    lock.write_text("garbage{")
    with partition_lock(lock) as grant:
        assert grant.deaths == 1 and grant.died_holder == {"unreadable": "garbage{"}


def test_a_held_partition_makes_the_next_writer_wait_then_time_out(tmp_path: Path):
    lock = tmp_path / "d.lock"
    holder = _start_holder(lock, "slow")
    try:
        with pytest.raises(TimeoutError, match="stayed locked by another process"):
            with partition_lock(lock, timeout_s=0.5, poll_s=0.05):
                pass
    finally:
        holder.kill()
        holder.wait(10)
