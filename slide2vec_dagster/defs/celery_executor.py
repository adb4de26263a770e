"""dagster-celery's executor, which can also resume a run whose run worker died.

A resumed run (``defs/celery_app.execute_job``) is given the run's whole plan again; dagster-celery's loop
would then start every step over. Here the steps the run's event log shows succeeded are kept, their
outputs known to the steps that read them (the same state Dagster builds for a re-execution "from
failure"), and only the others run: those that failed, were cut off, or never started. A step whose old
Celery task still runs on its worker is launched again: the slide's lock makes it wait, then it finds the
outputs current.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dagster import ExecutorDefinition, executor, multiple_process_executor_requirements
from dagster._core.events import DagsterEvent, EngineEventData
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._core.execution.plan.state import _derive_state_from_logs
from dagster._core.execution.retries import RetryMode
from dagster._core.system_config.objects import ResolvedRunConfig
from dagster_celery.executor import CELERY_CONFIG, CeleryExecutor


def steps_left_to_run(plan_context: Any, execution_plan: ExecutionPlan) -> tuple[ExecutionPlan, list[str]]:
    """The part of ``execution_plan`` the run has not finished, with the finished steps' outputs known."""
    run = plan_context.dagster_run
    # Dagster's public form of this (KnownExecutionState.build_resume_retry_reexecution) accepts failed runs
    # only; this run is still STARTED.
    step_keys, known_state = _derive_state_from_logs(plan_context.instance, run)
    known_state = known_state.update_for_step_selection(step_keys)
    job_def = plan_context.job.get_definition()
    resolved = ResolvedRunConfig.build(job_def, run.run_config)
    left = execution_plan._replace(known_state=known_state).build_subset_plan(list(step_keys), job_def, resolved)
    return left, list(step_keys)


class ResumingCeleryExecutor(CeleryExecutor):
    def execute(self, plan_context: Any, execution_plan: ExecutionPlan) -> Iterator[DagsterEvent]:
        if plan_context.resume_from_failure:
            all_steps = execution_plan.step_keys_to_execute
            execution_plan, left = steps_left_to_run(plan_context, execution_plan)
            done = [key for key in all_steps if key not in left]
            yield DagsterEvent.engine_event(
                plan_context,
                f"Resuming the run: {len(done)} step(s) already done are kept ({', '.join(done) or 'none'}); "
                f"running {', '.join(left) or 'nothing'}",
                EngineEventData(),
            )
        yield from super().execute(plan_context, execution_plan)


@executor(
    name="celery",
    config_schema=CELERY_CONFIG,
    requirements=multiple_process_executor_requirements(),
)
def resuming_celery_executor(init_context: Any) -> ResumingCeleryExecutor:
    config = init_context.executor_config
    return ResumingCeleryExecutor(
        broker=config.get("broker"),
        backend=config.get("backend"),
        config_source=config.get("config_source"),
        include=config.get("include"),
        retries=RetryMode.from_config(config["retries"]),
    )


def configured_celery_executor(config: dict[str, Any]) -> ExecutorDefinition:
    return resuming_celery_executor.configured(config, name="celery")
