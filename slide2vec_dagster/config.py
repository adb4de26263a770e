"""The platform config (one YAML file), validated with pydantic before anything runs.

```yaml
manifests: [cohort.csv]          # watched by the cohort sensor; relative to this file
output_root: ../outputs          # pipeline P writes to <output_root>/<P> unless it sets output_dir
pipelines:
  demo:                          # one pipeline = one encoder + preprocessing = one output_dir
    tiling: {backend: auto, params: {requested_spacing_um: 0.5, requested_tile_size_px: 224}}
```
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from slide2vec_dagster.encoders import EncoderError
from slide2vec_dagster.encoders.levels import (
    check_pairing,
    check_patient_pairing,
    check_remote_opt_in,
    check_save_latents,
    resolve_levels,
)
from slide2vec_dagster.tiling.params import TilingConfig, UnsupportedConfigError

CONFIG_ENV_VAR = "SLIDE2VEC_DAGSTER_CONFIG"
# The checkout this package is installed from (editable install): demo/ and dagster.yaml live there.
REPO_ROOT = Path(__file__).resolve().parent.parent
PIPELINE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class ConfigError(ValueError):
    """The platform config is invalid; the message names the file and the bad key."""


class ModelConfig(BaseModel):
    """slide2vec's ``model`` block: which encoder preset(s), their weights and the batch size.

    ``name`` is a tile, slide or patient preset, as in slide2vec (``prism`` implies its tile encoder
    ``virchow``; ``moozy`` implies ``moozy-slide`` and ``lunit``). ``tile_encoder`` / ``slide_encoder`` /
    ``patient_encoder`` name the other levels explicitly, e.g. a weight-free ``mean-pool`` slide and
    patient level on top of any tile encoder. After loading, all three are resolved and ``level`` says
    which is the pipeline's top level.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(description="an encoder preset: tile (uni, virchow2, ...), slide (prism, titan, ...) or patient")
    weights: Path | None = Field(
        default=None,
        description="tile encoder weights: local folder (config.json + weights) or file; default: the hub repo",
    )
    variant: str | None = Field(default=None, description="tile encoder output variant, e.g. cls or cls_patch_mean")
    batch_size: int = Field(default=32, ge=1, le=65536)
    tile_encoder: str | None = Field(default=None, description="default: the slide/patient model's pairing")
    slide_encoder: str | None = Field(default=None, description="slide-level model, e.g. mean-pool, prism")
    patient_encoder: str | None = Field(default=None, description="patient-level model, e.g. mean-pool, moozy")
    slide_weights: Path | None = Field(
        default=None, description="slide / patient model weights (local folder or file); default: the hub repo"
    )
    revision: str | None = Field(default=None, description="pinned commit of a remote-code slide model")
    trust_remote_code: bool = Field(default=False, description="allow a slide model's Hugging Face remote code")
    save_tile_embeddings: bool | None = Field(default=None, description="slide2vec: true for tile models only")
    save_slide_embeddings: bool | None = Field(default=None, description="slide2vec: false for patient models")
    save_latents: bool = False
    level: Literal["tile", "slide", "patient"] | None = Field(default=None, description="resolved, not set by hand")


