"""Shared helpers for the encoder tests: a tiny timm ViT preset, HF folders / caches, synthetic H&E tiles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import timm
import torch
from torch import nn

from slide2vec_dagster.encoders import (
    EncoderSpec,
    OutputVariant,
    Preprocessing,
    TimmBuild,
    WeightsSource,
)

TINY_REPO = "test-org/tiny-vit"
TINY_ARCH = "vit_tiny_patch16_224"
TINY_ARGS = {"img_size": 32, "patch_size": 8, "depth": 2, "reg_tokens": 2}  # registers: prefix != 1
TINY_DIM = 192  # vit_tiny embed_dim
TINY_REVISION = "0123456789abcdef0123456789abcdef01234567"


def tiny_spec(name: str = "tiny-test-vit", *, gated: bool = True, filename: str | None = None) -> EncoderSpec:
    return EncoderSpec(
        name=name,
        description="test-only tiny ViT",
        output_variants={
            "default": OutputVariant(TINY_DIM, "head"),
            "cls_patch_mean": OutputVariant(2 * TINY_DIM, "cls_patch_mean"),
        },
        default_variant="default",
        tile_size_px=32,
        spacing_um=0.5,
        precision="fp32",
        preprocessing=Preprocessing(resize=32, crop=32),
        build=TimmBuild(
            hub_name=None if filename else f"hf-hub:{TINY_REPO}",
            kwargs={"dynamic_img_size": True},
            arch=TINY_ARCH,
            arch_extra=TINY_ARGS,
        ),
        weights=WeightsSource(TINY_REPO, gated=gated, license="test licence", filename=filename),
    )


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(TINY_ARCH, pretrained=False, num_classes=0, **TINY_ARGS).eval()


def save_hf_folder(model: nn.Module, folder: Path) -> Path:
    """timm's own Hugging Face export (config.json + model.safetensors)."""
    timm.models.save_for_hf(model, str(folder), safe_serialization=True)
    return folder


def fill_hf_cache(cache: Path, model: nn.Module, repo_id: str = TINY_REPO) -> Path:
    """Lay out ``model`` as the huggingface_hub cache would after ``hf download`` (no symlinks needed)."""
    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / TINY_REVISION
    save_hf_folder(model, snapshot)
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(TINY_REVISION)
    return snapshot


def offline_hub(monkeypatch, cache: Path) -> None:
    """Point huggingface_hub at ``cache`` and forbid network access.

    huggingface_hub reads the env vars once at import, so the module constants are patched as well.
    """
    from huggingface_hub import constants

    cache.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HF_HOME", str(cache.parent))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def tiles(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


# Ruifrok & Johnston stain OD vectors (skimage rgb_from_hed rows), normalised.
H_OD = np.array([0.65, 0.70, 0.29]) / np.linalg.norm([0.65, 0.70, 0.29])
E_OD = np.array([0.07, 0.99, 0.11]) / np.linalg.norm([0.07, 0.99, 0.11])


def stained_tile(h: float, e: float, size: int = 224, seed: int = 0) -> np.ndarray:
    """Beer-Lambert H&E-like tile: per-pixel stain amounts around (h, e) with blob texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    blobs = 0.5 + 0.5 * np.sin(2 * np.pi * (3 * xx + rng.random())) * np.cos(2 * np.pi * (4 * yy + rng.random()))
    ch = h * (0.6 + 0.8 * blobs) * rng.uniform(0.8, 1.2, (size, size))
    ce = e * (0.6 + 0.8 * (1 - blobs)) * rng.uniform(0.8, 1.2, (size, size))
    od = ch[..., None] * H_OD + ce[..., None] * E_OD
    rgb = 255.0 * np.power(10.0, -od)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def background_tile(size: int = 224, seed: int = 0) -> np.ndarray:
    """Near-white glass with sensor noise."""
    rng = np.random.default_rng(seed)
    base = np.array([242, 240, 245], dtype=np.float64)
    return np.clip(base + rng.normal(0, 2.0, (size, size, 3)), 0, 255).astype(np.uint8)
