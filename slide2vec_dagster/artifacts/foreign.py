"""Coordinates to reuse (``tiling.read_coordinates_from``): our own layout or a slide2vec 7.1 / hs2p 6.1 run.

slide2vec 7.1.4 hands ``read_coordinates_from`` to hs2p 6.1, which looks for
``<dir>/<sample_id>.coordinates.npz|.meta.json`` (the ``tiles/`` folder of an earlier run). People also
point at the run's ``output_dir``, so ``<dir>/tiles/`` is accepted too. The two writers differ in ways
measured on real slide2vec 7.1.4 output (``tests/data/slide2vec-7.1.4/``):

- ``artifact.coordinate_space`` ``level0_px`` and ``artifact.tile_order`` ``x_then_y`` (sorted by x, then
  y) where ours says ``level_0`` / ``row_major`` (y, then x); the pixel values mean the same thing;
- no ``tiling.effective_*`` keys, extra ``segmentation.sam2_*`` keys, a compressed npz, and no npz at all
  for a slide with zero tiles.

The arrays come back in the file's row order: embeddings written from them follow that order, and
re-sorting here would silently pair a tile with another tile's row. Nothing here reads
``provenance.image_path``: sidecars from another machine hold that machine's paths, and the manifest,
not the sidecar, says where the slide is.
"""

from __future__ import annotations

import json
import math
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slide2vec_dagster.artifacts.coordinates import COORDINATE_DTYPES, META_SECTIONS, read_coordinates
from slide2vec_dagster.layout import id_problem

SOURCE_OURS = "slide2vec-dagster"
SOURCE_SLIDE2VEC = "slide2vec-7.1"
# (artifact.coordinate_space, artifact.tile_order) -> writer
SOURCE_FORMATS = {("level_0", "row_major"): SOURCE_OURS, ("level0_px", "x_then_y"): SOURCE_SLIDE2VEC}
NPZ_SUFFIX = ".coordinates.npz"
META_SUFFIX = ".coordinates.meta.json"
_HINT = "re-tile the slide (remove tiling.read_coordinates_from) or point it at a complete coordinates folder"


class CoordinateReuseError(ValueError):
    """A coordinates pair that exists but cannot be reused (unreadable, inconsistent, unknown format)."""


class MissingCoordinatesError(FileNotFoundError):
    """No coordinates for the sample in the folder ``tiling.read_coordinates_from`` names."""


@dataclass(frozen=True)
class ReusedCoordinates:
    """One slide's reusable coordinates, arrays in the file's own row order."""

    sample_id: str
    x: np.ndarray  # int64, level-0 px, top-left corner
    y: np.ndarray  # int64
    tile_index: np.ndarray  # int32, arange(N) in both formats
    tissue_fractions: np.ndarray  # float32
    geometry: dict[str, Any]
    source_format: str  # SOURCE_OURS or SOURCE_SLIDE2VEC
    tile_order: str  # "row_major" (ours) or "x_then_y" (slide2vec 7.1)
    meta: dict[str, Any]  # the sidecar as written
    npz_path: Path | None  # None: a zero-tile slide2vec sidecar, which has no payload
    meta_path: Path

    @property
    def n_tiles(self) -> int:
        return len(self.x)


def coordinate_files(directory: Path, sample_id: str) -> tuple[Path | None, Path]:
    """``(npz or None, meta)`` for ``sample_id`` in ``directory`` or ``directory/tiles``."""
    problem = id_problem(sample_id)
    if problem:
        raise ValueError(f"sample_id {sample_id!r} cannot name a coordinates file: {problem}")
    directory = Path(directory)
    if not directory.is_dir():
        raise MissingCoordinatesError(
            f"tiling.read_coordinates_from: {directory} is not a directory; point it at a slide2vec output_dir "
            "or at its tiles/ folder"
        )
    found = []
    for folder in (directory, directory / "tiles"):
        npz, meta = folder / f"{sample_id}{NPZ_SUFFIX}", folder / f"{sample_id}{META_SUFFIX}"
        if npz.exists() or meta.exists():
            found.append((npz, meta))
    if not found:
        raise MissingCoordinatesError(
            f"no coordinates for sample {sample_id!r} in {directory}: looked for {sample_id}{META_SUFFIX} in it "
            f"and in its tiles/ folder; {_HINT}"
        )
    if len(found) > 1:
        raise CoordinateReuseError(
            f"coordinates for sample {sample_id!r} exist both in {directory} and in {directory / 'tiles'}; "
            "point tiling.read_coordinates_from at the one folder to reuse"
        )
    npz, meta = found[0]
    if not meta.is_file():
        raise MissingCoordinatesError(f"{npz} has no sidecar {meta.name} next to it (incomplete copy?); {_HINT}")
    return (npz if npz.exists() else None), meta


