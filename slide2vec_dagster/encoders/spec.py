"""Encoder presets: one frozen :class:`EncoderSpec` per model, registered with :func:`register`.

The registry is pure metadata: registering a preset imports no model code, downloads nothing and
builds nothing, so the Dagster layer can list presets, resolve tiling defaults (tile size, spacing)
and fingerprint configs without touching weights. Building happens in :mod:`.loading`.

Adding a model is one ``register(EncoderSpec(...))`` call in :mod:`.presets`.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from slide2vec_dagster.encoders.errors import EncoderConfigError, UnknownEncoderError
from slide2vec_dagster.encoders.precision import Precision, normalize_precision

# How a variant reduces the backbone's token sequence to one vector per tile.
#   head            timm's own pooled output (``forward_head(pre_logits=True)``), i.e. what the model
#                   card's ``model(x)`` returns with ``num_classes=0`` (CLS token or average, per config)
#   cls             the class token after the final norm
#   cls_patch_mean  [class token, mean of the patch tokens (registers excluded)] concatenated
#   patch_mean      mean of the patch tokens (registers excluded)
#   pooler          Hugging Face ``pooler_output`` (transformers backbones)
#   features        the module's own output is already (B, D) (baseline / remote-code models)
Pooling = Literal["head", "cls", "cls_patch_mean", "patch_mean", "pooler", "features"]
Interpolation = Literal["bilinear", "bicubic"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class OutputVariant:
    dim: int
    pooling: Pooling
    description: str = ""


@dataclass(frozen=True)
class Preprocessing:
    """Resize (shorter side) -> center crop -> scale to [0, 1] -> normalise, as on the model card."""

    resize: int | None
    crop: int | None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: Interpolation = "bicubic"

    @property
    def output_size(self) -> int | None:
        return self.crop if self.crop is not None else self.resize


@dataclass(frozen=True)
class WeightsSource:
    """Where the pretrained weights live.

    ``filename`` is set when the repository holds one raw checkpoint (e.g. GPFM's ``GPFM.pth``) instead
    of a timm / transformers model folder; the architecture is then built locally and the file loaded
    strictly into it.
    """

    repo_id: str
    gated: bool
    license: str
    filename: str | None = None
    revision: str | None = None

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo_id}"


@dataclass(frozen=True)
class TimmBuild:
    """timm construction, split in two because the two loading paths need different things.

    ``hub_name`` + ``kwargs`` are exactly the model card's ``timm.create_model(hub_name, pretrained=True,
    **kwargs)``: the architecture comes from the repository's ``config.json``. ``arch`` + ``arch_kwargs``
    (card kwargs plus the architecture arguments the config would supply) build the same network from
    timm's own registry: used for raw single-file checkpoints and for metadata-only (meta-device) checks.
    Values given as ``"py:module.attr"`` (e.g. ``"py:timm.layers.SwiGLUPacked"``) are imported at build
    time so the registry stays import-light and serialisable.
    """

    hub_name: str | None
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    arch: str = ""
    arch_extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def arch_kwargs(self) -> dict[str, Any]:
        return {**self.kwargs, **self.arch_extra}


@dataclass(frozen=True)
class TransformersBuild:
    """A Hugging Face ``transformers`` AutoModel backbone (optionally with ``trust_remote_code``)."""

    trust_remote_code: bool = False
    num_prefix_tokens: int = 1  # CLS (+ registers) before the patch tokens in last_hidden_state


@dataclass(frozen=True)
class ExternalBuild:
    """A model that needs a third-party package / remote code this platform does not run (yet)."""

    install_hint: str
    reason: str


@dataclass(frozen=True)
class BaselineBuild:
    """The weight-free colour/texture baseline (:mod:`.baseline`)."""


Build = TimmBuild | TransformersBuild | ExternalBuild | BaselineBuild


@dataclass(frozen=True)
class EncoderSpec:
    name: str
    description: str
    output_variants: Mapping[str, OutputVariant]
    default_variant: str
    tile_size_px: int
    spacing_um: float
    precision: Precision
    preprocessing: Preprocessing
    build: Build
    weights: WeightsSource | None
    supported_spacings_um: tuple[float, ...] = ()
    requires: tuple[str, ...] = ()  # importable module names, checked before any build
    level: Literal["tile"] = "tile"
    aliases: tuple[str, ...] = ()
    source_note: str = ""  # where the numbers above come from

    def __post_init__(self) -> None:
        if self.default_variant not in self.output_variants:
            raise EncoderConfigError(f"{self.name}: default_variant {self.default_variant!r} not in output_variants")
        normalize_precision(self.precision)
        if isinstance(self.build, TimmBuild) and not self.build.arch:
            raise EncoderConfigError(f"{self.name}: TimmBuild needs an offline architecture name (arch)")
        if not isinstance(self.build, BaselineBuild) and self.weights is None:
            raise EncoderConfigError(f"{self.name}: a pretrained model needs a WeightsSource")
        if not self.supported_spacings_um:
            object.__setattr__(self, "supported_spacings_um", (self.spacing_um,))

    @property
    def trust_remote_code(self) -> bool:
        return isinstance(self.build, TransformersBuild) and self.build.trust_remote_code

    @property
    def backend(self) -> str:
        return {
            TimmBuild: "timm",
            TransformersBuild: "transformers",
            ExternalBuild: "external",
            BaselineBuild: "baseline",
        }[type(self.build)]

    def variant(self, name: str | None = None) -> OutputVariant:
        key = name or self.default_variant
        if key not in self.output_variants:
            raise UnknownEncoderError(
                f"Encoder {self.name!r} has no output variant {key!r}; available: {', '.join(self.output_variants)}"
            )
        return self.output_variants[key]

    def feature_dim(self, variant: str | None = None) -> int:
        return self.variant(variant).dim

    def missing_requirements(self) -> list[str]:
        return [module for module in self.requires if importlib.util.find_spec(module) is None]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly metadata (for manifests / fingerprints / the Dagster UI)."""
        data = asdict(self)
        data["backend"] = self.backend
        data["build"] = {"backend": self.backend, **_jsonable(data["build"])}
        return _jsonable(data)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return repr(value)


