"""Which tile, slide and patient presets one pipeline's ``model`` block means, and whether they fit.

slide2vec names one model per pipeline (``model.name``): a tile model, a slide model (its tile encoder is
implied by the pairing) or a patient model (its slide and tile encoders implied). The platform also lets a
weight-free ``mean-pool`` slide / patient level sit on any tile encoder, named explicitly with
``slide_encoder`` / ``patient_encoder`` (and ``tile_encoder`` when ``name`` is not the tile model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from slide2vec_dagster.encoders.errors import EncoderConfigError, UnknownEncoderError
from slide2vec_dagster.encoders.slide_spec import (
    SlideEncoderSpec,
    check_pairing,
    check_patient_pairing,
    check_save_latents,
    get_slide_spec,
)
from slide2vec_dagster.encoders.spec import EncoderSpec, get_spec
from slide2vec_dagster.encoders.weights_help import check_remote_opt_in


class ModelBlock(Protocol):
    name: str
    variant: str | None
    tile_encoder: str | None
    slide_encoder: str | None
    patient_encoder: str | None


@dataclass(frozen=True)
class ResolvedLevels:
    level: str  # tile | slide | patient
    name: str  # the canonical name of model.name's preset
    tile: EncoderSpec
    slide: SlideEncoderSpec | None
    patient: SlideEncoderSpec | None
    variant: str | None  # the tile encoder's output variant the slide level needs (or the configured one)


def _tile_spec(name: str) -> EncoderSpec | None:
    try:
        return get_spec(name)
    except UnknownEncoderError:
        return None


def _slide_level_spec(name: str, level: str) -> SlideEncoderSpec:
    spec = get_slide_spec(name)
    if spec.level == level:
        return spec
    if spec.is_baseline:  # "mean-pool" at patient level means the patient-level mean pool
        for candidate in (f"{spec.name}-{level}",):
            try:
                return get_slide_spec(candidate, level=level)  # type: ignore[arg-type]
            except UnknownEncoderError:
                pass
    raise EncoderConfigError(f"{spec.name!r} is a {spec.level}-level model, not a {level}-level one")


def resolve_levels(model: ModelBlock | Any) -> ResolvedLevels:
    """Resolve ``model`` into its tile / slide / patient presets; raises EncoderError with the fix."""
    name = model.name
    tile = _tile_spec(name)
    canonical = tile.name if tile else name
    slide = patient = None
    if tile is None:
        try:
            top = get_slide_spec(name)
        except UnknownEncoderError:
            raise UnknownEncoderError(
                f"Unknown encoder {name!r}: it is neither a tile preset nor a slide/patient preset"
            ) from None
        canonical = top.name
        if top.level == "patient":
            patient = top
        else:
            slide = top
    if model.slide_encoder:
        named = _slide_level_spec(model.slide_encoder, "slide")
        if slide is not None and named.name != slide.name:
            raise EncoderConfigError(f"model.name {name!r} is already the slide model; remove model.slide_encoder")
        slide = named
    if model.patient_encoder:
        named = _slide_level_spec(model.patient_encoder, "patient")
        if patient is not None and named.name != patient.name:
            raise EncoderConfigError(f"model.name {name!r} is already the patient model; remove model.patient_encoder")
        patient = named
    if patient is not None and slide is None:
        if patient.slide_encoder is None:
            raise EncoderConfigError(
                f"patient encoder {patient.name!r} aggregates any slide model's embeddings: name one with "
                "model.slide_encoder (e.g. mean-pool)"
            )
        slide = get_slide_spec(patient.slide_encoder, level="slide")
    if patient is not None and slide is not None and patient.slide_encoder not in (None, slide.name):
        check_patient_pairing(patient.name, slide.name)  # names the slide model it needs
    if model.tile_encoder:
        named_tile = get_spec(model.tile_encoder)
        if tile is not None and named_tile.name != tile.name:
            raise EncoderConfigError(f"model.name {name!r} is already the tile encoder; remove model.tile_encoder")
        tile = named_tile
    if tile is None:
        assert slide is not None
        if slide.tile_encoder is None:
            raise EncoderConfigError(
                f"slide encoder {slide.name!r} works on any tile encoder's features: name one with model.tile_encoder"
            )
        tile = get_spec(slide.tile_encoder)
    if slide is not None and slide.tile_encoder is not None and get_spec(slide.tile_encoder).name != tile.name:
        check_pairing(slide.name, tile.name)  # names the tile encoder it needs, before any variant question
    variant = model.variant
    if variant is None and slide is not None and slide.tile_variant is not None:
        variant = slide.tile_variant
    tile.variant(variant)  # an unknown variant is an error naming the available ones
    level = "patient" if patient else "slide" if slide else "tile"
    return ResolvedLevels(level, canonical, tile, slide, patient, variant or tile.default_variant)


__all__ = [
    "ResolvedLevels",
    "check_pairing",
    "check_patient_pairing",
    "check_remote_opt_in",
    "check_save_latents",
    "resolve_levels",
]
