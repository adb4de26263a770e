"""``config.yaml``: the fully resolved config of the pipeline that owns the output_dir (s10), and
``config_history/<hash>.yaml``: every resolved config the pipeline has ever written under, so that the
``config_hash`` a sidecar records always resolves to the exact config its artifact was made with.

``config.yaml`` stays slide2vec's file (the current config, nothing added to it); the history folder sits
beside it. The hash is taken over the YAML text itself, so a file in the history hashes to its own name.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml

from slide2vec_dagster.artifacts import atomic
from slide2vec_dagster.layout import OutputLayout

HASH_CHARS = 16


def config_text(resolved: dict[str, Any]) -> str:
    """The YAML text ``config.yaml`` holds for ``resolved`` (key order kept, block style)."""
    return yaml.safe_dump(resolved, sort_keys=False, default_flow_style=False, allow_unicode=True)


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:HASH_CHARS]


def config_hash(resolved: dict[str, Any]) -> str:
    """The hash ``write_config_yaml`` returns for ``resolved``, computable before anything is written
    (sidecars are built before the IO manager writes config.yaml)."""
    return text_hash(config_text(resolved))


def history_file(config_yaml: Path, hash_: str) -> Path:
    return OutputLayout(Path(config_yaml).parent).config_version(hash_)


def _keep_version(config_yaml: Path, text: str) -> None:
    """Write ``text`` into the history under its hash unless it is already there (content-addressed:
    concurrent runs write the same bytes to the same name, atomically)."""
    target = history_file(config_yaml, text_hash(text))
    try:
        if target.read_text(encoding="utf-8") == text:
            return
    except (OSError, UnicodeDecodeError):
        pass  # missing or damaged: (re)write it
    atomic.write_text(target, text)


def write_config_yaml(path: Path, resolved: dict[str, Any]) -> str:
    """Make ``path`` (config.yaml) hold ``resolved``, keep that version in ``config_history/``, and return
    its hash. Idempotent: an unchanged config rewrites nothing."""
    path = Path(path)
    text = config_text(resolved)
    try:
        current: str | None = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        current = None
    if current and current.strip() and current != text:
        # The version being replaced may predate the history (or have been written by slide2vec itself):
        # keep it too, so sidecars made under it still resolve.
        _keep_version(path, current)
    _keep_version(path, text)
    if current != text:
        atomic.write_text(path, text)
    return text_hash(text)


def read_config_version(config_yaml: Path, hash_: str) -> tuple[Path, dict[str, Any] | None, str | None]:
    """``(history file, its parsed config or None, why it is unusable or None)`` for one recorded hash."""
    target = history_file(config_yaml, hash_)
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        return target, None, f"{target} does not exist"
    except (OSError, UnicodeDecodeError) as exc:
        return target, None, f"{target} cannot be read ({exc})"
    if text_hash(text) != hash_:
        return target, None, f"{target} was edited after it was written (its content hashes to {text_hash(text)})"
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return target, None, f"{target} is not valid YAML ({exc})"
    return target, parsed if isinstance(parsed, dict) else None, None
