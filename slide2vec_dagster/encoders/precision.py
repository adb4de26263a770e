"""Compute precision and storage dtype rules (slide2vec's semantics).

* ``precision`` is the *compute* precision of the forward pass (autocast), one of fp32/fp16/bf16.
* ``output_dtype`` is the dtype features are *stored* in: fp16 or fp32 when set explicitly, otherwise
  fp16 compute stores fp16 and every other precision stores fp32. bf16 is refused as a storage dtype:
  numpy / h5 / npz consumers cannot read it and it loses mantissa bits for no storage gain over fp16.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

from slide2vec_dagster.encoders.errors import EncoderConfigError

if TYPE_CHECKING:
    import torch

Precision = Literal["fp32", "fp16", "bf16"]

logger = logging.getLogger(__name__)

_ALIASES: dict[str, Precision] = {
    "fp32": "fp32",
    "float32": "fp32",
    "float": "fp32",
    "32": "fp32",
    "fp16": "fp16",
    "float16": "fp16",
    "half": "fp16",
    "16": "fp16",
    "bf16": "bf16",
    "bfloat16": "bf16",
}


def _torch_dtypes() -> dict[Precision, Any]:
    # Imported here: the registry (and so the Dagster code location) must load without torch.
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def normalize_precision(value: str | torch.dtype) -> Precision:
    """Map aliases (``float16``, ``half``, ``torch.bfloat16``…) to ``fp32`` / ``fp16`` / ``bf16``."""
    if not isinstance(value, str) and type(value).__name__ == "dtype":
        for name, dtype in _torch_dtypes().items():
            if dtype == value:
                return name
        raise EncoderConfigError(f"Unsupported precision dtype {value}; expected float32, float16 or bfloat16.")
    key = str(value).strip().lower()
    if key not in _ALIASES:
        raise EncoderConfigError(f"Unsupported precision {value!r}; expected one of fp32, fp16, bf16.")
    return _ALIASES[key]


def torch_dtype(precision: str | torch.dtype) -> torch.dtype:
    return _torch_dtypes()[normalize_precision(precision)]


def storage_dtype(precision: str | torch.dtype, output_dtype: str | torch.dtype | None = None) -> torch.dtype:
    """Dtype the features are written in.

    ``output_dtype`` (fp16 | fp32) wins when given; bf16 is refused. Without it, fp16 compute stores fp16
    and fp32 / bf16 compute store fp32 (bf16 features are upcast, never stored as bf16).
    """
    compute = normalize_precision(precision)
    if output_dtype is not None:
        out = normalize_precision(output_dtype)
        if out == "bf16":
            raise EncoderConfigError(
                "output_dtype=bf16 is not supported for stored features: use fp16 or fp32 "
                "(bf16 compute precision is fine; its features are stored as fp32 by default)."
            )
        return _torch_dtypes()[out]
    return _torch_dtypes()["fp16" if compute == "fp16" else "fp32"]


def autocast_context(device: str | torch.device, precision: str | torch.dtype) -> contextlib.AbstractContextManager:
    """Autocast for the forward pass.

    fp32 -> no autocast. bf16 -> ``torch.autocast(device_type, bfloat16)`` on CPU and GPU.
    fp16 -> ``torch.autocast(device_type, float16)`` on accelerators; on CPU the forward runs in fp32
    instead (CPU half kernels are slow and incomplete, and the result would only differ by rounding),
    a one-time warning is logged, and the *storage* dtype still follows the requested fp16 (see
    :func:`storage_dtype`), so artifacts look the same whatever the device.
    """
    import torch

    compute = normalize_precision(precision)
    device_type = torch.device(device).type
    if compute == "fp32" or device_type == "meta":
        return contextlib.nullcontext()
    if compute == "fp16" and device_type == "cpu":
        _warn_fp16_cpu()
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=_torch_dtypes()[compute])


_warned_fp16_cpu = False


def _warn_fp16_cpu() -> None:
    global _warned_fp16_cpu
    if not _warned_fp16_cpu:
        logger.warning("precision=fp16 on CPU: computing in fp32 (features are still stored as fp16).")
        _warned_fp16_cpu = True


@contextlib.contextmanager
def no_autocast(device: str | torch.device) -> Iterator[None]:
    """Force fp32 inside a block even if an outer autocast is active (used by the baseline encoder)."""
    import torch

    device_type = torch.device(device).type
    if device_type == "meta":
        yield
        return
    with torch.autocast(device_type=device_type, enabled=False):
        yield
