"""Helpers for the slide / patient encoder tests: tiny MOOZY checkpoints, a fake remote-code repository, an
offline Hugging Face cache.

The MOOZY checkpoints are built with the ``moozy`` package's own classes and its own checkpoint helpers
(the format of ``moozy.pt``), at full width but shallow, so they load through the real code path.

The fake remote-code repository is what ``hf download`` leaves for a transformers ``trust_remote_code``
model: ``config.json`` whose ``auto_map`` points at modeling / configuration (/ processing) files next to it,
plus ``model.safetensors``. Its model implements the three official methods the presets call (PRISM's
``slide_representations``, TITAN's ``encode_slide_from_patch_features``, PRISM2's processor +
``get_base_embedding``) with small computations that depend on every input; :func:`fake_reference`
recomputes them from the saved tensors so a test can check the loader passes the inputs unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

FAKE_REVISION = "89abcdef0123456789abcdef0123456789abcdef"

_CONFIGURATION = """
from transformers import PretrainedConfig


class FakeSlideConfig(PretrainedConfig):
    model_type = "fake-slide-encoder"

    def __init__(self, in_dim=8, out_dim=6, num_latents=4, **kwargs):
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.num_latents = num_latents
        super().__init__(**kwargs)
"""

_MODELING = """
import torch
from torch import nn
from transformers import PreTrainedModel

from .configuration_fake_slide import FakeSlideConfig


class FakeSlideModel(PreTrainedModel):
    config_class = FakeSlideConfig

    def __init__(self, config):
        super().__init__(config)
        self.image_resampler = nn.Linear(config.in_dim, config.out_dim)
        self.queries = nn.Parameter(torch.zeros(config.num_latents, config.out_dim))
        self.post_init()

    def _tokens(self, x):
        return torch.tanh(self.image_resampler(x))

    def slide_representations(self, tile_embeddings):
        tokens = self._tokens(tile_embeddings)[0]
        latents = torch.softmax(self.queries @ tokens.T, dim=-1) @ tokens
        return {"image_embedding": latents.mean(0, keepdim=True), "image_latents": latents[None]}

    def encode_slide_from_patch_features(self, patch_features, patch_coords, patch_size_lv0):
        cells = patch_coords.float() / float(patch_size_lv0)
        weights = torch.softmax(-(cells[..., 0] + 0.5 * cells[..., 1]), dim=-1)
        return (weights[..., None] * self._tokens(patch_features)).sum(1)

    def get_base_embedding(self, tile_embeddings, attention_mask):
        mask = attention_mask[..., None].float()
        return (self._tokens(tile_embeddings) * mask).sum(1) / mask.sum(1)
"""

_PROCESSING = """
import torch
from transformers import BatchFeature
from transformers.processing_utils import ProcessorMixin


class FakeSlideProcessor(ProcessorMixin):
    attributes = []

    def __call__(self, tile_embeddings):
        lengths = [len(t) for t in tile_embeddings]
        padded = torch.nn.utils.rnn.pad_sequence(tile_embeddings, batch_first=True)
        mask = torch.zeros(padded.shape[:2], dtype=torch.long)
        for row, length in enumerate(lengths):
            mask[row, :length] = 1
        return BatchFeature({"tile_embeddings": padded, "attention_mask": mask})
"""


def write_fake_remote_repo(
    folder: Path,
    *,
    in_dim: int,
    out_dim: int,
    num_latents: int = 4,
    seed: int = 0,
    processor: bool = False,
    weights: bool = True,
) -> dict[str, torch.Tensor]:
    """Lay out a fake remote-code repository in ``folder``; returns the weights it saved."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "configuration_fake_slide.py").write_text(_CONFIGURATION)
    (folder / "modeling_fake_slide.py").write_text(_MODELING)
    auto_map = {
        "AutoConfig": "configuration_fake_slide.FakeSlideConfig",
        "AutoModel": "modeling_fake_slide.FakeSlideModel",
    }
    if processor:
        (folder / "processing_fake_slide.py").write_text(_PROCESSING)
        auto_map["AutoProcessor"] = "processing_fake_slide.FakeSlideProcessor"
        processor_config = {
            "processor_class": "FakeSlideProcessor",
            "auto_map": {"AutoProcessor": auto_map["AutoProcessor"]},
        }
        (folder / "processor_config.json").write_text(json.dumps(processor_config))
    config = {
        "model_type": "fake-slide-encoder",
        "architectures": ["FakeSlideModel"],
        "auto_map": auto_map,
        "in_dim": in_dim,
        "out_dim": out_dim,
        "num_latents": num_latents,
    }
    (folder / "config.json").write_text(json.dumps(config))
    generator = torch.Generator().manual_seed(seed)
    tensors = {
        "image_resampler.weight": torch.randn(out_dim, in_dim, generator=generator) / in_dim**0.5,
        "image_resampler.bias": torch.randn(out_dim, generator=generator) * 0.1,
        "queries": torch.randn(num_latents, out_dim, generator=generator),
    }
    if weights:
        save_file(tensors, str(folder / "model.safetensors"))
    return tensors


