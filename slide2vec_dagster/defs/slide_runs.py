"""What every per-slide asset step and the IO manager do around their work: insist on one slide per run,
clean the slide's debris before writing, and turn ANY error (reader, tiling, embedding, IO manager,
process list, checks) into a failed partition with a ``failed`` row in process_list.csv."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetObservation,
    Backoff,
    DagsterInstance,
    DagsterRunStatus,
    Failure,
    Jitter,
    MetadataValue,
    RetryPolicy,
    RunsFilter,
)

from slide2vec_dagster.artifacts import process_list
from slide2vec_dagster.artifacts.config_file import write_config_yaml
from slide2vec_dagster.artifacts.partition_lock import LockGrant, partition_lock
from slide2vec_dagster.artifacts.slide_state import begin_slide, record_failure
from slide2vec_dagster.config import PipelineConfig, PlatformConfig
from slide2vec_dagster.coordinates_source import SlideCoordinates, own_coordinates, reused_coordinates
from slide2vec_dagster.defs.resources import PlatformResource
from slide2vec_dagster.failures import FailureKind, classify
from slide2vec_dagster.layout import OutputLayout
from slide2vec_dagster.manifest import SlideEntry

PID_TAG = "slide2vec/pid"

HOST_TAG = "slide2vec/host"


def the_slide_of(context: AssetExecutionContext, what: str = "slide") -> str:
    """The run's one sample_id (or patient_id). Backfill runs carry a partition range even for one slide,
    so read the keys rather than ``partition_key``."""
    keys = context.partition_keys
    if len(keys) != 1:
        raise Failure(
            description=f"this run covers {len(keys)} {what}s ({keys[0]} .. {keys[-1]}); runs cover one {what} "
            f"each so that a bad {what} fails only its own partition: launch a backfill (one run per {what}) "
            "instead of a single ranged run"
        )
    return keys[0]


def _with_context(error: str, sample_id: str, image_path: str | Path | None, kind: FailureKind) -> str:
    """Messages from deep inside a library may not say which slide they are about, or what to do: add it."""
    if kind.hint:
        error = f"{error} ({kind.hint})"
    if sample_id in error or (image_path and str(image_path) in error):
        return error
    where = f"sample {sample_id!r}" + (f", slide {image_path}" if image_path else "")
    if kind.kind == "other":
        where += "; if the slide is intact, report this message with the run id"
    return f"{error} ({where})"


def fail_slide(
    platform: PlatformResource,
    pipeline: str,
    sample_id: str,
    step: str,
    exc: BaseException,
    *,
    image_path: str | Path | None,
    run_id: str,
    keep: tuple[str, ...] = (),
    withdraw_files: Iterable[Path] = (),
    context: Any = None,
    asset_keys: Iterable[AssetKey] = (),
) -> Failure:
    """Record ``exc`` as the slide's ``failed`` row (withdrawing ``withdraw_files``), show it on the
    partition of each of ``asset_keys`` in the UI, and return the Failure that fails the partition: retried
    with backoff for transient I/O errors, never for bad input. Never raises: a broken process list is
    reported, not raised."""
    batch_size = None
    with contextlib.suppress(Exception):
        model = platform.config().pipelines[pipeline].model
        batch_size = model.batch_size if model else None
    kind = classify(exc, batch_size)
    error = _with_context(process_list.format_error(exc), sample_id, image_path, kind)
    notes: list[str] = []
    process_list_path = ""
    try:
        layout = platform.layout(pipeline)
        process_list_path = str(layout.process_list)
        with contextlib.suppress(Exception):  # config.yaml is a convenience here, the row is what matters
            write_config_yaml(layout.config_yaml, platform.config().resolved_pipeline(pipeline))
        notes = record_failure(
            layout, sample_id, error, run_id=run_id, image_path=image_path, keep=keep, withdraw_files=withdraw_files
        )
    except Exception as recording_error:  # e.g. the config itself became unreadable mid-run
        notes.append(f"could not record the failure: {process_list.format_error(recording_error)}")
    metadata: dict[str, Any] = {"sample_id": sample_id, "step": step, "error": error, "failure_kind": kind.kind}
    if process_list_path:
        metadata["process_list"] = MetadataValue.path(process_list_path)
    if notes:
        metadata["notes"] = "; ".join(notes)
    if context is not None:
        # The run log is not where people look: put the error on the partition itself.
        for key in asset_keys:
            with contextlib.suppress(Exception):
                context.log_event(
                    AssetObservation(asset_key=key, partition=sample_id, metadata={"status": "failed", **metadata})
                )
    return Failure(
        description=f"sample {sample_id!r}: {step} failed: {error}",
        metadata=metadata,
        allow_retries=kind.retry,
    )


@dataclass
class SlideStep:
    sample_id: str
    layout: OutputLayout
    entry: SlideEntry | None = None


def tag_worker(context: AssetExecutionContext, platform: PlatformResource) -> None:
    """Record which process runs this slide, so a run whose process was killed can be found later. Not
    on Celery: there the step's worker is not the run's process (a lost step is delivered again to another
    worker, and the daemon's run monitoring watches the run workers)."""
    if platform.config().execution.executor != "in_process":
        return
    with contextlib.suppress(Exception):  # bookkeeping only: never fail a slide over it
        context.instance.add_run_tags(context.run_id, {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()})


@contextlib.contextmanager
def slide_step(
    context: AssetExecutionContext,
    platform: PlatformResource,
    pipeline: str,
    step: str,
    *,
    keep: tuple[str, ...] = (),
    withdraw_when: Callable[[Exception, OutputLayout, str], list[Path]] | None = None,
) -> Iterator[SlideStep]:
    """Run one slide's step: clean its debris first, and make any error its partition's failure.
    ``withdraw_when(exc, layout, sample_id)`` names files that this error makes wrong (e.g. a slide
    embedding of a slide that now has zero tiles)."""
    sample_id = the_slide_of(context)
    state: SlideStep | None = None
    try:
        tag_worker(context, platform)
        refuse_after_worker_deaths(context, platform, sample_id)
        state = SlideStep(sample_id, platform.layout(pipeline))
        begin_slide(state.layout, sample_id)
        state.entry = platform.slide(sample_id)
        yield state
    except Failure:
        raise
    except Exception as exc:
        image_path = state.entry.image_path if state and state.entry else None
        withdraw = withdraw_when(exc, state.layout, sample_id) if withdraw_when and state else []
        raise fail_slide(
            platform,
            pipeline,
            sample_id,
            step,
            exc,
            image_path=image_path,
            run_id=context.run_id,
            keep=keep,
            withdraw_files=withdraw,
            context=context,
            asset_keys=context.selected_asset_keys,
        ) from exc


class WorkerDiedError(RuntimeError):
    """The processes that took this partition kept dying before they finished it."""


# (run id, partition) -> the lock grant of the step this process runs for it (read by slide_step).
_GRANTS: dict[tuple[str, str], LockGrant] = {}


@contextlib.contextmanager
def one_writer(
    context: AssetExecutionContext, platform: PlatformResource, pipeline: str, dimension: str = "sample_id"
) -> Iterator[None]:
    """Hold the partition's lock for the whole step (its writes by the IO manager included: they happen
    while the step's generator is suspended inside this block)."""
    partition = the_slide_of(context, "patient" if dimension == "patient_id" else "slide")
    owner = {"run_id": context.run_id, "partition": partition}
    with partition_lock(platform.layout(pipeline).lock_file(partition, dimension), owner) as grant:
        if grant.waited_s > 1:
            context.log.warning(f"{partition}: waited {grant.waited_s:.0f} s for another worker writing it")
        if grant.deaths:
            context.log.warning(
                f"{partition}: the process that was writing it died before finishing "
                f"({grant.describe_died_holder()}): killed, or out of memory; processing it again "
                f"({grant.deaths} such death(s) in a row, at most execution.max_retries = "
                f"{platform.config().execution.max_retries})"
            )
        _GRANTS[(context.run_id, partition)] = grant
        try:
            yield
        finally:
            _GRANTS.pop((context.run_id, partition), None)


def refuse_after_worker_deaths(context: AssetExecutionContext, platform: PlatformResource, partition: str) -> None:
    """Fail the partition once more workers died on it in a row than execution.max_retries allows: a slide
    that kills every worker (out of memory, a reader crash) would otherwise be redelivered forever."""
    grant = _GRANTS.get((context.run_id, partition))
    limit = platform.config().execution.max_retries
    if grant is not None and grant.deaths > limit:
        raise WorkerDiedError(
            f"the worker process writing it died {grant.deaths} times in a row before finishing (last: "
            f"{grant.describe_died_holder()}): killed, or out of memory (lower model.batch_size or give the "
            f"worker more memory); not retried again (execution.max_retries = {limit}): fix the cause, then "
            "rerun the slide"
        )


def mark_orphaned_runs(instance: DagsterInstance) -> list[str]:
    """Fail the STARTED runs of this host whose process is gone (a ``kill -9``, a crashed worker or a
    stopped ``dagster dev``): otherwise they would show as running forever."""
    host = socket.gethostname()
    orphans = []
    for run in instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED], tags={HOST_TAG: host})):
        pid = run.tags.get(PID_TAG, "")
        if not pid.isdigit() or _alive(int(pid)):
            continue
        instance.report_engine_event(
            f"the process {pid} on {host} that ran this slide is gone (killed or crashed); marking the run failed",
            run,
        )
        instance.report_run_failed(run)
        # A killed run cannot free its concurrency slots (the gpu pool): free them, or later runs wait forever.
        with contextlib.suppress(Exception):
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        orphans.append(run.run_id)
    return orphans


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def coordinates_of(step: SlideStep, pipeline: PipelineConfig, loaded: Any) -> SlideCoordinates:
    """The slide's coordinates for an embedding step: the loaded input (own tiling), or the folder the
    pipeline reuses (another pipeline's, or one written earlier, checked against the pipeline's tiling)."""
    if pipeline.reuse_dir is not None:
        return reused_coordinates(pipeline, step.sample_id)
    return own_coordinates(step.layout, step.sample_id, loaded)


