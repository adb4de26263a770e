"""Set-up and measurements shared by benchmarks/scale.py and tests/test_scale_postgres.py.

A Postgres-backed Dagster instance built from dagster.postgres.yaml, a synthetic cohort of N manifest rows, its
platform config, cohort-sensor ticks evaluated and applied the way the daemon and its code server do it, the
webserver's GraphQL run in-process, and one backfill-daemon iteration under a time budget.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import shutil
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from dagster import (
    AddDynamicPartitionsRequest,
    AssetKey,
    AssetMaterialization,
    DagsterInstance,
    Definitions,
    SensorDefinition,
    SensorEvaluationContext,
)

ROOT = Path(__file__).resolve().parents[1]
PG_YAML = ROOT / "dagster.postgres.yaml"
PG_HOST, PG_PORT = "127.0.0.1", 5432
SLIDE = ROOT / "tests" / "data" / "CMU-1-Small-Region.svs"
PIPELINE = "bench"
LOCATION = "slide2vec_scale"
COLUMNS = ["sample_id", "image_path", "mask_path", "spacing_at_level_0", "patient_id"]
# Patients own 1, 2, 3 and 4 slides in turn: 10 slides per 4 patients.
_PATIENT_OFFSET = (0, 1, 1, 2, 2, 2, 3, 3, 3, 3)


# --- Postgres -----------------------------------------------------------------------------------------------


def postgres_problem(user: str = "postgres") -> str | None:
    """Why Postgres at 127.0.0.1:5432 cannot be used (None: it can, or psycopg2 is missing to say more)."""
    try:
        socket.create_connection((PG_HOST, PG_PORT), timeout=3).close()
    except OSError as exc:
        return f"PostgreSQL at {PG_HOST}:{PG_PORT} is not reachable: {exc}"
    try:
        import psycopg2
    except ImportError:
        return None  # reachable; the missing driver is reported by whoever needs it
    try:
        psycopg2.connect(host=PG_HOST, port=PG_PORT, user=user, dbname="postgres", connect_timeout=3).close()
    except psycopg2.OperationalError as exc:
        return f"PostgreSQL at {PG_HOST}:{PG_PORT} does not accept {user!r}: {str(exc).strip()}"
    return None


def _admin(user: str, statement: str, name: str) -> None:
    import psycopg2
    from psycopg2 import sql

    connection = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=user, dbname="postgres", connect_timeout=5)
    connection.autocommit = True  # CREATE / DROP DATABASE cannot run inside a transaction
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql.SQL(statement).format(sql.Identifier(name)))
    finally:
        connection.close()


def reset_database(name: str, user: str = "postgres") -> None:
    """Drop (closing its sessions) and re-create ``name``: every run starts from an empty instance."""
    _admin(user, "DROP DATABASE IF EXISTS {} WITH (FORCE)", name)
    _admin(user, "CREATE DATABASE {}", name)


def drop_database(name: str, user: str = "postgres") -> None:
    _admin(user, "DROP DATABASE IF EXISTS {} WITH (FORCE)", name)


@contextlib.contextmanager
def postgres_instance(database: str, user: str = "postgres") -> Iterator[DagsterInstance]:
    """An instance built from dagster.postgres.yaml in a temporary DAGSTER_HOME, on ``database``."""
    saved = {key: os.environ.get(key) for key in ("SLIDE2VEC_PG_DB", "SLIDE2VEC_PG_USER")}
    os.environ["SLIDE2VEC_PG_DB"], os.environ["SLIDE2VEC_PG_USER"] = database, user
    try:
        with tempfile.TemporaryDirectory(prefix="s2v-pg-home-") as home:
            shutil.copy(PG_YAML, Path(home) / "dagster.yaml")
            instance = DagsterInstance.from_config(home)
            try:
                yield instance
            finally:
                instance.dispose()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# --- Cohort and config --------------------------------------------------------------------------------------


def sample_id(index: int) -> str:
    return f"S{index:06d}"


def patient_of(index: int) -> str:
    return f"P{(index // 10) * 4 + _PATIENT_OFFSET[index % 10]:06d}"


def write_manifest(path: Path, start: int, count: int, *, append: bool = False) -> Path:
    """Rows ``start`` .. ``start + count - 1``; every row points at the same small test slide."""
    with path.open("a" if append else "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        if not append:
            writer.writerow(COLUMNS)
        writer.writerows([sample_id(i), str(SLIDE), "", "", patient_of(i)] for i in range(start, start + count))
    return path


def write_platform_config(folder: Path, manifest: Path) -> Path:
    """One pipeline with the weight-free baseline encoder (tiling + previews + tile embeddings)."""
    config = {
        "manifests": [str(manifest)],
        "output_root": str(folder / "out"),
        "pipelines": {
            PIPELINE: {
                "tiling": {
                    "params": {"requested_spacing_um": 0.5, "requested_tile_size_px": 224},
                    "preview": {"save_mask_preview": True, "save_tiling_preview": True},
                },
                "model": {"name": "baseline-color-texture", "batch_size": 64},
            }
        },
    }
    path = folder / "platform.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def load_definitions(config_path: Path) -> Definitions:
    from slide2vec_dagster.config import load_config
    from slide2vec_dagster.defs.build import build_definitions

    return build_definitions(load_config(config_path))


def cohort_sensor(defs: Definitions) -> SensorDefinition:
    return defs.resolve_sensor_def("cohort_sensor")


# --- Sensor ticks -------------------------------------------------------------------------------------------


@dataclass
class Tick:
    """One cohort-sensor tick as the code server returns it to the daemon."""

    data: Any  # SensorExecutionData
    seconds: float  # evaluate_tick + serialization: what must fit the daemon's gRPC timeout (60 s default)
    payload_bytes: int  # the serialized result the daemon receives (gRPC limit: 100 MB default)

    @property
    def requests(self) -> int:
        return len(self.data.run_requests or [])

    @property
    def cursor(self) -> str | None:
        return self.data.cursor

    @property
    def skip_message(self) -> str | None:
        return self.data.skip_message

    def new_keys(self, partitions_def_name: str) -> list[str]:
        return [
            key
            for request in self.data.dynamic_partitions_requests or []
            if request.partitions_def_name == partitions_def_name
            for key in request.partition_keys or []
        ]


def code_server_tick(defs: Definitions, instance: DagsterInstance, cursor: str | None) -> Tick:
    """Evaluate the cohort sensor with ``SensorDefinition.evaluate_tick`` in the context the code server builds
    for the daemon's gRPC call: the sensor function, then every run request resolved against the stored
    partitions *plus* the tick's own partition requests, then the result serialized. (``build_sensor_context``
    has no instance ref, so its context lacks the caching partitions loader that this resolution uses.)"""
    from dagster._serdes import serialize_value

    repository = defs.get_repository_def()
    start = time.perf_counter()
    with SensorEvaluationContext(
        instance.get_ref(),
        instance=instance,
        cursor=cursor,
        repository_name=repository.name,
        repository_def=repository,
        sensor_name="cohort_sensor",
    ) as context:
        data = cohort_sensor(defs).evaluate_tick(context)
    payload = serialize_value(data)
    return Tick(data=data, seconds=time.perf_counter() - start, payload_bytes=len(payload))


def function_tick(defs: Definitions, instance: DagsterInstance, cursor: str | None) -> tuple[Any, float]:
    """(result, seconds) of the sensor function alone, called as tests/test_defs_sensor.py calls it."""
    from dagster import build_sensor_context

    context = build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    start = time.perf_counter()
    result = cohort_sensor(defs)(context)
    return result, time.perf_counter() - start


class _DaemonTickStub:
    """What dagster's sensor daemon hands ``_handle_dynamic_partitions_requests``: a logger and the tick."""

    def __init__(self) -> None:
        self.logger = logging.getLogger("slide2vec.scale.daemon")
        self.logger.disabled = True  # the daemon logs every added key; its cost is not what is measured
        self.results: list[Any] = []

    def add_dynamic_partitions_request_result(self, result: Any) -> None:
        self.results.append(result)


