"""Per pipeline P with a model: ``P/tile_embeddings`` (or ``P/hierarchical_embeddings`` when
``tiling.params.region_tile_multiple`` is set), partitioned by sample_id, with blocking checks."""

from collections.abc import Iterator
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
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

from slide2vec_dagster.artifacts.embeddings import EMBEDDING_CHECKS, verify_embedding
from slide2vec_dagster.config import PlatformConfig
from slide2vec_dagster.defs.asset_keys import embedding_asset_key
from slide2vec_dagster.defs.partitions import sample_partitions
from slide2vec_dagster.defs.resources import PlatformResource
from slide2vec_dagster.defs.slide_runs import slide_failure, the_slide_of
from slide2vec_dagster.defs.tiling_assets import IO_MANAGER_KEY
from slide2vec_dagster.encoders import get_spec
from slide2vec_dagster.slide_embedding import embed_sample

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
    spec = get_spec(pipeline_config.model.name)
    feature_dim = spec.feature_dim(pipeline_config.model.variant)
    multiple = pipeline_config.region_tile_multiple

    @asset(
        key=key,
        ins={"coordinates": AssetIn(key=AssetKey([pipeline, "coordinates"]))},
        partitions_def=sample_partitions,
        io_manager_key=IO_MANAGER_KEY,
        group_name=pipeline,
        code_version=pipeline_config.embedding_fingerprint(),
        backfill_policy=BackfillPolicy.multi_run(1),
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
        op_tags={"slide2vec/pipeline": pipeline},
    )
    def embeddings(
        context: AssetExecutionContext, platform: PlatformResource, coordinates: Any
    ) -> Iterator[Output[Any] | AssetCheckResult]:
        sample_id = the_slide_of(context)
        layout = platform.layout(pipeline)
        current = platform.config().pipelines[pipeline]
        entry = None
        try:
            entry = platform.slide(sample_id)
            outcome = embed_sample(
                entry,
                current,
                layout,
                coordinates,
                run_id=context.run_id,
                progress=lambda s: context.log.info(
                    f"{sample_id}: {s.tiles} tiles embedded, {s.tiles_per_second:.1f} tiles/s"
                ),
            )
        except Exception as exc:
            raise slide_failure(platform, pipeline, sample_id, "embedding", exc, entry, context.run_id) from exc
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
            },
        )
        # The IO manager has written the files by now: check them as a user would load them.
        payload = layout.embedding_payload(key.path[-1], sample_id, current.output_format)
        n_rows = len(coordinates[0]["x"])
        for result in verify_embedding(
            payload,
            layout.embedding_meta(key.path[-1], sample_id),
            n_rows,
            feature_dim,
            multiple * multiple if multiple else None,
        ):
            yield AssetCheckResult(
                asset_key=key,
                check_name=result.name,
                passed=result.passed,
                severity=AssetCheckSeverity.ERROR,
                description=result.description,
                metadata={"payload": MetadataValue.path(str(payload))},
            )

    return embeddings
