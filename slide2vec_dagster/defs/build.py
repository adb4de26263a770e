"""Assemble the Definitions from the platform config: the one place the Dagster layer is put together."""

from __future__ import annotations

from dagster import AssetSelection, Definitions, define_asset_job, in_process_executor

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
from slide2vec_dagster.defs.sensors import build_cohort_sensor, build_patient_sensor
from slide2vec_dagster.defs.slide_assets import build_slide_assets
from slide2vec_dagster.defs.tiling_assets import IO_MANAGER_KEY, build_tiling_assets


def build_definitions(config: PlatformConfig) -> Definitions:
    if config.source_path is None:
        raise ValueError("build_definitions needs a config loaded with load_config (its file path is used by runs)")
    config_path = str(config.source_path)
    assets = [build_tiling_assets(pipeline, config) for pipeline in config.pipelines]
    assets += [build_embedding_asset(p, config) for p in config.pipelines if embedding_asset_key(p, config)]
    assets += [build_slide_assets(p, config) for p in config.pipelines if slide_asset_keys(p, config)]
    assets += [build_patient_asset(p, config) for p in config.pipelines if patient_asset_key(p, config)]
    jobs = [
        define_asset_job(
            f"{pipeline}_job",
            selection=AssetSelection.assets(*pipeline_asset_keys(pipeline, config)),
            partitions_def=sample_partitions,
            description=f"Tile, preview and embed slides for pipeline {pipeline!r}",
        )
        for pipeline in config.pipelines
    ]
    # An asset job holds one partitions definition: patients get their own.
    jobs += [
        define_asset_job(
            f"{pipeline}_patients_job",
            selection=AssetSelection.assets(key),
            partitions_def=patient_partitions,
            description=f"Patient embeddings of pipeline {pipeline!r}",
        )
        for pipeline in config.pipelines
        if (key := patient_asset_key(pipeline, config)) is not None
    ]
    sensors = [build_cohort_sensor(config)]
    patient_sensor = build_patient_sensor(config)
    sensors += [patient_sensor] if patient_sensor is not None else []
    return Definitions(
        assets=assets,
        jobs=jobs,
        sensors=sensors,
        resources={
            "platform": PlatformResource(config_path=config_path),
            IO_MANAGER_KEY: Slide2vecIOManager(config_path=config_path),
        },
        # Each run holds one slide and one step; a subprocess per step would only add start-up time.
        executor=in_process_executor,
    )
