"""Build a registered preset with its weights and wrap it for the inference loop.

``load_encoder(name, weights=...)`` accepts:

* ``None``: the preset's Hugging Face repository, through timm's ``hf-hub:`` loader (or transformers /
  ``hf_hub_download`` for raw checkpoints). Works offline from the Hugging Face cache with
  ``HF_HUB_OFFLINE=1``.
* a local directory: a timm Hugging Face folder (``config.json`` + ``model.safetensors`` or
  ``pytorch_model.bin``, as written by ``timm.models.save_for_hf`` / ``huggingface-cli download``), a
  transformers folder for transformers presets, or a folder holding the preset's raw checkpoint file.
* a single weights file (``.safetensors`` / ``.bin`` / ``.pth`` / ``.pt``): loaded *strictly* into the
  preset's timm architecture.

Missing weights never fall back to random initialisation: every failure raises
:class:`EncoderWeightsError` naming the repository, the download command and the ``model.weights``
config key.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slide2vec_dagster.encoders.baseline import ColorTextureBaseline
from slide2vec_dagster.encoders.errors import (
    EncoderConfigError,
    EncoderDependencyError,
    EncoderError,
    EncoderWeightsError,
)
from slide2vec_dagster.encoders.precision import Precision, autocast_context, normalize_precision
from slide2vec_dagster.encoders.spec import (
    BaselineBuild,
    EncoderSpec,
    Pooling,
    TimmBuild,
    TransformersBuild,
    get_spec,
    resolve_kwargs,
)
from slide2vec_dagster.encoders.transforms import TileTransform
from slide2vec_dagster.encoders.weights_help import (  # re-exported: the loaders' messages live there
    _CHECKPOINT_SUFFIXES,
    _HF_WEIGHT_FILES,
    WEIGHTS_CONFIG_KEY,
    _hub_errors,
    _raise_unavailable,
    _require,
    _short,
    weights_help,
)

logger = logging.getLogger(__name__)

_WRAPPER_KEYS = ("state_dict", "model", "teacher", "student", "module")
_PREFIXES = ("module.", "backbone.", "model.")


# --------------------------------------------------------------------------- the loaded encoder


class TileEncoder:
    """A ready-to-run tile encoder.

    * ``transform(uint8 (B, H, W, 3))`` -> normalised float (B, 3, h, w) per the model card.
    * ``encoder(batch)`` -> float32 (B, feature_dim). ``batch`` is either the transform's output or a raw
      uint8 (B, H, W, 3) batch (the transform is then applied on ``device`` first). Runs in eval mode
      under ``torch.no_grad`` and :func:`autocast_context` for ``precision``.
    """

    def __init__(
        self,
        spec: EncoderSpec,
        model: nn.Module,
        *,
        variant: str,
        device: torch.device,
        precision: Precision,
        weights_origin: str,
    ) -> None:
        self.spec = spec
        self.variant = variant
        self.model = model
        self.device = device
        self.precision = precision
        self.weights_origin = weights_origin
        self.transform = TileTransform(spec.preprocessing)

    @property
    def feature_dim(self) -> int:
        return self.spec.feature_dim(self.variant)

    @property
    def input_size(self) -> int:
        """Side of the square tensor that reaches the model (after resize / crop)."""
        return self.transform.output_size(self.spec.tile_size_px)

    def to(self, device: str | torch.device) -> TileEncoder:
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    def __call__(self, batch: torch.Tensor | np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(_writable(batch))
        if x.dtype == torch.uint8:
            x = self.transform(x.to(self.device, non_blocking=True))
        elif x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a transformed (B, 3, H, W) float batch or uint8 (B, H, W, 3), got {x.shape}")
        x = x.to(self.device, non_blocking=True)
        # no_grad rather than inference_mode: callers may write the features in place afterwards.
        with torch.no_grad(), autocast_context(self.device, self.precision):
            features = self.model(x)
        if features.ndim != 2 or features.shape[1] != self.feature_dim:
            raise EncoderConfigError(
                f"{self.spec.name}/{self.variant} produced features of shape {tuple(features.shape)}, "
                f"the registry says (B, {self.feature_dim})"
            )
        return features.float()

    def __repr__(self) -> str:
        return (
            f"TileEncoder({self.spec.name!r}, variant={self.variant!r}, dim={self.feature_dim}, "
            f"device={self.device}, precision={self.precision}, weights={self.weights_origin!r})"
        )


# --------------------------------------------------------------------------- pooling wrappers


class TimmPooled(nn.Module):
    """timm backbone + the variant's token pooling."""

    def __init__(self, backbone: nn.Module, pooling: Pooling) -> None:
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.backbone.forward_features(x)
        if self.pooling == "head":
            pooled = self.backbone.forward_head(tokens, pre_logits=True)
            if pooled.ndim != 2:
                raise EncoderConfigError("timm head pooling returned tokens (global_pool=''): use cls / cls_patch_mean")
            return pooled
        return pool_tokens(tokens, self.pooling, int(getattr(self.backbone, "num_prefix_tokens", 1)))


