"""Tile encoders: preset registry, weight loading, precision rules and an offline baseline.

Plain torch + timm (no Dagster import). Typical use by the inference loop::

    from slide2vec_dagster.encoders import get_spec, load_encoder, storage_dtype

    spec = get_spec("uni")                       # tile_size_px, spacing_um, precision, feature_dim()...
    encoder = load_encoder("uni", weights=cfg.model.weights, device="cuda", precision=spec.precision)
    features = encoder(uint8_tiles)              # (B, H, W, 3) uint8 -> (B, D) float32
    features.to(storage_dtype(encoder.precision, cfg.output_dtype))

Slide- and patient-level encoders (prism, prism2, titan, gigapath-slide, moozy-slide, moozy and the
weight-free mean-pool baselines) have their own registry::

    from slide2vec_dagster.encoders import check_pairing, get_slide_spec, load_slide_encoder

    check_pairing("prism", "virchow", "cls_patch_mean", 2560)   # EncoderConfigError when mis-paired
    slide = load_slide_encoder("prism", weights=..., trust_remote_code=True, revision="<commit>")
    out = slide(features, coords_lv0, tile_size_lv0)             # out.embedding (1280,), out.latents (512, 1280)
"""

import importlib
from typing import Any

# The registries are metadata only (no torch): the Dagster code location imports them to build the asset
# graph and validate configs. What builds or runs models is imported on first use (``__getattr__``).
from slide2vec_dagster.encoders import presets as _presets  # noqa: F401  (registers the built-in presets)
from slide2vec_dagster.encoders import slide_presets as _slide_presets  # noqa: F401  (slide/patient presets)
from slide2vec_dagster.encoders.errors import (
    EncoderConfigError,
    EncoderDependencyError,
    EncoderError,
    EncoderWeightsError,
    UnknownEncoderError,
)
from slide2vec_dagster.encoders.precision import (
    Precision,
    autocast_context,
    normalize_precision,
    storage_dtype,
    torch_dtype,
)
from slide2vec_dagster.encoders.slide_spec import (
    SLIDE2VEC_MODEL_DEFAULTS,
    MeanPoolBuild,
    PackageBuild,
    RemoteCodeBuild,
    SlideEncoderSpec,
    all_slide_specs,
    check_pairing,
    check_patient_pairing,
    check_save_latents,
    get_slide_spec,
    list_slide_encoders,
    register_slide_encoder,
    unregister_slide_encoder,
)
from slide2vec_dagster.encoders.spec import (
    BaselineBuild,
    EncoderSpec,
    ExternalBuild,
    OutputVariant,
    Preprocessing,
    TimmBuild,
    TransformersBuild,
    WeightsSource,
    all_specs,
    get_spec,
    list_encoders,
    register,
    unregister,
)

_LAZY = {
    "BASELINE_FEATURE_DIM": ("baseline", "FEATURE_DIM"),
    "BASELINE_FEATURE_NAMES": ("baseline", "FEATURE_NAMES"),
    "ColorTextureBaseline": ("baseline", "ColorTextureBaseline"),
    "WEIGHTS_CONFIG_KEY": ("loading", "WEIGHTS_CONFIG_KEY"),
    "TileEncoder": ("loading", "TileEncoder"),
    "build_architecture": ("loading", "build_architecture"),
    "load_encoder": ("loading", "load_encoder"),
    "weights_help": ("loading", "weights_help"),
    "mean_pool": ("pooling", "mean_pool"),
    "REVISION_CONFIG_KEY": ("slide_loading", "REVISION_CONFIG_KEY"),
    "SLIDE_WEIGHTS_CONFIG_KEY": ("slide_loading", "SLIDE_WEIGHTS_CONFIG_KEY"),
    "TRUST_REMOTE_CODE_CONFIG_KEY": ("slide_loading", "TRUST_REMOTE_CODE_CONFIG_KEY"),
    "PatientEncoder": ("slide_loading", "PatientEncoder"),
    "SlideEncoder": ("slide_loading", "SlideEncoder"),
    "SlideOutput": ("slide_loading", "SlideOutput"),
    "load_patient_encoder": ("slide_loading", "load_patient_encoder"),
    "load_slide_encoder": ("slide_loading", "load_slide_encoder"),
    "remote_code_help": ("slide_loading", "remote_code_help"),
    "slide_weights_help": ("slide_loading", "slide_weights_help"),
    "TileTransform": ("transforms", "TileTransform"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
    globals()[name] = value
    return value


__all__ = [
    "BASELINE_FEATURE_DIM",
    "BASELINE_FEATURE_NAMES",
    "REVISION_CONFIG_KEY",
    "SLIDE2VEC_MODEL_DEFAULTS",
    "SLIDE_WEIGHTS_CONFIG_KEY",
    "TRUST_REMOTE_CODE_CONFIG_KEY",
    "WEIGHTS_CONFIG_KEY",
    "BaselineBuild",
    "ColorTextureBaseline",
    "EncoderConfigError",
    "EncoderDependencyError",
    "EncoderError",
    "EncoderSpec",
    "EncoderWeightsError",
    "ExternalBuild",
    "MeanPoolBuild",
    "OutputVariant",
    "PackageBuild",
    "PatientEncoder",
    "Precision",
    "Preprocessing",
    "RemoteCodeBuild",
    "SlideEncoder",
    "SlideEncoderSpec",
    "SlideOutput",
    "TileEncoder",
    "TileTransform",
    "TimmBuild",
    "TransformersBuild",
    "UnknownEncoderError",
    "WeightsSource",
    "all_slide_specs",
    "all_specs",
    "autocast_context",
    "build_architecture",
    "check_pairing",
    "check_patient_pairing",
    "check_save_latents",
    "get_slide_spec",
    "get_spec",
    "list_encoders",
    "list_slide_encoders",
    "load_encoder",
    "load_patient_encoder",
    "load_slide_encoder",
    "mean_pool",
    "normalize_precision",
    "register",
    "register_slide_encoder",
    "remote_code_help",
    "slide_weights_help",
    "storage_dtype",
    "torch_dtype",
    "unregister",
    "unregister_slide_encoder",
    "weights_help",
]
