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
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from slide2vec_dagster.tiling.params import TilingConfig

CONFIG_ENV_VAR = "SLIDE2VEC_DAGSTER_CONFIG"
PIPELINE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class ConfigError(ValueError):
    """The platform config is invalid; the message names the file and the bad key."""


class PipelineConfig(BaseModel):
    """One pipeline: preprocessing (and, later, an encoder) writing to one output_dir."""

    model_config = ConfigDict(extra="forbid")

    output_dir: Path | None = Field(default=None, description="defaults to <output_root>/<pipeline name>")
    tiling: TilingConfig = Field(default_factory=TilingConfig)

    def fingerprint(self) -> str:
        """Hash of everything that decides the tiling outputs (not where they are written)."""
        payload = json.dumps(self.tiling.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


class ExecutionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sensor_interval_seconds: int = Field(default=30, ge=5)


class PlatformConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

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


def _format_validation_error(path: Path, error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "<top level>"
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
    for pipeline in config.pipelines.values():
        if pipeline.output_dir is not None:
            pipeline.output_dir = absolute(pipeline.output_dir)
        if pipeline.tiling.read_coordinates_from:
            pipeline.tiling.read_coordinates_from = str(absolute(Path(pipeline.tiling.read_coordinates_from)))
    config.source_path = path
    return config


def default_config_path() -> Path:
    """$SLIDE2VEC_DAGSTER_CONFIG, else the demo config shipped in the repository."""
    configured = os.environ.get(CONFIG_ENV_VAR)
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parent.parent / "demo" / "config.yaml"
