"""Slide and patient embeddings for one pipeline: plain Python, no Dagster (ARTIFACTS.md s5, s7).

- ``embed_slide``: one slide's tile features (read from ``tile_embeddings/`` or computed in memory when the
  pipeline does not keep them) + level-0 coordinates + ``tile_size_lv0`` -> the slide model -> ``(D,)``
  and, for models that have them, latents. A slide with zero tiles gets no slide embedding.
- ``patient_inputs`` / ``embed_patient``: the slides of one ``patient_id`` in manifest order, each with a
  current slide embedding (or computed in memory when the pipeline does not keep them) -> ``(S, D)`` ->
  the patient model -> ``(D,)``. Slides that failed (zero tiles, a bad file) are left out and recorded.

Encoders are cached per process, like the tile encoders: a worker that embeds many slides loads each
model once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from slide2vec_dagster import __version__
from slide2vec_dagster.artifacts.embeddings import (
    check_features,
    feature_dtype_name,
    read_embedding,
    read_meta,
)
from slide2vec_dagster.config import PipelineConfig
from slide2vec_dagster.coordinates_source import load_coordinates
from slide2vec_dagster.encoders import get_slide_spec, get_spec, load_patient_encoder, load_slide_encoder, storage_dtype
from slide2vec_dagster.encoders.cache import MODELS
from slide2vec_dagster.encoders.slide_loading import PatientEncoder, SlideEncoder
from slide2vec_dagster.layout import EMBEDDING_KINDS, PATIENT_KIND, SLIDE_KIND, OutputLayout
from slide2vec_dagster.manifest import SlideEntry
from slide2vec_dagster.provenance import upstream_run_id
from slide2vec_dagster.slide_embedding import (
    cache_budget,
    embed_sample,
    inputs_fingerprint,
    resolve_device,
    reusable_embedding,
)

logger = logging.getLogger(__name__)


class ZeroTilesError(ValueError):
    """A slide without tiles has no slide embedding (ARTIFACTS.md s7)."""


class PatientWithoutSlidesError(ValueError):
    """None of a patient's slides has a slide embedding to aggregate."""


