"""Asset keys of a pipeline, from its config: which assets exist is decided here, once."""

from dagster import AssetKey

from slide2vec_dagster.config import PlatformConfig
from slide2vec_dagster.layout import LATENTS_KIND, PATIENT_KIND, SLIDE_KIND


def tiling_asset_keys(pipeline: str, config: PlatformConfig) -> list[AssetKey]:
    """``P/coordinates`` plus the previews the pipeline asks for; none when it reuses coordinates."""
    if config.pipelines[pipeline].reuse_dir is not None:
        return []
    preview = config.pipelines[pipeline].tiling.preview
    names = ["coordinates"]
    names += ["mask_preview"] if preview.save_mask_preview else []
    names += ["tiling_preview"] if preview.save_tiling_preview else []
    return [AssetKey([pipeline, name]) for name in names]


def embedding_asset_key(pipeline: str, config: PlatformConfig) -> AssetKey | None:
    """``P/tile_embeddings`` or ``P/hierarchical_embeddings`` when the pipeline writes them: always for tile
    models, with ``save_tile_embeddings`` for slide and patient models (slide2vec's default: not)."""
    pipeline_config = config.pipelines[pipeline]
    return AssetKey([pipeline, pipeline_config.embedding_kind]) if pipeline_config.writes_tile_embeddings else None


def slide_asset_keys(pipeline: str, config: PlatformConfig) -> list[AssetKey]:
    """``P/slide_embeddings`` (+ ``P/slide_latents``) when the pipeline writes slide embeddings."""
    pipeline_config = config.pipelines[pipeline]
    if not pipeline_config.writes_slide_embeddings:
        return []
    keys = [AssetKey([pipeline, SLIDE_KIND])]
    return keys + ([AssetKey([pipeline, LATENTS_KIND])] if pipeline_config.writes_latents else [])


def patient_asset_key(pipeline: str, config: PlatformConfig) -> AssetKey | None:
    return AssetKey([pipeline, PATIENT_KIND]) if config.pipelines[pipeline].level == "patient" else None


def coordinates_key(pipeline: str, config: PlatformConfig) -> AssetKey | None:
    """The coordinates asset a pipeline's embeddings read: its own, the pipeline it reuses (an edge across
    pipelines in the asset graph), or None for a folder reused from outside the platform."""
    pipeline_config = config.pipelines[pipeline]
    if pipeline_config.reuse_pipeline is not None:
        return AssetKey([pipeline_config.reuse_pipeline, "coordinates"])
    if pipeline_config.reuse_dir is not None:
        return None
    return AssetKey([pipeline, "coordinates"])


def slide_level_upstream(pipeline: str, config: PlatformConfig) -> AssetKey | None:
    """The per-slide asset a patient's embedding is computed from: the slide embeddings when kept, else the
    tile embeddings when kept, else the coordinates (the patient run then computes the rest in memory)."""
    slide = slide_asset_keys(pipeline, config)
    return slide[0] if slide else embedding_asset_key(pipeline, config) or coordinates_key(pipeline, config)


def pipeline_asset_keys(pipeline: str, config: PlatformConfig) -> list[AssetKey]:
    """Every sample_id-partitioned asset of one pipeline: what a new slide needs materialised."""
    embedding = embedding_asset_key(pipeline, config)
    return tiling_asset_keys(pipeline, config) + ([embedding] if embedding else []) + slide_asset_keys(pipeline, config)
