"""Set-up and measurements shared by benchmarks/scale.py and tests/test_scale_postgres.py.

A Postgres-backed Dagster instance built from dagster.postgres.yaml, a synthetic cohort of N manifest rows, its
platform config, cohort-sensor ticks evaluated the way the daemon's code server does it and their asset events
recorded the way the daemon does, a whole manifest drained tick by tick (or a sample of the ticks) with each
requested run's own observation of its slide simulated in bulk, runs submitted through the daemon's own
submission code, the webserver's GraphQL run in-process, and one backfill-daemon iteration under a time budget.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
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


def _query(database: str, user: str, statement: str) -> list[tuple[Any, ...]]:
    import psycopg2

    connection = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=user, dbname=database, connect_timeout=5)
    connection.autocommit = True  # ANALYZE of a whole database cannot run inside a transaction block
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement)
            return cursor.fetchall() if cursor.description else []
    finally:
        connection.close()


def setting(name: str, database: str = "postgres", user: str = "postgres") -> str:
    """A server setting (``SHOW``), e.g. ``autovacuum``."""
    if not name.replace("_", "").isalnum():
        raise ValueError(f"not a setting name: {name!r}")
    return str(_query(database, user, f"SHOW {name}")[0][0])


def analyze(database: str, user: str = "postgres") -> float:
    """``ANALYZE`` the database (what autovacuum's autoanalyze keeps doing on a default server); seconds."""
    start = time.perf_counter()
    _query(database, user, "ANALYZE")
    return time.perf_counter() - start


# What dagster's get_latest_tags_by_partition sends for the slides' latest data versions (the cohort sensor's
# changed_slide_observations), as dagster-postgres 0.29.27 renders it.
LATEST_VERSIONS_SQL = """
SELECT sub.partition, asset_event_tags.key, asset_event_tags.value
FROM (SELECT event_logs.dagster_event_type, event_logs.partition, max(event_logs.id) AS id FROM event_logs
      WHERE event_logs.asset_key = '["slides"]' AND event_logs.partition IS NOT NULL
        AND event_logs.dagster_event_type IN ('ASSET_OBSERVATION')
      GROUP BY event_logs.dagster_event_type, event_logs.partition) AS sub
JOIN asset_event_tags ON asset_event_tags.event_id = sub.id
WHERE asset_event_tags.key IN ('dagster/data_version')
"""


def latest_versions_plan(database: str, user: str = "postgres") -> str:
    """The join the planner picks for LATEST_VERSIONS_SQL with the statistics it has now (EXPLAIN, not run) and
    how it reads the tags side, e.g. ``Hash Join (tags: Seq Scan)`` or ``Nested Loop (tags: Bitmap Heap Scan)``:
    a nested loop that scans asset_event_tags without its event_id index once per observed slide is quadratic."""
    plan = _query(database, user, "EXPLAIN (FORMAT JSON) " + LATEST_VERSIONS_SQL)[0][0][0]["Plan"]

    def tags_side(node: dict[str, Any]) -> str | None:
        if node.get("Relation Name") == "asset_event_tags":
            return str(node["Node Type"])
        for child in node.get("Plans", []):
            found = tags_side(child)
            if found:
                return found
        return None

    return f"{plan['Node Type']} (tags: {tags_side(plan) or '?'})"


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


def time_latest_versions(database: str, user: str = "postgres", timeout_s: float = 30.0) -> float:
    """Seconds LATEST_VERSIONS_SQL takes now (inf: cancelled by a statement timeout of ``timeout_s``)."""
    import psycopg2

    connection = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=user, dbname=database, connect_timeout=5)
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"SET statement_timeout = {int(timeout_s * 1000)}")
            start = time.perf_counter()
            try:
                cursor.execute(LATEST_VERSIONS_SQL)
                cursor.fetchall()
            except psycopg2.errors.QueryCanceled:
                return math.inf
            return time.perf_counter() - start
    finally:
        connection.close()


