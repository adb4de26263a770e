"""The backfill schedule: per pipeline, the registered slides whose outputs are missing or stale, launched
as ONE backfill of only those partitions and only that pipeline's assets (a pipeline added with
``read_coordinates_from`` backfills its embeddings, nothing else). Before launching a pipeline's share it
checks once that its models can load; if not, nothing is launched for it and the tick says why, in the
words of the weights error.

Also observes every slide (the ``slides`` source asset): a file replaced since the last observation then
shows its downstream assets stale in the UI. Runs on ``execution.backfill_cron`` (default nightly) and on
demand from the UI (*Schedules -> backfill_schedule -> Test schedule*, or start it).
"""

from datetime import datetime

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.definitions.events import AssetKeyPartitionKey

from slide2vec_dagster.artifacts.process_list import format_error, read_rows
from slide2vec_dagster.config import PlatformConfig
from slide2vec_dagster.defs.asset_keys import pipeline_asset_keys
from slide2vec_dagster.defs.partitions import sample_partitions
from slide2vec_dagster.defs.resources import PlatformResource
from slide2vec_dagster.defs.slides_asset import changed_slide_observations, manifest_entries
from slide2vec_dagster.failures import INPUT_ERRORS
from slide2vec_dagster.manifest import SlideEntry
from slide2vec_dagster.staleness import due_samples


def _failed_on_input(rows: dict[str, dict[str, str]], entries: list[SlideEntry]) -> set[str]:
    """Slides whose last run failed on their own input and whose file and row did not change since:
    running them again every night helps nobody."""
    unchanged = set()
    for entry in entries:
        row = rows.get(entry.sample_id, {})
        if row.get("status") != "failed" or row.get("error", "").split(":", 1)[0] not in INPUT_ERRORS:
            continue
        try:
            failed_at = datetime.fromisoformat(row["updated_at"]).timestamp()
            touched = max(entry.image_path.stat().st_ctime, entry.manifest_path.stat().st_mtime)
        except (KeyError, ValueError, OSError):
            continue  # the file is gone or the row unreadable: let the run say so again
        if touched < failed_at:
            unchanged.add(entry.sample_id)
    return unchanged


def plan_backfill(config: PlatformConfig, registered: set[str]) -> tuple[dict[str, list[str]], list[str]]:
    """``({pipeline: [sample_id, ...]}, [why a pipeline launches nothing, ...])``."""
    from slide2vec_dagster.encoders.preflight import check_model

    platform = PlatformResource(config_path=str(config.source_path))
    entries = [e for e in manifest_entries(config) if e.sample_id in registered]
    due: dict[str, list[str]] = {}
    blocked: list[str] = []
    for name, pipeline in config.pipelines.items():
        layout = platform.layout(name)
        found = due_samples(pipeline, layout, entries, _failed_on_input(read_rows(layout.process_list), entries))
        if not found:
            continue
        if pipeline.model is not None:
            try:
                check_model(pipeline.model)
            except Exception as exc:
                blocked.append(f"{name}: {len(found)} slide(s) due, none launched: {format_error(exc)}")
                continue
        due[name] = [item.sample_id for item in found]
    return due, blocked


def build_backfill_schedule(config: PlatformConfig) -> ScheduleDefinition:
    every_asset = [key for pipeline in config.pipelines for key in pipeline_asset_keys(pipeline, config)]

    @schedule(
        name="backfill_schedule",
        cron_schedule=config.execution.backfill_cron,
        target=AssetSelection.assets(*every_asset),
        default_status=DefaultScheduleStatus.RUNNING,
        description="Backfills, per pipeline, the registered slides whose outputs are missing or stale (a new "
        "encoder, a changed slide or manifest row, changed settings), after checking the models load.",
    )
    def backfill_schedule(context: ScheduleEvaluationContext) -> RunRequest | SkipReason:
        instance = context.instance
        registered = set(instance.get_dynamic_partitions(sample_partitions.name))
        for observation in changed_slide_observations(instance, manifest_entries(config), registered):
            instance.report_runless_asset_event(observation)
        due, blocked = plan_backfill(config, registered)
        for reason in blocked:
            context.log.warning(reason)
        if not due:
            return SkipReason("; ".join(blocked) or "every registered slide is current for every pipeline")
        requested = {
            AssetKeyPartitionKey(key, sample_id)
            for pipeline, samples in due.items()
            for key in pipeline_asset_keys(pipeline, config)
            for sample_id in samples
        }
        subset = AssetGraphSubset.from_asset_partition_set(requested, context.repository_def.asset_graph)
        summary = ", ".join(f"{p}: {len(s)}" for p, s in due.items())
        context.log.info(f"backfilling {summary} slide(s)" + (f"; blocked: {'; '.join(blocked)}" if blocked else ""))
        return RunRequest.for_asset_graph_subset(
            subset, tags={"slide2vec/trigger": "backfill_schedule", "slide2vec/due": summary[:200]}
        )

    return backfill_schedule
