"""Asset keys of a pipeline, from its config: which assets exist is decided here, once."""

from dagster import AssetKey

from slide2vec_dagster.config import PlatformConfig
from slide2vec_dagster.slide_embedding import embedding_kind


def tiling_asset_keys(pipeline: str, config: PlatformConfig) -> list[AssetKey]:
    """``P/coordinates`` plus the previews the pipeline asks for."""
    preview = config.pipelines[pipeline].tiling.preview
    names = ["coordinates"]
    names += ["mask_preview"] if preview.save_mask_preview else []
    names += ["tiling_preview"] if preview.save_tiling_preview else []
    return [AssetKey([pipeline, name]) for name in names]


def embedding_asset_key(pipeline: str, config: PlatformConfig) -> AssetKey | None:
    """``P/tile_embeddings`` or ``P/hierarchical_embeddings``; None for a pipeline without a model."""
    pipeline_config = config.pipelines[pipeline]
    return AssetKey([pipeline, embedding_kind(pipeline_config)]) if pipeline_config.model else None


def pipeline_asset_keys(pipeline: str, config: PlatformConfig) -> list[AssetKey]:
    """Every asset of one pipeline: what a new slide needs materialised."""
    embedding = embedding_asset_key(pipeline, config)
    return tiling_asset_keys(pipeline, config) + ([embedding] if embedding else [])
