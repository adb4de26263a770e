"""Per pipeline P with a model: ``P/tile_embeddings`` (or ``P/hierarchical_embeddings`` when
``tiling.params.region_tile_multiple`` is set), partitioned by sample_id, with blocking checks."""

import socket
from collections.abc import Iterator
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetsDefinition,
    BackfillPolicy,
    MetadataValue,
    Output,
    asset,
)

from slide2vec_dagster.artifacts.process_list import TILING_COLUMNS
from slide2vec_dagster.artifacts.slide_state import failed_step_files
from slide2vec_dagster.check_names import EMBEDDING_CHECKS
from slide2vec_dagster.config import PlatformConfig
from slide2vec_dagster.defs.asset_keys import coordinates_key, embedding_asset_key
from slide2vec_dagster.defs.partitions import sample_partitions
from slide2vec_dagster.defs.resources import PlatformResource
from slide2vec_dagster.defs.slide_runs import (
    GPU_POOL,
    coordinates_of,
    fail_slide,
    one_writer,
    payload_checks,
    retry_policy,
    slide_step,
    step_tags,
)
from slide2vec_dagster.defs.slides_asset import SLIDES_KEY
from slide2vec_dagster.defs.tiling_assets import IO_MANAGER_KEY
from slide2vec_dagster.encoders import get_spec
from slide2vec_dagster.encoders.cache import MODELS
from slide2vec_dagster.provenance import sidecar_lineage

CHECK_DESCRIPTIONS = {
    "rows_match_coordinates": "one payload row per row of the coordinates npz (regions x subtiles when hierarchical)",
    "all_finite": "no NaN or Inf in the stored features",
    "feature_dim_matches_registry": "the last axis is the encoder preset's output dimension",
    "dtype_matches_feature_dtype": "the payload's dtype is the sidecar's feature_dtype",
}