class SpeedConfig(BaseModel):
    """slide2vec's ``speed`` block: precision, storage dtype and how the reading is parallelised."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    precision: Literal["fp32", "fp16", "bf16"] | None = Field(default=None, description="default: the preset's")
    output_dtype: Literal["fp16", "fp32", "bf16"] | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_workers: int = Field(default=2, ge=1, le=256, description="reader threads per batch")
    prefetch_batches: int = Field(default=2, ge=1, le=64, description="batches decoded ahead of the model")

    @field_validator("output_dtype")
    @classmethod
    def _no_bf16_storage(cls, value: str | None) -> str | None:
        if value == "bf16":
            raise ValueError("bf16 is not a storage dtype: use fp16 or fp32 (bf16 compute is stored as fp32)")
        return value


def _hash(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


class PipelineConfig(BaseModel):
    """One pipeline: preprocessing + an optional encoder, writing to one output_dir."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)

    output_dir: Path | None = Field(default=None, description="defaults to <output_root>/<pipeline name>")
    tiling: TilingConfig = Field(default_factory=TilingConfig)
    model: ModelConfig | None = None
    speed: SpeedConfig = Field(default_factory=SpeedConfig)
    output_format: Literal["pt", "npz"] = "pt"
    _reuse_dir: Path | None = PrivateAttr(default=None)
    _encoder_cache_gb: float = PrivateAttr(default=16.0)
    _reuse_pipeline: str | None = PrivateAttr(default=None)

    def fingerprint(self) -> str:
        """Hash of everything that decides the tiling outputs (not where they are written)."""
        return _hash(self.tiling.model_dump(mode="json"))

    def embedding_fingerprint(self) -> str:
        """Hash of everything that decides the tile embeddings, on top of the tiling. Settings that do not
        change the numbers (batch size, reader threads, device) are left out."""
        model = self.model
        return _hash(
            {
                "tiling": self.fingerprint(),
                "tile_encoder": model.tile_encoder or model.name if model else None,
                "weights": str(model.weights) if model and model.weights else None,
                "variant": model.variant if model else None,
                "precision": self.speed.precision,
                "output_dtype": self.speed.output_dtype,
                "output_format": self.output_format,
            }
        )

    def slide_fingerprint(self) -> str:
        """Hash of what decides the slide embeddings (and latents), on top of the tile embeddings."""
        model = self.model
        assert model is not None
        return _hash(
            {
                "tile": self.embedding_fingerprint(),
                "slide_encoder": model.slide_encoder,
                "slide_weights": str(model.slide_weights) if model.slide_weights else None,
                "revision": model.revision,
            }
        )

    def patient_fingerprint(self) -> str:
        model = self.model
        assert model is not None
        return _hash({"slide": self.slide_fingerprint(), "patient_encoder": model.patient_encoder})

    @property
    def level(self) -> str | None:
        """The pipeline's top level: tile, slide or patient (None without a model)."""
        return self.model.level if self.model else None

    @property
    def writes_tile_embeddings(self) -> bool:
        return bool(self.model and (self.model.level == "tile" or self.model.save_tile_embeddings))

    @property
    def writes_slide_embeddings(self) -> bool:
        return bool(self.model and (self.model.level == "slide" or self.model.save_slide_embeddings))

    @property
    def writes_latents(self) -> bool:
        return bool(self.model and self.model.save_latents)

    def tiling_geometry(self) -> dict[str, Any]:
        """What reused coordinates must have been tiled with (the size the grid is laid with)."""
        params = self.tiling.params
        return {
            "requested_spacing_um": float(params.requested_spacing_um or 0),
            "requested_tile_size_px": int(params.tiling_tile_size_px),
            "tolerance": float(params.tolerance),
            "overlap": float(params.overlap),
        }

    @property
    def encoder_cache_gb(self) -> float:
        """The per-process model cache budget (``execution.encoder_cache_gb`` of the platform config)."""
        return self._encoder_cache_gb

    @property
    def reuse_dir(self) -> Path | None:
        """The folder whose coordinates this pipeline reuses (another pipeline's output_dir, or a folder)."""
        return self._reuse_dir

    @property
    def reuse_pipeline(self) -> str | None:
        """The pipeline whose coordinates asset this pipeline's embeddings are computed from."""
        return self._reuse_pipeline

    @property
    def embedding_kind(self) -> str:
        """``tile_embeddings`` or ``hierarchical_embeddings`` (region_tile_multiple set)."""
        return "hierarchical_embeddings" if self.is_hierarchical else "tile_embeddings"

    @property
    def is_hierarchical(self) -> bool:
        return self.tiling.params.is_hierarchical

    @property
    def region_tile_multiple(self) -> int | None:
        """``m`` of hierarchical mode, from region_tile_multiple or requested_region_size_px / tile size."""
        params = self.tiling.params
        if params.region_tile_multiple is not None:
            return int(params.region_tile_multiple)
        if params.requested_region_size_px is not None and params.requested_tile_size_px:
            return int(params.requested_region_size_px) // int(params.requested_tile_size_px)
        return None

    def resolve_model_defaults(self) -> None:
        """Resolve the model levels and pairings, and fill what the presets decide: unset tile size /
        spacing, precision, the save_* defaults. slide2vec takes the tiling geometry from the model when the
        config leaves it out (a slide model: the tile encoder's tile size and the slide model's spacing)."""
        if self.model is None:
            return
        model = self.model
        resolved = resolve_levels(model)
        tile, slide, patient = resolved.tile, resolved.slide, resolved.patient
        model.level = resolved.level
        model.name = resolved.name
        model.tile_encoder = tile.name
        model.slide_encoder = slide.name if slide else None
        model.patient_encoder = patient.name if patient else None
        model.variant = resolved.variant
        tile_dim = tile.feature_dim(model.variant)
        if slide is not None:
            check_pairing(slide.name, tile.name, model.variant, tile_dim)
        if patient is not None and slide is not None:
            check_patient_pairing(patient.name, slide.name, slide.output_dim(tile_dim))
        if model.save_latents:
            if slide is None:
                raise ValueError("model.save_latents needs a slide-level model; set it to false")
            check_save_latents(slide.name)
        if slide is not None and slide.trust_remote_code:
            check_remote_opt_in(slide, model.trust_remote_code, model.revision)
        if slide is not None and self.is_hierarchical:
            raise ValueError(
                "slide- and patient-level models take tile embeddings: remove tiling.params.region_tile_multiple "
                "(hierarchical embeddings are a tile-level output)"
            )
        if model.save_tile_embeddings is None:
            model.save_tile_embeddings = resolved.level == "tile"
        if model.save_slide_embeddings is None:
            model.save_slide_embeddings = resolved.level == "slide"
        params = self.tiling.params
        if slide is not None and not slide.supports_tile_overlap and params.overlap > 0:
            raise ValueError(
                f"slide encoder {slide.name!r} needs non-overlapping tiles: set tiling.params.overlap to 0"
            )
        if params.requested_spacing_um is None:
            params.requested_spacing_um = (slide.spacing_um if slide and slide.spacing_um else None) or tile.spacing_um
        if params.requested_tile_size_px is None:
            params.requested_tile_size_px = tile.tile_size_px
            if self.tiling.filter_params.ref_tile_size is None:
                self.tiling.filter_params.ref_tile_size = tile.tile_size_px
        if self.speed.precision is None:
            self.speed.precision = tile.precision