def resolve_ref(value: Any) -> Any:
    """Resolve ``"py:module.attr"`` references inside build kwargs."""
    if isinstance(value, str) and value.startswith("py:"):
        module_name, _, attr = value[3:].rpartition(".")
        return getattr(importlib.import_module(module_name), attr)
    return value


def resolve_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    return {key: resolve_ref(value) for key, value in kwargs.items()}


# --------------------------------------------------------------------------- registry

_REGISTRY: dict[str, EncoderSpec] = {}
_ALIASES: dict[str, str] = {}


def register(spec: EncoderSpec, *, replace: bool = False) -> EncoderSpec:
    """Add a preset. Names and aliases are case-insensitive and must be unique unless ``replace``."""
    key = spec.name.lower()
    names = [key, *(alias.lower() for alias in spec.aliases)]
    if not replace:
        taken = [n for n in names if n in _REGISTRY or n in _ALIASES]
        if taken:
            raise EncoderConfigError(f"Encoder name(s) already registered: {', '.join(taken)}")
    else:
        unregister(spec.name, missing_ok=True)
    _REGISTRY[key] = spec
    for alias in spec.aliases:
        _ALIASES[alias.lower()] = key
    return spec


def unregister(name: str, *, missing_ok: bool = False) -> None:
    key = _ALIASES.get(name.lower(), name.lower())
    spec = _REGISTRY.pop(key, None)
    if spec is None:
        if not missing_ok:
            raise UnknownEncoderError(f"Unknown encoder {name!r}")
        return
    for alias in spec.aliases:
        _ALIASES.pop(alias.lower(), None)


def get_spec(name: str) -> EncoderSpec:
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise UnknownEncoderError(f"Unknown encoder {name!r}. Available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[key]


def list_encoders() -> list[str]:
    return sorted(_REGISTRY)


def all_specs() -> list[EncoderSpec]:
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]