class TransformersPooled(nn.Module):
    """Hugging Face AutoModel backbone + the variant's pooling."""

    def __init__(self, backbone: nn.Module, pooling: Pooling, num_prefix_tokens: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        self.num_prefix_tokens = num_prefix_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.backbone(pixel_values=x)
        if self.pooling == "features":
            return out if isinstance(out, torch.Tensor) else out[0]
        if self.pooling == "pooler":
            return out.pooler_output
        return pool_tokens(out.last_hidden_state, self.pooling, self.num_prefix_tokens)


def _writable(batch: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    # torch warns on read-only arrays (e.g. numpy views of an OpenSlide read); copy those once.
    return batch.copy() if isinstance(batch, np.ndarray) and not batch.flags.writeable else batch


def pool_tokens(tokens: torch.Tensor, pooling: Pooling, num_prefix_tokens: int) -> torch.Tensor:
    """(B, T, D) tokens -> (B, D') for cls / patch_mean / cls_patch_mean (registers are skipped)."""
    if pooling == "cls":
        return tokens[:, 0]
    patch_mean = tokens[:, num_prefix_tokens:].mean(dim=1)
    if pooling == "patch_mean":
        return patch_mean
    if pooling == "cls_patch_mean":
        return torch.cat([tokens[:, 0], patch_mean], dim=-1)
    raise EncoderConfigError(f"pooling {pooling!r} does not apply to a token sequence")


# --------------------------------------------------------------------------- public entry points


def load_encoder(
    name: str | EncoderSpec,
    weights: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    precision: str | None = "fp32",
    *,
    variant: str | None = None,
) -> TileEncoder:
    """Build preset ``name`` with its pretrained weights (see the module docstring for ``weights``).

    ``precision=None`` uses the preset's recommended precision. ``variant`` selects an output variant
    (e.g. ``"cls"`` vs ``"cls_patch_mean"``); ``None`` is the preset's default.
    """
    spec = name if isinstance(name, EncoderSpec) else get_spec(name)
    variant_name = variant or spec.default_variant
    output = spec.variant(variant_name)
    compute = normalize_precision(precision or spec.precision)
    target = torch.device(device)
    build = spec.build

    if isinstance(build, BaselineBuild):
        if weights is not None:
            raise EncoderConfigError(f"{spec.name} is weight-free; leave {WEIGHTS_CONFIG_KEY} unset")
        model: nn.Module = ColorTextureBaseline()
        origin = "none (baseline)"
    elif isinstance(build, TimmBuild):
        backbone, origin = _load_timm(spec, build, weights)
        model = TimmPooled(backbone, output.pooling)
    elif isinstance(build, TransformersBuild):
        backbone, origin = _load_transformers(spec, build, weights)
        model = TransformersPooled(backbone, output.pooling, build.num_prefix_tokens)
    else:
        _raise_unavailable(spec)

    model.eval().requires_grad_(False).to(target)
    logger.info("Loaded encoder %s (%s, %d-d) from %s", spec.name, variant_name, output.dim, origin)
    return TileEncoder(spec, model, variant=variant_name, device=target, precision=compute, weights_origin=origin)


def build_architecture(name: str | EncoderSpec, variant: str | None = None) -> nn.Module:
    """The preset's network with *random* weights, wrapped with the variant pooling.

    For metadata checks only (e.g. ``with torch.device("meta"): build_architecture("uni2")``): it never
    touches weights or the network. Presets outside timm raise :class:`EncoderDependencyError`.
    """
    spec = name if isinstance(name, EncoderSpec) else get_spec(name)
    output = spec.variant(variant)
    build = spec.build
    if isinstance(build, BaselineBuild):
        return ColorTextureBaseline()
    if isinstance(build, TimmBuild):
        return TimmPooled(_create_timm_arch(build), output.pooling)
    _require(spec)
    raise EncoderDependencyError(
        f"{spec.name}: its architecture is defined by {spec.weights.repo_id if spec.weights else '?'} "
        f"({spec.backend}) and cannot be built without downloading it"
    )


# --------------------------------------------------------------------------- timm


def _create_timm_arch(build: TimmBuild) -> nn.Module:
    import timm

    kwargs = {"num_classes": 0, **resolve_kwargs(build.arch_kwargs)}
    return timm.create_model(build.arch, pretrained=False, **kwargs)


def _load_timm(spec: EncoderSpec, build: TimmBuild, weights: str | os.PathLike[str] | None) -> tuple[nn.Module, str]:
    import timm

    assert spec.weights is not None
    kwargs = {"num_classes": 0, **resolve_kwargs(build.kwargs)}
    if weights is None:
        if spec.weights.filename or build.hub_name is None:
            path = _hub_download_file(spec)
            return _load_timm_file(spec, build, path), f"hf://{spec.weights.repo_id}/{spec.weights.filename}"
        try:
            model = timm.create_model(build.hub_name, pretrained=True, **kwargs)
        except _hub_errors() as exc:
            raise EncoderWeightsError(weights_help(spec, f"the Hugging Face download failed ({_short(exc)})")) from exc
        _check_data_config(spec, model)
        return model, build.hub_name

    path = _existing_path(spec, weights)
    if path.is_file():
        return _load_timm_file(spec, build, path), str(path)
    if spec.weights.filename and (path / spec.weights.filename).is_file():
        return _load_timm_file(spec, build, path / spec.weights.filename), str(path / spec.weights.filename)
    if (path / "config.json").is_file():
        if not any((path / f).is_file() for f in _HF_WEIGHT_FILES):
            raise EncoderWeightsError(
                weights_help(spec, f"{path} has a config.json but no {' / '.join(_HF_WEIGHT_FILES)}")
            )
        try:
            model = timm.create_model(f"local-dir:{path}", pretrained=True, **kwargs)
        except RuntimeError as exc:
            raise EncoderWeightsError(
                weights_help(spec, f"the checkpoint in {path} does not fit its config ({_short(exc)})")
            ) from exc
        _check_data_config(spec, model)
        return model, str(path)
    candidates = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in _CHECKPOINT_SUFFIXES)
    if len(candidates) == 1:
        return _load_timm_file(spec, build, candidates[0]), str(candidates[0])
    found = ", ".join(p.name for p in candidates) or "no checkpoint files"
    raise EncoderWeightsError(
        weights_help(spec, f"{path} holds neither config.json + model weights nor a single checkpoint ({found})")
    )


def _load_timm_file(spec: EncoderSpec, build: TimmBuild, path: Path) -> nn.Module:
    """Build ``build.arch`` and load one raw checkpoint into it strictly (no silently random tensors)."""
    model = _create_timm_arch(build)
    state_dict = _unwrap_state_dict(_read_checkpoint(spec, path))
    filter_fn: Callable[..., dict[str, torch.Tensor]] | None = getattr(
        sys.modules[type(model).__module__], "checkpoint_filter_fn", None
    )
    if filter_fn is not None:
        state_dict = filter_fn(state_dict, model)
    expected = model.state_dict().keys()
    state_dict = {k: v for k, v in state_dict.items() if k in expected or not k.startswith("head.")}
    try:
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise EncoderWeightsError(
            weights_help(spec, f"{path} does not match the {build.arch} architecture ({_short(exc)})")
        ) from exc
    if missing or unexpected:
        raise EncoderWeightsError(
            weights_help(
                spec,
                f"{path} does not match the {build.arch} architecture: missing {list(missing)[:5]}, "
                f"unexpected {list(unexpected)[:5]}",
            )
        )
    return model


def _read_checkpoint(spec: EncoderSpec, path: Path) -> Mapping[str, Any]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        # weights_only: a checkpoint must not execute code when it is unpickled.
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise EncoderWeightsError(
            weights_help(spec, f"could not read {path} as a tensor checkpoint ({_short(exc)})")
        ) from exc


def _unwrap_state_dict(payload: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    state: Any = payload
    for key in _WRAPPER_KEYS:
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    cleaned: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        for prefix in _PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix) :]
        cleaned[name] = value
    return cleaned