@dataclass
class Part:
    """Items of one kind applied after a tick: some through the daemon's own code, the rest in bulk."""

    daemon: int = 0
    daemon_s: float = 0.0
    bulk: int = 0
    bulk_s: float = 0.0

    @property
    def total(self) -> int:
        return self.daemon + self.bulk

    @property
    def ms_each(self) -> float:
        return 1000 * self.daemon_s / self.daemon if self.daemon else float("nan")

    @property
    def daemon_estimate_s(self) -> float:
        """Seconds the daemon's own code needs for all of them (measured, or extrapolated from its share)."""
        return self.daemon_s if not self.bulk else (self.ms_each * self.total / 1000 if self.daemon else float("nan"))

    @property
    def seconds(self) -> float:
        return self.daemon_s + self.bulk_s


@dataclass
class Applied:
    """What the sensor daemon does with a tick's result before submitting its runs, in its order: record the
    asset events (one ``report_runless_asset_event`` each), then add the new partition keys."""

    events: Part = field(default_factory=Part)
    keys: Part = field(default_factory=Part)

    @property
    def seconds(self) -> float:
        return self.events.seconds + self.keys.seconds

    @property
    def daemon_estimate_s(self) -> float:
        return sum(p.daemon_estimate_s for p in (self.events, self.keys) if p.total)


