"""Build slide- and patient-level presets with their weights and wrap them for the pipeline.

``load_slide_encoder(name, weights=...)`` / ``load_patient_encoder(name, weights=...)`` accept:

* ``None``: the preset's Hugging Face repository (through the hub cache; works offline from a filled cache
  with ``HF_HUB_OFFLINE=1``);
* a local path: the checkpoint file (``moozy.pt``) or a folder holding it, or, for remote-code presets, the
  repository folder (``hf download <repo> --revision <commit> --local-dir <folder>``).

Remote-code presets (prism, prism2, titan) run Python code from their Hugging Face repository. They load
only with ``trust_remote_code=True`` **and** a pinned 40-character ``revision`` (config keys
``model.trust_remote_code`` / ``model.revision``); without them the error says which keys to set and why.

Missing weights never fall back to random initialisation: every failure raises
:class:`EncoderWeightsError` naming the repository, the download command and the config key.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slide2vec_dagster.encoders import slide_moozy
from slide2vec_dagster.encoders.errors import (
    EncoderConfigError,
    EncoderDependencyError,
    EncoderError,
    EncoderWeightsError,
    UnknownEncoderError,
)
from slide2vec_dagster.encoders.pooling import mean_pool
from slide2vec_dagster.encoders.precision import Precision, autocast_context, normalize_precision
from slide2vec_dagster.encoders.slide_spec import (
    MeanPoolBuild,
    PackageBuild,
    RemoteCodeBuild,
    SlideEncoderSpec,
    SlideLevel,
    get_slide_spec,
    list_slide_encoders,
)
from slide2vec_dagster.encoders.weights_help import (  # re-exported: the loaders' messages live there
    REVISION_CONFIG_KEY,
    SLIDE_WEIGHTS_CONFIG_KEY,
    TRUST_REMOTE_CODE_CONFIG_KEY,
    _hub_errors,
    _short,
    check_local_revision,
    check_remote_opt_in,
    raise_slide_unavailable,
    remote_code_help,
    require_slide,
    slide_weights_help,
)
from slide2vec_dagster.provenance import files_checksum

logger = logging.getLogger(__name__)


# (features (N, D) float32, coords (N, 2) int64 | None, tile_size_lv0 | None) -> (embedding, latents | None)
SlideForward = Callable[[torch.Tensor, torch.Tensor | None, int | None], tuple[torch.Tensor, torch.Tensor | None]]
PatientForward = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- loaded encoders


@dataclass(frozen=True)
class SlideOutput:
    """One slide's outputs, on the CPU in float32."""

    embedding: torch.Tensor  # (D_slide,)
    latents: torch.Tensor | None = None  # spec.latent_shape when the model has latents, else None


class _Loaded:
    """What slide and patient encoders share: spec, device, precision and weights lineage."""

    def __init__(
        self,
        spec: SlideEncoderSpec,
        modules: Sequence[nn.Module],
        *,
        device: torch.device,
        precision: Precision,
        weights_origin: str,
        revision: str | None,
        weights_files: Sequence[Path],
    ) -> None:
        self.spec = spec
        self.modules = tuple(modules)
        self.device = device
        self.precision = precision
        self.weights_origin = weights_origin
        self.revision = revision
        self.weights_files = tuple(weights_files)
        self._sha256: str | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def feature_dim(self) -> int | None:
        """Output dimension (``None`` for weight-free presets: the input's, see ``output_dim``)."""
        return self.spec.feature_dim

    def output_dim(self, input_dim: int | None = None) -> int:
        return self.spec.output_dim(input_dim)

    def weights_sha256(self) -> str | None:
        """sha256 of the weights file, or of (relative path, sha256) lines over a repository folder.

        ``None`` for weight-free presets. Computed on first call (it reads every byte) and cached.
        """
        if self._sha256 is None and self.weights_files:
            self._sha256 = files_checksum(self.weights_files)  # cached per file: MOOZY's two encoders share one
        return self._sha256

    def lineage(self) -> dict[str, Any]:
        """Where the weights came from, for sidecar provenance."""
        return {
            "encoder_name": self.spec.name,
            "encoder_level": self.spec.level,
            "weights_origin": self.weights_origin,
            "weights_revision": self.revision,
            "weights_sha256": self.weights_sha256(),
        }

    def _check_finite(self, value: torch.Tensor, what: str) -> None:
        if not torch.isfinite(value).all():
            raise EncoderError(
                f"{self.spec.name} produced non-finite {what} at precision {self.precision}; "
                "try precision fp32 (or bf16 on GPU)"
            )