def _check_data_config(spec: EncoderSpec, model: nn.Module) -> None:
    """Log when the checkpoint's own config disagrees with the registry's (card-derived) normalisation."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean, std = cfg.get("mean"), cfg.get("std")
    if mean is None or std is None:
        return
    expected = spec.preprocessing
    if not (np.allclose(mean, expected.mean, atol=1e-3) and np.allclose(std, expected.std, atol=1e-3)):
        logger.warning(
            "%s: checkpoint config mean/std %s/%s differ from the registry's %s/%s (the registry, from the model "
            "card, is used)",
            spec.name,
            mean,
            std,
            spec.preprocessing.mean,
            spec.preprocessing.std,
        )


# --------------------------------------------------------------------------- transformers / external


def _load_transformers(
    spec: EncoderSpec, build: TransformersBuild, weights: str | os.PathLike[str] | None
) -> tuple[nn.Module, str]:
    _require(spec)
    import transformers

    assert spec.weights is not None
    if weights is None:
        source, revision = spec.weights.repo_id, spec.weights.revision
    else:
        path = _existing_path(spec, weights)
        if not (path / "config.json").is_file():
            raise EncoderWeightsError(
                weights_help(spec, f"{path} must be a transformers model directory containing config.json")
            )
        source, revision = str(path), None
    try:
        model = transformers.AutoModel.from_pretrained(
            source, trust_remote_code=build.trust_remote_code, revision=revision
        )
    except _hub_errors() as exc:
        raise EncoderWeightsError(weights_help(spec, f"loading {source} failed ({_short(exc)})")) from exc
    return model, source


# --------------------------------------------------------------------------- weights resolution / errors


def _existing_path(spec: EncoderSpec, weights: str | os.PathLike[str]) -> Path:
    path = Path(weights).expanduser()
    if not path.exists():
        raise EncoderWeightsError(weights_help(spec, f"{WEIGHTS_CONFIG_KEY} points to {path}, which does not exist"))
    return path


def _hub_download_file(spec: EncoderSpec) -> Path:
    from huggingface_hub import hf_hub_download

    assert spec.weights is not None and spec.weights.filename
    try:
        return Path(hf_hub_download(spec.weights.repo_id, spec.weights.filename, revision=spec.weights.revision))
    except _hub_errors() as exc:
        raise EncoderWeightsError(weights_help(spec, f"the Hugging Face download failed ({_short(exc)})")) from exc


__all__ = [
    "WEIGHTS_CONFIG_KEY",
    "EncoderError",
    "TileEncoder",
    "build_architecture",
    "load_encoder",
    "pool_tokens",
    "weights_help",
]