def read_reusable_coordinates(directory: Path, sample_id: str) -> ReusedCoordinates:
    """Read and check ``sample_id``'s coordinates under ``directory`` (either layout, either writer)."""
    npz_path, meta_path = coordinate_files(directory, sample_id)
    meta = _load_meta(meta_path)
    source_format, tile_order = _detect_format(meta, meta_path)
    recorded_id = meta["provenance"].get("sample_id")
    if recorded_id != sample_id:
        raise CoordinateReuseError(f"{meta_path}: written for sample {recorded_id!r}, not {sample_id!r}; {_HINT}")
    n_tiles = meta["tiling"].get("n_tiles")
    if not _is_int(n_tiles) or n_tiles < 0:
        raise CoordinateReuseError(f"{meta_path}: tiling.n_tiles is {n_tiles!r}, not a count; {_HINT}")

    if npz_path is None:
        # hs2p writes no payload for a slide without tiles; anything else is a lost file.
        if n_tiles != 0:
            raise MissingCoordinatesError(
                f"{meta_path} describes {n_tiles} tiles but {sample_id}{NPZ_SUFFIX} is missing next to it; {_HINT}"
            )
        arrays = {key: np.empty(0, dtype=dtype) for key, dtype in COORDINATE_DTYPES.items()}
    else:
        arrays = _load_arrays(npz_path, meta_path)
    _check_arrays(arrays, npz_path or meta_path, tile_order)
    return ReusedCoordinates(
        sample_id=sample_id,
        x=arrays["x"],
        y=arrays["y"],
        tile_index=arrays["tile_index"],
        tissue_fractions=arrays["tissue_fractions"],
        geometry=_geometry(meta, meta_path),
        source_format=source_format,
        tile_order=tile_order,
        meta=meta,
        npz_path=npz_path,
        meta_path=meta_path,
    )


