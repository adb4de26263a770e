"""Coordinates payload (``tiles/<id>.coordinates.npz``) and its sidecar, ARTIFACTS.md s3-4."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slide2vec_dagster.artifacts import atomic

COORDINATE_DTYPES = {"x": np.int64, "y": np.int64, "tile_index": np.int32, "tissue_fractions": np.float32}
META_SECTIONS = ("provenance", "slide", "tiling", "segmentation", "filtering", "artifact")


@dataclass(frozen=True)
class Coordinates:
    x: np.ndarray
    y: np.ndarray
    tissue_fractions: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.x)
        if len(self.y) != n or len(self.tissue_fractions) != n:
            raise ValueError("x, y and tissue_fractions must have the same length")

    @property
    def n_tiles(self) -> int:
        return len(self.x)

    def arrays(self) -> dict[str, np.ndarray]:
        """The four contract arrays, row-major (y then x) with ``tile_index = arange(N)``."""
        x = np.asarray(self.x, dtype=np.int64)
        y = np.asarray(self.y, dtype=np.int64)
        order = np.lexsort((x, y))
        return {
            "x": x[order],
            "y": y[order],
            "tile_index": np.arange(len(x), dtype=np.int32),
            "tissue_fractions": np.asarray(self.tissue_fractions, dtype=np.float32)[order],
        }


def write_coordinates(npz_path: Path, meta_path: Path, coordinates: Coordinates, meta: dict[str, Any]) -> None:
    """Old sidecar withdrawn, payload written, sidecar last, each atomically: a sidecar never describes a
    missing, partial or different payload, even if the process dies between the writes."""
    missing = [section for section in META_SECTIONS if not isinstance(meta.get(section), dict)]
    if missing:
        raise ValueError(f"coordinates sidecar for {npz_path.name} lacks section(s) {missing}")
    arrays = coordinates.arrays()
    if meta["tiling"].get("n_tiles") != len(arrays["x"]):
        raise ValueError(f"sidecar n_tiles {meta['tiling'].get('n_tiles')} != {len(arrays['x'])} tiles")
    # The old sidecar goes first: between the two replaces it would describe the new payload.
    atomic.remove(meta_path)
    atomic.write_buffer(npz_path, lambda buffer: np.savez(buffer, **arrays))
    atomic.write_json(meta_path, meta)


def refresh_sidecar(meta_path: Path, meta: dict[str, Any]) -> None:
    """Rewrite only the sidecar of a pair whose payload is unchanged (e.g. newer stat keys of the slide's
    fingerprint after a copy): the payload it describes is the same file."""
    atomic.write_json(meta_path, meta)


def read_coordinates(npz_path: Path, meta_path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Load a coordinates pair and check it is internally consistent (raises ValueError if not)."""
    with np.load(npz_path) as archive:
        arrays = {key: archive[key] for key in archive.files}
    meta = json.loads(Path(meta_path).read_text(encoding="utf-8"))
    if set(arrays) != set(COORDINATE_DTYPES):
        raise ValueError(f"{npz_path}: arrays {sorted(arrays)} != {sorted(COORDINATE_DTYPES)}")
    for key, dtype in COORDINATE_DTYPES.items():
        if arrays[key].dtype != dtype:
            raise ValueError(f"{npz_path}: {key} has dtype {arrays[key].dtype}, expected {np.dtype(dtype)}")
    if meta.get("tiling", {}).get("n_tiles") != len(arrays["x"]):
        raise ValueError(f"{meta_path}: n_tiles disagrees with {npz_path}")
    return arrays, meta
