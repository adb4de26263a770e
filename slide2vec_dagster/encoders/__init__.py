"""Tile encoders: preset registry, weight loading, precision rules and an offline baseline.

Plain torch + timm (no Dagster import). Typical use by the inference loop::

    from slide2vec_dagster.encoders import get_spec, load_encoder, storage_dtype

    spec = get_spec("uni")                       # tile_size_px, spacing_um, precision, feature_dim()...
    encoder = load_encoder("uni", weights=cfg.model.weights, device="cuda", precision=spec.precision)
    features = encoder(uint8_tiles)              # (B, H, W, 3) uint8 -> (B, D) float32
    features.to(storage_dtype(encoder.precision, cfg.output_dtype))
"""

from slide2vec_dagster.encoders import presets as _presets  # noqa: F401  (registers the built-in presets)
from slide2vec_dagster.encoders.baseline import FEATURE_DIM as BASELINE_FEATURE_DIM
from slide2vec_dagster.encoders.baseline import FEATURE_NAMES as BASELINE_FEATURE_NAMES
from slide2vec_dagster.encoders.baseline import ColorTextureBaseline
from slide2vec_dagster.encoders.errors import (
    EncoderConfigError,
    EncoderDependencyError,
    EncoderError,
    EncoderWeightsError,
    UnknownEncoderError,
)
from slide2vec_dagster.encoders.loading import (
    WEIGHTS_CONFIG_KEY,
    TileEncoder,
    build_architecture,
    load_encoder,
    weights_help,
)
from slide2vec_dagster.encoders.precision import (
    Precision,
    autocast_context,
    normalize_precision,
    storage_dtype,
    torch_dtype,
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
from slide2vec_dagster.encoders.transforms import TileTransform

__all__ = [
    "BASELINE_FEATURE_DIM",
    "BASELINE_FEATURE_NAMES",
    "WEIGHTS_CONFIG_KEY",
    "BaselineBuild",
    "ColorTextureBaseline",
    "EncoderConfigError",
    "EncoderDependencyError",
    "EncoderError",
    "EncoderSpec",
    "EncoderWeightsError",
    "ExternalBuild",
    "OutputVariant",
    "Precision",
    "Preprocessing",
    "TileEncoder",
    "TileTransform",
    "TimmBuild",
    "TransformersBuild",
    "UnknownEncoderError",
    "WeightsSource",
    "all_specs",
    "autocast_context",
    "build_architecture",
    "get_spec",
    "list_encoders",
    "load_encoder",
    "normalize_precision",
    "register",
    "storage_dtype",
    "torch_dtype",
    "unregister",
    "weights_help",
]