def _hash(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def _weights_key(pipeline: PipelineConfig) -> tuple[Any, ...]:
    model = pipeline.model
    assert model is not None
    device = resolve_device(pipeline.speed.device)
    weights = str(model.slide_weights) if model.slide_weights else None
    return (weights, model.revision, model.trust_remote_code, device, str(pipeline.speed.precision))


def _cached(pipeline: PipelineConfig, level: str, name: str, load: Callable[..., Any]) -> Any:
    """The ``level`` encoder ``name`` of ``pipeline`` from the process's model cache (loaded on a miss)."""
    weights, revision, trust, device, precision = _weights_key(pipeline)
    spec = get_slide_spec(name, level=level)
    return MODELS.get(
        (level, name, weights, revision, trust, device, precision),
        lambda: load(
            spec.name,
            None if spec.is_baseline else weights,
            device=device,
            precision=None if spec.is_baseline else precision,
            revision=None if spec.is_baseline else revision,
            trust_remote_code=trust,
        ),
        budget_bytes=cache_budget(pipeline),
    )


def cached_patient_encoder(pipeline: PipelineConfig) -> PatientEncoder:
    model = pipeline.model
    assert model is not None and model.patient_encoder is not None
    return _cached(pipeline, "patient", model.patient_encoder, load_patient_encoder)


def cached_slide_encoder(pipeline: PipelineConfig) -> SlideEncoder:
    model = pipeline.model
    assert model is not None and model.slide_encoder is not None
    if model.patient_encoder is not None:
        patient = cached_patient_encoder(pipeline)
        if patient.slide_encoder is not None:  # MOOZY: the slide encoder ships in the patient checkpoint
            return patient.slide_encoder
    return _cached(pipeline, "slide", model.slide_encoder, load_slide_encoder)


def slide_inputs_fingerprint(pipeline: PipelineConfig, coordinates_meta: dict[str, Any]) -> str:
    """The tile embeddings' inputs plus the slide model: what decides a slide embedding."""
    return _hash(
        {
            "tiles": inputs_fingerprint(pipeline, coordinates_meta),
            "slide": pipeline.slide_fingerprint(),
            "code": __version__,
        }
    )


@dataclass
class SlideOutcome:
    """What the IO manager writes for one slide. ``status`` is ``done`` or ``skipped``."""

    sample_id: str
    status: str
    embedding: torch.Tensor | None  # None when skipped (the payload on disk is current)
    latents: torch.Tensor | None
    meta: dict[str, Any]
    seconds: float = 0.0
    coordinates_copy: Any = None  # reused coordinates of our layout, copied into tiles/ (see coordinates_source)


def _expected_dim(pipeline: PipelineConfig, tile_dim: int) -> int:
    model = pipeline.model
    assert model is not None and model.slide_encoder is not None
    return get_slide_spec(model.slide_encoder, level="slide").output_dim(tile_dim)


def _slide_reusable(
    sample_id: str, pipeline: PipelineConfig, layout: OutputLayout, fingerprint: str, dim: int
) -> dict[str, Any] | None:
    """The slide sidecar on disk, if made from the same inputs and its payload (and latents, when the
    pipeline keeps them) load with the promised shape and dtype; anything unreadable means: compute again."""
    meta = reusable_embedding(SLIDE_KIND, sample_id, pipeline, layout, fingerprint, (dim,))
    if meta is None or not pipeline.writes_latents:
        return meta
    latents = layout.slide_latents(sample_id, pipeline.output_format)
    try:
        if read_latents(latents) is None:
            return None
    except Exception as exc:
        logger.warning("%s: %s is unreadable (%s); computing again", sample_id, latents, exc)
        return None
    return meta


def read_latents(path: Any) -> torch.Tensor | None:
    if not path.exists():
        return None
    if path.suffix == ".pt":
        return torch.load(path, map_location="cpu", weights_only=True)
    with np.load(path) as archive:
        return torch.from_numpy(archive["latents"])


def tile_features_in_memory(
    entry: SlideEntry, pipeline: PipelineConfig, layout: OutputLayout, coordinates: tuple[dict, dict], source: Any
) -> torch.Tensor:
    """Tile features of a pipeline that does not keep them (slide2vec's default for slide models)."""
    outcome = embed_sample(entry, pipeline, layout, coordinates, reuse_existing=False, source=source)
    return outcome.features  # type: ignore[return-value]


def embed_slide(
    entry: SlideEntry,
    pipeline: PipelineConfig,
    layout: OutputLayout,
    coordinates: tuple[dict[str, np.ndarray], dict[str, Any]],
    tile_features: torch.Tensor | None = None,
    run_id: str | None = None,
    reuse_existing: bool = True,
    source: Any = None,
    lineage: dict[str, Any] | None = None,
) -> SlideOutcome:
    """The slide embedding of ``entry`` (and its latents when the pipeline keeps them).

    ``tile_features`` are the slide's tile embeddings when the pipeline wrote them; otherwise they are
    computed here, in memory, and not written.
    """
    model = pipeline.model
    if model is None or model.slide_encoder is None:
        raise ValueError("this pipeline has no slide-level model; set model.slide_encoder or a slide model name")
    arrays, coords_meta = coordinates
    n_tiles = len(arrays["x"])
    if n_tiles == 0:
        raise ZeroTilesError(
            f"sample {entry.sample_id!r} ({entry.image_path}) has zero tiles, so it has no slide embedding; check its "
            "tissue segmentation (mask preview) or lower tiling.masks.min_coverage.tissue / filter_params.a_t"
        )
    spec = get_slide_spec(model.slide_encoder, level="slide")
    fingerprint = slide_inputs_fingerprint(pipeline, coords_meta)
    tile_dim = get_spec(model.tile_encoder or model.name).feature_dim(model.variant)
    dim = spec.output_dim(tile_dim)
    copy = source if source is not None and source.copied_into_layout else None
    if reuse_existing and (meta := _slide_reusable(entry.sample_id, pipeline, layout, fingerprint, dim)) is not None:
        return SlideOutcome(entry.sample_id, "skipped", None, None, meta, coordinates_copy=copy)

    started = time.perf_counter()
    if tile_features is None:
        tile_features = tile_features_in_memory(entry, pipeline, layout, coordinates, source)
    encoder = cached_slide_encoder(pipeline)
    coords = np.stack([arrays["x"], arrays["y"]], axis=1).astype(np.int64)
    tile_size_lv0 = int(coords_meta["tiling"]["tile_size_lv0"])
    out = encoder(tile_features.to(torch.float32), coords, tile_size_lv0)
    out_dtype = storage_dtype(pipeline.speed.precision or spec.precision, pipeline.speed.output_dtype)
    embedding = out.embedding.to(out_dtype)
    where = f"sample {entry.sample_id!r} ({spec.name} on {entry.image_path})"
    check_features(embedding, (dim,), where, pipeline.speed.precision)
    latents = out.latents.to(out_dtype) if (pipeline.writes_latents and out.latents is not None) else None
    weights = encoder.lineage()
    meta: dict[str, Any] = {
        # The seed's keys, then the contract's.
        "sample_id": entry.sample_id,
        "artifact_type": SLIDE_KIND,
        "encoder_level": "slide",
        "encoder_name": spec.name,
        "feature_dim": dim,
        "format": pipeline.output_format,
        "image_path": str(entry.image_path),
        "feature_dtype": feature_dtype_name(embedding.dtype),
        "num_tiles": n_tiles,
        "provenance": {
            "run_id": run_id,
            "code_version": __version__,
            "settings_hash": pipeline.slide_fingerprint(),
            "inputs_fingerprint": fingerprint,
            "coordinates_inputs_fingerprint": coords_meta.get("artifact", {}).get("inputs_fingerprint"),
            "tile_encoder": model.tile_encoder,
            "tile_encoder_variant": model.variant,
            "tile_features": "tile_embeddings/" if pipeline.writes_tile_embeddings else "computed in memory",
            "model_weights": weights["weights_origin"],
            "weights_revision": weights["weights_revision"],
            "weights_sha256": weights["weights_sha256"],
            "precision": pipeline.speed.precision,
            "device": str(encoder.device),
            "latents_shape": list(latents.shape) if latents is not None else None,
            "coordinates_run_id": upstream_run_id(coords_meta),
            **(lineage or {}),
        },
    }
    seconds = time.perf_counter() - started
    return SlideOutcome(entry.sample_id, "done", embedding, latents, meta, seconds, coordinates_copy=copy)


# ------------------------------------------------------------------------------------------ patients


@dataclass
class PatientInputs:
    """A patient's slides as the platform sees them now. ``key`` changes whenever a slide is added or
    removed, or one of its slide embeddings (or, when they are not kept, tile inputs) changes."""

    patient_id: str
    included: list[str]  # manifest order
    excluded: dict[str, str]  # sample_id -> why it is left out (its recorded failure)
    pending: list[str]  # slides with nothing current yet and no failure: the patient must wait
    key: str
    upstream: dict[str, str] = field(default_factory=dict)  # sample_id -> fingerprint of what goes in

    @property
    def ready(self) -> bool:
        return not self.pending


def _current_slide_fingerprint(layout: OutputLayout, pipeline: PipelineConfig, sample_id: str) -> str | None:
    """The inputs fingerprint a slide's upstream artifact must have to be current, or None if it has none."""
    try:
        if pipeline.reuse_dir is not None:
            coords_meta = load_coordinates(pipeline, layout, sample_id).meta
        else:
            coords_meta = json.loads(layout.coordinates_meta(sample_id).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if pipeline.writes_slide_embeddings:
        expected = slide_inputs_fingerprint(pipeline, coords_meta)
        try:
            meta = read_meta(layout.embedding_meta(SLIDE_KIND, sample_id))
        except (OSError, ValueError):
            return None
        payload = layout.embedding_payload(SLIDE_KIND, sample_id, str(meta.get("format", pipeline.output_format)))
        found = meta.get("provenance", {}).get("inputs_fingerprint")
        return found if found == expected and payload.exists() else None
    # Slide embeddings are not kept: the patient run computes them from the coordinates (and the tile
    # embeddings when those are kept), so those are its inputs.
    if coords_meta.get("tiling", {}).get("n_tiles") == 0:
        return None
    return slide_inputs_fingerprint(pipeline, coords_meta)


def patient_inputs(
    patient_id: str,
    members: Sequence[SlideEntry],
    pipeline: PipelineConfig,
    layout: OutputLayout,
    rows: dict[str, dict[str, str]],
) -> PatientInputs:
    """Which of the patient's slides go in (``rows``: the pipeline's process_list.csv)."""
    included, pending = [], []
    excluded: dict[str, str] = {}
    upstream: dict[str, str] = {}
    for entry in members:
        sid = entry.sample_id
        current = _current_slide_fingerprint(layout, pipeline, sid)
        row = rows.get(sid, {})
        if current is not None and row.get("status") != "failed":
            included.append(sid)
            upstream[sid] = current
        elif row.get("status") == "failed":
            excluded[sid] = row.get("error", "failed")
        elif row.get("status") in ("done", "skipped") and row.get("num_tiles") == "0":
            excluded[sid] = "zero tiles: no slide embedding"
        else:
            pending.append(sid)
    key = _hash(
        {
            "patient": pipeline.patient_fingerprint(),
            "slides": [[sid, upstream[sid]] for sid in included],
            "excluded": sorted(excluded),
        }
    )
    return PatientInputs(patient_id, included, excluded, pending, key, upstream)


def recorded_inputs_key(layout: OutputLayout, patient_id: str) -> str | None:
    """The inputs key the patient's current embedding was made from (None: no complete embedding)."""
    try:
        meta = read_meta(layout.embedding_meta(PATIENT_KIND, patient_id))
    except (OSError, ValueError):
        return None
    payload = layout.embedding_payload(PATIENT_KIND, patient_id, str(meta.get("format", "pt")))
    return meta.get("provenance", {}).get("inputs_key") if payload.exists() else None


@dataclass
class PatientOutcome:
    patient_id: str
    status: str
    embedding: torch.Tensor | None
    meta: dict[str, Any]


def _patient_reusable(
    patient_id: str, pipeline: PipelineConfig, layout: OutputLayout, key: str, dim: int
) -> dict[str, Any] | None:
    return reusable_embedding(PATIENT_KIND, patient_id, pipeline, layout, key, (dim,), recorded_key="inputs_key")


def _slide_embedding_for_patient(entry: SlideEntry, pipeline: PipelineConfig, layout: OutputLayout) -> torch.Tensor:
    """A member's slide embedding: the kept one, or computed in memory (from kept tile embeddings when
    there are some)."""
    if pipeline.writes_slide_embeddings:
        meta = read_meta(layout.embedding_meta(SLIDE_KIND, entry.sample_id))
        payload = layout.embedding_payload(SLIDE_KIND, entry.sample_id, str(meta["format"]))
        return read_embedding(payload).to(torch.float32)
    sid = entry.sample_id
    source = load_coordinates(pipeline, layout, sid)
    coordinates = source.pair
    tile_features = None
    kind = EMBEDDING_KINDS[0]
    if pipeline.writes_tile_embeddings and layout.embedding_meta(kind, sid).exists():
        tile_meta = read_meta(layout.embedding_meta(kind, sid))
        if tile_meta.get("provenance", {}).get("inputs_fingerprint") == inputs_fingerprint(pipeline, coordinates[1]):
            tile_features = read_embedding(layout.embedding_payload(kind, sid, str(tile_meta["format"])))
    outcome = embed_slide(entry, pipeline, layout, coordinates, tile_features, reuse_existing=False, source=source)
    assert outcome.embedding is not None
    return outcome.embedding.to(torch.float32)


def embed_patient(
    inputs: PatientInputs,
    members: Sequence[SlideEntry],
    pipeline: PipelineConfig,
    layout: OutputLayout,
    run_id: str | None = None,
    reuse_existing: bool = True,
    lineage: dict[str, Any] | None = None,
) -> PatientOutcome:
    """The patient embedding of ``inputs.included`` (manifest order)."""
    model = pipeline.model
    assert model is not None and model.patient_encoder is not None
    spec = get_slide_spec(model.patient_encoder, level="patient")
    patient_id = inputs.patient_id
    if not inputs.included:
        reasons = "; ".join(f"{sid}: {why}" for sid, why in inputs.excluded.items()) or "it has no slides"
        raise PatientWithoutSlidesError(
            f"patient {patient_id!r} has no slide with a slide embedding ({reasons}); fix or add its slides in the "
            "manifest, then materialise the patient again"
        )
    if inputs.pending:
        raise RuntimeError(
            f"patient {patient_id!r} has slides without a current slide embedding yet: {inputs.pending}; materialise "
            "them first (the patient sensor requests the patient once they are all done or failed)"
        )
    by_id = {entry.sample_id: entry for entry in members}
    slide_spec = get_slide_spec(model.slide_encoder or "", level="slide")
    slide_dim = slide_spec.output_dim(get_spec(model.tile_encoder or model.name).feature_dim(model.variant))
    dim = spec.output_dim(slide_dim)
    if reuse_existing and (meta := _patient_reusable(patient_id, pipeline, layout, inputs.key, dim)) is not None:
        return PatientOutcome(patient_id, "skipped", None, meta)
    stacked = torch.stack([_slide_embedding_for_patient(by_id[sid], pipeline, layout) for sid in inputs.included])
    encoder = cached_patient_encoder(pipeline)
    out_dtype = storage_dtype(pipeline.speed.precision or spec.precision, pipeline.speed.output_dtype)
    embedding = encoder(stacked).to(out_dtype)
    check_features(embedding, (dim,), f"patient {patient_id!r} ({spec.name})", pipeline.speed.precision)
    weights = encoder.lineage()
    meta: dict[str, Any] = {
        "patient_id": patient_id,
        "artifact_type": PATIENT_KIND,
        "encoder_name": spec.name,
        "encoder_level": "patient",
        "format": pipeline.output_format,
        "feature_dim": dim,
        "num_slides": len(inputs.included),
        "feature_dtype": feature_dtype_name(embedding.dtype),
        "sample_ids": list(inputs.included),
        "provenance": {
            "run_id": run_id,
            "code_version": __version__,
            "settings_hash": pipeline.patient_fingerprint(),
            "inputs_key": inputs.key,
            "slide_encoder": model.slide_encoder,
            "slide_inputs": inputs.upstream,
            "excluded_slides": inputs.excluded,
            "slide_embeddings": "slide_embeddings/" if pipeline.writes_slide_embeddings else "computed in memory",
            "model_weights": weights["weights_origin"],
            "weights_revision": weights["weights_revision"],
            "weights_sha256": weights["weights_sha256"],
            **(lineage or {}),
        },
    }
    return PatientOutcome(patient_id, "done", embedding, meta)