def retry_policy(config: PlatformConfig) -> RetryPolicy:
    """Transient I/O errors (EIO, ETIMEDOUT, ESTALE, ...) are retried with backoff; bad input never is (its
    Failure says allow_retries=False, which Dagster honours over the policy)."""
    execution = config.execution
    return RetryPolicy(
        max_retries=execution.max_retries,
        delay=execution.retry_delay_seconds,
        backoff=Backoff.EXPONENTIAL,
        jitter=Jitter.PLUS_MINUS,
    )


GPU_POOL = "gpu"
CELERY_QUEUE_TAG = "dagster-celery/queue"


def step_tags(config: PlatformConfig, pipeline: str, kind: str) -> dict[str, str]:
    """Tags of a pipeline's steps: which Celery queue runs them (tiling: ``cpu``, models: ``gpu``) when the
    platform runs on Celery workers; harmless otherwise."""
    celery = config.execution.celery
    return {"slide2vec/pipeline": pipeline, CELERY_QUEUE_TAG: celery.gpu_queue if kind == "gpu" else celery.cpu_queue}


def ensure_gpu_pool(instance: DagsterInstance, config: PlatformConfig) -> None:
    """Give the ``gpu`` concurrency pool the size the platform config asks for (execution.gpu_pool_size)."""
    size = config.execution.gpu_pool_size
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return
    info = storage.get_concurrency_info(GPU_POOL)
    if info.slot_count != size:
        storage.set_concurrency_slots(GPU_POOL, size)


def payload_checks(key: AssetKey, payload: Path, results: Iterable[Any]) -> tuple[list[AssetCheckResult], list[str]]:
    """The blocking checks' results on a written payload as Dagster check results, and the failed ones
    described (``name (description)``) for the failure message."""
    results = list(results)
    checks = [
        AssetCheckResult(
            asset_key=key,
            check_name=result.name,
            passed=result.passed,
            severity=AssetCheckSeverity.ERROR,
            description=result.description,
            metadata={"payload": MetadataValue.path(str(payload))},
        )
        for result in results
    ]
    return checks, [f"{r.name} ({r.description})" for r in results if not r.passed]
