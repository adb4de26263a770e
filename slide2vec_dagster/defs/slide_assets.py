"""Per pipeline P with a slide-level model: ``P/slide_embeddings`` (+ ``P/slide_latents`` with
``save_latents``), partitioned by sample_id, with blocking checks on the written payload.

The step reads the slide's tile embeddings when the pipeline keeps them (an edge from ``P/tile_embeddings``
in the asset graph), and otherwise computes them in memory from the coordinates in the same run.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetOut,
    AssetsDefinition,
    BackfillPolicy,
    Output,
    multi_asset,
)

from slide2vec_dagster.artifacts.process_list import TILE_EMBEDDING_COLUMNS
from slide2vec_dagster.artifacts.slide_state import failed_step_files
from slide2vec_dagster.check_names import VECTOR_CHECKS
from slide2vec_dagster.config import PlatformConfig
from slide2vec_dagster.defs.asset_keys import coordinates_key, embedding_asset_key, slide_asset_keys
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
from slide2vec_dagster.encoders import get_slide_spec, get_spec
from slide2vec_dagster.layout import LATENTS_KIND, SLIDE_KIND, OutputLayout
from slide2vec_dagster.provenance import sidecar_lineage

VECTOR_CHECK_DESCRIPTIONS = {
    "shape_is_one_vector": "the payload is one (D,) vector",
    "all_finite": "no NaN or Inf in the stored vector",
    "feature_dim_matches_registry": "D is the model preset's output dimension",
    "dtype_matches_feature_dtype": "the payload's dtype is the sidecar's feature_dtype",
}


def vector_check_specs(key: AssetKey, partitions_def: Any) -> list[AssetCheckSpec]:
    return [
        AssetCheckSpec(
            name, asset=key, blocking=True, description=VECTOR_CHECK_DESCRIPTIONS[name], partitions_def=partitions_def
        )
        for name in VECTOR_CHECKS
    ]


def _zero_tiles_withdraw(exc: Exception, layout: OutputLayout, sample_id: str) -> list[Path]:
    # A slide that has no tiles now must not keep a slide embedding from an earlier tiling (s7).
    return failed_step_files(layout, SLIDE_KIND, sample_id) if type(exc).__name__ == "ZeroTilesError" else []


def slide_output_dim(config: PlatformConfig, pipeline: str) -> int:
    model = config.pipelines[pipeline].model
    assert model is not None and model.slide_encoder is not None
    tile_dim = get_spec(model.tile_encoder or model.name).feature_dim(model.variant)
    return get_slide_spec(model.slide_encoder, level="slide").output_dim(tile_dim)


def build_slide_assets(pipeline: str, config: PlatformConfig) -> AssetsDefinition:
    pipeline_config = config.pipelines[pipeline]
    model = pipeline_config.model
    assert model is not None and model.slide_encoder is not None
    keys = slide_asset_keys(pipeline, config)
    slide_key = keys[0]
    dim = slide_output_dim(config, pipeline)
    spec = get_slide_spec(model.slide_encoder, level="slide")
    outs = {
        key.path[-1]: AssetOut(
            key=key,
            io_manager_key=IO_MANAGER_KEY,
            group_name=pipeline,
            code_version=pipeline_config.slide_fingerprint(),
            description=(
                f"{spec.name} ({dim}-d) slide embedding: {SLIDE_KIND}/<sample_id>.{pipeline_config.output_format} "
                "+ .meta.json"
                if key == slide_key
                else f"{spec.name} latents {spec.latent_shape}: "
                f"{LATENTS_KIND}/<sample_id>.{pipeline_config.output_format}"
            ),
            kinds={"pytorch"},
        )
        for key in keys
    }
    own = coordinates_key(pipeline, config)
    reused_pipeline = pipeline_config.reuse_pipeline
    ins = {"coordinates": AssetIn(key=own)} if own is not None and reused_pipeline is None else {}
    tile_key = embedding_asset_key(pipeline, config)
    if tile_key is not None:
        ins["tile_embeddings"] = AssetIn(key=tile_key)

    def body(
        context: AssetExecutionContext, platform: PlatformResource, coordinates: Any, *rest: Any
    ) -> Iterator[Output[Any] | AssetCheckResult]:
        with one_writer(context, platform, pipeline):
            yield from _body(context, platform, coordinates, *rest)

    def _body(
        context: AssetExecutionContext, platform: PlatformResource, coordinates: Any, tile_embeddings: Any
    ) -> Iterator[Output[Any] | AssetCheckResult]:
        from slide2vec_dagster.artifacts.embeddings import EmbeddingCheckError, verify_vector
        from slide2vec_dagster.slide_level import embed_slide

        # A failure keeps the row's tiling and tile-embedding columns: they describe this run's work.
        with slide_step(
            context,
            platform,
            pipeline,
            "slide embedding",
            keep=TILE_EMBEDDING_COLUMNS,
            withdraw_when=_zero_tiles_withdraw,
        ) as step:
            assert step.entry is not None
            current = platform.config().pipelines[pipeline]
            source = coordinates_of(step, current, coordinates)
            outcome = embed_slide(
                step.entry,
                current,
                step.layout,
                source.pair,
                tile_features=tile_embeddings[0] if tile_embeddings is not None else None,
                run_id=context.run_id,
                source=source,
                lineage=sidecar_lineage(pipeline, platform.config().resolved_pipeline(pipeline)),
            )
        sample_id, layout = step.sample_id, step.layout
        context.log.info(f"{sample_id}: slide embedding {outcome.status} ({spec.name}, {outcome.seconds:.1f} s)")
        yield Output(
            outcome,
            output_name=SLIDE_KIND,
            metadata={
                "status": outcome.status,
                "encoder": spec.name,
                "feature_dim": dim,
                "num_tiles": outcome.meta["num_tiles"],
                "feature_dtype": outcome.meta["feature_dtype"],
                "tile_features": str(outcome.meta["provenance"]["tile_features"]),
                "model_weights": str(outcome.meta["provenance"]["model_weights"]),
            },
        )
        if LATENTS_KIND in outs:
            yield Output(outcome, output_name=LATENTS_KIND)

        def failure(problem: Exception) -> Exception:
            return fail_slide(
                platform,
                pipeline,
                sample_id,
                "checks",
                problem,
                image_path=outcome.meta.get("image_path"),
                run_id=context.run_id,
                context=context,
                asset_keys=[slide_key],
                keep=TILE_EMBEDDING_COLUMNS,
                withdraw_files=failed_step_files(layout, SLIDE_KIND, sample_id),
            )

        # The IO manager has written the files by now: check them as a user would load them.
        payload = layout.embedding_payload(SLIDE_KIND, sample_id, pipeline_config.output_format)
        try:
            results = verify_vector(payload, layout.embedding_meta(SLIDE_KIND, sample_id), dim)
        except Exception as exc:
            raise failure(exc) from exc
        checks, failed = payload_checks(slide_key, payload, results)
        yield from checks
        if failed:
            raise failure(EmbeddingCheckError(f"{payload} fails {', '.join(failed)}; the files were withdrawn"))

    decorate = multi_asset(
        name=f"{pipeline}__slide",
        outs=outs,
        ins=ins,
        deps=[AssetKey([reused_pipeline, "coordinates"]), SLIDES_KEY]
        if reused_pipeline and tile_key is None
        else [SLIDES_KEY],
        partitions_def=sample_partitions,
        backfill_policy=BackfillPolicy.multi_run(1),
        retry_policy=retry_policy(config),
        check_specs=vector_check_specs(slide_key, sample_partitions),
        op_tags=step_tags(config, pipeline, "gpu"),
        # The model's steps share the GPUs: at most execution.gpu_pool_size of them at once.
        pool=GPU_POOL,
    )
    # Dagster reads the inputs from the signature: one per combination of coordinates / tile embeddings.
    if "coordinates" in ins and tile_key is not None:

        def slide_from_tiles(
            context: AssetExecutionContext, platform: PlatformResource, coordinates: Any, tile_embeddings: Any
        ) -> Iterator[Output[Any] | AssetCheckResult]:
            yield from body(context, platform, coordinates, tile_embeddings)

        return decorate(slide_from_tiles)
    if "coordinates" in ins:

        def slide(
            context: AssetExecutionContext, platform: PlatformResource, coordinates: Any
        ) -> Iterator[Output[Any] | AssetCheckResult]:
            yield from body(context, platform, coordinates, None)

        return decorate(slide)
    if tile_key is not None:

        def slide_from_tiles_of_reused_coordinates(
            context: AssetExecutionContext, platform: PlatformResource, tile_embeddings: Any
        ) -> Iterator[Output[Any] | AssetCheckResult]:
            yield from body(context, platform, None, tile_embeddings)

        return decorate(slide_from_tiles_of_reused_coordinates)

    def slide_of_reused_coordinates(
        context: AssetExecutionContext, platform: PlatformResource
    ) -> Iterator[Output[Any] | AssetCheckResult]:
        yield from body(context, platform, None, None)

    return decorate(slide_of_reused_coordinates)
