"""The cohort sensor: registers new slides (and patients) of the manifests as partitions and asks
for their tiling runs. A cursor of manifest stamps makes an unchanged manifest cost one ``stat``."""

import json
from pathlib import Path

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from slide2vec_dagster.artifacts.process_list import read_rows
from slide2vec_dagster.config import PlatformConfig
from slide2vec_dagster.defs.asset_keys import patient_asset_key
from slide2vec_dagster.defs.partitions import patient_partitions, register, sample_partitions
from slide2vec_dagster.defs.resources import PlatformResource, manifest_reports, manifest_stamps
from slide2vec_dagster.defs.slide_runs import ensure_gpu_pool, mark_orphaned_runs
from slide2vec_dagster.defs.slides_asset import changed_slide_observations
from slide2vec_dagster.manifest import read_manifests


def build_cohort_sensor(config: PlatformConfig, jobs: list[UnresolvedAssetJobDefinition]) -> SensorDefinition:
    @sensor(
        name="cohort_sensor",
        # Runs show under the pipeline's named job (the daemon launches only requests for its targets).
        jobs=jobs,
        minimum_interval_seconds=config.execution.sensor_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description="Registers new sample_id / patient_id partitions from the configured manifests, observes "
        "new and changed slides (their data version), and requests every new slide's run for every pipeline.",
    )
    def cohort_sensor(context: SensorEvaluationContext) -> SensorResult | SkipReason:
        orphans = mark_orphaned_runs(context.instance)
        if orphans:
            context.log.warning(f"marked {len(orphans)} run(s) failed whose process had died: {orphans}")
        ensure_gpu_pool(context.instance, config)
        stamps = _stamps_cursor(config.manifests)
        if context.cursor == stamps:
            return SkipReason("manifests unchanged since the last evaluation")
        # A broken manifest raises here: the tick fails with the message naming the file and row,
        # and the cursor stays put so the fixed file is read on the next tick.
        slides = read_manifests(config.manifests)
        known = set(context.instance.get_dynamic_partitions(sample_partitions.name))
        new = [sample_id for sample_id in slides if sample_id not in known]
        # At most max_runs_per_tick new slides per tick: a tick stays short (submitting a run costs 0.1-0.4 s)
        # and a 100,000-row manifest is taken in batches, tick after tick, in manifest order.
        batch = new[: config.execution.max_runs_per_tick]
        # Registered here, in chunks, rather than through the tick's partition requests: the daemon adds those
        # one key (and query) at a time and re-checks each run request against them (benchmarks/scale.py).
        new_samples, new_patients = register(context.instance, {sid: slides[sid] for sid in batch}, known)
        # Dagster then checks each run request's partition key, one query per key unless the context's loader
        # already knows it (6.6 ms a key on Postgres: 33 s for 5,000 requests). Tell it in one query.
        loader = context.caching_dynamic_partitions_loader
        if loader is not None and new_samples:
            loader.get_existing_dynamic_partitions(sample_partitions.name, new_samples)
        # Rows registered before and edited since (a new spacing, a replaced file): their data versions. A
        # slide's first version is recorded by its own run (its first step observes it), not here.
        observations = changed_slide_observations(context.instance, slides.values(), known)
        # The daemon records a tick's observations one at a time (16 ms each on Postgres): at most
        # max_runs_per_tick a tick too, or an edit of a whole cohort (a moved folder) would make one tick of
        # half an hour and a result past gRPC's 100 MB. The rest come on the next ticks (cursor held back).
        unobserved = len(observations) - config.execution.max_runs_per_tick
        observations = observations[: config.execution.max_runs_per_tick]
        run_requests = [
            RunRequest(
                run_key=f"{job.name}:{sample_id}",
                job_name=job.name,
                partition_key=sample_id,
                tags={"slide2vec/pipeline": job.name[: -len("_job")], "slide2vec/trigger": "new_slide"},
            )
            for job in jobs
            for sample_id in new_samples
        ]
        left = len(new) - len(batch)
        context.log.info(
            f"{len(new_samples)} new slide(s), {len(new_patients)} new patient(s) registered"
            + (f", {left} more on the next tick(s)" if left else "")
            + f"; {len(observations)} slide(s) observed with a new data version"
            + (f", {unobserved} more on the next tick(s)" if unobserved > 0 else "")
        )
        # While rows are left, the cursor stays behind so the next tick reads the manifests again.
        behind = left > 0 or unobserved > 0
        return SensorResult(
            run_requests=run_requests, asset_events=observations, cursor=context.cursor if behind else stamps
        )

    return cohort_sensor


def _stamps_cursor(paths: list[Path]) -> str:
    """A sensor cursor that changes when any of the files does: (path, mtime_ns, size) per file."""
    return json.dumps([[str(path), *stamp] for path, stamp in zip(paths, manifest_stamps(paths), strict=True)])


def build_patient_sensor(config: PlatformConfig, jobs: list[UnresolvedAssetJobDefinition]) -> SensorDefinition | None:
    """Requests a patient's embedding once all its slides are done or failed, and again when a slide is
    added to it or one of its slides' embeddings changes. Membership comes from the manifests."""
    pipelines = [p for p in config.pipelines if patient_asset_key(p, config) is not None]
    if not pipelines:
        return None

    @sensor(
        name="patient_sensor",
        jobs=jobs,
        minimum_interval_seconds=config.execution.sensor_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description="Requests patient embeddings whose slides are all done or failed and whose inputs changed "
        "(a slide added, or a slide embedding rewritten) since the patient was last materialised.",
    )
    def patient_sensor(context: SensorEvaluationContext) -> SensorResult | SkipReason:
        from slide2vec_dagster.slide_level import patient_inputs, recorded_inputs_key

        platform = PlatformResource(config_path=str(config.source_path))
        layouts = {p: platform.layout(p) for p in pipelines}
        # Every slide run rewrites its pipeline's process list: its stamp says whether anything moved.
        stamps = _stamps_cursor([*config.manifests, *(layouts[p].process_list for p in pipelines)])
        if context.cursor == stamps:
            return SkipReason("manifests and process lists unchanged since the last evaluation")
        registered = set(context.instance.get_dynamic_partitions(patient_partitions.name))
        reports = manifest_reports(config.manifests)
        members: dict[str, list] = {}
        for report in reports:
            for entry in report.entries:
                if entry.patient_id:
                    members.setdefault(entry.patient_id, []).append(entry)
        run_requests = []
        waiting = 0
        for pipeline in pipelines:
            pipeline_config, layout = config.pipelines[pipeline], layouts[pipeline]
            rows = read_rows(layout.process_list)
            for patient_id, slides in members.items():
                if patient_id not in registered:
                    continue  # the cohort sensor registers it first
                inputs = patient_inputs(patient_id, slides, pipeline_config, layout, rows)
                if not inputs.ready:
                    waiting += 1
                    continue
                if recorded_inputs_key(layout, patient_id) == inputs.key:
                    continue
                run_requests.append(
                    RunRequest(
                        run_key=f"{pipeline}:patient:{patient_id}:{inputs.key}",
                        job_name=f"{pipeline}_patients_job",
                        partition_key=patient_id,
                        tags={"slide2vec/pipeline": pipeline, "slide2vec/trigger": "patient_inputs_changed"},
                    )
                )
        context.log.info(f"{len(run_requests)} patient(s) to (re)compute, {waiting} waiting for their slides")
        return SensorResult(run_requests=run_requests, cursor=stamps)

    return patient_sensor
