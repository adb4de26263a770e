"""Embedding payloads (``.pt`` / ``.npz``) and their ``.meta.json`` sidecars (ARTIFACTS.md s2, s5)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slide2vec_dagster.artifacts import atomic
from slide2vec_dagster.check_names import EMBEDDING_CHECKS, VECTOR_CHECKS  # noqa: F401  (re-exported)

FEATURE_DTYPES = {torch.float16: "fp16", torch.float32: "fp32"}


class EmbeddingCheckError(ValueError):
    """Features that must not be written: wrong shape, NaN/Inf, or a dtype the contract does not allow."""


def check_features(
    features: torch.Tensor, expected_shape: tuple[int, ...], where: str, precision: str | None = None
) -> None:
    """Refuse features before they are written (the checks on the files repeat this after writing)."""
    if tuple(features.shape) != expected_shape:
        raise EmbeddingCheckError(
            f"{where}: the encoder returned features of shape {tuple(features.shape)}, expected {expected_shape}"
        )
    feature_dtype_name(features.dtype)
    if features.numel():
        bad = ~torch.isfinite(features.float())
        if bool(bad.any()):
            rows = int(bad.reshape(features.shape[0], -1).any(dim=1).sum())
            hint = (
                "; fp16 overflows easily: set speed.precision to bf16 or fp32"
                if precision == "fp16" or features.dtype == torch.float16
                else "; check the encoder's weights"
            )
            raise EmbeddingCheckError(f"{where}: {rows} row(s) of features contain NaN or Inf{hint}")


def feature_dtype_name(dtype: torch.dtype) -> str:
    if dtype not in FEATURE_DTYPES:
        raise ValueError(f"features must be stored as fp16 or fp32, got {dtype}")
    return FEATURE_DTYPES[dtype]


def write_embedding(payload_path: Path, meta_path: Path, features: torch.Tensor, meta: dict[str, Any]) -> None:
    """Old sidecar withdrawn, payload written, sidecar last. A payload of the other format (a changed
    ``output_format``) is removed before the sidecar lands, so a directory never holds two payloads for
    one sidecar, and a sidecar never describes a payload other than the one beside it."""
    features = features.detach().to("cpu").contiguous()
    feature_dtype_name(features.dtype)
    if payload_path.suffix not in (".pt", ".npz"):
        raise ValueError(f"unknown payload format {payload_path.suffix!r}; use .pt or .npz")
    atomic.remove(meta_path)
    if payload_path.suffix == ".pt":
        atomic.write_buffer(payload_path, lambda buffer: torch.save(features, buffer))
    elif payload_path.suffix == ".npz":
        arrays = {"features": features.numpy()}
        if meta.get("artifact_type") in ("tile_embeddings", "hierarchical_embeddings"):
            arrays["tile_index"] = np.arange(features.shape[0], dtype=np.int64)
        atomic.write_buffer(payload_path, lambda buffer: np.savez_compressed(buffer, **arrays))
    atomic.remove(payload_path.with_suffix(".npz" if payload_path.suffix == ".pt" else ".pt"))
    atomic.write_json(meta_path, meta)


def write_latents(path: Path, latents: torch.Tensor) -> None:
    """``slide_latents/<id>.pt|.npz`` (npz key ``latents``); written before the slide sidecar lands."""
    latents = latents.detach().to("cpu").contiguous()
    if path.suffix == ".pt":
        atomic.write_buffer(path, lambda buffer: torch.save(latents, buffer))
    elif path.suffix == ".npz":
        atomic.write_buffer(path, lambda buffer: np.savez_compressed(buffer, latents=latents.numpy()))
    else:
        raise ValueError(f"unknown latents format {path.suffix!r}; use .pt or .npz")


def write_slide_embedding(
    payload_path: Path,
    meta_path: Path,
    embedding: torch.Tensor,
    meta: dict[str, Any],
    latents_path: Path,
    latents: torch.Tensor | None,
) -> None:
    """A slide embedding with its latents: old sidecar withdrawn, payload, latents (or stale latents of an
    earlier run removed), sidecar last, so the sidecar only ever describes a complete set."""
    atomic.remove(meta_path)
    if latents is not None:
        write_latents(latents_path, latents)
    else:
        atomic.remove(latents_path)
    atomic.remove(latents_path.with_suffix(".npz" if latents_path.suffix == ".pt" else ".pt"))
    write_embedding(payload_path, meta_path, embedding, meta)


def read_embedding(payload_path: Path) -> torch.Tensor:
    """Load a payload the way a user would (``torch.load`` / ``numpy.load``)."""
    if payload_path.suffix == ".pt":
        return torch.load(payload_path, map_location="cpu", weights_only=True)
    with np.load(payload_path) as archive:
        return torch.from_numpy(archive["features"])


def read_meta(meta_path: Path) -> dict[str, Any]:
    return json.loads(Path(meta_path).read_text(encoding="utf-8"))


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    description: str


def verify_embedding(
    payload_path: Path, meta_path: Path, n_coordinates: int, expected_dim: int, tiles_per_region: int | None = None
) -> list[CheckOutcome]:
    """Check the files on disk as a user would load them: one outcome per name in EMBEDDING_CHECKS."""
    features = read_embedding(payload_path)
    meta = read_meta(meta_path)
    rows = int(features.shape[0])
    shape_ok = features.ndim == (3 if tiles_per_region else 2) and (
        tiles_per_region is None or features.shape[1] == tiles_per_region
    )
    finite = bool(torch.isfinite(features).all()) if features.numel() else True
    dim = int(features.shape[-1]) if features.ndim else -1
    stored = FEATURE_DTYPES.get(features.dtype, str(features.dtype))
    return [
        CheckOutcome(
            "rows_match_coordinates",
            rows == n_coordinates and shape_ok,
            f"{rows} payload rows of shape {tuple(features.shape)} for {n_coordinates} coordinates",
        ),
        CheckOutcome("all_finite", finite, "every value finite" if finite else "NaN or Inf values in the payload"),
        CheckOutcome(
            "feature_dim_matches_registry",
            dim == expected_dim and meta.get("feature_dim") == expected_dim,
            f"payload dim {dim}, sidecar feature_dim {meta.get('feature_dim')}, registry {expected_dim}",
        ),
        CheckOutcome(
            "dtype_matches_feature_dtype",
            stored == meta.get("feature_dtype"),
            f"payload dtype {stored}, sidecar feature_dtype {meta.get('feature_dtype')}",
        ),
    ]


def verify_vector(payload_path: Path, meta_path: Path, expected_dim: int) -> list[CheckOutcome]:
    """Checks of a slide or patient payload as a user loads it: one outcome per name in VECTOR_CHECKS."""
    vector = read_embedding(payload_path)
    meta = read_meta(meta_path)
    finite = bool(torch.isfinite(vector.float()).all()) if vector.numel() else False
    stored = FEATURE_DTYPES.get(vector.dtype, str(vector.dtype))
    return [
        CheckOutcome("shape_is_one_vector", vector.ndim == 1, f"payload shape {tuple(vector.shape)}, expected (D,)"),
        CheckOutcome("all_finite", finite, "every value finite" if finite else "NaN or Inf values (or empty)"),
        CheckOutcome(
            "feature_dim_matches_registry",
            vector.ndim == 1 and vector.shape[0] == expected_dim and meta.get("feature_dim") == expected_dim,
            f"payload {tuple(vector.shape)}, sidecar feature_dim {meta.get('feature_dim')}, registry {expected_dim}",
        ),
        CheckOutcome(
            "dtype_matches_feature_dtype",
            stored == meta.get("feature_dtype"),
            f"payload dtype {stored}, sidecar feature_dtype {meta.get('feature_dtype')}",
        ),
    ]
