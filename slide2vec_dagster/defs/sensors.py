"""The cohort sensor: registers new slides (and patients) of the manifests as partitions and asks
for their tiling runs. A cursor of manifest stamps makes an unchanged manifest cost one ``stat``."""

import json

from dagster import (
    AssetSelection,
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from slide2vec_dagster.config import PlatformConfig
from slide2vec_dagster.defs.asset_keys import pipeline_asset_keys
from slide2vec_dagster.defs.partitions import patient_partitions, sample_partitions, unregistered
from slide2vec_dagster.defs.resources import manifest_stamps
from slide2vec_dagster.defs.slide_runs import mark_orphaned_runs
from slide2vec_dagster.manifest import read_manifests


def build_cohort_sensor(config: PlatformConfig) -> SensorDefinition:
    every_asset = [key for pipeline in config.pipelines for key in pipeline_asset_keys(pipeline, config)]

    @sensor(
        name="cohort_sensor",
        # The daemon only launches run requests whose assets fall inside the sensor's target.
        target=AssetSelection.assets(*every_asset),
        minimum_interval_seconds=config.execution.sensor_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description="Registers new sample_id / patient_id partitions from the configured manifests and "
        "requests the tiling of every new slide for every pipeline.",
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
                run_key=f"{pipeline}:{sample_id}",
                partition_key=sample_id,
                asset_selection=pipeline_asset_keys(pipeline, config),
                tags={"slide2vec/pipeline": pipeline, "slide2vec/trigger": "new_slide"},
            )
            for pipeline in config.pipelines
            for sample_id in new_samples
        ]
        requests = []
        if new_samples:
            requests.append(sample_partitions.build_add_request(new_samples))
        if new_patients:
            requests.append(patient_partitions.build_add_request(new_patients))
        context.log.info(f"{len(new_samples)} new slide(s), {len(new_patients)} new patient(s)")
        return SensorResult(run_requests=run_requests, dynamic_partitions_requests=requests, cursor=stamps)

    return cohort_sensor