class SlideEncoder(_Loaded):
    """A ready-to-run slide encoder.

    ``encoder(features (N, D), coords_lv0 (N, 2) int, tile_size_lv0)`` -> :class:`SlideOutput` with a
    float32 ``(D_slide,)`` embedding on the CPU (and the latents for models that have them). Runs in eval
    mode under ``torch.no_grad`` and :func:`autocast_context` for ``precision``. Zero tiles raise
    ``ValueError``: a slide with zero tiles gets no slide embedding.
    """

    def __init__(self, spec: SlideEncoderSpec, forward: SlideForward, modules: Sequence[nn.Module], **kw: Any) -> None:
        super().__init__(spec, modules, **kw)
        self._forward = forward

    def to(self, device: str | torch.device) -> SlideEncoder:
        self.device = torch.device(device)
        for module in self.modules:
            module.to(self.device)
        return self

    def __call__(
        self,
        features: torch.Tensor | np.ndarray,
        coords_lv0: torch.Tensor | np.ndarray | None = None,
        tile_size_lv0: int | None = None,
    ) -> SlideOutput:
        spec = self.spec
        x = torch.as_tensor(_writable(features))
        if x.ndim != 2:
            raise ValueError(f"{spec.name}: expected tile features of shape (N, D), got {tuple(x.shape)}")
        n, dim = x.shape
        if n == 0:
            raise ValueError(f"{spec.name}: the slide has zero tiles; a slide with zero tiles gets no slide embedding")
        if spec.input_dim is not None and dim != spec.input_dim:
            raise EncoderConfigError(
                f"Slide encoder {spec.name!r} expects {spec.input_dim}-d tile features from {spec.tile_encoder!r} "
                f"(output variant {spec.tile_variant!r}), got {dim}-d"
            )
        coords = _coordinates(spec, coords_lv0, n)
        tile_size = _tile_size(spec, tile_size_lv0)
        x = x.to(self.device, torch.float32)
        if coords is not None:
            coords = coords.to(self.device)
        with torch.no_grad(), autocast_context(self.device, self.precision):
            embedding, latents = self._forward(x, coords, tile_size)
        embedding = _squeeze_batch(embedding)
        expected = spec.output_dim(dim)
        if tuple(embedding.shape) != (expected,):
            raise EncoderConfigError(
                f"{spec.name} produced a slide embedding of shape {tuple(embedding.shape)}, the registry says "
                f"({expected},)"
            )
        self._check_finite(embedding, "slide embedding")
        if spec.latent_shape is None:
            latents = None
        else:
            latents = None if latents is None else _squeeze_batch(latents)
            if latents is None or tuple(latents.shape) != spec.latent_shape:
                got = None if latents is None else tuple(latents.shape)
                raise EncoderConfigError(f"{spec.name} produced latents of shape {got}, expected {spec.latent_shape}")
            latents = latents.detach().float().cpu()
        return SlideOutput(embedding.detach().float().cpu(), latents)

    def __repr__(self) -> str:
        return (
            f"SlideEncoder({self.spec.name!r}, dim={self.feature_dim}, device={self.device}, "
            f"precision={self.precision}, weights={self.weights_origin!r})"
        )