class CeleryConfig(BaseModel):
    """Where the Celery workers are (``execution.executor: celery``): the broker, and the queues the steps
    go to. Defaults: this machine's RabbitMQ; tiling on ``cpu`` workers, embedding on ``gpu`` workers."""

    model_config = ConfigDict(extra="forbid")

    broker: str = Field(default="pyamqp://guest@127.0.0.1:5672//", description="Celery broker URL")
    # A result store every process can read (not rpc://): the daemon's run monitoring asks it whether a
    # run's worker is still running.
    backend: str = Field(default="redis://127.0.0.1:6379/0", description="Celery result backend URL")
    run_queue: str = Field(
        default="dagster",
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="the runs' queue: the run launcher's default_queue in dagster.yaml",
    )
    cpu_queue: str = Field(default="cpu", pattern=r"^[A-Za-z0-9_.-]+$")
    gpu_queue: str = Field(default="gpu", pattern=r"^[A-Za-z0-9_.-]+$")


class ExecutionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    executor: Literal["in_process", "celery"] = Field(
        default="in_process", description="in_process: each run's steps in its own process; celery: on workers"
    )
    celery: CeleryConfig = Field(default_factory=CeleryConfig)
    gpu_pool_size: int = Field(
        default=1, ge=1, le=1024, description="embedding steps at once (the Dagster concurrency pool 'gpu')"
    )
    encoder_cache_gb: float = Field(
        default=16.0, gt=0, le=4096, description="models kept loaded per worker process (least recently used out)"
    )

    sensor_interval_seconds: int = Field(default=30, ge=5, le=86400)
    max_retries: int = Field(default=3, ge=0, le=10, description="retries of a slide after a transient I/O error")
    retry_delay_seconds: float = Field(default=10.0, ge=0, le=3600, description="first retry delay (then doubled)")
    backfill_cron: str = Field(
        default="0 2 * * *", description="when the backfill schedule looks for missing or stale partitions"
    )
    max_runs_per_tick: int = Field(
        default=500,
        ge=1,
        le=100_000,
        description="new slides registered and requested (and edited slides observed) per cohort-sensor tick",
    )


class PlatformConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    manifests: list[Path] = Field(min_length=1)
    output_root: Path = Path("outputs")
    pipelines: dict[str, PipelineConfig] = Field(min_length=1)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    source_path: Path | None = Field(default=None, exclude=True)

    @field_validator("pipelines")
    @classmethod
    def _pipeline_names(cls, pipelines: dict[str, PipelineConfig]) -> dict[str, PipelineConfig]:
        for name in pipelines:
            if not PIPELINE_NAME.match(name):
                raise ValueError(
                    f"pipeline name {name!r} must start with a letter and contain only letters, digits and _ "
                    "(it becomes a Dagster asset-key prefix and group name)"
                )
        return pipelines

    def output_dir(self, pipeline: str) -> Path:
        configured = self.pipelines[pipeline].output_dir
        return Path(os.path.abspath(configured or self.output_root / pipeline))

    def resolved_pipeline(self, pipeline: str) -> dict[str, Any]:
        """The pipeline block with every default filled in: what ``config.yaml`` holds."""
        block = self.pipelines[pipeline].model_dump(mode="json")
        block["output_dir"] = str(self.output_dir(pipeline))
        return block


def _format_validation_error(path: Path, error: ValidationError, prefix: str = "") -> str:
    lines = []
    for item in error.errors():
        key = prefix + ".".join(str(part) for part in item["loc"]) or "<top level>"
        message = "unknown key (check its spelling)" if item["type"] == "extra_forbidden" else item["msg"]
        lines.append(f"  {key}: {message}")
    return f"invalid platform config {path}:\n" + "\n".join(lines)


