"""Slide- and patient-level encoder presets: one frozen :class:`SlideEncoderSpec` per model.

Like the tile registry (:mod:`.spec`) this is pure metadata: registering imports no model code and
downloads nothing, so the config layer can validate pairings, dimensions and ``save_latents`` without
touching weights. Building happens in :mod:`.slide_loading`.

The contract (shared/spec/ARTIFACTS.md section 7, slide2vec 7.1 ``SlideEncoder`` / ``PatientEncoder``):

* a **slide** encoder receives one slide's tile features ``(N, D_tile)`` (tile encoder ``tile_encoder``,
  output variant ``tile_variant``), their level-0 ``(x, y)`` coordinates ``(N, 2)`` and ``tile_size_lv0``,
  and returns ``(D_slide,)``; models with latents also return them (shape ``latent_shape``);
* a **patient** encoder receives the slide embeddings of one patient stacked in manifest order ``(S, D)``
  (made by the slide preset ``slide_encoder``) and returns ``(D,)``.

Names follow slide2vec: its YAML names the slide or patient model in ``model.name`` and the tile
encoder is implied by the pairing recorded here.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from slide2vec_dagster.encoders.errors import EncoderConfigError, UnknownEncoderError
from slide2vec_dagster.encoders.precision import Precision, normalize_precision
from slide2vec_dagster.encoders.spec import ExternalBuild, WeightsSource, _jsonable

SlideLevel = Literal["slide", "patient"]

# slide2vec 7.1.4 defaults for the model keys that matter at slide / patient level
# (slide2vec/configs/default.yaml ``model:`` block, slide2vec/api.py ``ExecutionOptions``).
SLIDE2VEC_MODEL_DEFAULTS: Mapping[str, bool] = {
    "save_tile_embeddings": False,  # slide/patient models: tile embeddings are not written unless asked
    "save_slide_embeddings": False,  # patient models: per-slide embeddings are not written unless asked
    "save_latents": False,  # slide models with latents (prism): latents are not written unless asked
}


@dataclass(frozen=True)
class MeanPoolBuild:
    """Weight-free mean of the inputs (tile features per slide, slide embeddings per patient)."""


@dataclass(frozen=True)
class PackageBuild:
    """The model's official code ships in a PyPI package; built here from that code.

    ``adapter`` names the glue in :mod:`.slide_loading` that knows the package's checkpoint format.
    """

    package: str  # importable module
    pip_spec: str  # what to install
    install_hint: str
    adapter: Literal["moozy"]


# How the official remote-code model is called on one slide:
#   features                   method(features (1, N, D))                      (PRISM)
#   features_coords_tile_size  method(features (1, N, D), coords (1, N, 2) int64, tile_size_lv0)   (TITAN)
#   processor                  method(**AutoProcessor(tile_embeddings=[features (N, D)]))         (PRISM2)
RemoteCall = Literal["features", "features_coords_tile_size", "processor"]


@dataclass(frozen=True)
class RemoteCodeBuild:
    """The model's code lives only in its Hugging Face repository (transformers ``trust_remote_code``).

    Loaded through ``transformers.AutoModel.from_pretrained(..., trust_remote_code=True, revision=...)``,
    and only when the pipeline opts in explicitly and pins the commit (see :mod:`.slide_loading`).
    """

    method: str
    call: RemoteCall
    output_key: str | None = None  # the method returns a mapping: the embedding's key
    latents_key: str | None = None  # ... and the latents' key
    feature_dtype: Literal["float32", "model"] = "float32"  # "model": cast features to the model's dtype
    load_dtype: Literal["float32", "auto"] = "float32"  # "auto": the checkpoint's own dtype
    device_modules: tuple[str, ...] = ()  # move only these submodules to the device (the rest is unused)
    install_hint: str = "pip install transformers"


SlideBuild = MeanPoolBuild | PackageBuild | RemoteCodeBuild | ExternalBuild


@dataclass(frozen=True)
class SlideEncoderSpec:
    name: str
    level: SlideLevel
    description: str
    tile_encoder: str | None  # tile preset whose features it needs; None = any (mean pool)
    tile_variant: str | None  # that preset's output variant; None = any
    input_dim: int | None  # slide: tile feature dim; patient: slide embedding dim; None = any
    feature_dim: int | None  # output dim; None = same as the input (mean pool)
    build: SlideBuild
    weights: WeightsSource | None
    precision: Precision
    latent_shape: tuple[int, ...] | None = None  # per slide; None = the model has no latents
    latent_description: str = ""
    slide_encoder: str | None = None  # patient level: slide preset making its (S, D) input; None = any
    uses_coordinates: bool = False  # needs level-0 coordinates + tile_size_lv0
    supports_tile_overlap: bool = True  # False: tiles must not overlap (step == tile size)
    spacing_um: float | None = 0.5  # spacing the slide model was trained at (slide2vec supported_spacing_um)
    output_variants: Mapping[str, int] | None = None  # other documented outputs (name -> dim), not built
    requires: tuple[str, ...] = ()  # importable modules checked before any build
    aliases: tuple[str, ...] = ()
    source_note: str = ""

    def __post_init__(self) -> None:
        if self.level not in ("slide", "patient"):
            raise EncoderConfigError(f"{self.name}: level must be 'slide' or 'patient', got {self.level!r}")
        normalize_precision(self.precision)
        if self.tile_variant is not None and self.tile_encoder is None:
            raise EncoderConfigError(f"{self.name}: tile_variant needs a tile_encoder")
        if not isinstance(self.build, MeanPoolBuild) and self.weights is None:
            raise EncoderConfigError(f"{self.name}: a pretrained model needs a WeightsSource")
        if not isinstance(self.build, MeanPoolBuild) and (self.input_dim is None or self.feature_dim is None):
            raise EncoderConfigError(f"{self.name}: a pretrained model has fixed input_dim and feature_dim")
        if self.level == "patient" and self.latent_shape is not None:
            raise EncoderConfigError(f"{self.name}: latents are a slide-level output")
        if self.level == "slide" and self.slide_encoder is not None:
            raise EncoderConfigError(f"{self.name}: slide_encoder is for patient-level presets")

    @property
    def has_latents(self) -> bool:
        return self.latent_shape is not None

    @property
    def trust_remote_code(self) -> bool:
        return isinstance(self.build, RemoteCodeBuild)

    @property
    def backend(self) -> str:
        return {
            MeanPoolBuild: "mean-pool",
            PackageBuild: "package",
            RemoteCodeBuild: "remote-code",
            ExternalBuild: "external",
        }[type(self.build)]

    @property
    def is_baseline(self) -> bool:
        return isinstance(self.build, MeanPoolBuild)

    def output_dim(self, input_dim: int | None = None) -> int:
        """Output dimension; weight-free presets return their input's (pass ``input_dim``)."""
        if self.feature_dim is not None:
            return self.feature_dim
        if input_dim is None:
            raise EncoderConfigError(f"{self.name} keeps its input dimension: pass input_dim")
        return int(input_dim)

    def missing_requirements(self) -> list[str]:
        return [module for module in self.requires if importlib.util.find_spec(module) is None]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly metadata (for manifests / fingerprints / the Dagster UI)."""
        data = asdict(self)
        data["backend"] = self.backend
        data["has_latents"] = self.has_latents
        data["build"] = {"backend": self.backend, **_jsonable(data["build"])}
        return _jsonable(data)


# --------------------------------------------------------------------------- registry

_REGISTRY: dict[str, SlideEncoderSpec] = {}
_ALIASES: dict[str, str] = {}


def register_slide_encoder(spec: SlideEncoderSpec, *, replace: bool = False) -> SlideEncoderSpec:
    """Add a slide / patient preset. Names and aliases are case-insensitive and unique unless ``replace``."""
    names = [spec.name.lower(), *(alias.lower() for alias in spec.aliases)]
    if replace:
        unregister_slide_encoder(spec.name, missing_ok=True)
    else:
        taken = [n for n in names if n in _REGISTRY or n in _ALIASES]
        if taken:
            raise EncoderConfigError(f"Slide/patient encoder name(s) already registered: {', '.join(taken)}")
    _REGISTRY[names[0]] = spec
    for alias in names[1:]:
        _ALIASES[alias] = names[0]
    return spec


def unregister_slide_encoder(name: str, *, missing_ok: bool = False) -> None:
    key = _ALIASES.get(name.lower(), name.lower())
    spec = _REGISTRY.pop(key, None)
    if spec is None:
        if not missing_ok:
            raise UnknownEncoderError(f"Unknown slide/patient encoder {name!r}")
        return
    for alias in spec.aliases:
        _ALIASES.pop(alias.lower(), None)


def get_slide_spec(name: str, level: SlideLevel | None = None) -> SlideEncoderSpec:
    """The preset called ``name`` (slide or patient level; ``level`` restricts it)."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    spec = _REGISTRY.get(key)
    if spec is None or (level is not None and spec.level != level):
        what = f"{level}-level encoder" if level else "slide/patient encoder"
        raise UnknownEncoderError(f"Unknown {what} {name!r}. Available: {', '.join(list_slide_encoders(level))}")
    return spec


