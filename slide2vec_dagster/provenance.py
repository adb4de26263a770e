"""What a run records about the code and environment that made an artifact (no Dagster here).

- ``code_version()``: the git commit (and whether the package's files differ from it) of the checkout the
  package runs from, or only the package version when it is not running from a git work tree;
- ``library_versions()``: torch, timm, dagster, the slide readers and numpy, read from the installed
  distributions' metadata (nothing heavy is imported);
- ``weights_checksum(path)`` / ``tile_weights_lineage(origin)``: the sha256 of an encoder's weights;
- ``run_provenance()``: code + libraries, the block sidecars record; ``sidecar_lineage()`` adds the
  pipeline and the resolved config's hash;
- ``metadata_facts(sidecar)``: the same facts, flat, for a materialisation's metadata.

Everything here is cached per process: the code and libraries a process runs do not change under it,
and a weights file is hashed again only when its stat key changes (``fingerprint.py``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from slide2vec_dagster import __version__
from slide2vec_dagster.artifacts.config_file import config_hash
from slide2vec_dagster.fingerprint import fingerprint

PACKAGE_NAME = "slide2vec-dagster"
PACKAGE_DIR = Path(__file__).resolve().parent
# git on a healthy local checkout answers in milliseconds; a hung network filesystem must not hang a run.
GIT_TIMEOUT_S = 5.0
# Distribution names to try for each library, first installed wins (cuCIM ships per CUDA major).
LIBRARY_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "torch": ("torch",),
    "timm": ("timm",),
    "dagster": ("dagster",),
    "openslide_python": ("openslide-python",),
    "openslide_bin": ("openslide-bin",),
    "cucim": ("cucim-cu13", "cucim-cu12", "cucim-cu11", "cucim"),
    "tifffile": ("tifffile",),
    "numpy": ("numpy",),
}
# The library each slide reader backend (coordinates sidecar ``provenance.backend``) is.
READER_LIBRARIES = {
    "openslide": ("openslide_library", "openslide_python"),
    "cucim": ("cucim",),
    "tifffile": ("tifffile",),
}


def _git(args: list[str], cwd: Path) -> str | None:
    """stdout of ``git <args>`` in ``cwd``, or None when git is missing, fails or times out."""
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
            # Never prompt, never take a lock: this is a read-only question.
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0"},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


@functools.cache
def _code_version(package_dir: Path) -> tuple[str | None, bool | None]:
    top = _git(["rev-parse", "--show-toplevel"], package_dir)
    if top is None:
        return None, None
    # A copy installed into site-packages inside some other repository is not that repository's code:
    # only a tracked package file proves the package runs from this checkout.
    if _git(["ls-files", "--error-unmatch", "--", "__init__.py"], package_dir) is None:
        return None, None
    commit = _git(["rev-parse", "HEAD"], package_dir)
    if commit is None:
        return None, None
    # Only what decides the code's behaviour: the package's files and the dependency pins.
    status = _git(
        ["status", "--porcelain", "--untracked-files=normal", "--", str(package_dir), "pyproject.toml"],
        Path(top.strip()),
    )
    return commit.strip(), (bool(status.strip()) if status is not None else None)


def code_version() -> dict[str, Any]:
    """``{"git_commit", "git_dirty", "package_version"}``; the git fields are None when the package does
    not run from a git work tree (an installed wheel) or git is unavailable."""
    commit, dirty = _code_version(PACKAGE_DIR)
    return {"git_commit": commit, "git_dirty": dirty, "package_version": __version__}


def _distribution_version(names: tuple[str, ...]) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _openslide_library(openslide_bin: str | None) -> str | None:
    """The OpenSlide C library's version: openslide-bin's wheel is that library; otherwise the system
    library, which only the loaded module can report (reported only when it is already imported, so
    nothing is loaded just to ask)."""
    if openslide_bin is not None:
        return openslide_bin
    module = sys.modules.get("openslide")
    version = getattr(module, "__library_version__", None) if module is not None else None
    return str(version) if version else None


@functools.cache
def _library_versions() -> tuple[tuple[str, str | None], ...]:
    found = {name: _distribution_version(dists) for name, dists in LIBRARY_DISTRIBUTIONS.items()}
    found["openslide_library"] = _openslide_library(found.pop("openslide_bin"))
    found["python"] = platform.python_version()
    return tuple(found.items())


def library_versions() -> dict[str, str | None]:
    """Installed versions of torch, timm, dagster, openslide (``openslide_library``: the C library, from
    openslide-bin; ``openslide_python``: the binding), cucim, tifffile, numpy and Python; None when absent."""
    return dict(_library_versions())


def reader_versions(backend: str | None, libraries: dict[str, Any] | None) -> dict[str, Any]:
    """The versions, among ``libraries``, of the library behind slide reader ``backend``."""
    libraries = libraries or {}
    return {name: libraries.get(name) for name in READER_LIBRARIES.get(str(backend), ())}


def run_provenance() -> dict[str, Any]:
    """What a sidecar records about the process that wrote it: ``{"code": code_version(), "libraries":
    library_versions()}``."""
    return {"code": code_version(), "libraries": library_versions()}


def sidecar_lineage(pipeline: str, resolved_config: dict[str, Any]) -> dict[str, Any]:
    """The keys a sidecar's provenance section (``artifact`` of coordinates sidecars, ``provenance`` of
    the others) adds for lineage: the pipeline, the hash under which ``config_history/`` keeps
    ``resolved_config`` (``PlatformConfig.resolved_pipeline(pipeline)``), and ``run_provenance()``."""
    return {"pipeline": pipeline, "config_hash": config_hash(resolved_config), "run_provenance": run_provenance()}


# ------------------------------------------------------------------------------------- weights

# path -> the last fingerprint record of each file: an unchanged file (same stat key) is not read again.
_WEIGHTS_RECORDS: dict[str, dict[str, Any]] = {}


def _weight_files(folder: Path) -> list[Path]:
    # Hidden entries are tool bookkeeping (``hf download --local-dir`` keeps .cache/huggingface/ with
    # timestamps in it), not weights: they would change the checksum of identical weights.
    return sorted(
        path
        for path in folder.rglob("*")
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


def _file_sha256(path: Path) -> str:
    key = str(path)
    record = fingerprint(path, _WEIGHTS_RECORDS.get(key))
    _WEIGHTS_RECORDS[key] = record
    return str(record["sha256"])


def files_checksum(files: Sequence[Path], root: Path | None = None) -> str:
    """sha256 of a single file, or over ``<path relative to root>\0<sha256>\n`` lines in name order (root: the
    files' common folder by default). Each file is read once per process while its stat key holds."""
    if len(files) == 1 and root is None:
        return _file_sha256(files[0])
    root = root if root is not None else Path(os.path.commonpath([str(f) for f in files]))
    lines = "".join(f"{f.relative_to(root).as_posix()}\0{_file_sha256(f)}\n" for f in sorted(files))
    return hashlib.sha256(lines.encode()).hexdigest()


def weights_checksum(path: str | Path) -> str:
    """sha256 of a weights file; for a folder, sha256 over ``<relative path>\\0<sha256>\\n`` of its files in
    name order (hidden entries excepted: the same formula as ``fingerprint`` uses for DICOM folders).

    Raises FileNotFoundError when ``path`` does not exist.
    """
    path = Path(os.path.abspath(path))
    if not path.exists():
        raise FileNotFoundError(f"weights {path} do not exist; check model.weights / model.slide_weights")
    return _file_sha256(path) if path.is_file() else files_checksum(_weight_files(path), root=path)


def _hub_cached_file(origin: str, revision: str | None) -> Path | None:
    """The Hugging Face cache's copy of hub weights named by a tile encoder's ``weights_origin``
    (``hf://<repo>/<file>``, ``hf-hub:<repo>`` or a transformers repo id), without any network access."""
    if origin.startswith("hf://"):
        repo, _, filename = origin[len("hf://") :].rpartition("/")
        candidates = [filename]
    elif origin.startswith(("hf-hub:", "hf_hub:")):
        repo, candidates = (
            origin.split(":", 1)[1],
            ["model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors"],
        )
    elif origin.count("/") == 1 and not os.path.isabs(origin):
        repo, candidates = origin, ["model.safetensors", "pytorch_model.bin"]
    else:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in candidates:
        try:
            found = try_to_load_from_cache(repo, filename, revision=revision)
        except Exception:  # a malformed repo id is simply not in the cache
            continue
        if isinstance(found, str):
            return Path(found)
    return None


def tile_weights_lineage(weights_origin: str, revision: str | None = None) -> dict[str, Any]:
    """``{"weights_origin", "weights_revision", "weights_sha256"}`` for a tile encoder, the keys slide
    and patient sidecars already carry (``SlideEncoder.lineage()``).

    A local file or folder is hashed; hub weights are hashed from the Hugging Face cache copy that was
    loaded, whose snapshot folder names the commit. Weight-free encoders give None.
    """
    sha256: str | None = None
    path = Path(weights_origin)
    if path.is_absolute() and path.exists():
        sha256 = weights_checksum(path)
    else:
        cached = _hub_cached_file(weights_origin, revision)
        if cached is not None and cached.exists():
            sha256 = weights_checksum(cached)
            # <cache>/models--org--repo/snapshots/<commit>/<file>
            if revision is None and cached.parent.parent.name == "snapshots":
                revision = cached.parent.name
    return {"weights_origin": weights_origin, "weights_revision": revision, "weights_sha256": sha256}


# ------------------------------------------------------------------------------------- sidecars


def sidecar_section(meta: dict[str, Any]) -> dict[str, Any]:
    """The section of a sidecar that holds its provenance: ``artifact`` for coordinates sidecars,
    ``provenance`` for embedding, slide and patient sidecars."""
    for name in ("provenance", "artifact"):
        section = meta.get(name)
        if isinstance(section, dict) and ("run_id" in section or "inputs_fingerprint" in section):
            return section
    return {}


def upstream_run_id(meta: dict[str, Any]) -> str | None:
    """The run that wrote the artifact a sidecar describes (to record as an upstream's run id)."""
    run_id = sidecar_section(meta).get("run_id")
    return str(run_id) if run_id else None


def reuse_status(status: str, meta: dict[str, Any], run_id: str | None) -> str:
    """The process-list status of a step's outcome. A step that found its outputs current (``skipped``) but
    written by this same run reports ``done``: it was launched again (its run worker died and the run was
    resumed, or it was retried) and found its own earlier attempt's outputs; this run made them."""
    if status == "skipped" and run_id is not None and upstream_run_id(meta) == run_id:
        return "done"
    return status


def describe_code(code: dict[str, Any] | None) -> str:
    """``git <commit> (+ local changes)`` or ``slide2vec-dagster <version>``."""
    if not code:
        return "not recorded"
    if "git_commit" not in code:  # a sidecar written before run provenance: only the package version
        return f"{PACKAGE_NAME} {code.get('package_version')} (git commit not recorded)"
    commit = code.get("git_commit")
    if commit:
        dirty = " + uncommitted changes" if code.get("git_dirty") else ""
        return f"git {commit}{dirty} ({PACKAGE_NAME} {code.get('package_version')})"
    return f"{PACKAGE_NAME} {code.get('package_version')} (not run from a git checkout)"


def describe_libraries(libraries: dict[str, Any] | None) -> str:
    if not libraries:
        return "not recorded"
    return ", ".join(f"{name} {version}" for name, version in libraries.items() if version)


def metadata_facts(meta: dict[str, Any]) -> dict[str, str]:
    """The lineage facts of a sidecar, flat (``lineage/<name>``: text), for a materialisation's metadata,
    so the UI shows what ``slide2vec-dagster lineage`` prints. Keys whose value is unknown are left out."""
    section = sidecar_section(meta)
    recorded = section.get("run_provenance") or {}
    slide = section.get("slide_fingerprint") or {}
    facts: dict[str, Any] = {
        "code": describe_code(recorded.get("code")) if recorded else None,
        "libraries": describe_libraries(recorded.get("libraries")) if recorded else None,
        "config_hash": section.get("config_hash"),
        "encoder": meta.get("encoder_name"),
        "weights": section.get("model_weights"),
        "weights_revision": section.get("weights_revision"),
        "weights_sha256": section.get("weights_sha256"),
        "slide_path": slide.get("path"),
        "slide_sha256": slide.get("sha256"),
        "coordinates_run_id": section.get("coordinates_run_id"),
    }
    return {f"lineage/{name}": str(value) for name, value in facts.items() if value not in (None, "")}