def fake_reference(
    kind: str,
    tensors: dict[str, torch.Tensor],
    features: torch.Tensor,
    coords: torch.Tensor | None = None,
    tile_size_lv0: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The fake model's outputs recomputed in float64 from its saved tensors (one slide)."""
    w, b = tensors["image_resampler.weight"].double(), tensors["image_resampler.bias"].double()
    tokens = torch.tanh(features.double() @ w.T + b)
    if kind == "prism":
        latents = torch.softmax(tensors["queries"].double() @ tokens.T, dim=-1) @ tokens
        return latents.mean(0), latents
    if kind == "titan":
        assert coords is not None and tile_size_lv0 is not None
        cells = coords.double() / tile_size_lv0
        weights = torch.softmax(-(cells[:, 0] + 0.5 * cells[:, 1]), dim=0)
        return (weights[:, None] * tokens).sum(0), None
    if kind == "prism2":
        return tokens.mean(0), None
    raise ValueError(kind)


def fill_hub_cache(cache: Path, repo_id: str, source: Path, revision: str = FAKE_REVISION) -> Path:
    """Copy ``source``'s files into ``cache`` as the huggingface_hub cache would hold ``repo_id`` at ``revision``."""
    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for path in source.iterdir():
        if path.is_file():
            (snapshot / path.name).write_bytes(path.read_bytes())
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(revision)
    return snapshot


def offline_hub(monkeypatch, cache: Path) -> None:
    """Point huggingface_hub at ``cache`` and forbid network access (its constants are read at import)."""
    from huggingface_hub import constants

    cache.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HF_HOME", str(cache.parent))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


# --------------------------------------------------------------------------- MOOZY

MOOZY_FEAT_DIM = 384  # lunit
MOOZY_D_MODEL = 768


def tiny_moozy_modules(
    *, feat_dim: int = MOOZY_FEAT_DIM, d_model: int = MOOZY_D_MODEL, seed: int = 0
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """moozy's slide encoder and case transformer at full width, shallow, random weights.

    Two slide blocks: the [CLS] row carries no ALiBi bias, so with one block the output could not depend on
    where the tiles are.
    """
    from moozy.models.case_transformer import CaseAggregator
    from moozy.models.moozy_slide_encoder import MOOZYSlideEncoder

    torch.manual_seed(seed)
    slide = MOOZYSlideEncoder(
        feat_dim=feat_dim,
        d_model=d_model,
        n_heads=4,
        n_layers=2,
        dim_feedforward=64,
        num_registers=2,
        dropout=0.0,
        qk_norm=True,
        layerscale_init=1e-5,
    )
    case = CaseAggregator(d_model=d_model, num_layers=1, num_heads=4, dim_feedforward=64, dropout=0.0)
    # random (not init-time) values everywhere, so every parameter matters to the output
    with torch.no_grad():
        for module in (slide, case):
            for parameter in module.parameters():
                parameter.add_(0.05 * torch.randn_like(parameter))
    return slide.eval(), case.eval()


def write_moozy_checkpoint(path: Path, slide: torch.nn.Module, case: torch.nn.Module | None) -> Path:
    """``moozy.pt`` as moozy's save_supervised_checkpoint writes it (stage-1 export layout when ``case`` is None)."""
    from moozy.models.serialization import (
        build_slide_encoder_save_meta,
        extract_case_transformer_config,
        extract_slide_encoder_config,
    )

    if case is None:
        payload = {"teacher_slide_encoder": slide.state_dict(), "meta": build_slide_encoder_save_meta(slide)}
    else:
        payload = {
            "teacher_slide_encoder": slide.state_dict(),
            "case_transformer": case.state_dict(),
            "slide_encoder_config": extract_slide_encoder_config(slide),
            "case_transformer_config": extract_case_transformer_config(case),
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path