def list_slide_encoders(level: SlideLevel | None = None) -> list[str]:
    return sorted(name for name, spec in _REGISTRY.items() if level is None or spec.level == level)


def all_slide_specs(level: SlideLevel | None = None) -> list[SlideEncoderSpec]:
    return [_REGISTRY[name] for name in list_slide_encoders(level)]


# --------------------------------------------------------------------------- config checks


def check_pairing(
    name: str,
    tile_name: str,
    tile_variant: str | None = None,
    tile_dim: int | None = None,
) -> None:
    """Refuse a slide/patient preset fed by the wrong tile encoder, variant or feature dimension.

    ``tile_variant=None`` means the tile preset's default variant; ``tile_dim`` is what the tile encoder
    actually produces (checked against ``input_dim``; patient presets check their slide encoder's).
    """
    from slide2vec_dagster.encoders.spec import get_spec  # the tile registry (filled by .presets)

    spec = get_slide_spec(name)
    tile_spec = get_spec(tile_name)
    variant = tile_variant or tile_spec.default_variant
    dim = tile_dim if tile_dim is not None else tile_spec.feature_dim(variant)
    kind = f"{spec.level.capitalize()} encoder {spec.name!r}"
    if spec.tile_encoder is None:
        if dim <= 0:
            raise EncoderConfigError(f"{kind}: tile features must have a positive dimension, got {dim}")
        return
    required = get_spec(spec.tile_encoder)
    expected_dim = _expected_tile_dim(spec)
    if tile_spec.name != required.name or variant != spec.tile_variant or dim != expected_dim:
        raise EncoderConfigError(
            f"{kind} aggregates features of tile encoder {required.name!r} (output variant "
            f"{spec.tile_variant!r}, {expected_dim}-d), but the config pairs it with {tile_spec.name!r} "
            f"(variant {variant!r}, {dim}-d). Use tile encoder {required.name!r} with output variant "
            f"{spec.tile_variant!r} (slide2vec pairs {spec.name} <- {required.name})."
        )


