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
from slide2vec_dagster.defs.partitions import patient_partitions, sample_partitions, unregistered
from slide2vec_dagster.defs.resources import PlatformResource, manifest_stamps
from slide2vec_dagster.defs.slide_runs import mark_orphaned_runs
from slide2vec_dagster.defs.slides_asset import changed_slide_observations
from slide2vec_dagster.manifest import inspect_manifest, read_manifests


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
        current = zip(config.manifests, manifest_stamps(config.manifests), strict=True)
        stamps = json.dumps([[str(path), *stamp] for path, stamp in current])
        if context.cursor == stamps:
            return SkipReason("manifests unchanged since the last evaluation")
        # A broken manifest raises here: the tick fails with the message naming the file and row,
        # and the cursor stays put so the fixed file is read on the next tick.
        slides = read_manifests(config.manifests)
        new_samples, new_patients = unregistered(context.instance, slides)
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
        requests = []
        if new_samples:
            requests.append(sample_partitions.build_add_request(new_samples))
        if new_patients:
            requests.append(patient_partitions.build_add_request(new_patients))
        # New rows and edited rows (a new spacing, a replaced file): their slides' data versions.
        registered = set(context.instance.get_dynamic_partitions(sample_partitions.name)) | set(new_samples)
        observations = changed_slide_observations(context.instance, slides.values(), registered)
        context.log.info(
            f"{len(new_samples)} new slide(s), {len(new_patients)} new patient(s), "
            f"{len(observations)} slide(s) observed with a new data version"
        )
        return SensorResult(
            run_requests=run_requests, dynamic_partitions_requests=requests, asset_events=observations, cursor=stamps
        )

    return cohort_sensor


def _stat(path: Path) -> list[int]:
    try:
        stat = path.stat()
        return [stat.st_mtime_ns, stat.st_size]
    except FileNotFoundError:
        return [-1, -1]


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
        stamps = json.dumps(
            [[str(m), *s] for m, s in zip(config.manifests, manifest_stamps(config.manifests), strict=True)]
            + [[str(layouts[p].process_list), *_stat(layouts[p].process_list)] for p in pipelines]
        )
        if context.cursor == stamps:
            return SkipReason("manifests and process lists unchanged since the last evaluation")
        registered = set(context.instance.get_dynamic_partitions(patient_partitions.name))
        reports = [inspect_manifest(m) for m in config.manifests]
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
