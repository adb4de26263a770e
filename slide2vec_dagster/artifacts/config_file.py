"""``config.yaml``: the fully resolved config of the pipeline that owns the output_dir (s10)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from slide2vec_dagster.artifacts import atomic


def write_config_yaml(path: Path, resolved: dict[str, Any]) -> None:
    text = yaml.safe_dump(resolved, sort_keys=False, default_flow_style=False, allow_unicode=True)
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return  # unchanged: avoid rewriting on every run
    atomic.write_text(path, text)