def build_embedding_asset(pipeline: str, config: PlatformConfig) -> AssetsDefinition:
    pipeline_config = config.pipelines[pipeline]
    key = embedding_asset_key(pipeline, config)
    assert key is not None and pipeline_config.model is not None
    spec = get_spec(pipeline_config.model.tile_encoder or pipeline_config.model.name)
    feature_dim = spec.feature_dim(pipeline_config.model.variant)
    multiple = pipeline_config.region_tile_multiple

    own = coordinates_key(pipeline, config)
    reused_pipeline = pipeline_config.reuse_pipeline

    decorate = asset(
        key=key,
        # Own coordinates are an input; another pipeline's are read from its folder (an edge all the same).
        ins={"coordinates": AssetIn(key=own)} if own is not None and reused_pipeline is None else {},
        # The step reads the slide's pixels: a changed slide file makes the embeddings stale directly.
        deps=[AssetKey([reused_pipeline, "coordinates"]), SLIDES_KEY] if reused_pipeline else [SLIDES_KEY],
        partitions_def=sample_partitions,
        io_manager_key=IO_MANAGER_KEY,
        group_name=pipeline,
        code_version=pipeline_config.embedding_fingerprint(),
        backfill_policy=BackfillPolicy.multi_run(1),
        retry_policy=retry_policy(config),
        check_specs=[
            # Partitioned like the asset, so each slide's check results are listed under its partition.
            AssetCheckSpec(
                name, asset=key, blocking=True, description=CHECK_DESCRIPTIONS[name], partitions_def=sample_partitions
            )
            for name in EMBEDDING_CHECKS
        ],
        kinds={"pytorch"},
        description=f"{spec.name} ({feature_dim}-d) features of every "
        + ("region's subtiles" if multiple else "tile")
        + f": {key.path[-1]}/<sample_id>.{pipeline_config.output_format} + .meta.json",
        op_tags=step_tags(config, pipeline, "gpu"),
        # The model's steps share the GPUs: at most execution.gpu_pool_size of them at once.
        pool=GPU_POOL,
    )

    def body(
        context: AssetExecutionContext, platform: PlatformResource, coordinates: Any, *rest: Any
    ) -> Iterator[Output[Any] | AssetCheckResult]:
        with one_writer(context, platform, pipeline):
            yield from _body(context, platform, coordinates, *rest)

    def _body(
        context: AssetExecutionContext, platform: PlatformResource, coordinates: Any
    ) -> Iterator[Output[Any] | AssetCheckResult]:
        # Imported in the step: the code location loads without torch (the steps' workers import it once).
        from slide2vec_dagster.artifacts.embeddings import EmbeddingCheckError, verify_embedding
        from slide2vec_dagster.slide_embedding import embed_sample

        # A failure here keeps the row's tiling columns: they describe this run's (or a reused) tiling.
        with slide_step(context, platform, pipeline, "embedding", keep=TILING_COLUMNS) as step:
            assert step.entry is not None
            source = coordinates_of(step, platform.config().pipelines[pipeline], coordinates)
            coordinates = source.pair
            outcome = embed_sample(
                step.entry,
                platform.config().pipelines[pipeline],
                step.layout,
                coordinates,
                source=source,
                run_id=context.run_id,
                lineage=sidecar_lineage(pipeline, platform.config().resolved_pipeline(pipeline)),
                progress=lambda s: context.log.info(
                    f"{step.sample_id}: {s.tiles} tiles embedded, {s.tiles_per_second:.1f} tiles/s"
                ),
            )
        sample_id, layout = step.sample_id, step.layout
        current = platform.config().pipelines[pipeline]
        stats = outcome.stats
        context.log.info(
            f"{sample_id}: {outcome.status}, {stats.tiles} tiles in {stats.seconds:.1f} s "
            f"({stats.tiles_per_second:.1f} tiles/s, model waited {stats.read_wait_seconds:.1f} s for pixels)"
        )
        yield Output(
            outcome,
            metadata={
                "status": outcome.status,
                "encoder": spec.name,
                "feature_dim": feature_dim,
                "num_tiles": outcome.meta["num_tiles"],
                "feature_dtype": outcome.meta["feature_dtype"],
                "tiles_per_second": round(stats.tiles_per_second, 2),
                "read_wait_seconds": round(stats.read_wait_seconds, 2),
                "model_weights": str(outcome.meta["provenance"]["model_weights"]),
                # Cumulative for this worker process: loads stays at 1 per model while hits grow with slides.
                "model_cache": MetadataValue.json({**MODELS.stats.as_dict(), "host": socket.gethostname()}),
            },
        )
        # The IO manager has written the files by now: check them as a user would load them.
        payload = layout.embedding_payload(key.path[-1], sample_id, current.output_format)
        meta_path = layout.embedding_meta(key.path[-1], sample_id)
        n_rows = len(coordinates[0]["x"])
        try:
            results = verify_embedding(
                payload, meta_path, n_rows, feature_dim, multiple * multiple if multiple else None
            )
        except Exception as exc:  # the files just written do not load: the slide has no valid output
            raise fail_slide(
                platform,
                pipeline,
                sample_id,
                "checks",
                exc,
                image_path=outcome.meta.get("image_path"),
                run_id=context.run_id,
                context=context,
                asset_keys=[key],
                keep=TILING_COLUMNS,
                withdraw_files=failed_step_files(layout, key.path[-1], sample_id),
            ) from exc
        checks, failed = payload_checks(key, payload, results)
        yield from checks
        if failed:
            raise fail_slide(
                platform,
                pipeline,
                sample_id,
                "checks",
                EmbeddingCheckError(f"{payload} fails {', '.join(failed)}; the files were withdrawn"),
                image_path=outcome.meta.get("image_path"),
                run_id=context.run_id,
                context=context,
                asset_keys=[key],
                keep=TILING_COLUMNS,
                withdraw_files=failed_step_files(layout, key.path[-1], sample_id),
            )

    if own is not None and reused_pipeline is None:

        def embeddings(
            context: AssetExecutionContext, platform: PlatformResource, coordinates: Any
        ) -> Iterator[Output[Any] | AssetCheckResult]:
            yield from body(context, platform, coordinates)

        return decorate(embeddings)

    def embeddings_of_reused_coordinates(
        context: AssetExecutionContext, platform: PlatformResource
    ) -> Iterator[Output[Any] | AssetCheckResult]:
        yield from body(context, platform, None)

    return decorate(embeddings_of_reused_coordinates)
