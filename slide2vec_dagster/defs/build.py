"""Assemble the Definitions from the platform config: the one place the Dagster layer is put together."""

from __future__ import annotations

import warnings
from typing import Any

from dagster import AssetSelection, Definitions, ExecutorDefinition, define_asset_job, in_process_executor

from slide2vec_dagster.config import PlatformConfig
from slide2vec_dagster.defs.asset_keys import (
    embedding_asset_key,
    patient_asset_key,
    pipeline_asset_keys,
    slide_asset_keys,
)
from slide2vec_dagster.defs.embedding_assets import build_embedding_asset
from slide2vec_dagster.defs.io_managers import Slide2vecIOManager
from slide2vec_dagster.defs.partitions import patient_partitions, sample_partitions
from slide2vec_dagster.defs.patient_assets import build_patient_asset
from slide2vec_dagster.defs.resources import PlatformResource
from slide2vec_dagster.defs.schedules import build_backfill_schedule
from slide2vec_dagster.defs.sensors import build_cohort_sensor, build_patient_sensor
from slide2vec_dagster.defs.slide_assets import build_slide_assets
from slide2vec_dagster.defs.slides_asset import SLIDES_KEY, build_slides_asset
from slide2vec_dagster.defs.tiling_assets import IO_MANAGER_KEY, build_tiling_assets

# Each <P>_job starts with the `slides` source asset, observed (it has no backfill policy), then the slide's
# assets with BackfillPolicy.multi_run(1): Dagster warns about the mix each time a job resolves, in every
# process (CLI, daemon, workers). It is by design: one slide per run either way.
warnings.filterwarnings("ignore", message=r"Asset job .* materializes assets with varying BackfillPolicies")


def celery_executor_config(config: PlatformConfig) -> dict[str, Any]:
    """The Celery executor's settings: the same as the workers' app (defs/celery_app.py), tasks
    acknowledged when done; steps without a queue tag (the slide observation) are light: the cpu workers."""
    from slide2vec_dagster.defs.celery_settings import RELIABLE

    celery = config.execution.celery
    return {
        "broker": celery.broker,
        "backend": celery.backend,
        "config_source": {**RELIABLE, "task_default_queue": celery.cpu_queue},
    }


def executor_for(config: PlatformConfig) -> ExecutorDefinition:
    """In process (a run holds one slide: a subprocess per step would only add start-up time), or Celery:
    each step goes to its queue's long-lived workers (tiling -> cpu, models -> gpu), which import torch and
    the code location once and keep models loaded between slides."""
    if config.execution.executor == "in_process":
        return in_process_executor
    from slide2vec_dagster.defs.celery_executor import configured_celery_executor

    return configured_celery_executor(celery_executor_config(config))


def build_definitions(config: PlatformConfig) -> Definitions:
    if config.source_path is None:
        raise ValueError("build_definitions needs a config loaded with load_config (its file path is used by runs)")
    config_path = str(config.source_path)
    assets = [build_tiling_assets(pipeline, config) for pipeline in config.pipelines]
    assets += [build_embedding_asset(p, config) for p in config.pipelines if embedding_asset_key(p, config)]
    assets += [build_slide_assets(p, config) for p in config.pipelines if slide_asset_keys(p, config)]
    assets += [build_patient_asset(p, config) for p in config.pipelines if patient_asset_key(p, config)]
    # A pipeline's job also runs the pipelines that reuse its coordinates: one run per new slide tiles it
    # and then embeds it for all of them, in order. A reusing pipeline keeps a job of its own for backfills.
    reusers = {p: [r for r, c in config.pipelines.items() if c.reuse_pipeline == p] for p in config.pipelines}
    jobs = []
    for pipeline in config.pipelines:
        # The slide is observed first in each run, so what is made from it records its current version.
        keys = [SLIDES_KEY, *pipeline_asset_keys(pipeline, config)]
        keys += [key for reuser in reusers[pipeline] for key in pipeline_asset_keys(reuser, config)]
        riders = f" (and embed them for {', '.join(reusers[pipeline])}, which reuse its coordinates)"
        jobs.append(
            define_asset_job(
                f"{pipeline}_job",
                selection=AssetSelection.assets(*keys),
                partitions_def=sample_partitions,
                description=f"Tile, preview and embed slides for pipeline {pipeline!r}"
                + (riders if reusers[pipeline] else ""),
            )
        )
    # An asset job holds one partitions definition: patients get their own.
    patient_jobs = [
        define_asset_job(
            f"{pipeline}_patients_job",
            selection=AssetSelection.assets(key),
            partitions_def=patient_partitions,
            description=f"Patient embeddings of pipeline {pipeline!r}",
        )
        for pipeline in config.pipelines
        if (key := patient_asset_key(pipeline, config)) is not None
    ]
    # New slides start with the job of the pipeline that tiles them (reusers ride along).
    sensors = [build_cohort_sensor(config, [job for job in jobs if not config.pipelines[job.name[:-4]].reuse_pipeline])]
    patient_sensor = build_patient_sensor(config, patient_jobs)
    sensors += [patient_sensor] if patient_sensor is not None else []
    return Definitions(
        assets=[build_slides_asset(config), *assets],
        jobs=jobs + patient_jobs,
        sensors=sensors,
        schedules=[build_backfill_schedule(config)],
        resources={
            "platform": PlatformResource(config_path=config_path),
            IO_MANAGER_KEY: Slide2vecIOManager(config_path=config_path),
        },
        executor=executor_for(config),
    )
