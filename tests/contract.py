"""The artifact contract (shared/spec/ARTIFACTS.md) as a checker that tests can call.

``check_output_dir(path, require=())`` reads an ``output_dir`` the way a user would (numpy, json,
yaml, PIL, torch for ``.pt`` payloads) and returns one line per problem, ``"<relative path>: <what>"``;
an empty list means the directory honours the contract. It is written from the spec, independently of
the team's command-line validator, so the two can catch each other's blind spots.

``require`` names artifact kinds that must be present (see ``KINDS``); for the per-slide kinds that
means: for every slide whose ``process_list.csv`` status is ``done`` or ``skipped``.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

KINDS = (
    "tiles",
    "process_list",
    "config",
    "mask_preview",
    "tiling_preview",
    "tile_embeddings",
    "hierarchical_embeddings",
    "slide_embeddings",
    "patient_embeddings",
)

COORDINATE_ARRAYS = {"x": np.int64, "y": np.int64, "tile_index": np.int32, "tissue_fractions": np.float32}

COORDINATE_META = {
    "provenance": (
        "sample_id", "image_path", "mask_path", "backend", "requested_backend", "spacing_at_level_0",
        "mask_backend", "requested_mask_backend",
    ),
    "slide": ("dimensions", "base_spacing_um", "level_downsamples"),
    "tiling": (
        "requested_tile_size_px", "requested_spacing_um", "effective_tile_size_px", "effective_spacing_um",
        "tile_size_lv0", "n_tiles", "read_level", "read_spacing_um", "read_tile_size_px", "step_px_lv0",
        "tolerance", "overlap", "min_tissue_fraction", "is_within_tolerance",
    ),
    "segmentation": (
        "tissue_method", "requested_seg_downsample", "seg_downsample", "seg_level", "seg_spacing_um", "sthresh",
        "sthresh_up", "mthresh", "close", "mask_path", "ref_tile_size_px", "tissue_mask_tissue_value",
        "mask_level", "mask_spacing_um",
    ),
    "filtering": (
        "a_t", "a_h", "filter_white", "filter_black", "white_threshold", "black_threshold", "fraction_threshold",
        "filter_grayspace", "grayspace_saturation_threshold", "grayspace_fraction_threshold", "filter_blur",
        "blur_threshold", "qc_spacing_um",
    ),
    "artifact": ("coordinate_space", "tile_order", "annotation", "output_mode", "selection_strategy"),
}  # fmt: skip

_TILE_KEYS = (
    "sample_id", "artifact_type", "backend", "coordinates_meta_path", "coordinates_npz_path", "encoder_level",
    "encoder_name", "feature_dim", "format", "image_path", "mask_path", "num_tiles", "tile_size_lv0",
    "annotation", "feature_dtype", "requested_spacing_um", "requested_tile_size_px", "read_tile_size_px",
    "encoder_input_size_px", "tiles_tar_path",
)  # fmt: skip
EMBEDDING_META = {
    "tile_embeddings": _TILE_KEYS,
    "hierarchical_embeddings": (
        *_TILE_KEYS, "num_regions", "tiles_per_region", "region_tile_multiple", "requested_region_size_px",
        "read_region_size_px", "subtile_order",
    ),
    "slide_embeddings": (
        "sample_id", "artifact_type", "encoder_level", "encoder_name", "feature_dim", "format", "image_path",
        "feature_dtype", "num_tiles",
    ),
    "patient_embeddings": (
        "patient_id", "artifact_type", "encoder_name", "encoder_level", "format", "feature_dim", "num_slides",
        "feature_dtype", "sample_ids",
    ),
}  # fmt: skip
# Folders that gain a <class>/ level in annotation-aware runs (section 1); the others never do.
NAMESPACED = {"tiles", "tile_embeddings", "hierarchical_embeddings", "slide_embeddings", "slide_latents"}
FLAT_ANNOTATIONS = (None, "tissue", "merged")
STATUSES = ("done", "failed", "skipped")
FEATURE_DTYPES = {"fp16": np.float16, "fp32": np.float32}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_ERROR_FORMAT = re.compile(r"^[A-Za-z_][\w.]*: ")  # "<ExceptionType>: <message>"
_REL = 1e-6  # relative tolerance for float relations computed by different code


def check_output_dir(path: str | Path, require: Iterable[str] = ()) -> list[str]:
    """Every way ``path`` departs from the artifact contract; ``[]`` when it honours it."""
    require = tuple(require)
    unknown = sorted(set(require) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown artifact kind(s) {unknown}; choose from {', '.join(KINDS)}")
    return _Checker(Path(path)).run(require)


def _id_problem(value: object) -> str | None:
    """The id rules of section 1 (written here again so the checker does not trust the code it checks)."""
    if not isinstance(value, str):
        return f"{value!r} is not a string"
    if value in ("", ".", ".."):
        return f"{value!r} is empty or a relative path component"
    if any(ch in value for ch in "/\\\x00"):
        return f"{value!r} contains '/', '\\' or NUL"
    if value != value.strip():
        return f"{value!r} has leading or trailing whitespace"
    return None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=_REL, abs_tol=1e-9)


def _rounds_to(value: object, exact: float) -> bool:
    """``value == round(exact)``, accepting either neighbour when ``exact`` sits on .5 (rounding modes differ)."""
    return _is_int(value) and abs(value - exact) <= 0.5 + 1e-6


class _Checker:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.problems: list[str] = []
        # relative stem ("S1" or "tumor/S1") -> (n_tiles, meta) of the coordinates that loaded
        self.coordinates: dict[str, tuple[int, dict[str, Any]]] = {}
        self.rows: list[dict[str, str]] | None = None

    # ----------------------------------------------------------------------------------------- helpers
    def bad(self, path: Path | str, message: str) -> None:
        where = Path(path)
        try:
            rel = where.relative_to(self.out).as_posix() or "."
        except ValueError:
            rel = str(where)
        self.problems.append(f"{rel}: {message}")

    def load_json(self, path: Path) -> dict[str, Any] | None:
        try:
            text = path.read_text(encoding="utf-8")
            data = json.loads(text)
        except (OSError, ValueError) as exc:
            self.bad(path, f"not readable as UTF-8 JSON ({type(exc).__name__}: {exc})")
            return None
        if not isinstance(data, dict):
            self.bad(path, f"a sidecar must be a JSON object, got {type(data).__name__}")
            return None
        expected = {json.dumps(data, indent=2, sort_keys=True, ensure_ascii=a) + "\n" for a in (True, False)}
        if text not in expected:
            self.bad(path, "sidecar is not written with indent=2, sort_keys=True and a trailing newline")
        return data

    def absolute_path(self, path: Path, meta: dict[str, Any], key: str, nullable: bool, blank_ok: bool = False):
        value = meta.get(key)
        if value is None and nullable:
            return
        if value == "" and blank_ok:
            return
        if not isinstance(value, str) or not Path(value).is_absolute():
            self.bad(path, f"{key} {value!r} must be an absolute path")

    def files_under(self, folder: str) -> list[Path]:
        root = self.out / folder
        return sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []

    def stem_parts(self, folder: str, path: Path, suffix: str) -> tuple[str, str | None, str] | None:
        """(relative stem, class folder or None, file id) of an artifact file, or None if misplaced."""
        rel = path.relative_to(self.out / folder)
        stem = rel.as_posix()[: -len(suffix)]
        parts = stem.split("/")
        if len(parts) > 2 or (len(parts) == 2 and folder not in NAMESPACED and folder != "preview/tiling"):
            self.bad(path, f"too deeply nested for {folder}/ (only annotation runs add one <class>/ level)")
            return None
        cls = parts[0] if len(parts) == 2 else None
        if cls is not None and cls in ("tissue", "merged"):
            self.bad(path, f"the label {cls!r} stays at the flat root of {folder}/, not in a {cls}/ folder")
        for part in parts:
            problem = _id_problem(part)
            if problem:
                self.bad(path, f"unsafe file stem: {problem}")
                return None
        return stem, cls, parts[-1]

    # ------------------------------------------------------------------------------------- the checks
    def run(self, require: tuple[str, ...]) -> list[str]:
        if not self.out.is_dir():
            return [f"{self.out}: output directory does not exist"]
        self.check_coordinates()
        self.check_process_list(required="process_list" in require)
        self.check_config(required="config" in require)
        self.check_previews()
        for kind in EMBEDDING_META:
            self.check_embeddings(kind)
        self.check_latents()
        self.check_no_debris()
        self.check_required(require)
        return self.problems

    def check_no_debris(self) -> None:
        """Writes are atomic: no temporary sibling may outlive its write (s2), whatever its extension."""
        for path in sorted(self.out.rglob(".*")):
            if path.is_file() and ".tmp" in path.name:
                self.bad(path, "temporary file left by an interrupted write")

    # section 3 and 4
    def check_coordinates(self) -> None:
        pairs: dict[str, dict[str, Path]] = {}
        for path in self.files_under("tiles"):
            for suffix in (".coordinates.npz", ".coordinates.meta.json"):
                if path.name.endswith(suffix):
                    pairs.setdefault(path.relative_to(self.out / "tiles").as_posix()[: -len(suffix)], {})[suffix] = path
                    break
            else:
                self.bad(path, "unexpected file in tiles/ (only <id>.coordinates.npz and .coordinates.meta.json)")
        for stem, files in sorted(pairs.items()):
            npz, meta_path = files.get(".coordinates.npz"), files.get(".coordinates.meta.json")
            if npz is None or meta_path is None:
                present = npz or meta_path
                self.bad(present, "coordinates npz and .meta.json must exist together")
                continue
            parts = self.stem_parts("tiles", npz, ".coordinates.npz")
            if parts is None:
                continue
            arrays = self.coordinate_arrays(npz)
            meta = self.load_json(meta_path)
            if meta is None:
                continue
            self.coordinate_meta(meta_path, meta, parts)
            if arrays is None:
                continue
            n = len(arrays["x"])
            tiling = meta.get("tiling") if isinstance(meta.get("tiling"), dict) else {}
            slide = meta.get("slide") if isinstance(meta.get("slide"), dict) else {}
            if tiling.get("n_tiles") != n:
                self.bad(meta_path, f"tiling.n_tiles {tiling.get('n_tiles')!r} but the npz holds {n} tiles")
            threshold = tiling.get("min_tissue_fraction")
            fractions = arrays["tissue_fractions"]
            if n and _is_number(threshold) and np.isfinite(fractions).all() and fractions.min() < threshold - 1e-6:
                self.bad(
                    npz, f"a tissue fraction {float(fractions.min()):.4f} is below min_tissue_fraction {threshold}"
                )
            dims = slide.get("dimensions")
            if n and isinstance(dims, list) and len(dims) == 2 and all(_is_int(d) for d in dims):
                x, y = arrays["x"], arrays["y"]
                if x.min() < 0 or y.min() < 0 or x.max() >= dims[0] or y.max() >= dims[1]:
                    self.bad(npz, f"a tile origin lies outside the level-0 slide of {dims[0]} x {dims[1]} px")
            self.coordinates[stem] = (n, meta)

    def coordinate_arrays(self, npz: Path) -> dict[str, np.ndarray] | None:
        try:
            with np.load(npz, allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.files}
        except Exception as exc:
            self.bad(npz, f"numpy.load cannot read it ({type(exc).__name__}: {exc})")
            return None
        if set(arrays) != set(COORDINATE_ARRAYS):
            self.bad(npz, f"arrays {sorted(arrays)}, the contract has exactly {sorted(COORDINATE_ARRAYS)}")
            return None
        ok = True
        n = arrays["x"].shape[0] if arrays["x"].ndim == 1 else -1
        for key, dtype in COORDINATE_ARRAYS.items():
            array = arrays[key]
            if array.dtype != dtype:
                self.bad(npz, f"{key} has dtype {array.dtype}, the contract says {np.dtype(dtype)}")
            if array.ndim != 1 or array.shape[0] != n:
                self.bad(npz, f"{key} has shape {array.shape}; all four arrays are 1-D of the same length")
                ok = False
        if not ok:
            return None
        if not np.array_equal(arrays["tile_index"], np.arange(n)):
            self.bad(npz, "tile_index is not arange(N)")
        x, y = arrays["x"].astype(np.int64), arrays["y"].astype(np.int64)
        if n > 1:
            dy, dx = np.diff(y), np.diff(x)
            if np.any((dy < 0) | ((dy == 0) & (dx < 0))):
                self.bad(npz, "tiles are not in row-major order (sorted by y, then x)")
            if len(np.unique(np.stack([x, y], axis=1), axis=0)) != n:
                self.bad(npz, "duplicate (x, y) tiles")
        fractions = arrays["tissue_fractions"]
        if n and (not np.isfinite(fractions).all() or fractions.min() < 0 or fractions.max() > 1):
            self.bad(npz, "tissue_fractions outside [0, 1] (or not finite)")
        return arrays

    def coordinate_meta(self, path: Path, meta: dict[str, Any], parts: tuple[str, str | None, str]) -> None:
        _, cls, sample_id = parts
        extra = sorted(set(meta) - set(COORDINATE_META))
        if extra:
            self.bad(path, f"top-level keys {extra} beyond the six sections")
        sections: dict[str, dict[str, Any]] = {}
        for section, keys in COORDINATE_META.items():
            block = meta.get(section)
            if not isinstance(block, dict):
                self.bad(path, f"missing section {section!r}")
                continue
            missing = [key for key in keys if key not in block]
            if missing:
                self.bad(path, f"section {section!r} lacks required key(s) {missing}")
            sections[section] = block
        prov, slide, tiling = sections.get("provenance"), sections.get("slide"), sections.get("tiling")
        seg, art = sections.get("segmentation"), sections.get("artifact")
        if prov is not None:
            if prov.get("sample_id") != sample_id:
                self.bad(path, f"provenance.sample_id {prov.get('sample_id')!r} differs from the file stem")
            self.absolute_path(path, prov, "image_path", nullable=False)
            self.absolute_path(path, prov, "mask_path", nullable=True)
            for key in ("backend", "requested_backend"):
                if not isinstance(prov.get(key), str) or not prov.get(key):
                    self.bad(path, f"provenance.{key} {prov.get(key)!r} must name a reader")
            if prov.get("mask_path") is None and (
                prov.get("mask_backend") is not None or prov.get("requested_mask_backend") is not None
            ):
                self.bad(path, "provenance mask_backend/requested_mask_backend must be null without a mask")
            override = prov.get("spacing_at_level_0")
            if override is not None and not (_is_number(override) and override > 0):
                self.bad(path, f"provenance.spacing_at_level_0 {override!r} must be null or a positive number")
            if slide is not None and _is_number(override) and _is_number(slide.get("base_spacing_um")):
                if not _close(slide["base_spacing_um"], override):
                    self.bad(path, "slide.base_spacing_um must be the manifest's spacing_at_level_0 when it is set")
        if seg is not None and prov is not None:
            if "mask_path" in seg and seg.get("mask_path") != prov.get("mask_path"):
                self.bad(path, "segmentation.mask_path differs from provenance.mask_path")
            if prov.get("mask_path") and seg.get("tissue_method") != "precomputed_mask":
                self.bad(path, "a slide with a mask_path must record tissue_method 'precomputed_mask'")
        if art is not None:
            if art.get("coordinate_space") != "level_0":
                self.bad(path, f"artifact.coordinate_space {art.get('coordinate_space')!r}, expected 'level_0'")
            if art.get("tile_order") != "row_major":
                self.bad(path, f"artifact.tile_order {art.get('tile_order')!r}, expected 'row_major'")
            if art.get("output_mode") not in (None, "per_annotation", "merged"):
                self.bad(path, f"artifact.output_mode {art.get('output_mode')!r} is not null/per_annotation/merged")
            annotation = art.get("annotation", None)
            if cls is not None and annotation != cls:
                self.bad(path, f"file is under {cls}/ but artifact.annotation is {annotation!r}")
            if cls is None and annotation not in FLAT_ANNOTATIONS:
                self.bad(path, f"annotation {annotation!r} belongs under tiles/{annotation}/")
        if slide is not None and tiling is not None:
            self.geometry(path, slide, tiling)

    def geometry(self, path: Path, slide: dict[str, Any], tiling: dict[str, Any]) -> None:
        """Section 4, 'Geometry': the tiling numbers must follow from the slide and the request."""
        s0, downsamples = slide.get("base_spacing_um"), slide.get("level_downsamples")
        dims = slide.get("dimensions")
        if not (isinstance(dims, list) and len(dims) == 2 and all(_is_int(d) and d > 0 for d in dims)):
            self.bad(path, f"slide.dimensions {dims!r} must be [width, height] in level-0 pixels")
        if not (_is_number(s0) and s0 > 0):
            self.bad(path, f"slide.base_spacing_um {s0!r} must be a positive number")
            return
        if not (
            isinstance(downsamples, list)
            and downsamples
            and all(_is_number(d) and d >= 1 - 1e-9 for d in downsamples)
            and _close(downsamples[0], 1.0)
        ):
            self.bad(path, f"slide.level_downsamples {downsamples!r} must be numbers >= 1 starting with 1")
            return
        names = ("requested_tile_size_px", "requested_spacing_um", "tolerance", "overlap", "read_level",
                 "read_spacing_um", "read_tile_size_px", "tile_size_lv0", "step_px_lv0", "effective_tile_size_px",
                 "effective_spacing_um", "min_tissue_fraction")  # fmt: skip
        values = {name: tiling.get(name) for name in names}
        not_numbers = [name for name, value in values.items() if not _is_number(value)]
        if not_numbers:
            self.bad(path, f"tiling value(s) {not_numbers} must be numbers")
            return
        T, r = values["requested_tile_size_px"], values["requested_spacing_um"]
        tol, overlap = values["tolerance"], values["overlap"]
        level, read_spacing, read_size = values["read_level"], values["read_spacing_um"], values["read_tile_size_px"]
        lv0, step = values["tile_size_lv0"], values["step_px_lv0"]
        if not (0 <= values["min_tissue_fraction"] <= 1):
            self.bad(path, f"tiling.min_tissue_fraction {values['min_tissue_fraction']} is outside [0, 1]")
        if not (0 <= overlap < 1) or tol < 0 or r <= 0 or T <= 0:
            self.bad(path, "tiling needs requested sizes > 0, tolerance >= 0 and overlap in [0, 1)")
            return
        if not (_is_int(level) and 0 <= level < len(downsamples)):
            self.bad(path, f"tiling.read_level {level!r} is not a level of the slide ({len(downsamples)} levels)")
            return
        if not _close(read_spacing, s0 * downsamples[level]):
            self.bad(path, f"read_spacing_um {read_spacing} != base_spacing_um * level_downsamples[read_level] "
                           f"= {s0 * downsamples[level]}")  # fmt: skip
        # Rule 1: the level closest to r; off tolerance, step to finer levels while coarser than r.
        spacings = [s0 * d for d in downsamples]
        best = min(range(len(spacings)), key=lambda i: abs(spacings[i] - r))
        within = abs(spacings[best] - r) / r <= tol
        expected = best
        if not within:
            while expected > 0 and spacings[expected] > r:
                expected -= 1
            if spacings[expected] > r * (1 + 1e-9):
                self.bad(path, f"requested_spacing_um {r} is finer than the slide ({s0}) beyond tolerance: "
                               "that must be an error, not an upsampled tiling")  # fmt: skip
        tie = math.isclose(abs(spacings[level] - r), abs(spacings[expected] - r), rel_tol=_REL)
        if level != expected and not tie:
            self.bad(path, f"read_level {level} but the rule of section 4 picks level {expected}")
        flag = tiling.get("is_within_tolerance")
        gap = abs(read_spacing - r) / r
        if not isinstance(flag, bool):
            self.bad(path, f"tiling.is_within_tolerance {flag!r} must be true or false")
        elif flag != (gap <= tol) and abs(gap - tol) > 1e-9:
            self.bad(path, f"is_within_tolerance {flag} but |read_spacing_um - r| / r = {gap:.4g} vs tolerance {tol}")
        within_flag = flag if isinstance(flag, bool) else gap <= tol
        # Rules 2-4.
        exact_read = T if within_flag else T * r / read_spacing
        if not _rounds_to(read_size, exact_read):
            self.bad(path, f"read_tile_size_px {read_size} != "
                           f"{'requested_tile_size_px' if within_flag else 'round(T * r / read_spacing_um)'} "
                           f"= {exact_read:g}")  # fmt: skip
        if not _rounds_to(lv0, read_size * read_spacing / s0):
            self.bad(path, f"tile_size_lv0 {lv0} != round(read_tile_size_px * read_spacing_um / base_spacing_um) "
                           f"= {read_size * read_spacing / s0:g}")  # fmt: skip
        if not (_is_int(step) and step == max(1, step) and _rounds_to(step, max(1.0, lv0 * (1 - overlap)))):
            self.bad(path, f"step_px_lv0 {step} != max(1, round(tile_size_lv0 * (1 - overlap)))")
        if values["effective_tile_size_px"] != read_size:
            self.bad(path, f"effective_tile_size_px {values['effective_tile_size_px']} != read_tile_size_px")
        effective = read_spacing * read_size / T
        if not _close(values["effective_spacing_um"], effective):
            self.bad(path, f"effective_spacing_um {values['effective_spacing_um']} != "
                           f"read_spacing_um * read_tile_size_px / requested_tile_size_px = {effective:g}")  # fmt: skip

    # section 9
    def check_process_list(self, required: bool) -> None:
        path = self.out / "process_list.csv"
        if not path.is_file():
            if required or self.coordinates:
                self.bad(path, "missing (every output_dir has a process_list.csv)")
            return
        try:
            with path.open(newline="", encoding="utf-8") as handle:
                lines = list(csv.reader(handle))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            self.bad(path, f"not a readable UTF-8 CSV ({type(exc).__name__}: {exc})")
            return
        if not lines or lines[0][:3] != ["sample_id", "status", "error"]:
            self.bad(path, f"header {lines[0] if lines else []} must begin with sample_id,status,error")
            return
        header = lines[0]
        rows: list[dict[str, str]] = []
        seen: dict[tuple[str, str], int] = {}
        for number, fields in enumerate(lines[1:], start=2):
            if not fields:
                continue
            if len(fields) != len(header):
                self.bad(path, f"line {number} has {len(fields)} fields, the header {len(header)}")
                continue
            row = dict(zip(header, fields, strict=True))
            sample_id, status, error = row["sample_id"], row["status"], row["error"]
            problem = _id_problem(sample_id)
            if problem:
                self.bad(path, f"line {number}: sample_id {problem}")
            if status not in STATUSES:
                self.bad(path, f"line {number}: status {status!r} is not one of {', '.join(STATUSES)}")
            if status == "failed" and not _ERROR_FORMAT.match(error):
                self.bad(path, f"line {number}: a failed row needs an error '<ExceptionType>: <message>', "
                               f"got {error!r}")  # fmt: skip
            key = (sample_id, row.get("annotation", ""))
            if key in seen:
                self.bad(path, f"line {number}: {key[0]!r} already has a row (line {seen[key]})")
            seen[key] = number
            rows.append(row)
        self.rows = rows
        listed = set()
        for row in rows:
            annotation = row.get("annotation", "")
            stem = row["sample_id"] if annotation in ("", "tissue", "merged") else f"{annotation}/{row['sample_id']}"
            listed.add(stem)
            if row["status"] in ("done", "skipped"):
                if stem not in self.coordinates and not (self.out / "tiles" / f"{stem}.coordinates.npz").exists():
                    self.bad(path, f"{row['sample_id']!r} is {row['status']} but tiles/{stem}.coordinates.npz "
                                   "is missing")  # fmt: skip
                elif stem in self.coordinates and row.get("num_tiles", "") not in ("", str(self.coordinates[stem][0])):
                    self.bad(path, f"{row['sample_id']!r}: num_tiles {row['num_tiles']} but the coordinates hold "
                                   f"{self.coordinates[stem][0]}")  # fmt: skip
        for stem in sorted(set(self.coordinates) - listed):
            self.bad(self.out / "tiles" / f"{stem}.coordinates.npz", "no process_list.csv row for this slide")

    # section 10
    def check_config(self, required: bool) -> None:
        path = self.out / "config.yaml"
        if not path.is_file():
            if required or self.coordinates:
                self.bad(path, "missing (the resolved configuration of the pipeline)")
            return
        import yaml

        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            self.bad(path, f"not readable YAML ({type(exc).__name__}: {exc})")
            return
        if not isinstance(data, dict) or not data:
            self.bad(path, "empty or not a mapping")
            return
        from pydantic import ValidationError

        from slide2vec_dagster.config import PipelineConfig

        try:
            resolved = PipelineConfig.model_validate(data).model_dump(mode="json")
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            self.bad(path, f"not loadable again as a pipeline configuration ({where}: {first['msg']})")
            return
        missing = _missing_keys(resolved, data)
        if missing:
            self.bad(path, f"not fully resolved: default(s) not written out: {missing[:5]}")

    # section 8b
    def check_previews(self) -> None:
        failed = {row["sample_id"] for row in (self.rows or []) if row["status"] == "failed"}
        for kind in ("mask", "tiling"):
            folder = f"preview/{kind}"
            for path in self.files_under(folder):
                if not path.name.endswith(".png"):
                    self.bad(path, "previews are PNG files named <sample_id>.png")
                    continue
                parts = self.stem_parts(folder, path, ".png")
                if parts is None:
                    continue
                self.png(path)
                stem, _, sample_id = parts
                if kind == "mask":  # never namespaced: one mask preview per slide
                    has_tiles = any(s.split("/")[-1] == sample_id for s in self.coordinates)
                else:
                    has_tiles = stem in self.coordinates
                    if has_tiles and self.coordinates[stem][0] == 0:
                        self.bad(path, "a tiling preview is written only when the slide has tiles (n_tiles > 0)")
                if not has_tiles and sample_id not in failed:
                    self.bad(path, f"preview of a slide that has no tiles/{stem}.coordinates.npz and did not fail")

    def png(self, path: Path) -> None:
        with path.open("rb") as handle:
            if handle.read(8) != PNG_SIGNATURE:
                self.bad(path, "not a PNG file (wrong signature)")
                return
        from PIL import Image

        try:
            with Image.open(path) as image:
                image.verify()
            with Image.open(path) as image:
                image.load()
                if image.format != "PNG" or image.mode != "RGB":
                    self.bad(path, f"preview must be an RGB PNG, got {image.format} {image.mode}")
        except Exception as exc:
            self.bad(path, f"PIL cannot decode it ({type(exc).__name__}: {exc})")

    # sections 2, 5 and 6
    def check_embeddings(self, kind: str) -> None:
        groups: dict[str, dict[str, Path]] = {}
        for path in self.files_under(kind):
            for suffix in (".meta.json", ".pt", ".npz"):
                if path.name.endswith(suffix):
                    groups.setdefault(path.relative_to(self.out / kind).as_posix()[: -len(suffix)], {})[suffix] = path
                    break
            else:
                self.bad(path, f"unexpected file in {kind}/ (payload .pt|.npz and .meta.json only)")
        for stem, files in sorted(groups.items()):
            meta_path = files.get(".meta.json")
            payloads = [files[s] for s in (".pt", ".npz") if s in files]
            if meta_path is None or len(payloads) != 1:
                self.bad(self.out / kind / stem, "needs exactly one payload (.pt or .npz) and its .meta.json")
                continue
            payload = payloads[0]
            parts = self.stem_parts(kind, payload, payload.suffix)
            meta = self.load_json(meta_path)
            if parts is None or meta is None:
                continue
            missing = [key for key in EMBEDDING_META[kind] if key not in meta]
            if missing:
                self.bad(meta_path, f"lacks required key(s) {missing}")
            id_key = "patient_id" if kind == "patient_embeddings" else "sample_id"
            if meta.get(id_key) != parts[2]:
                self.bad(meta_path, f"{id_key} {meta.get(id_key)!r} differs from the file stem")
            if meta.get("artifact_type") != kind:
                self.bad(meta_path, f"artifact_type {meta.get('artifact_type')!r}, expected {kind!r}")
            if meta.get("format") != payload.suffix[1:]:
                self.bad(meta_path, f"format {meta.get('format')!r} but the payload is {payload.name}")
            level = {"slide_embeddings": "slide", "patient_embeddings": "patient"}.get(kind)
            if level and meta.get("encoder_level") != level:
                self.bad(meta_path, f"encoder_level {meta.get('encoder_level')!r}, expected {level!r}")
            for key in ("image_path", "coordinates_meta_path", "coordinates_npz_path"):
                if key in meta:
                    self.absolute_path(meta_path, meta, key, nullable=False)
            for key in ("coordinates_meta_path", "coordinates_npz_path"):
                if isinstance(meta.get(key), str) and Path(meta[key]).is_absolute() and not Path(meta[key]).is_file():
                    self.bad(meta_path, f"{key} points to a missing file {meta[key]}")
            for key in ("mask_path", "tiles_tar_path"):
                if key in meta:
                    self.absolute_path(meta_path, meta, key, nullable=True, blank_ok=True)
            loaded = self.load_payload(payload, "features")
            if loaded is None:
                continue
            array, extra = loaded
            self.embedding_shape(kind, stem, payload, meta_path, meta, array, extra)

    def load_payload(self, payload: Path, key: str) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
        try:
            if payload.suffix == ".pt":
                import torch

                tensor = torch.load(payload, map_location="cpu", weights_only=True)
                if not isinstance(tensor, torch.Tensor):
                    self.bad(payload, f"torch.load gives a {type(tensor).__name__}, not a tensor")
                    return None
                if not tensor.is_contiguous():
                    self.bad(payload, "tensor is not contiguous")
                if tensor.dtype == torch.bfloat16:
                    self.bad(payload, "bf16 payloads are refused by the contract")
                    return None
                return tensor.numpy(), {}
            with np.load(payload, allow_pickle=False) as archive:
                if key not in archive.files:
                    self.bad(payload, f"npz has no {key!r} array (arrays: {archive.files})")
                    return None
                return archive[key], {k: archive[k] for k in archive.files if k != key}
        except Exception as exc:
            self.bad(payload, f"cannot be loaded the way a user loads it ({type(exc).__name__}: {exc})")
            return None

    def embedding_shape(self, kind, stem, payload, meta_path, meta, array, extra) -> None:
        dtype = FEATURE_DTYPES.get(meta.get("feature_dtype"))
        if dtype is None:
            self.bad(meta_path, f"feature_dtype {meta.get('feature_dtype')!r} is not fp16 or fp32")
        elif array.dtype != dtype:
            self.bad(payload, f"dtype {array.dtype} but feature_dtype {meta.get('feature_dtype')!r}")
        ndim = {"tile_embeddings": 2, "hierarchical_embeddings": 3}.get(kind, 1)
        if array.ndim != ndim:
            self.bad(payload, f"shape {array.shape}: {kind} payloads are {ndim}-D")
            return
        if meta.get("feature_dim") != array.shape[-1]:
            self.bad(meta_path, f"feature_dim {meta.get('feature_dim')!r} but the payload has shape {array.shape}")
        if array.dtype.kind == "f" and array.size and not np.isfinite(array).all():
            self.bad(payload, "non-finite values (NaN or Inf)")
        if kind in ("tile_embeddings", "hierarchical_embeddings"):
            rows = array.shape[0]
            count_key = "num_tiles" if kind == "tile_embeddings" else "num_regions"
            if meta.get(count_key) != rows:
                self.bad(meta_path, f"{count_key} {meta.get(count_key)!r} but the payload has {rows} rows")
            if stem not in self.coordinates:
                self.bad(payload, f"no tiles/{stem}.coordinates.npz for these embeddings")
            elif self.coordinates[stem][0] != rows:
                self.bad(payload, f"{rows} rows but tiles/{stem}.coordinates.npz holds {self.coordinates[stem][0]}")
            if payload.suffix == ".npz" and not np.array_equal(extra.get("tile_index", None), np.arange(rows)):
                self.bad(payload, "a tile npz carries tile_index = arange(N)")
            if kind == "hierarchical_embeddings":
                m = meta.get("region_tile_multiple")
                if not (_is_int(m) and m >= 2 and array.shape[1] == m * m == meta.get("tiles_per_region")):
                    self.bad(payload, f"shape {array.shape}: T must equal region_tile_multiple**2 = tiles_per_region")
                if meta.get("subtile_order") != "row_major":
                    self.bad(meta_path, "subtile_order must be 'row_major'")
        if kind == "patient_embeddings":
            ids = meta.get("sample_ids")
            if not isinstance(ids, list) or not _is_int(meta.get("num_slides")) or meta["num_slides"] > len(ids):
                self.bad(meta_path, "sample_ids must list the slides that went in; num_slides counts those with tiles")

    def check_latents(self) -> None:
        for path in self.files_under("slide_latents"):
            if path.suffix not in (".pt", ".npz"):
                self.bad(path, "slide_latents/ holds only .pt or .npz payloads (no sidecar)")
                continue
            if self.stem_parts("slide_latents", path, path.suffix) is not None:
                self.load_payload(path, "latents")

    def check_required(self, require: tuple[str, ...]) -> None:
        finished = [row for row in (self.rows or []) if row["status"] in ("done", "skipped")]
        for kind in require:
            if kind in ("process_list", "config"):
                continue  # reported as missing by their checks
            if kind == "tiles":
                if not self.coordinates:
                    self.bad(self.out / "tiles", "required, but no coordinates were found")
                continue
            if kind == "patient_embeddings":
                if not self.files_under(kind):
                    self.bad(self.out / kind, "required, but there are none")
                continue
            folder = {"mask_preview": "preview/mask", "tiling_preview": "preview/tiling"}.get(kind, kind)
            present = {str(p.relative_to(self.out / folder).with_suffix("")) for p in self.files_under(folder)}
            if not present:
                self.bad(self.out / folder, "required, but there are none")
            for row in finished:
                stem = row["sample_id"]
                n_tiles = self.coordinates.get(stem, (None, None))[0]
                if kind in ("tiling_preview", "slide_embeddings") and n_tiles == 0:
                    continue  # no tiling preview and no slide embedding for a slide without tiles
                if stem not in present:
                    self.bad(self.out / folder, f"required, but missing for {stem!r}")


def _missing_keys(full: Any, written: Any, prefix: str = "") -> list[str]:
    """Dotted keys present in ``full`` (every default filled in) but absent from ``written``."""
    if not isinstance(full, dict) or not isinstance(written, dict):
        return []
    missing = []
    for key, value in full.items():
        dotted = f"{prefix}{key}"
        if key not in written:
            missing.append(dotted)
        else:
            missing.extend(_missing_keys(value, written[key], f"{dotted}."))
    return missing