# --- Cohort and config --------------------------------------------------------------------------------------


def sample_id(index: int) -> str:
    return f"S{index:06d}"


def patient_of(index: int) -> str:
    return f"P{(index // 10) * 4 + _PATIENT_OFFSET[index % 10]:06d}"


def write_manifest(
    path: Path, start: int, count: int, *, append: bool = False, spacing: dict[int, float] | None = None
) -> Path:
    """Rows ``start`` .. ``start + count - 1``; every row points at the same small test slide. ``spacing``: a
    ``spacing_at_level_0`` override for some rows (by index), which changes their data version."""
    spacing = spacing or {}
    with path.open("a" if append else "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        if not append:
            writer.writerow(COLUMNS)
        writer.writerows(
            [sample_id(i), str(SLIDE), "", str(spacing[i]) if i in spacing else "", patient_of(i)]
            for i in range(start, start + count)
        )
    return path


def edited_rows(rows: int, count: int) -> list[int]:
    """``count`` row indices spread evenly over rows 0 .. ``rows`` - 1 (the rows an edit of the manifest touches)."""
    count = min(count, rows)
    return sorted({i * rows // count for i in range(count)}) if count else []


def write_platform_config(folder: Path, manifest: Path, *, max_runs_per_tick: int | None = None) -> Path:
    """One pipeline with the weight-free baseline encoder (tiling + previews + tile embeddings); the cohort
    sensor takes ``max_runs_per_tick`` new slides a tick (None: the config's default)."""
    config: dict[str, Any] = {
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
    if max_runs_per_tick is not None:
        config["execution"] = {"max_runs_per_tick": max_runs_per_tick}
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
    resolve_s: float  # of which dagster resolving the run requests after the sensor function returned
    payload_bytes: int  # the serialized result the daemon receives (gRPC limit: 100 MB default)

    @property
    def function_s(self) -> float:
        """The sensor function (and the serialization): the tick without dagster's run-request resolution."""
        return self.seconds - self.resolve_s

    @property
    def requests(self) -> int:
        return len(self.data.run_requests or [])

    @property
    def partition_keys(self) -> list[str]:
        return [request.partition_key for request in self.data.run_requests or []]

    @property
    def job_names(self) -> set[str]:
        return {request.job_name for request in self.data.run_requests or []}

    @property
    def observed(self) -> list[str]:
        """Partitions of the tick's asset events (observations of ``slides``)."""
        return [event.partition for event in self.data.asset_events or []]

    @property
    def cursor(self) -> str | None:
        return self.data.cursor

    @property
    def skip_message(self) -> str | None:
        return self.data.skip_message


def _evaluation_context(defs: Definitions, instance: DagsterInstance, cursor: str | None) -> SensorEvaluationContext:
    """The context the code server builds for the daemon's gRPC call (``get_external_sensor_execution``): with an
    instance ref, hence the caching partitions loader the run-request resolution uses, which
    ``build_sensor_context`` lacks."""
    repository = defs.get_repository_def()
    return SensorEvaluationContext(
        instance.get_ref(),
        instance=instance,
        cursor=cursor,
        repository_name=repository.name,
        repository_def=repository,
        sensor_name="cohort_sensor",
    )


def code_server_tick(defs: Definitions, instance: DagsterInstance, cursor: str | None) -> Tick:
    """Evaluate the cohort sensor with ``SensorDefinition.evaluate_tick`` as the code server does for the daemon:
    the sensor function, then every run request resolved (its partition key checked against the instance), then
    the result serialized. The resolution is timed on its own."""
    from dagster._serdes import serialize_value

    sensor = cohort_sensor(defs)
    resolve = sensor.resolve_run_requests
    spent: list[float] = []

    def timed_resolve(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return resolve(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - start)

    sensor.resolve_run_requests = timed_resolve  # an instance attribute over the method, removed below
    try:
        start = time.perf_counter()
        with _evaluation_context(defs, instance, cursor) as context:
            data = sensor.evaluate_tick(context)
        payload = serialize_value(data)
        seconds = time.perf_counter() - start
    finally:
        del sensor.resolve_run_requests
    return Tick(data=data, seconds=seconds, resolve_s=sum(spent), payload_bytes=len(payload))


@dataclass
class Recorded:
    """A tick's asset events recorded after the tick, as the sensor daemon does before it submits the tick's
    runs (``report_runless_asset_event``, one each): some through the daemon's own code, the rest in bulk."""

    daemon: int = 0
    daemon_s: float = 0.0
    bulk: int = 0
    bulk_s: float = 0.0

    @property
    def total(self) -> int:
        return self.daemon + self.bulk

    @property
    def ms_each(self) -> float:
        """Milliseconds per event the daemon's code recorded (0.0 when it recorded none)."""
        return 1000 * self.daemon_s / self.daemon if self.daemon else 0.0


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


def store_in_bulk(instance: DagsterInstance, events: Sequence[Any]) -> None:
    """Write runless asset events 1,000 a batch: the same rows (and latest-tag index) as one at a time."""
    store_entries(instance, [_runless_entry(e) for e in events])


def store_entries(instance: DagsterInstance, entries: Sequence[Any]) -> None:
    """Write asset-event log entries 1,000 a batch (``store_event_batch``: the same event rows, asset-event tag
    rows and asset row as ``store_event`` one at a time)."""
    for offset in range(0, len(entries), 1_000):
        instance.event_log_storage.store_event_batch(list(entries[offset : offset + 1_000]))


def run_observation(entry: Any, job_name: str = f"{PIPELINE}_job") -> Any:
    """The event log entry one slide's run writes in its first step, the ``slides`` observable source asset
    observing that slide (dagster's observe op logs ``AssetObservation(asset_key, tags={DATA_VERSION_TAG: v},
    partition)`` per partition of its ``DataVersionsByPartition``): run-scoped, under the pipeline's job and the
    ``slides`` step, with the data version ``slides_asset.slide_data_version`` computes for the row."""
    from dagster import AssetObservation
    from dagster._core.definitions.data_version import DATA_VERSION_TAG
    from dagster._core.events import AssetObservationData, DagsterEvent, DagsterEventType
    from dagster._core.events.log import EventLogEntry
    from dagster._core.utils import make_new_run_id

    from slide2vec_dagster.defs.slides_asset import SLIDES_KEY
    from slide2vec_dagster.staleness import slide_data_version

    observation = AssetObservation(
        asset_key=SLIDES_KEY, partition=entry.sample_id, tags={DATA_VERSION_TAG: slide_data_version(entry)}
    )
    return EventLogEntry(
        user_message="",
        level=logging.DEBUG,
        job_name=job_name,
        run_id=make_new_run_id(),
        error_info=None,
        timestamp=time.time(),
        step_key="slides",
        dagster_event=DagsterEvent(
            DagsterEventType.ASSET_OBSERVATION.value,
            job_name,
            step_key="slides",
            event_specific_data=AssetObservationData(observation),
        ),
    )


def simulate_runs_observing(instance: DagsterInstance, slides: dict[str, Any], ids: Sequence[str]) -> float:
    """SIMULATION OF THE RUNS, not sensor cost: what the runs of ``ids`` record when their first step observes
    their slide, one ``slides`` observation each, written in bulk (``run_observation``, ``store_entries``) as if
    every requested run had already started. Afterwards ``get_latest_tags_by_partition(SLIDES_KEY,
    ASSET_OBSERVATION, [DATA_VERSION_TAG])``, the sensor's query, finds their versions. Returns the seconds."""
    start = time.perf_counter()
    store_entries(instance, [run_observation(slides[sid]) for sid in ids])
    return time.perf_counter() - start


def latest_slide_versions(instance: DagsterInstance) -> dict[str, str]:
    """The latest recorded data version of every observed slide, by the sensor's own query."""
    from dagster import DagsterEventType
    from dagster._core.definitions.data_version import DATA_VERSION_TAG

    from slide2vec_dagster.defs.slides_asset import SLIDES_KEY

    latest = instance.event_log_storage.get_latest_tags_by_partition(
        SLIDES_KEY, DagsterEventType.ASSET_OBSERVATION, [DATA_VERSION_TAG]
    )
    return {key: tags[DATA_VERSION_TAG] for key, tags in latest.items() if DATA_VERSION_TAG in tags}


def apply_tick(
    instance: DagsterInstance, data: Any, *, daemon_budget_s: float | None = None, chunk: int = 100
) -> Recorded:
    """Record a tick's asset events the way the sensor daemon does (its ``report_runless_asset_event`` per event,
    a chunk at a time) for at most ``daemon_budget_s`` seconds (None: all of them; 0: none), the rest in bulk, so
    the state afterwards is the same and only the daemon's share is timed. The tick carries no partition requests
    any more: the sensor registers its new partitions itself."""
    if data.dynamic_partitions_requests:
        raise AssertionError("the cohort sensor returned dynamic partition requests: it should register them itself")
    recorded = Recorded()
    events = list(data.asset_events or [])
    position = 0
    while position < len(events) and (daemon_budget_s is None or recorded.daemon_s < daemon_budget_s):
        part = events[position : position + chunk]
        start = time.perf_counter()
        for event in part:
            instance.report_runless_asset_event(event)
        recorded.daemon_s += time.perf_counter() - start
        recorded.daemon += len(part)
        position += len(part)
    start = time.perf_counter()
    store_in_bulk(instance, events[position:])
    recorded.bulk_s = time.perf_counter() - start
    recorded.bulk = len(events) - position
    return recorded


def fast_forward(instance: DagsterInstance, slides: dict[str, Any], register_ids: Sequence[str]) -> float:
    """The registrations that cohort-sensor ticks skipped by a sampled drain leave behind, written in bulk: their
    batches ``register_ids`` registered (samples and patients, as the sensor's ``partitions.register`` call
    does). Those ticks record no asset event: the sensor observes only rows edited since their last observation,
    and nothing is edited during a drain (``drain`` checks it on every evaluated tick). Returns the seconds."""
    from slide2vec_dagster.defs.partitions import register

    start = time.perf_counter()
    register(instance, {sid: slides[sid] for sid in register_ids})
    return time.perf_counter() - start


@dataclass
class Drain:
    """Cohort-sensor ticks, each followed by the daemon recording its asset events, until every new row of the
    manifests is registered and the manifest stamps are stored as the cursor."""

    cap: int  # execution.max_runs_per_tick
    rows: int  # rows new at the start
    expected_ticks: int  # ceil(rows / cap)
    ticks: list[tuple[int, Tick, Recorded]] = field(default_factory=list)  # (tick number from 1, ...) evaluated
    forwarded_s: float = 0.0  # seconds spent registering the batches of the ticks skipped (sampled drains)
    runs_observed: int = 0  # slides whose runs' first-step observation was simulated (every batch drained)
    runs_s: float = 0.0  # seconds that simulation took (bulk writes; not sensor cost)
    cursor: str | None = None  # the cursor after the last tick

    @property
    def finished(self) -> bool:
        return bool(self.ticks) and self.ticks[-1][0] == self.expected_ticks

    @property
    def sampled(self) -> bool:
        return len(self.ticks) < self.expected_ticks


def sampled_ticks(total: int, count: int) -> list[int]:
    """Which of ``total`` ticks a drain evaluates when it may evaluate ``count`` (all when ``count`` >= ``total``):
    the first two (no slide observed yet, then the first batch's), the last two (the one storing the cursor), and
    the rest evenly in between."""
    if count >= total:
        return list(range(1, total + 1))
    chosen = {1, 2, total - 1, total} if count >= 4 else {1, total}
    inner = max(count - len(chosen), 0)
    chosen |= {round(2 + (total - 3) * (i + 1) / (inner + 1)) for i in range(inner)}
    return sorted(n for n in chosen if 1 <= n <= total)


def drain(
    defs: Definitions,
    instance: DagsterInstance,
    slides: dict[str, Any],
    cap: int,
    cursor: str | None,
    *,
    sample: int | None = None,
    daemon_budget_s: float | None = None,
    before_tick: Callable[[int], None] | None = None,
    on_tick: Callable[[int, Tick, Recorded], None] | None = None,
) -> Drain:
    """Tick the cohort sensor (``code_server_tick``, then ``apply_tick``) until the manifests' new rows are all
    registered. After each batch, evaluated or fast-forwarded alike, the runs it requested are simulated
    (``simulate_runs_observing``: each slide's observation by its own run), so tick N diffs the data versions of
    the (N - 1) x ``cap`` slides observed before it, as in production once those runs started. ``sample``:
    evaluate only that many of the ticks (``sampled_ticks``) and register the others' batches with
    ``fast_forward`` (None: evaluate every tick). ``slides``: the manifests' rows (``read_manifests``).
    ``before_tick(number)`` runs before each evaluated tick, ``on_tick(number, tick, recorded)`` after it (before
    the simulated runs of its batch)."""
    known = set(instance.get_dynamic_partitions("sample_id"))
    new = [sid for sid in slides if sid not in known]
    result = Drain(cap=cap, rows=len(new), expected_ticks=max(math.ceil(len(new) / cap), 1), cursor=cursor)
    evaluate = sampled_ticks(result.expected_ticks, result.expected_ticks if sample is None else sample)

    def runs(ids: Sequence[str]) -> None:
        result.runs_s += simulate_runs_observing(instance, slides, ids)
        result.runs_observed += len(ids)

    number = 1
    while number <= result.expected_ticks + 1:  # one more than expected: a drain that does not end is reported
        if number <= result.expected_ticks and number not in evaluate:
            following = min([n for n in evaluate if n > number] + [result.expected_ticks + 1])
            skipped = new[(number - 1) * cap : (following - 1) * cap]
            result.forwarded_s += fast_forward(instance, slides, skipped)
            runs(skipped)
            number = following
            continue
        if before_tick is not None:
            before_tick(number)
        tick = code_server_tick(defs, instance, result.cursor)
        recorded = apply_tick(instance, tick.data, daemon_budget_s=daemon_budget_s)
        result.ticks.append((number, tick, recorded))
        if on_tick is not None:
            on_tick(number, tick, recorded)
        runs(list(dict.fromkeys(tick.partition_keys)))  # one request per job and slide: one run observes it
        stored = tick.cursor != result.cursor
        result.cursor = tick.cursor
        if stored or tick.skip_message:
            break
        number += 1
    return result


def submit_runs(context: Any, run_requests: Sequence[Any]) -> list[float]:
    """Submit ``run_requests`` (a tick's, resolved) with the sensor daemon's own ``_submit_run_request``: the run
    created from the code location's job and execution plan snapshots, with a planned event per asset, then
    ``instance.submit_run``, which the QueuedRunCoordinator of dagster.postgres.yaml only enqueues (no run
    starts). Returns the seconds of each."""
    from dagster._core.utils import make_new_run_id
    from dagster._daemon.sensor import _submit_run_request

    location = context.create_request_context().get_code_location(LOCATION)
    sensor = next(iter(location.get_repositories().values())).get_sensor("cohort_sensor")
    logger = logging.getLogger("slide2vec.scale.submit")
    logger.disabled = True
    existing: dict[str, Any] = {}
    seconds = []
    for request in run_requests:
        start = time.perf_counter()
        outcome = _submit_run_request(make_new_run_id(), request, context, sensor, existing, logger, None)
        seconds.append(time.perf_counter() - start)
        if outcome.error_info is not None:
            raise RuntimeError(f"run submission failed: {outcome.error_info.message}")
    return seconds


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