def _runless_entry(event: Any) -> Any:
    """The event log entry ``report_runless_asset_event`` writes for an AssetObservation / AssetMaterialization."""
    from dagster._core.events import AssetObservationData, DagsterEvent, DagsterEventType, StepMaterializationData
    from dagster._core.events.log import EventLogEntry
    from dagster._core.instance.utils import RUNLESS_JOB_NAME, RUNLESS_RUN_ID

    if isinstance(event, AssetMaterialization):
        kind, payload = DagsterEventType.ASSET_MATERIALIZATION, StepMaterializationData(event)
    else:
        kind, payload = DagsterEventType.ASSET_OBSERVATION, AssetObservationData(event)
    return EventLogEntry(
        user_message="",
        level=logging.INFO,
        job_name=RUNLESS_JOB_NAME,
        run_id=RUNLESS_RUN_ID,
        error_info=None,
        timestamp=time.time(),
        dagster_event=DagsterEvent(kind.value, RUNLESS_JOB_NAME, event_specific_data=payload),
    )


def apply_tick(
    instance: DagsterInstance, data: Any, *, daemon_budget_s: float | None = None, chunk: int = 100
) -> Applied:
    """Apply a tick's asset events and partition requests the way the sensor daemon does (its own
    ``report_runless_asset_event`` per event, then ``_handle_dynamic_partitions_requests``: one existence query
    per key and one insert), for at most ``daemon_budget_s`` seconds of each (None: all of them). The rest is
    written in bulk (events in batches, keys 5,000 a call as ``partitions.register`` does), so the state
    afterwards is the same and only the daemon's share is timed."""
    from dagster._daemon.sensor import _handle_dynamic_partitions_requests

    applied = Applied()

    def within(part: Part) -> bool:
        return daemon_budget_s is None or part.daemon_s < daemon_budget_s

    events = list(data.asset_events or [])
    position = 0
    while position < len(events) and within(applied.events):
        start = time.perf_counter()
        for event in events[position : position + chunk]:
            instance.report_runless_asset_event(event)
        applied.events.daemon_s += time.perf_counter() - start
        applied.events.daemon += len(events[position : position + chunk])
        position += chunk
    start = time.perf_counter()
    for offset in range(position, len(events), 1_000):
        instance.event_log_storage.store_event_batch([_runless_entry(e) for e in events[offset : offset + 1_000]])
    applied.events.bulk_s += time.perf_counter() - start
    applied.events.bulk += max(len(events) - position, 0)

    for request in data.dynamic_partitions_requests or []:
        name, keys = request.partitions_def_name, list(request.partition_keys or [])
        position = 0
        while position < len(keys) and within(applied.keys):
            part = keys[position : position + chunk]
            start = time.perf_counter()
            _handle_dynamic_partitions_requests([AddDynamicPartitionsRequest(name, part)], instance, _DaemonTickStub())
            applied.keys.daemon_s += time.perf_counter() - start
            applied.keys.daemon += len(part)
            position += len(part)
        start = time.perf_counter()
        for offset in range(position, len(keys), 5_000):
            instance.add_dynamic_partitions(name, keys[offset : offset + 5_000])
        applied.keys.bulk_s += time.perf_counter() - start
        applied.keys.bulk += len(keys) - position
    return applied


# --- Fabricated history, GraphQL ----------------------------------------------------------------------------


