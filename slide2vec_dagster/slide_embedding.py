"""Embed one slide's tiles (or regions) for one pipeline: plain Python, no Dagster.

The assets call ``embed_sample`` with the coordinates the tiling step wrote and hand the outcome to
the IO manager. Encoders are cached per process: a run that embeds several slides, or the CLI's
in-process runs, load the model once.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from slide2vec_dagster import __version__
from slide2vec_dagster.artifacts.embeddings import check_features, feature_dtype_name, read_embedding, read_meta
from slide2vec_dagster.config import PipelineConfig
from slide2vec_dagster.embedding.hierarchical import plan_subtiles, subtile_read_plan
from slide2vec_dagster.embedding.loop import LoopStats, ReadPlan, run_encoder
from slide2vec_dagster.encoders import TileEncoder, get_spec, load_encoder, storage_dtype
from slide2vec_dagster.encoders.cache import MODELS
from slide2vec_dagster.layout import OutputLayout
from slide2vec_dagster.manifest import SlideEntry
from slide2vec_dagster.provenance import tile_weights_lineage, upstream_run_id
from slide2vec_dagster.wsi import open_slide

logger = logging.getLogger(__name__)


@dataclass
class EmbeddingOutcome:
    """What the IO manager writes for one slide. ``status`` is ``done`` or ``skipped``."""

    sample_id: str
    kind: str  # tile_embeddings | hierarchical_embeddings
    status: str
    features: torch.Tensor | None  # None when skipped (the payload on disk is current)
    meta: dict[str, Any]
    stats: LoopStats = field(default_factory=LoopStats)
    # Reused coordinates of our own layout, copied into this pipeline's tiles/ before the payload lands.
    coordinates_copy: Any = None


def embedding_kind(pipeline: PipelineConfig) -> str:
    return pipeline.embedding_kind


def resolve_device(requested: str) -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("speed.device is cuda but torch sees no CUDA device; set speed.device: auto or cpu")
    return requested


def cached_encoder(pipeline: PipelineConfig) -> TileEncoder:
    model, speed = pipeline.model, pipeline.speed
    assert model is not None
    device = resolve_device(speed.device)
    weights = str(model.weights) if model.weights else None
    name = tile_encoder_name(pipeline)
    key = ("tile", name, weights, model.variant, device, str(speed.precision))
    return MODELS.get(
        key,
        lambda: load_encoder(name, weights, device=device, precision=speed.precision, variant=model.variant),
        budget_bytes=cache_budget(pipeline),
    )


def cache_budget(pipeline: PipelineConfig) -> int:
    return int(pipeline.encoder_cache_gb * 2**30)


def tile_encoder_name(pipeline: PipelineConfig) -> str:
    """The tile preset of the pipeline (``model.name`` may be a slide or patient model)."""
    assert pipeline.model is not None
    return pipeline.model.tile_encoder or pipeline.model.name


def inputs_fingerprint(pipeline: PipelineConfig, coordinates_meta: dict[str, Any]) -> str:
    """The coordinates' own inputs (slide, mask, tiling) plus everything the encoder step adds."""
    parts = {
        "coordinates": coordinates_meta.get("artifact", {}).get("inputs_fingerprint"),
        "embedding": pipeline.embedding_fingerprint(),
        "code": __version__,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def reusable_embedding(
    kind: str,
    sample_id: str,
    pipeline: PipelineConfig,
    layout: OutputLayout,
    fingerprint: str,
    expected_shape: tuple[int, ...],
    recorded_key: str = "inputs_fingerprint",
) -> dict | None:
    """The sidecar of an embedding already on disk, if it was made from the same inputs (its provenance's
    ``recorded_key`` is ``fingerprint``) AND its payload loads with the shape and dtype the sidecar promises.
    Anything unreadable means: compute again."""
    payload = layout.embedding_payload(kind, sample_id, pipeline.output_format)
    meta_path = layout.embedding_meta(kind, sample_id)
    if not (payload.exists() and meta_path.exists()):
        return None
    try:
        meta = read_meta(meta_path)
        if meta.get("provenance", {}).get(recorded_key) != fingerprint:
            return None
        features = read_embedding(payload)
        if tuple(features.shape) != expected_shape or feature_dtype_name(features.dtype) != meta.get("feature_dtype"):
            logger.warning(
                "%s: %s has shape %s / dtype %s, expected %s / %s; computing again",
                sample_id,
                payload,
                tuple(features.shape),
                features.dtype,
                expected_shape,
                meta.get("feature_dtype"),
            )
            return None
    except Exception as exc:  # truncated, not a tensor, bad JSON...: recompute rather than skip forever
        logger.warning("%s: %s is unreadable (%s); computing again", sample_id, payload, exc)
        return None
    return meta


def embed_sample(
    entry: SlideEntry,
    pipeline: PipelineConfig,
    layout: OutputLayout,
    coordinates: tuple[dict[str, np.ndarray], dict[str, Any]],
    run_id: str | None = None,
    progress: Callable[[LoopStats], None] | None = None,
    reuse_existing: bool = True,
    source: Any = None,
    lineage: dict[str, Any] | None = None,
) -> EmbeddingOutcome:
    """Embed the tiles (or, in hierarchical mode, the regions' subtiles) listed by ``coordinates``."""
    if pipeline.model is None:
        raise ValueError("this pipeline has no model block; add model: {name: <preset>} to embed its tiles")
    arrays, coords_meta = coordinates
    kind = embedding_kind(pipeline)
    fingerprint = inputs_fingerprint(pipeline, coords_meta)
    spec = get_spec(tile_encoder_name(pipeline))
    feature_dim = spec.feature_dim(pipeline.model.variant)
    n_rows = len(arrays["x"])
    multiple = pipeline.region_tile_multiple
    hierarchical = kind == "hierarchical_embeddings" and multiple
    expected = (n_rows, multiple * multiple, feature_dim) if hierarchical else (n_rows, feature_dim)
    if reuse_existing:
        meta = reusable_embedding(kind, entry.sample_id, pipeline, layout, fingerprint, expected)
        if meta is not None:
            copy = source if source is not None and source.copied_into_layout else None
            return EmbeddingOutcome(entry.sample_id, kind, "skipped", None, meta, coordinates_copy=copy)

    out_dtype = storage_dtype(pipeline.speed.precision or spec.precision, pipeline.speed.output_dtype)
    tiling_meta, slide_meta = coords_meta["tiling"], coords_meta["slide"]
    x, y = arrays["x"], arrays["y"]
    params = pipeline.tiling.params
    tile_px = int(params.requested_tile_size_px)  # type: ignore[arg-type]

    if kind == "hierarchical_embeddings":
        geometry = plan_subtiles(
            requested_spacing_um=float(params.requested_spacing_um),  # type: ignore[arg-type]
            requested_tile_size_px=tile_px,
            region_tile_multiple=int(pipeline.region_tile_multiple),  # type: ignore[arg-type]
            base_spacing_um=float(slide_meta["base_spacing_um"]),
            level_downsamples=tuple(slide_meta["level_downsamples"]),
            tolerance=float(params.tolerance),
        )
        plan = subtile_read_plan(x, y, geometry)
        read_tile_px, tile_size_lv0 = geometry.tile.read_tile_size_px, geometry.tile_size_lv0
    else:
        read_tile_px, tile_size_lv0 = int(tiling_meta["read_tile_size_px"]), int(tiling_meta["tile_size_lv0"])
        plan = ReadPlan(
            x=x, y=y, read_level=int(tiling_meta["read_level"]), read_size_px=read_tile_px, target_size_px=tile_px
        )

    stats = LoopStats()
    weights_origin = "not loaded (no tiles)"
    device = resolve_device(pipeline.speed.device)
    if len(plan) == 0:
        features = torch.empty((0, feature_dim), dtype=torch.float32)
    else:
        encoder = cached_encoder(pipeline)
        weights_origin = encoder.weights_origin
        # Read with the reader that tiled the slide, so the pixels are the ones the tiling saw.
        backend = coords_meta["provenance"]["backend"]
        with open_slide(entry.image_path, backend, entry.spacing_at_level_0) as reader:
            features, stats = run_encoder(
                reader,
                plan,
                encoder,
                feature_dim,
                batch_size=pipeline.model.batch_size,
                num_workers=pipeline.speed.num_workers,
                prefetch_batches=pipeline.speed.prefetch_batches,
                progress=progress,
            )
    if kind == "hierarchical_embeddings":
        features = features.reshape(len(x), geometry.tiles_per_region, feature_dim)
    features = features.to(out_dtype)
    check_features(
        features, expected, f"sample {entry.sample_id!r} ({spec.name} on {entry.image_path})", pipeline.speed.precision
    )

    # Rows follow the coordinates file: ours (or a copy in tiles/), or a reused slide2vec file kept as is.
    coordinates_npz_path = layout.coordinates_npz(entry.sample_id)
    coordinates_meta_path = layout.coordinates_meta(entry.sample_id)
    if source is not None and source.reused_from is not None and not source.copied_into_layout:
        coordinates_npz_path, coordinates_meta_path = source.npz_path or "", source.meta_path
    meta: dict[str, Any] = {
        "sample_id": entry.sample_id,
        "artifact_type": kind,
        "backend": coords_meta["provenance"]["backend"],
        "coordinates_meta_path": str(coordinates_meta_path),
        "coordinates_npz_path": str(coordinates_npz_path),
        # The level of the model that wrote it: a slide model saving tile embeddings writes "slide".
        "encoder_level": pipeline.model.level or "tile",
        "encoder_name": spec.name,
        "feature_dim": feature_dim,
        "format": pipeline.output_format,
        "image_path": str(entry.image_path),
        "mask_path": str(entry.mask_path) if entry.mask_path else None,
        "num_tiles": int(plan.x.shape[0]),
        "tile_size_lv0": int(tile_size_lv0),
        "annotation": None,
        "feature_dtype": feature_dtype_name(out_dtype),
        "requested_spacing_um": float(params.requested_spacing_um),  # type: ignore[arg-type]
        "requested_tile_size_px": tile_px,
        "read_tile_size_px": int(read_tile_px),
        "encoder_input_size_px": int(spec.tile_size_px),
        "tiles_tar_path": "",
        "provenance": {
            "run_id": run_id,
            "code_version": __version__,
            "settings_hash": pipeline.embedding_fingerprint(),
            "inputs_fingerprint": fingerprint,
            "coordinates_inputs_fingerprint": coords_meta.get("artifact", {}).get("inputs_fingerprint"),
            "encoder_variant": pipeline.model.variant or spec.default_variant,
            "model_weights": weights_origin,
            "precision": pipeline.speed.precision,
            "device": device,
            "coordinates_run_id": upstream_run_id(coords_meta),
            **tile_weights_lineage(weights_origin, spec.weights.revision if spec.weights else None),
            **(lineage or {}),
        },
    }
    if source is not None and source.reused_from is not None:
        meta["coordinates_source"] = f"{source.source_format} ({source.reused_from})"
        meta["tile_order"] = source.tile_order
    if kind == "hierarchical_embeddings":
        multiple = int(pipeline.region_tile_multiple)  # type: ignore[arg-type]
        meta.update(
            num_regions=len(x),
            tiles_per_region=multiple * multiple,
            region_tile_multiple=multiple,
            requested_region_size_px=tile_px * multiple,
            read_region_size_px=int(tiling_meta["read_tile_size_px"]),
            subtile_order="row_major",
        )
    copy = source if source is not None and source.copied_into_layout else None
    return EmbeddingOutcome(entry.sample_id, kind, "done", features, meta, stats, coordinates_copy=copy)
