"""A deployed slide2vec-dagster on this machine's servers, for the Celery tests and the orchestration benchmark:
a fresh Postgres database, a DAGSTER_HOME with the repository's ``dagster.celery.yaml`` (or
``dagster.postgres.yaml`` for Dagster's default run launcher: a process per run), a platform config, long-lived
Celery workers (``slide2vec-dagster worker``) and ``dagster-daemon``, each a subprocess in its own process
group, stopped (and the database and queues dropped) on exit.

Queue names are unique per stack, so stacks never take each other's tasks.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SERVERS = {"PostgreSQL": 5432, "RabbitMQ": 5672, "Redis": 6379}
BROKER = "pyamqp://guest@127.0.0.1:5672//"
BACKEND = "redis://127.0.0.1:6379/0"


def unreachable_servers(names: Iterable[str] = SERVERS) -> list[str]:
    """The servers (of PostgreSQL, RabbitMQ, Redis) that do not accept a connection on 127.0.0.1."""
    missing = []
    for name in names:
        try:
            socket.create_connection(("127.0.0.1", SERVERS[name]), timeout=2).close()
        except OSError:
            missing.append(f"{name} (127.0.0.1:{SERVERS[name]})")
    return missing


def _postgres(sql: str) -> None:
    import psycopg2

    connection = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
    finally:
        connection.close()


def write_manifest(path: Path, rows: Sequence[dict[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=sorted({key for row in rows for key in row}))
        writer.writeheader()
        writer.writerows(rows)


class DeployedStack:
    """``with DeployedStack(root, rows, pipelines) as stack: stack.start_workers(); stack.start_daemon()``."""

    def __init__(
        self,
        root: Path,
        rows: Sequence[dict[str, str]],
        pipelines: dict[str, Any],
        *,
        launcher: str = "celery",  # celery | default (Dagster's DefaultRunLauncher: a process per run)
        execution: dict[str, Any] | None = None,
        max_concurrent_runs: int | None = None,
    ) -> None:
        self.root = root
        self.rows = list(rows)
        self.pipelines = pipelines
        self.launcher = launcher
        self.max_concurrent_runs = max_concurrent_runs
        self.tag = f"s2v{uuid.uuid4().hex[:10]}"
        self.queues = {"runs": f"{self.tag}-runs", "cpu": f"{self.tag}-cpu", "gpu": f"{self.tag}-gpu"}
        self.execution = {
            "executor": "celery" if launcher == "celery" else "in_process",
            "celery": {
                "broker": BROKER,
                "backend": BACKEND,
                "run_queue": self.queues["runs"],
                "cpu_queue": self.queues["cpu"],
                "gpu_queue": self.queues["gpu"],
            },
            "sensor_interval_seconds": 5,
            **(execution or {}),
        }
        self.home = root / "dagster_home"
        self.config_path = root / "platform.yaml"
        self.workspace = root / "workspace.yaml"
        self.processes: dict[str, subprocess.Popen] = {}
        self._saved_env: dict[str, str | None] = {}

    # --- set-up and tear-down ---------------------------------------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        return {
            "DAGSTER_HOME": str(self.home),
            "SLIDE2VEC_DAGSTER_CONFIG": str(self.config_path),
            "SLIDE2VEC_PG_DB": self.tag,
            "SLIDE2VEC_PG_USER": "postgres",
            "SLIDE2VEC_CELERY_BROKER": BROKER,
            "SLIDE2VEC_CELERY_BACKEND": BACKEND,
        }

    def output_dir(self, pipeline: str) -> Path:
        return self.root / "out" / pipeline

    def __enter__(self) -> DeployedStack:
        needed = ["PostgreSQL"] + (["RabbitMQ", "Redis"] if self.launcher == "celery" else [])
        missing = unreachable_servers(needed)
        if missing:
            raise ConnectionError(f"not reachable: {', '.join(missing)}")
        self.root.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(exist_ok=True)
        _postgres(f'CREATE DATABASE "{self.tag}"')
        variant = "dagster.celery.yaml" if self.launcher == "celery" else "dagster.postgres.yaml"
        instance_yaml = (ROOT / variant).read_text(encoding="utf-8")
        if self.launcher == "celery":
            assert "default_queue: dagster\n" in instance_yaml
            instance_yaml = instance_yaml.replace("default_queue: dagster\n", f"default_queue: {self.queues['runs']}\n")
        if self.max_concurrent_runs is not None:
            instance_yaml = re.sub(
                r"max_concurrent_runs: \d+", f"max_concurrent_runs: {self.max_concurrent_runs}", instance_yaml
            )
        (self.home / "dagster.yaml").write_text(instance_yaml, encoding="utf-8")
        write_manifest(self.root / "cohort.csv", self.rows)
        config = {
            "manifests": ["cohort.csv"],
            "output_root": "out",
            "execution": self.execution,
            "pipelines": self.pipelines,
        }
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        self.workspace.write_text(
            yaml.safe_dump(
                {
                    "load_from": [
                        {
                            "python_module": {
                                "module_name": "slide2vec_dagster.definitions",
                                "location_name": "slide2vec",
                                "working_directory": str(ROOT),
                            }
                        }
                    ]
                }
            ),
            encoding="utf-8",
        )
        for key, value in self.env.items():
            self._saved_env[key] = os.environ.get(key)
            os.environ[key] = value
        return self

    def __exit__(self, *exc: object) -> None:
        for name in list(self.processes):
            self.stop(name)
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if self.launcher == "celery":
            self._delete_queues()
        try:
            _postgres(f'DROP DATABASE IF EXISTS "{self.tag}" WITH (FORCE)')
        except Exception as error:  # leave the database; say so
            print(f"could not drop the test database {self.tag}: {error}", file=sys.stderr)

    def _delete_queues(self) -> None:
        from kombu import Connection

        try:
            with Connection(BROKER, connect_timeout=5) as connection:
                channel = connection.channel()
                for queue in self.queues.values():
                    channel.queue_delete(queue)
        except Exception as error:
            print(f"could not delete the Celery queues {list(self.queues.values())}: {error}", file=sys.stderr)

    # --- processes --------------------------------------------------------------------------------------------
    def _spawn(self, name: str, argv: Sequence[str], extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        log = (self.root / f"{name}.log").open("ab")
        process = subprocess.Popen(
            list(argv),
            cwd=self.root,
            env={**os.environ, **self.env, **(extra_env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped with its pool's children
        )
        log.close()
        self.processes[name] = process
        return process

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def start_worker(
        self,
        name: str,
        role: str,
        *,
        concurrency: int = 2,
        shim: Path | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.Popen:
        """A ``slide2vec-dagster worker`` on the stack's ``role`` queue (runs | cpu | gpu); ``shim``: a script
        that patches something, then runs the CLI (a test's slow encoder)."""
        entry = [str(shim)] if shim else ["-m", "slide2vec_dagster.cli"]
        argv = [sys.executable, *entry, "worker", "--config", str(self.config_path), "--queue", self.queues[role]]
        argv += ["--concurrency", str(concurrency), "--log-level", "INFO"]
        return self._spawn(name, argv, extra_env)

    def wait_ready(self, names: Iterable[str], timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        for name in names:
            while " ready." not in self.log(name):
                process = self.processes[name]
                if process.poll() is not None:
                    raise RuntimeError(f"worker {name} exited ({process.returncode}):\n{self.log(name)[-3000:]}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"worker {name} not ready after {timeout_s:.0f} s:\n{self.log(name)[-3000:]}")
                time.sleep(0.2)

    def start_workers(self, runs: int = 2, cpu: int = 2, gpu: int = 1) -> None:
        self.start_worker("worker-runs", "runs", concurrency=runs)
        self.start_worker("worker-cpu", "cpu", concurrency=cpu)
        for index in range(gpu):
            self.start_worker(f"worker-gpu{index}", "gpu")
        self.wait_ready(["worker-runs", "worker-cpu", *(f"worker-gpu{i}" for i in range(gpu))])

    def start_daemon(self) -> subprocess.Popen:
        return self._spawn("daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(self.workspace)])

    def cli(self, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "slide2vec_dagster.cli", *args, "--config", str(self.config_path)],
            cwd=self.root,
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def dagster(self, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN / "dagster"), *args, "-w", str(self.workspace)],
            cwd=self.root,
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group of ``name`` (a worker and its pool's children)."""
        process = self.processes[name]
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        process.wait(30)

    def stop(self, name: str) -> None:
        process = self.processes.pop(name)
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(15)
            except ProcessLookupError:
                pass

    # --- what happened ----------------------------------------------------------------------------------------
    def wait_for_runs(self, count: int, timeout_s: float, instance: Any) -> list[Any]:
        """The first ``count`` runs, once all of them have ended (or TimeoutError with their statuses)."""
        from dagster import DagsterRunStatus

        done = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
        deadline = time.monotonic() + timeout_s
        while True:
            runs = instance.get_runs()
            if len(runs) >= count and all(run.status in done for run in runs):
                return runs
            if time.monotonic() > deadline:
                states = sorted(f"{run.tags.get('dagster/partition')}:{run.status.value}" for run in runs)
                raise TimeoutError(f"{len(runs)} run(s) after {timeout_s:.0f} s, not all ended: {states}")
            for name, process in self.processes.items():
                if process.poll() is not None and name == "daemon":
                    raise RuntimeError(f"dagster-daemon exited:\n{self.log('daemon')[-3000:]}")
            time.sleep(1)