def fabricate_history(
    instance: DagsterInstance, asset_key: AssetKey, materialised: Sequence[str], failed: Sequence[str]
) -> float:
    """Record ``materialised`` partitions as runless materializations and ``failed`` ones as planned in a run
    that failed (how Dagster derives a failed partition); returns the seconds it took."""
    from dagster._core.events import AssetMaterializationPlannedData, DagsterEvent, DagsterEventType
    from dagster._core.events.log import EventLogEntry
    from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus
    from dagster._core.utils import make_new_run_id

    start = time.perf_counter()
    for key in materialised:
        instance.report_runless_asset_event(AssetMaterialization(asset_key=asset_key, partition=key))
    if failed:
        run = instance.add_run(
            DagsterRun(job_name="__ASSET_JOB", run_id=make_new_run_id(), status=DagsterRunStatus.FAILURE)
        )
        for key in failed:
            event = DagsterEvent(
                DagsterEventType.ASSET_MATERIALIZATION_PLANNED.value,
                "__ASSET_JOB",
                event_specific_data=AssetMaterializationPlannedData(asset_key, partition=key),
            )
            instance.store_event(
                EventLogEntry(
                    error_info=None,
                    level=logging.DEBUG,
                    user_message="",
                    run_id=run.run_id,
                    timestamp=time.time(),
                    dagster_event=event,
                )
            )
    return time.perf_counter() - start


@contextlib.contextmanager
def workspace(instance: DagsterInstance, config_path: Path) -> Iterator[Any]:
    """A WorkspaceProcessContext (what the webserver and the daemon hold) with the platform's definitions
    loaded in-process from a small module beside ``config_path``."""
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget

    module = config_path.parent / "scale_definitions.py"
    module.write_text(
        "from slide2vec_dagster.config import load_config\n"
        "from slide2vec_dagster.defs.build import build_definitions\n\n"
        f"defs = build_definitions(load_config({str(config_path)!r}))\n",
        encoding="utf-8",
    )
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(python_file=str(module), attribute="defs", working_directory=str(ROOT)),
        location_name=LOCATION,
    )
    with WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin)) as context:
        errors = context.create_request_context().code_location_errors()
        if errors:
            raise RuntimeError(f"the code location did not load: {errors[0].message}")
        yield context


STATS_QUERY = """
query PartitionStats($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    __typename
    ... on AssetNode { partitionStats { numMaterialized numPartitions numFailed numMaterializing } }
  }
}
"""
STATUSES_QUERY = """
query PartitionStatuses($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    __typename
    ... on AssetNode {
      assetPartitionStatuses {
        __typename
        ... on DefaultPartitionStatuses {
          materializedPartitions failedPartitions unmaterializedPartitions materializingPartitions
        }
      }
    }
  }
}
"""
LAUNCH_BACKFILL = """
mutation LaunchBackfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}
"""


def graphql(context: Any, query: str, variables: dict[str, Any]) -> tuple[dict[str, Any], float, int]:
    """(data, seconds, JSON response bytes) of one GraphQL operation against a fresh request context, as
    the webserver serves each HTTP request."""
    from dagster_graphql.test.utils import execute_dagster_graphql

    start = time.perf_counter()
    result = execute_dagster_graphql(context.create_request_context(), query, variables)
    seconds = time.perf_counter() - start
    if result.errors:
        raise RuntimeError(f"GraphQL error: {result.errors[0]}")
    data = dict(result.data)
    return data, seconds, len(json.dumps(data))


def partition_stats(context: Any, asset_key: AssetKey) -> tuple[dict[str, int], float, int]:
    data, seconds, size = graphql(context, STATS_QUERY, {"assetKey": {"path": asset_key.path}})
    node = data["assetNodeOrError"]
    if node["__typename"] != "AssetNode":
        raise RuntimeError(f"asset {asset_key.to_user_string()} not found: {node}")
    return node["partitionStats"], seconds, size


def partition_statuses(context: Any, asset_key: AssetKey) -> tuple[dict[str, list[str]], float, int]:
    data, seconds, size = graphql(context, STATUSES_QUERY, {"assetKey": {"path": asset_key.path}})
    return data["assetNodeOrError"]["assetPartitionStatuses"], seconds, size


# --- Backfill -----------------------------------------------------------------------------------------------


def launch_backfill(context: Any, asset_keys: Sequence[AssetKey], partitions: Sequence[str]) -> tuple[str, float]:
    """(backfill id, seconds) of the UI's ``launchPartitionBackfill`` for ``partitions`` of ``asset_keys``."""
    params = {"assetSelection": [{"path": key.path} for key in asset_keys], "partitionNames": list(partitions)}
    data, seconds, _ = graphql(context, LAUNCH_BACKFILL, {"params": params})
    outcome = data["launchPartitionBackfill"]
    if outcome["__typename"] != "LaunchBackfillSuccess":
        raise RuntimeError(f"launchPartitionBackfill failed: {outcome}")
    return outcome["backfillId"], seconds