def check_patient_pairing(name: str, slide_name: str, slide_dim: int | None = None) -> None:
    """Refuse a patient preset fed by slide embeddings of another slide model (or dimension)."""
    spec = get_slide_spec(name, level="patient")
    slide = get_slide_spec(slide_name, level="slide")
    dim = slide_dim if slide_dim is not None else slide.feature_dim
    if spec.slide_encoder is not None and slide.name != spec.slide_encoder:
        raise EncoderConfigError(
            f"Patient encoder {spec.name!r} aggregates slide embeddings of {spec.slide_encoder!r}, but the config "
            f"pairs it with slide encoder {slide.name!r}. Use slide encoder {spec.slide_encoder!r}."
        )
    if spec.input_dim is not None and dim is not None and dim != spec.input_dim:
        raise EncoderConfigError(
            f"Patient encoder {spec.name!r} expects {spec.input_dim}-d slide embeddings, {slide.name!r} gives {dim}-d."
        )


def check_save_latents(name: str) -> None:
    """``save_latents: true`` is only meaningful for presets with latents (slide2vec: prism only)."""
    spec = get_slide_spec(name)
    if not spec.has_latents:
        with_latents = [s.name for s in all_slide_specs("slide") if s.has_latents]
        raise EncoderConfigError(
            f"{spec.level.capitalize()} encoder {spec.name!r} has no latents: set save_latents: false "
            f"(presets with latents: {', '.join(with_latents) or 'none'})."
        )


def _expected_tile_dim(spec: SlideEncoderSpec) -> int | None:
    if spec.level == "slide":
        return spec.input_dim
    # a patient preset's own input is slide embeddings; its tiles feed its slide encoder
    slide = get_slide_spec(spec.slide_encoder, level="slide") if spec.slide_encoder else None
    return slide.input_dim if slide is not None else None


__all__ = [
    "SLIDE2VEC_MODEL_DEFAULTS",
    "MeanPoolBuild",
    "PackageBuild",
    "RemoteCodeBuild",
    "SlideBuild",
    "SlideEncoderSpec",
    "SlideLevel",
    "all_slide_specs",
    "check_pairing",
    "check_patient_pairing",
    "check_save_latents",
    "get_slide_spec",
    "list_slide_encoders",
    "register_slide_encoder",
    "unregister_slide_encoder",
]