def differing_geometry(recorded: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """The keys of ``wanted`` (a pipeline's ``tiling_geometry()``) that ``recorded`` does not match: the tile
    size exactly, the floats up to JSON round-trip noise."""
    differing = []
    for key, value in wanted.items():
        have = recorded.get(key)
        same = have == value if key == "requested_tile_size_px" else have is not None and _close(have, value)
        if not same:
            differing.append(key)
    return differing


def geometry_mismatch(
    reused: ReusedCoordinates,
    requested_spacing_um: float,
    requested_tile_size_px: int,
    tolerance: float,
    overlap: float,
) -> list[str]:
    """How the reused tiling differs from the pipeline's parameters, one line each naming the slide and the
    sidecar; ``[]`` if it fits."""
    wanted: dict[str, float | int] = {
        "requested_spacing_um": requested_spacing_um,
        "requested_tile_size_px": requested_tile_size_px,
        "tolerance": tolerance,
        "overlap": overlap,
    }
    return [
        f"{key}: the reused coordinates of {reused.sample_id!r} were tiled with {reused.geometry.get(key)}, "
        f"the pipeline asks for {wanted[key]} ({reused.meta_path})"
        for key in differing_geometry(reused.geometry, wanted)
    ]


# ------------------------------------------------------------------------------------------- helpers
def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _close(a: float, b: float) -> bool:
    # JSON round trips and unit conversions leave last-digit noise, never real differences.
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _load_meta(meta_path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CoordinateReuseError(f"{meta_path}: unreadable sidecar ({exc}); truncated copy? {_HINT}") from exc
    if not isinstance(meta, dict):
        raise CoordinateReuseError(f"{meta_path}: the sidecar is not a JSON object; {_HINT}")
    missing = [section for section in META_SECTIONS if not isinstance(meta.get(section), dict)]
    if missing:
        raise CoordinateReuseError(f"{meta_path}: sidecar lacks section(s) {missing}; {_HINT}")
    return meta


def _detect_format(meta: dict[str, Any], meta_path: Path) -> tuple[str, str]:
    artifact = meta["artifact"]
    key = (artifact.get("coordinate_space"), artifact.get("tile_order"))
    source = SOURCE_FORMATS.get(key)
    if source is None:
        known = ", ".join(f"{space}/{order} ({name})" for (space, order), name in SOURCE_FORMATS.items())
        found = f"coordinate_space/tile_order {key[0]!r}/{key[1]!r}"
        raise CoordinateReuseError(f"{meta_path}: {found} is not a known format ({known}); {_HINT}")
    if artifact.get("annotation") not in (None, "tissue"):
        # Annotation-aware runs write one set per class; only tissue tiling is reusable today.
        annotation = artifact["annotation"]
        raise CoordinateReuseError(
            f"{meta_path}: coordinates of annotation {annotation!r}; only tissue tiles are reusable"
        )
    return source, key[1]


def _load_arrays(npz_path: Path, meta_path: Path) -> dict[str, np.ndarray]:
    try:
        # read_coordinates checks array names, dtypes and n_tiles; both writers share COORDINATE_DTYPES.
        arrays, _ = read_coordinates(npz_path, meta_path)
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise CoordinateReuseError(f"{npz_path}: unreadable payload ({exc}); truncated copy? {_HINT}") from exc
    except (ValueError, KeyError, AttributeError) as exc:
        raise CoordinateReuseError(f"{npz_path}: inconsistent coordinates: {exc}; {_HINT}") from exc
    return arrays


def _check_arrays(arrays: dict[str, np.ndarray], where: Path, tile_order: str) -> None:
    n = len(arrays["x"])
    for key, array in arrays.items():
        if array.ndim != 1 or len(array) != n:
            raise CoordinateReuseError(f"{where}: {key} has shape {array.shape}, expected ({n},); {_HINT}")
    if not np.array_equal(arrays["tile_index"], np.arange(n, dtype=np.int32)):
        raise CoordinateReuseError(f"{where}: tile_index is not 0..{n - 1} in row order; {_HINT}")
    x, y = arrays["x"], arrays["y"]
    # The declared order is checked, not imposed: a file whose rows contradict it was altered.
    primary, secondary = (y, x) if tile_order == "row_major" else (x, y)
    if n > 1:
        step_primary, step_secondary = np.diff(primary), np.diff(secondary)
        if np.any((step_primary < 0) | ((step_primary == 0) & (step_secondary < 0))):
            raise CoordinateReuseError(f"{where}: rows are not in the declared tile_order {tile_order!r}; {_HINT}")


def _geometry(meta: dict[str, Any], meta_path: Path) -> dict[str, Any]:
    tiling, slide = meta["tiling"], meta["slide"]

    def need(section: dict[str, Any], name: str, key: str, check: Any, what: str) -> Any:
        value = section.get(key)
        if not check(value):
            raise CoordinateReuseError(f"{meta_path}: {name}.{key} is {value!r}, expected {what}; {_HINT}")
        return value

    def positive_int(value: object) -> bool:
        return _is_int(value) and value > 0

    def positive_number(value: object) -> bool:
        return _is_number(value) and value > 0

    downsamples = need(
        slide, "slide", "level_downsamples",
        lambda v: isinstance(v, list) and bool(v) and all(positive_number(d) for d in v), "a list of downsamples",
    )  # fmt: skip
    dimensions = need(
        slide, "slide", "dimensions",
        lambda v: isinstance(v, list) and len(v) == 2 and all(positive_int(d) for d in v), "[width, height]",
    )  # fmt: skip
    read_level = need(
        tiling, "tiling", "read_level", lambda v: _is_int(v) and 0 <= v < len(downsamples), "a level of the slide"
    )
    backend = need(meta["provenance"], "provenance", "backend", lambda v: isinstance(v, str) and v, "a backend name")
    return {
        "read_level": read_level,
        "read_tile_size_px": need(tiling, "tiling", "read_tile_size_px", positive_int, "a positive integer"),
        "read_spacing_um": float(need(tiling, "tiling", "read_spacing_um", positive_number, "a spacing")),
        "tile_size_lv0": need(tiling, "tiling", "tile_size_lv0", positive_int, "a positive integer"),
        "step_px_lv0": need(tiling, "tiling", "step_px_lv0", positive_int, "a positive integer"),
        "requested_tile_size_px": need(tiling, "tiling", "requested_tile_size_px", positive_int, "a positive integer"),
        "requested_spacing_um": float(need(tiling, "tiling", "requested_spacing_um", positive_number, "a spacing")),
        "tolerance": float(need(tiling, "tiling", "tolerance", lambda v: _is_number(v) and v >= 0, "a number >= 0")),
        "overlap": float(need(tiling, "tiling", "overlap", lambda v: _is_number(v) and 0 <= v < 1, "in [0, 1)")),
        "min_tissue_fraction": float(
            need(tiling, "tiling", "min_tissue_fraction", lambda v: _is_number(v) and 0 <= v <= 1, "in [0, 1]")
        ),
        "base_spacing_um": float(need(slide, "slide", "base_spacing_um", positive_number, "a spacing")),
        "level_downsamples": [float(d) for d in downsamples],
        "dimensions": (int(dimensions[0]), int(dimensions[1])),
        "backend": backend,
    }


__all__ = [
    "SOURCE_FORMATS",
    "SOURCE_OURS",
    "SOURCE_SLIDE2VEC",
    "CoordinateReuseError",
    "MissingCoordinatesError",
    "ReusedCoordinates",
    "coordinate_files",
    "differing_geometry",
    "geometry_mismatch",
    "read_reusable_coordinates",
]
