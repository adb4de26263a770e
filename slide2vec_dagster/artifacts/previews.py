"""Preview PNGs (``preview/mask`` and ``preview/tiling``)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
from PIL import Image

from slide2vec_dagster.artifacts import atomic


def png_bytes(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def write_png(path: Path, rgb: np.ndarray) -> Path:
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"preview {path.name} must be an RGB image, got shape {rgb.shape}")
    return atomic.write_bytes(path, png_bytes(rgb))


def thumbnail_markdown(rgb: np.ndarray, title: str, max_side: int = 480) -> str:
    """A small inline PNG for the Dagster UI's metadata panel (kept small: it lives in the event log)."""
    image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), mode="RGB")
    image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"![{title}](data:image/png;base64,{encoded})"