@dataclass
class BackfillIteration:
    """What one backfill-daemon iteration did within its time budget."""

    planned: int = 0  # run requests the iteration planned (persisted before submitting)
    plan_s: float = float("nan")  # from the iteration's start until the plan was persisted
    submitted: int = 0  # runs created (queued) within the budget
    submit_s: float = 0.0  # seconds spent submitting them
    elapsed_s: float = 0.0  # the iteration's wall time (until it finished or was stopped)
    finished: bool = False  # True: the iteration ended on its own within the budget
    stop_s: float = 0.0  # from the cancellation until the iteration returned
    error: str | None = None

    @property
    def runs_per_s(self) -> float:
        return self.submitted / self.submit_s if self.submit_s > 0 else float("nan")

    @property
    def full_iteration_s(self) -> float:
        """Seconds the iteration needs to submit every planned run (measured, or extrapolated)."""
        if self.finished:
            return self.elapsed_s
        return self.plan_s + self.planned / self.runs_per_s


def _count_backfill_runs(instance: DagsterInstance, backfill_id: str) -> int:
    from dagster import RunsFilter

    return instance.get_runs_count(RunsFilter(tags={"dagster/backfill": backfill_id}))


def backfill_iteration(context: Any, backfill_id: str, budget_s: float) -> BackfillIteration:
    """Run the backfill daemon's iteration (``execute_backfill_iteration``, as ``dagster-daemon`` runs it in its
    backfill thread) for at most ``budget_s`` seconds; then cancel the backfill, which the iteration checks
    between chunks of submitted runs, so it stops within one chunk."""
    from dagster._core.execution.asset_backfill import get_asset_backfill_run_chunk_size
    from dagster._core.execution.backfill import BulkActionStatus
    from dagster._daemon.backfill import execute_backfill_iteration

    instance: DagsterInstance = context.instance
    figures = BackfillIteration()
    chunk = get_asset_backfill_run_chunk_size()
    logger = logging.getLogger("slide2vec.scale.backfill")
    logger.disabled = True  # the iteration logs every requested partition

    def iterate() -> None:
        try:
            for error in execute_backfill_iteration(context, logger):
                if error is not None:
                    figures.error = error.message.strip().splitlines()[-1]
        except Exception as exc:  # reported in the figures, the benchmark goes on
            figures.error = f"{type(exc).__name__}: {exc}"

    worker = threading.Thread(target=iterate, name="backfill-iteration", daemon=True)
    start = time.perf_counter()
    worker.start()
    planned_at = None
    while worker.is_alive() and time.perf_counter() - start < budget_s:
        worker.join(0.25)
        if planned_at is None:
            # The plan is persisted as ``submitting_run_requests`` and shrinks after each chunk of submitted
            # runs: add back the whole chunks already written (runs counted before the backfill is read).
            runs = _count_backfill_runs(instance, backfill_id)
            backfill = instance.get_backfill(backfill_id)
            pending = len(backfill.submitting_run_requests or []) if backfill else 0
            if pending:
                planned_at = time.perf_counter()
                figures.plan_s = planned_at - start
                figures.planned = pending + runs // chunk * chunk
    stopped_at = time.perf_counter()
    figures.finished = not worker.is_alive()
    if not figures.finished:
        backfill = instance.get_backfill(backfill_id)
        if backfill is not None:
            instance.update_backfill(backfill.with_status(BulkActionStatus.CANCELING))
        worker.join(300)
        figures.stop_s = time.perf_counter() - stopped_at
    figures.elapsed_s = (time.perf_counter() if figures.finished else stopped_at) - start
    figures.submitted = _count_backfill_runs(instance, backfill_id)
    if figures.finished and planned_at is None:  # planned and submitted between two polls
        figures.plan_s, figures.planned = figures.elapsed_s, figures.submitted
    figures.submit_s = max(
        (stopped_at if not figures.finished else start + figures.elapsed_s) - (planned_at or start), 0
    )
    return figures


@dataclass
class LatencyProbe:
    """Repeats a call in a background thread and records how long each one took (seconds)."""

    call: Callable[[], object]
    pause_s: float = 0.2
    samples: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> LatencyProbe:
        def loop() -> None:
            while not self._stop.is_set():
                start = time.perf_counter()
                self.call()
                self.samples.append(time.perf_counter() - start)
                self._stop.wait(self.pause_s)

        self._thread = threading.Thread(target=loop, name="latency-probe", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)

    def summary(self) -> tuple[float, float, int]:
        """(median, max, count) in seconds."""
        if not self.samples:
            return float("nan"), float("nan"), 0
        return statistics.median(self.samples), max(self.samples), len(self.samples)
