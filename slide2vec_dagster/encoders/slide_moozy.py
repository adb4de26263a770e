"""MOOZY glue: build the slide encoder and case transformer from the official ``moozy`` package.

The checkpoint (``moozy.pt`` of AtlasAnalyticsLab/MOOZY, written by moozy's ``save_supervised_checkpoint``)
is a dict: ``teacher_slide_encoder`` / ``case_transformer`` state dicts plus ``slide_encoder_config`` /
``case_transformer_config`` (a stage-1 export has ``meta`` and no case transformer). Both modules are
rebuilt from those configs with the package's own classes and loaded strictly, as the package's
``load_stage2_inference_model`` does, so a checkpoint of any size of the architecture loads.

Errors are plain ``ValueError`` / ``KeyError`` / ``RuntimeError``; :mod:`.slide_loading` turns them into
actionable :class:`EncoderWeightsError` messages.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

SLIDE_STATE = "teacher_slide_encoder"
CASE_STATE = "case_transformer"


def read_checkpoint(path: Path) -> Mapping[str, Any]:
    # weights_only: the payload is tensors and plain config values; nothing in it needs to run code.
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, Mapping) or SLIDE_STATE not in payload:
        keys = sorted(payload)[:8] if isinstance(payload, Mapping) else type(payload).__name__
        raise ValueError(f"not a MOOZY checkpoint: expected a dict with {SLIDE_STATE!r}, found {keys}")
    return payload


def build_slide_encoder(payload: Mapping[str, Any]) -> nn.Module:
    """moozy's ``MOOZYSlideEncoder`` with the checkpoint's architecture and weights (strict)."""
    from moozy.models.serialization import build_slide_encoder_from_payload

    config = payload.get("slide_encoder_config") or payload.get("meta")
    if not isinstance(config, Mapping):
        raise ValueError("MOOZY checkpoint has neither 'slide_encoder_config' nor 'meta'")
    return build_slide_encoder_from_payload(state=payload[SLIDE_STATE], config=config).eval()


def build_case_transformer(payload: Mapping[str, Any], d_model: int) -> nn.Module:
    """moozy's ``CaseAggregator`` (the patient-level [CASE] transformer), strict."""
    from moozy.models.case_transformer import CaseAggregator

    if CASE_STATE not in payload or "case_transformer_config" not in payload:
        raise ValueError(
            "this MOOZY checkpoint has no case transformer (a stage-1 slide-encoder export?): the patient "
            "encoder needs the stage-2 checkpoint moozy.pt"
        )
    cfg = payload["case_transformer_config"]
    case = CaseAggregator(
        d_model=d_model,
        num_layers=int(cfg["num_layers"]),
        num_heads=int(cfg["num_heads"]),
        dim_feedforward=int(cfg["dim_feedforward"]),
        dropout=float(cfg.get("dropout", 0.0)),
        layerscale_init=float(cfg.get("layerscale_init", 0.0)),
        layer_drop=float(cfg.get("layer_drop", 0.0)),
        qk_norm=bool(cfg.get("qk_norm", False)),
        num_registers=int(cfg.get("num_registers", 0)),
    )
    case.load_state_dict(payload[CASE_STATE], strict=True)
    return case.eval()


def slide_forward(
    module: nn.Module,
) -> Callable[[torch.Tensor, torch.Tensor | None, int | None], tuple[torch.Tensor, None]]:
    """One slide through the slide encoder.

    moozy feeds a (1, H, W, D) feature grid with an invalid-cell mask and prunes the invalid cells before
    the blocks; passing the N valid tiles as a (1, 1, N, D) grid with their level-0 (x, y) gives the same
    tokens and the same ALiBi distances (level-0 pixels / tile_size_lv0).
    """

    def run(
        features: torch.Tensor, coords: torch.Tensor | None, tile_size_lv0: int | None
    ) -> tuple[torch.Tensor, None]:
        assert coords is not None and tile_size_lv0 is not None  # checked by SlideEncoder
        patch_sizes = torch.tensor([float(tile_size_lv0)], device=features.device)
        cls, _, _ = module(features[None, None], coords_xy=coords[None].to(torch.float32), patch_sizes=patch_sizes)
        return cls, None

    return run


def patient_forward(case: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """(S, D) slide embeddings -> (D,) [CASE] output."""

    def run(slide_embeddings: torch.Tensor) -> torch.Tensor:
        return case(slide_embeddings)

    return run