def load_config(path: str | Path) -> PlatformConfig:
    """Read, validate and resolve a platform config; relative paths resolve against its folder."""
    path = Path(path).absolute()
    if not path.is_file():
        raise ConfigError(f"platform config not found: {path}; pass --config or set {CONFIG_ENV_VAR} to a YAML file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the platform config must be a mapping with manifests, output_root, pipelines")
    try:
        config = PlatformConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(path, exc)) from None
    base = path.parent

    def absolute(p: Path) -> Path:
        # abspath also folds "..": sidecars and process_list.csv then show clean paths.
        return Path(os.path.abspath(base / p.expanduser()))

    config.manifests = [absolute(p) for p in config.manifests]
    config.output_root = absolute(config.output_root)
    for name, pipeline in config.pipelines.items():
        if pipeline.output_dir is not None:
            pipeline.output_dir = absolute(pipeline.output_dir)
        if pipeline.model is not None and pipeline.model.weights is not None:
            pipeline.model.weights = absolute(pipeline.model.weights)
        if pipeline.model is not None and pipeline.model.slide_weights is not None:
            pipeline.model.slide_weights = absolute(pipeline.model.slide_weights)
        try:
            pipeline.resolve_model_defaults()
            pipeline.tiling.require_resolved()
            params = pipeline.tiling.params
            if params.region_tile_multiple and params.requested_region_size_px is None:
                # config.yaml records the resolved region size, as slide2vec's does.
                params.requested_region_size_px = int(params.requested_tile_size_px) * int(params.region_tile_multiple)
        except ValidationError as exc:
            raise ConfigError(_format_validation_error(path, exc, prefix=f"pipelines.{name}.tiling.params.")) from None
        except (EncoderError, UnsupportedConfigError, ValueError, KeyError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            raise ConfigError(f"invalid platform config {path}:\n  pipelines.{name}: {message}") from None
    for name, pipeline in config.pipelines.items():
        _resolve_reuse(config, name, pipeline, path, absolute)
        pipeline._encoder_cache_gb = config.execution.encoder_cache_gb
    owners: dict[Path, str] = {}
    for name in config.pipelines:
        output_dir = config.output_dir(name)
        if output_dir in owners:
            raise ConfigError(
                f"invalid platform config {path}:\n  pipelines.{owners[output_dir]} and pipelines.{name} both write "
                f"to {output_dir}; each pipeline needs its own output_dir (they would overwrite each other's files)"
            )
        owners[output_dir] = name
    config.source_path = path
    return config


def _resolve_reuse(config: PlatformConfig, name: str, pipeline: PipelineConfig, path: Path, absolute: Any) -> None:
    """``tiling.read_coordinates_from``: another pipeline's name (its coordinates asset becomes this
    pipeline's upstream) or a folder of ``*.coordinates.npz/.meta.json`` written earlier (ours or slide2vec
    7.1.4's). The reused tiling must be the one this pipeline asks for: a mismatch is a config error."""
    source = pipeline.tiling.read_coordinates_from
    if not source:
        return
    where = f"invalid platform config {path}:\n  pipelines.{name}.tiling.read_coordinates_from"
    if source in config.pipelines:
        other = config.pipelines[source]
        if source == name:
            raise ConfigError(f"{where}: a pipeline cannot reuse its own coordinates")
        if other.tiling.read_coordinates_from:
            raise ConfigError(
                f"{where}: pipeline {source!r} reuses coordinates itself; name the pipeline that tiles "
                f"({other.tiling.read_coordinates_from!r})"
            )
        from slide2vec_dagster.artifacts.foreign import differing_geometry

        mine, theirs = pipeline.tiling_geometry(), other.tiling_geometry()
        differences = [
            f"{k}: {source} has {theirs[k]}, {name} asks for {mine[k]}" for k in differing_geometry(theirs, mine)
        ]
        if differences:
            raise ConfigError(f"{where}: {source!r} tiles differently ({'; '.join(differences)}); align the two")
        pipeline._reuse_pipeline = source
        pipeline._reuse_dir = config.output_dir(source)
        return
    folder = absolute(Path(source))
    if not folder.is_dir():
        raise ConfigError(
            f"{where}: {source!r} is neither a pipeline of this config ({', '.join(config.pipelines)}) nor an existing "
            f"folder ({folder}); name a pipeline, or a folder of *.coordinates.npz / .coordinates.meta.json files"
        )
    pipeline.tiling.read_coordinates_from = str(folder)
    pipeline._reuse_dir = folder
    # Fail at load, not on every slide, when the folder was tiled with other parameters (one sidecar tells).
    from slide2vec_dagster.artifacts.foreign import read_reusable_coordinates

    # Any one sidecar (the first listed: a cohort folder holds thousands, none is sorted or read in full).
    sidecar = next(folder.glob("*.coordinates.meta.json"), None) or next(
        folder.glob("tiles/*.coordinates.meta.json"), None
    )
    if sidecar is not None:
        sample_id = sidecar.name[: -len(".coordinates.meta.json")]
        try:
            reused = read_reusable_coordinates(folder, sample_id)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
        problems = reuse_geometry_problems(pipeline, reused.geometry)
        if problems:
            raise ConfigError(f"{where}: {folder} was tiled with other parameters ({'; '.join(problems)})")


def reuse_geometry_problems(pipeline: PipelineConfig, geometry: dict[str, Any]) -> list[str]:
    """How a reused tiling's geometry differs from what ``pipeline`` asks for (``[]``: it fits)."""
    from slide2vec_dagster.artifacts.foreign import differing_geometry

    wanted = pipeline.tiling_geometry()
    return [
        f"{key}: tiled with {geometry.get(key)}, the pipeline asks for {wanted[key]}"
        for key in differing_geometry(geometry, wanted)
    ]


def output_location_problems(config: PlatformConfig) -> list[str]:
    """Why an output location cannot be used: not a directory, or not writable by this user. A folder
    that does not exist yet is fine when its nearest existing parent is a writable directory."""
    problems = []
    locations = {"output_root": config.output_root}
    locations.update({f"pipelines.{name}.output_dir": config.output_dir(name) for name in config.pipelines})
    for key, location in locations.items():
        existing = location
        while not existing.exists() and existing.parent != existing:
            existing = existing.parent
        if not existing.is_dir():
            problems.append(f"{key}: {location} is not a directory ({existing} is a file); choose another path")
        elif not os.access(existing, os.W_OK | os.X_OK):
            problems.append(
                f"{key}: {existing} is not writable by this user; fix its permissions or choose another path"
            )
    return problems


def default_config_path() -> Path:
    """$SLIDE2VEC_DAGSTER_CONFIG, else the demo config shipped in the repository."""
    configured = os.environ.get(CONFIG_ENV_VAR)
    if configured:
        return Path(configured)
    return REPO_ROOT / "demo" / "config.yaml"
