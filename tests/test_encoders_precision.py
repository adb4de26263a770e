"""slide2vec's precision / storage-dtype rules and the autocast helper."""

from __future__ import annotations

import pytest
import torch

from slide2vec_dagster.encoders import (
    EncoderConfigError,
    autocast_context,
    load_encoder,
    normalize_precision,
    storage_dtype,
)
from tests.encoder_fixtures import background_tile, stained_tile

F16, F32 = torch.float16, torch.float32

# (compute precision, output_dtype) -> stored dtype; None = refused
MATRIX = {
    ("fp32", None): F32, ("fp32", "fp16"): F16, ("fp32", "fp32"): F32, ("fp32", "bf16"): None,
    ("fp16", None): F16, ("fp16", "fp16"): F16, ("fp16", "fp32"): F32, ("fp16", "bf16"): None,
    ("bf16", None): F32, ("bf16", "fp16"): F16, ("bf16", "fp32"): F32, ("bf16", "bf16"): None,
}  # fmt: skip


@pytest.mark.parametrize(("precision", "output_dtype"), list(MATRIX))
def test_storage_dtype_matrix(precision, output_dtype):
    expected = MATRIX[(precision, output_dtype)]
    if expected is None:
        with pytest.raises(EncoderConfigError, match="bf16"):
            storage_dtype(precision, output_dtype)
    else:
        assert storage_dtype(precision, output_dtype) == expected


def test_aliases_and_invalid_values():
    assert normalize_precision("float16") == normalize_precision("half") == normalize_precision(torch.float16) == "fp16"
    assert normalize_precision("BFloat16") == "bf16" and storage_dtype(torch.float16) == F16
    with pytest.raises(EncoderConfigError, match="fp8"):
        storage_dtype("fp8")
    with pytest.raises(EncoderConfigError):
        storage_dtype("fp32", "int8")


def _matmul_dtype(precision: str) -> torch.dtype:
    a = torch.randn(8, 8)
    with autocast_context("cpu", precision):
        return (a @ a).dtype


def test_cpu_autocast():
    assert _matmul_dtype("fp32") == F32
    assert _matmul_dtype("bf16") == torch.bfloat16  # CPU autocast supports bf16
    assert _matmul_dtype("fp16") == F32  # documented: fp16 on CPU computes in fp32


@pytest.mark.filterwarnings("ignore:CUDA is not available")
def test_cuda_autocast_is_requested_for_accelerators():
    ctx = autocast_context("cuda", "fp16")
    assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.float16 and ctx.device == "cuda"
    ctx = autocast_context(torch.device("cuda", 0), "bf16")
    assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.bfloat16


def test_baseline_is_fp32_whatever_the_precision():
    batch = torch.from_numpy(__import__("numpy").stack([stained_tile(0.6, 0.3), background_tile()]))
    ref = load_encoder("baseline-color-texture", precision="fp32")(batch)
    for precision in ("bf16", "fp16"):
        out = load_encoder("baseline-color-texture", precision=precision)(batch)
        assert out.dtype == F32
        torch.testing.assert_close(out, ref)