class PatientEncoder(_Loaded):
    """A ready-to-run patient encoder: ``encoder(slide_embeddings (S, D))`` -> float32 ``(D,)`` on the CPU.

    ``slide_embeddings`` are one patient's slide embeddings stacked in manifest order. ``slide_encoder``
    is the slide encoder that makes them when the patient model ships its own (MOOZY: same checkpoint);
    ``None`` when any slide encoder may feed it (mean-pool-patient).
    """

    def __init__(
        self,
        spec: SlideEncoderSpec,
        forward: PatientForward,
        modules: Sequence[nn.Module],
        *,
        slide_encoder: SlideEncoder | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(spec, modules, **kw)
        self._forward = forward
        self.slide_encoder = slide_encoder

    def to(self, device: str | torch.device) -> PatientEncoder:
        self.device = torch.device(device)
        for module in self.modules:
            module.to(self.device)
        if self.slide_encoder is not None:
            self.slide_encoder.to(device)
        return self

    def __call__(self, slide_embeddings: torch.Tensor | np.ndarray) -> torch.Tensor:
        spec = self.spec
        x = torch.as_tensor(_writable(slide_embeddings))
        if x.ndim != 2:
            raise ValueError(f"{spec.name}: expected slide embeddings of shape (S, D), got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError(f"{spec.name}: the patient has no slide embeddings to aggregate")
        if spec.input_dim is not None and x.shape[1] != spec.input_dim:
            source = f" from {spec.slide_encoder!r}" if spec.slide_encoder else ""
            raise EncoderConfigError(
                f"Patient encoder {spec.name!r} expects {spec.input_dim}-d slide embeddings{source}, got {x.shape[1]}-d"
            )
        x = x.to(self.device, torch.float32)
        with torch.no_grad(), autocast_context(self.device, self.precision):
            out = _squeeze_batch(self._forward(x))
        expected = spec.output_dim(x.shape[1])
        if tuple(out.shape) != (expected,):
            raise EncoderConfigError(
                f"{spec.name} produced a patient embedding of shape {tuple(out.shape)}, the registry says ({expected},)"
            )
        self._check_finite(out, "patient embedding")
        return out.detach().float().cpu()

    def __repr__(self) -> str:
        return (
            f"PatientEncoder({self.spec.name!r}, dim={self.feature_dim}, device={self.device}, "
            f"precision={self.precision}, weights={self.weights_origin!r})"
        )


def _writable(value: Any) -> Any:
    return value.copy() if isinstance(value, np.ndarray) and not value.flags.writeable else value


def _squeeze_batch(value: torch.Tensor) -> torch.Tensor:
    # the official methods return a batch of one slide / patient
    return value[0] if value.ndim >= 2 and value.shape[0] == 1 else value


def _coordinates(spec: SlideEncoderSpec, coords_lv0: Any, n: int) -> torch.Tensor | None:
    if coords_lv0 is None:
        if spec.uses_coordinates:
            raise ValueError(f"{spec.name} needs the tiles' level-0 coordinates (N, 2) and tile_size_lv0")
        return None
    coords = coords_lv0 if isinstance(coords_lv0, torch.Tensor) else torch.as_tensor(np.array(coords_lv0))
    if tuple(coords.shape) != (n, 2):
        raise ValueError(f"{spec.name}: expected level-0 coordinates of shape ({n}, 2), got {tuple(coords.shape)}")
    if coords.is_floating_point():
        if not torch.equal(coords, coords.round()):
            raise ValueError(f"{spec.name}: level-0 coordinates must be integer pixels")
    return coords.to(torch.int64)


def _tile_size(spec: SlideEncoderSpec, tile_size_lv0: int | None) -> int | None:
    if tile_size_lv0 is None:
        if spec.uses_coordinates:
            raise ValueError(f"{spec.name} needs tile_size_lv0 (the tile side in level-0 pixels)")
        return None
    size = int(tile_size_lv0)
    if size <= 0 or size != tile_size_lv0:
        raise ValueError(f"{spec.name}: tile_size_lv0 must be a positive integer, got {tile_size_lv0!r}")
    return size


# --------------------------------------------------------------------------- public entry points


def load_slide_encoder(
    name: str | SlideEncoderSpec,
    weights: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    precision: str | None = None,
    *,
    revision: str | None = None,
    trust_remote_code: bool = False,
) -> SlideEncoder:
    """Build slide preset ``name`` with its weights (see the module docstring for ``weights``).

    ``precision=None`` uses the preset's recommended precision. ``revision`` pins the Hugging Face commit
    (required, with ``trust_remote_code=True``, for remote-code presets).
    """
    spec = _spec_at(name, "slide")
    compute = normalize_precision(precision or spec.precision)
    target = torch.device(device)
    build = spec.build
    lineage: dict[str, Any]

    if isinstance(build, MeanPoolBuild):
        _refuse_weights(spec, weights, revision)
        forward: SlideForward = _mean_pool_slide
        modules: list[nn.Module] = []
        lineage = {"weights_origin": "none (mean-pool baseline)", "revision": None, "weights_files": ()}
    elif isinstance(build, PackageBuild):
        require_slide(spec)
        payload, lineage = _package_payload(spec, weights, revision)
        module = _moozy_slide_module(spec, payload, lineage["weights_origin"])
        forward, modules = slide_moozy.slide_forward(module), [module]
    elif isinstance(build, RemoteCodeBuild):
        model, processor, lineage = _load_remote(spec, build, weights, revision, trust_remote_code)
        forward, modules = _remote_forward(model, processor, build), _device_modules(model, build)
    else:
        raise_slide_unavailable(spec)

    encoder = SlideEncoder(spec, forward, modules, device=target, precision=compute, **lineage).to(target)
    logger.info("Loaded slide encoder %s from %s", spec.name, encoder.weights_origin)
    return encoder


def load_patient_encoder(
    name: str | SlideEncoderSpec,
    weights: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    precision: str | None = None,
    *,
    revision: str | None = None,
    trust_remote_code: bool = False,
) -> PatientEncoder:
    """Build patient preset ``name``; its ``slide_encoder`` comes from the same checkpoint when it has one."""
    spec = _spec_at(name, "patient")
    compute = normalize_precision(precision or spec.precision)
    target = torch.device(device)
    build = spec.build
    slide_encoder: SlideEncoder | None = None

    if isinstance(build, MeanPoolBuild):
        _refuse_weights(spec, weights, revision)
        forward: PatientForward = mean_pool
        modules: list[nn.Module] = []
        lineage: dict[str, Any] = {"weights_origin": "none (mean-pool baseline)", "revision": None, "weights_files": ()}
    elif isinstance(build, PackageBuild):
        require_slide(spec)
        payload, lineage = _package_payload(spec, weights, revision)
        origin = lineage["weights_origin"]
        assert spec.slide_encoder is not None  # a packaged patient model ships its slide encoder
        slide_spec = get_slide_spec(spec.slide_encoder, level="slide")
        slide_module = _moozy_slide_module(slide_spec, payload, origin)
        case = _weights_step(spec, origin, lambda: slide_moozy.build_case_transformer(payload, slide_module.d_model))
        forward, modules = slide_moozy.patient_forward(case), [case]
        slide_forward = slide_moozy.slide_forward(slide_module)
        slide_encoder = SlideEncoder(
            slide_spec, slide_forward, [slide_module], device=target, precision=compute, **lineage
        )
    elif isinstance(build, RemoteCodeBuild):
        raise EncoderConfigError(f"{spec.name}: remote-code patient encoders are not supported")
    else:
        raise_slide_unavailable(spec)

    encoder = PatientEncoder(
        spec, forward, modules, slide_encoder=slide_encoder, device=target, precision=compute, **lineage
    ).to(target)
    logger.info("Loaded patient encoder %s from %s", spec.name, encoder.weights_origin)
    return encoder


def _mean_pool_slide(
    features: torch.Tensor, _coords: torch.Tensor | None, _size: int | None
) -> tuple[torch.Tensor, None]:
    return mean_pool(features), None


def _spec_at(name: str | SlideEncoderSpec, level: SlideLevel) -> SlideEncoderSpec:
    if isinstance(name, SlideEncoderSpec):
        spec = name
    else:
        try:
            spec = get_slide_spec(name)
        except UnknownEncoderError:
            raise UnknownEncoderError(
                f"Unknown {level}-level encoder {name!r}. Available: {', '.join(list_slide_encoders(level))}"
            ) from None
    if spec.level != level:
        loader = "load_patient_encoder" if spec.level == "patient" else "load_slide_encoder"
        raise EncoderConfigError(f"{spec.name!r} is a {spec.level}-level encoder: load it with {loader}()")
    return spec


def _refuse_weights(spec: SlideEncoderSpec, weights: Any, revision: str | None) -> None:
    if weights is not None or revision is not None:
        raise EncoderConfigError(
            f"{spec.name} is weight-free (a baseline): leave {SLIDE_WEIGHTS_CONFIG_KEY} and {REVISION_CONFIG_KEY} unset"
        )


def _weights_step(spec: SlideEncoderSpec, origin: str, step: Callable[[], Any]) -> Any:
    """Run a build step; a checkpoint that does not fit the architecture becomes an actionable error."""
    try:
        return step()
    except (KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise EncoderWeightsError(
            slide_weights_help(spec, f"{origin} does not fit {spec.name}'s architecture ({_short(exc)})")
        ) from exc


# --------------------------------------------------------------------------- package builds (MOOZY)


def _package_payload(
    spec: SlideEncoderSpec, weights: str | os.PathLike[str] | None, revision: str | None
) -> tuple[Any, dict[str, Any]]:
    path, origin, pinned = _checkpoint_file(spec, weights, revision)
    try:
        payload = slide_moozy.read_checkpoint(path)
    except Exception as exc:  # unpickling errors have no common base class
        raise EncoderWeightsError(slide_weights_help(spec, f"could not read {path} ({_short(exc)})")) from exc
    return payload, {"weights_origin": origin, "revision": pinned, "weights_files": (path,)}


def _moozy_slide_module(spec: SlideEncoderSpec, payload: Any, origin: str) -> nn.Module:
    module = _weights_step(spec, origin, lambda: slide_moozy.build_slide_encoder(payload))
    dims = (int(module.feat_dim), int(module.d_model))
    if dims != (spec.input_dim, spec.feature_dim):
        raise EncoderWeightsError(
            slide_weights_help(
                spec,
                f"{origin} maps {dims[0]}-d tile features to {dims[1]}-d, but {spec.name} is "
                f"{spec.input_dim}-d ({spec.tile_encoder}) -> {spec.feature_dim}-d",
            )
        )
    return module


def _checkpoint_file(
    spec: SlideEncoderSpec, weights: str | os.PathLike[str] | None, revision: str | None
) -> tuple[Path, str, str | None]:
    source = spec.weights
    assert source is not None and source.filename
    pinned = revision or source.revision
    if weights is None:
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(source.repo_id, source.filename, revision=pinned))
        except _hub_errors() as exc:
            raise EncoderWeightsError(
                slide_weights_help(spec, f"the Hugging Face download failed ({_short(exc)})")
            ) from exc
        return path, f"hf://{source.repo_id}/{source.filename}", pinned
    path = _existing_path(spec, weights)
    if path.is_dir():
        if not (path / source.filename).is_file():
            raise EncoderWeightsError(slide_weights_help(spec, f"{path} holds no {source.filename}"))
        path = path / source.filename
    return path, str(path), revision


def _existing_path(spec: SlideEncoderSpec, weights: str | os.PathLike[str]) -> Path:
    path = Path(weights).expanduser()
    if not path.exists():
        raise EncoderWeightsError(
            slide_weights_help(spec, f"{SLIDE_WEIGHTS_CONFIG_KEY} points to {path}, which does not exist")
        )
    return path


# --------------------------------------------------------------------------- remote code (transformers)


def _load_remote(
    spec: SlideEncoderSpec,
    build: RemoteCodeBuild,
    weights: str | os.PathLike[str] | None,
    revision: str | None,
    trust_remote_code: bool,
) -> tuple[nn.Module, Any, dict[str, Any]]:
    check_remote_opt_in(spec, trust_remote_code, revision)
    assert spec.weights is not None and revision is not None
    require_slide(spec)
    import transformers

    if weights is None:
        source, hub_revision = spec.weights.repo_id, revision
        origin = f"hf://{spec.weights.repo_id}@{revision}"
    else:
        path = _existing_path(spec, weights)
        if not (path / "config.json").is_file():
            raise EncoderWeightsError(
                slide_weights_help(spec, f"{path} is not a copy of {spec.weights.repo_id} (no config.json)")
            )
        check_local_revision(spec, path, revision)
        source, hub_revision, origin = str(path), None, str(path)
    dtype = torch.float32 if build.load_dtype == "float32" else "auto"
    dtype_key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    kwargs: dict[str, Any] = {"trust_remote_code": True, "revision": hub_revision, dtype_key: dtype}
    model, info = _remote_step(
        spec, build, source, lambda: transformers.AutoModel.from_pretrained(source, output_loading_info=True, **kwargs)
    )
    bad = sorted(info.get("missing_keys") or ()) + sorted(str(k) for k in info.get("mismatched_keys") or ())
    if bad:
        raise EncoderWeightsError(
            slide_weights_help(spec, f"{source} has no (or mis-shaped) weights for {bad[:5]}: they would be random")
        )
    if not callable(getattr(model, build.method, None)):
        raise EncoderWeightsError(
            slide_weights_help(
                spec,
                f"{source} loads {type(model).__name__}, which has no {build.method}(): not {spec.weights.repo_id}",
            )
        )
    processor = None
    if build.call == "processor":
        processor = _remote_step(
            spec,
            build,
            source,
            lambda: transformers.AutoProcessor.from_pretrained(source, trust_remote_code=True, revision=hub_revision),
        )
    model.eval().requires_grad_(False)
    files = _remote_files(spec, weights, revision)
    return model, processor, {"weights_origin": origin, "revision": revision, "weights_files": files}


def _remote_step(spec: SlideEncoderSpec, build: RemoteCodeBuild, source: str, step: Callable[[], Any]) -> Any:
    try:
        return step()
    except ImportError as exc:  # the remote code's own imports (einops, flash_attn, ...)
        raise EncoderDependencyError(
            f"Slide encoder {spec.name!r}: the remote code of {source} needs packages that are not installed "
            f"({_short(exc)}). Install: {build.install_hint}."
        ) from exc
    except _hub_errors() as exc:
        raise EncoderWeightsError(slide_weights_help(spec, f"loading {source} failed ({_short(exc)})")) from exc
    except ValueError as exc:  # e.g. a config.json without the auto_map of the remote code
        raise EncoderWeightsError(
            slide_weights_help(spec, f"{source} cannot be loaded as {spec.name}'s remote code ({_short(exc)})")
        ) from exc


def _remote_files(spec: SlideEncoderSpec, weights: str | os.PathLike[str] | None, revision: str) -> tuple[Path, ...]:
    """The files a remote-code model was read from (for the checksum): the folder, or its hub snapshot."""
    if weights is not None:
        root = Path(weights).expanduser()
    else:
        from huggingface_hub import try_to_load_from_cache

        assert spec.weights is not None
        cached = try_to_load_from_cache(spec.weights.repo_id, "config.json", revision=revision)
        if not isinstance(cached, str):
            return ()
        root = Path(cached).parent
    return tuple(sorted(p for p in root.rglob("*") if p.is_file() and ".cache" not in p.relative_to(root).parts))


def _device_modules(model: nn.Module, build: RemoteCodeBuild) -> list[nn.Module]:
    return [getattr(model, name) for name in build.device_modules] if build.device_modules else [model]


def _remote_forward(model: nn.Module, processor: Any, build: RemoteCodeBuild) -> SlideForward:
    """Call the official method the way its model card / slide2vec do (see ``RemoteCall``)."""
    method = getattr(model, build.method)

    def run(
        features: torch.Tensor, coords: torch.Tensor | None, tile_size_lv0: int | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if build.feature_dtype == "model":
            features = features.to(model.dtype)
        if build.call == "features":
            out = method(features[None])
        elif build.call == "features_coords_tile_size":
            assert coords is not None and tile_size_lv0 is not None  # checked by SlideEncoder
            out = method(features[None], coords[None], tile_size_lv0)
        else:
            batch = processor(tile_embeddings=[features])
            batch = batch.to(features.device) if hasattr(batch, "to") else batch
            out = method(**batch)
        embedding = out[build.output_key] if build.output_key else out
        latents = out[build.latents_key] if build.latents_key else None
        return embedding, latents

    return run


# --------------------------------------------------------------------------- messages


__all__ = [
    "REVISION_CONFIG_KEY",
    "SLIDE_WEIGHTS_CONFIG_KEY",
    "TRUST_REMOTE_CODE_CONFIG_KEY",
    "PatientEncoder",
    "SlideEncoder",
    "SlideOutput",
    "load_patient_encoder",
    "load_slide_encoder",
    "remote_code_help",
    "slide_weights_help",
]
