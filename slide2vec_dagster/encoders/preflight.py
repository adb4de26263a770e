"""Can a pipeline's models load? Answered without building them, so a schedule can ask before launching a
backfill of thousands of slides (a missing checkpoint must stop one tick, not fail every slide).

Checks, per level: the preset can run here (its code and packages are available), and its weights are
reachable: a local ``model.weights`` / ``model.slide_weights`` that exists and holds what the loader reads,
or the preset's Hugging Face files in the local cache — or, when the hub may be contacted
(``HF_HUB_OFFLINE`` unset), one small file fetched from it (which also proves access to a gated
repository). The messages are the loaders' own (repository, download command, config key).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from slide2vec_dagster.encoders.errors import EncoderWeightsError
from slide2vec_dagster.encoders.slide_spec import MeanPoolBuild, get_slide_spec
from slide2vec_dagster.encoders.spec import BaselineBuild, ExternalBuild, TimmBuild, TransformersBuild, get_spec
from slide2vec_dagster.encoders.weights_help import (
    _CHECKPOINT_SUFFIXES,
    _HF_WEIGHT_FILES,
    SLIDE_WEIGHTS_CONFIG_KEY,
    WEIGHTS_CONFIG_KEY,
    _hub_errors,
    _raise_unavailable,
    _require,
    _short,
    check_local_revision,
    raise_slide_unavailable,
    require_slide,
    slide_weights_help,
    weights_help,
)


def _hub_reachable(repo_id: str, filename: str, revision: str | None) -> str | None:
    """None when ``filename`` of ``repo_id`` is in the cache or fetchable now; else why not."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, filename, revision=revision)
    if isinstance(cached, str):
        return None
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        return f"{filename} of {repo_id} is not in the Hugging Face cache and HF_HUB_OFFLINE is set"
    try:
        hf_hub_download(repo_id, filename, revision=revision)
    except _hub_errors() as exc:
        return f"the Hugging Face download of {repo_id}/{filename} failed ({_short(exc)})"
    return None


def check_tile_encoder(name: str, weights: Path | None) -> str:
    """Where the tile encoder's weights are; raises the loader's error when they cannot be loaded."""
    spec = get_spec(name)
    build = spec.build
    if isinstance(build, BaselineBuild):
        return "none (baseline)"
    if isinstance(build, ExternalBuild):
        _raise_unavailable(spec)
    _require(spec)
    assert spec.weights is not None
    if weights is not None:
        path = Path(weights)
        if not path.exists():
            reason = f"{WEIGHTS_CONFIG_KEY} points to {path}, which does not exist"
            raise EncoderWeightsError(weights_help(spec, reason))
        if path.is_file():
            return str(path)
        if spec.weights.filename and (path / spec.weights.filename).is_file():
            return str(path / spec.weights.filename)
        if (path / "config.json").is_file() and any((path / f).is_file() for f in _HF_WEIGHT_FILES):
            return str(path)
        if isinstance(build, TimmBuild) and len([p for p in path.iterdir() if p.suffix in _CHECKPOINT_SUFFIXES]) == 1:
            return str(path)
        raise EncoderWeightsError(
            weights_help(spec, f"{path} holds neither config.json + model weights nor a single checkpoint")
        )
    filename = spec.weights.filename or "config.json"
    problem = _hub_reachable(spec.weights.repo_id, filename, spec.weights.revision)
    if problem:
        raise EncoderWeightsError(weights_help(spec, problem))
    hub = build.hub_name if isinstance(build, TimmBuild) and build.hub_name else spec.weights.repo_id
    return hub if isinstance(build, TimmBuild | TransformersBuild) else spec.weights.repo_id


def check_slide_level(name: str, weights: Path | None, revision: str | None) -> str:
    """Where a slide / patient model's weights are; raises the loader's error when they cannot be loaded."""
    spec = get_slide_spec(name)
    if isinstance(spec.build, MeanPoolBuild):
        return "none (mean-pool baseline)"
    missing = spec.missing_requirements()
    if isinstance(spec.build, ExternalBuild) or missing:
        require_slide(spec)
        raise_slide_unavailable(spec)
    assert spec.weights is not None
    filename = spec.weights.filename or "config.json"
    if weights is not None:
        path = Path(weights)
        if not path.exists():
            raise EncoderWeightsError(
                slide_weights_help(spec, f"{SLIDE_WEIGHTS_CONFIG_KEY} points to {path}, which does not exist")
            )
        if path.is_dir() and not (path / filename).is_file():
            raise EncoderWeightsError(slide_weights_help(spec, f"{path} holds no {filename}"))
        if spec.trust_remote_code and path.is_dir() and revision:
            check_local_revision(spec, path, revision)  # the loader's refusal of a copy of another commit
        return str(path)
    problem = _hub_reachable(spec.weights.repo_id, filename, revision or spec.weights.revision)
    if problem:
        raise EncoderWeightsError(slide_weights_help(spec, problem))
    return spec.weights.repo_id


def check_model(model: Any) -> dict[str, str]:
    """Check every level of a resolved ``model`` block; returns where each level's weights are."""
    found = {"tile": check_tile_encoder(model.tile_encoder or model.name, model.weights)}
    if model.slide_encoder:
        found["slide"] = check_slide_level(model.slide_encoder, model.slide_weights, model.revision)
    if model.patient_encoder:
        spec = get_slide_spec(model.patient_encoder)
        if not isinstance(spec.build, MeanPoolBuild):
            found["patient"] = check_slide_level(model.patient_encoder, model.slide_weights, model.revision)
    return found
