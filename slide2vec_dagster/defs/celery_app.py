"""The Celery app the platform's workers run (``slide2vec-dagster worker``): Dagster's own run and step
tasks, on the broker named by the platform config (``execution.celery``), with tasks acknowledged only
when done so that a task whose worker dies (``kill -9``, out of memory) is delivered again to another
worker instead of being lost.

Workers are long-lived: a worker process imports torch, the readers and the code location once (at
start: ``warm_up``), and keeps models loaded between slides (``encoders.cache.MODELS``).
"""

from __future__ import annotations

import socket
from typing import Any

from dagster import DagsterInstance, DagsterRunStatus
from dagster._cli.api import _execute_run_command_body, _resume_run_command_body
from dagster._grpc.types import ExecuteRunArgs
from dagster_celery.config import DEFAULT_CONFIG, TASK_EXECUTE_JOB_NAME
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_resume_job_task, create_task
from dagster_shared.serdes import unpack_value

from slide2vec_dagster.config import default_config_path, load_config
from slide2vec_dagster.defs.celery_settings import RELIABLE


def app_args(broker: str, backend: str, run_queue: str) -> dict[str, Any]:
    return {
        "broker": broker,
        "backend": backend,
        "include": [],
        "config_source": {**DEFAULT_CONFIG, **RELIABLE},
        "task_default_queue": run_queue,
    }


_celery = load_config(default_config_path()).execution.celery
app = make_app(app_args(_celery.broker, _celery.backend, _celery.run_queue))
execute_plan = create_task(app)
resume_job = create_resume_job_task(app)


@app.task(bind=True, name=TASK_EXECUTE_JOB_NAME, track_started=True)
def execute_job(task: Any, execute_job_args_packed: Any) -> int:
    """dagster-celery's run task, which also survives its worker's death. The broker delivers the task again
    when its worker dies mid-run (``acks_late``); dagster-celery would then ignore it ("a duplicate run") and
    leave the run STARTED forever, since its health check reads the new delivery's state. Here a run found
    STARTED is resumed instead: the steps already done are kept, the others run again (a step whose old
    worker still runs waits for the slide's lock, then finds its outputs current)."""
    args = unpack_value(execute_job_args_packed, as_type=ExecuteRunArgs)
    with DagsterInstance.get() as instance:
        run = instance.get_run_by_id(args.run_id)
        body = _execute_run_command_body
        if run is not None and run.status == DagsterRunStatus.STARTED:
            instance.report_engine_event(
                f"the run worker that ran this run is gone (killed or out of memory); resuming it on "
                f"{task.request.hostname or socket.gethostname()}",
                run,
            )
            body = _resume_run_command_body
        return body(
            instance=instance,
            run_id=args.run_id,
            write_stream_fn=lambda _event: None,
            set_exit_code_on_failure=args.set_exit_code_on_failure is not False,  # dagster-celery's default
        )


def warm_up(steps: bool) -> None:
    """Import what the worker's tasks need before the first task, once per worker (its pool's processes
    are forked from it)."""
    import slide2vec_dagster.definitions

    if steps:  # step workers: the libraries the steps use
        import torch  # noqa: F401

        import slide2vec_dagster.slide_embedding
        import slide2vec_dagster.slide_level
        import slide2vec_dagster.slide_tiling  # noqa: F401


# How often a run looks for its steps' results. dagster-celery sleeps 1 s between looks: with three steps
# a slide (observe, tile, embed) that is ~1.5-2 s of idle time per slide, more than the steps of a small
# slide take. A look is one result-backend read per running step.
STEP_POLL_SECONDS = 0.05


def let_runs_wait_on_their_steps() -> None:
    """Set up a run worker (the run queue): a run task waits for its steps' results (dagster-celery's
    executor calls ``AsyncResult.get``), which Celery forbids inside a prefork pool's task unless allowed;
    and it looks for them every ``STEP_POLL_SECONDS``. Step workers never wait on other tasks."""
    from celery._state import _set_task_join_will_block
    from celery.signals import worker_process_init
    from dagster_celery import core_execution_loop

    worker_process_init.connect(lambda **_: _set_task_join_will_block(False), weak=False)
    core_execution_loop.TICK_SECONDS = STEP_POLL_SECONDS  # read at each sleep of the loop
