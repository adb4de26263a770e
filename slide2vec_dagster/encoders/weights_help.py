"""Weights and dependency messages of the encoder loaders, and the remote-code opt-in check: plain Python
without torch, so that config validation (definitions load) and the schedule's preflight can use them
without importing the models' libraries."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from slide2vec_dagster.encoders.errors import EncoderConfigError, EncoderDependencyError
from slide2vec_dagster.encoders.slide_spec import SlideEncoderSpec
from slide2vec_dagster.encoders.spec import EncoderSpec, ExternalBuild

# The config keys the messages point at (the Dagster config owns the actual schema).
WEIGHTS_CONFIG_KEY = "model.weights"
_HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

_CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt")
SLIDE_WEIGHTS_CONFIG_KEY = "model.slide_weights"
TRUST_REMOTE_CODE_CONFIG_KEY = "model.trust_remote_code"
REVISION_CONFIG_KEY = "model.revision"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def _require(spec: EncoderSpec) -> None:
    missing = spec.missing_requirements()
    if not missing:
        return
    hint = spec.build.install_hint if isinstance(spec.build, ExternalBuild) else f"pip install {' '.join(missing)}"
    remote = (
        " It also runs the model repository's own Python code (trust_remote_code=True)."
        if spec.trust_remote_code
        else ""
    )
    raise EncoderDependencyError(
        f"Encoder {spec.name!r} needs the Python package(s) {', '.join(missing)}, which are not installed "
        f"in this environment ({hint}).{remote} Pick a timm preset or the offline 'baseline-color-texture' instead."
    )


def _raise_unavailable(spec: EncoderSpec) -> None:
    _require(spec)
    build = spec.build
    reason = build.reason if isinstance(build, ExternalBuild) else "unsupported backend"
    raise EncoderDependencyError(f"Encoder {spec.name!r} cannot be run by this platform yet: {reason}.")


def weights_help(spec: EncoderSpec, reason: str) -> str:
    """The user-facing message for unavailable weights: which repository, how to fetch it, which key."""
    if spec.weights is None:
        return f"Encoder {spec.name!r}: {reason}."
    return _download_help(f"encoder {spec.name!r}", spec.name, spec.weights, reason, WEIGHTS_CONFIG_KEY)


def _hub_errors() -> tuple[type[BaseException], ...]:
    """Exceptions meaning 'the hub could not deliver the files' (offline, not cached, gated, missing)."""
    errors: list[type[BaseException]] = [OSError, ConnectionError, TimeoutError]
    try:
        from huggingface_hub import errors as hf_errors

        errors += [hf_errors.EntryNotFoundError, hf_errors.HfHubHTTPError, hf_errors.LocalEntryNotFoundError]
    except ImportError:  # pragma: no cover - huggingface_hub is a timm dependency
        pass
    try:
        import httpx

        errors.append(httpx.HTTPError)
    except ImportError:
        pass
    return tuple(errors)


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    text = text if len(text) <= 300 else text[:297] + "..."
    return f"{type(exc).__name__}: {text}"


def check_remote_opt_in(spec: SlideEncoderSpec, trust_remote_code: bool, revision: str | None) -> None:
    problems = []
    if trust_remote_code is not True:
        problems.append(f"{TRUST_REMOTE_CODE_CONFIG_KEY} is not true")
    if revision is None:
        problems.append(f"{REVISION_CONFIG_KEY} is not set")
    elif not _COMMIT.match(revision):
        problems.append(
            f"{REVISION_CONFIG_KEY} {revision!r} is not a full 40-character commit hash (branches and tags can move)"
        )
    if problems:
        raise EncoderConfigError(remote_code_help(spec, problems))


def slide_weights_help(spec: SlideEncoderSpec, reason: str) -> str:
    """The same message for a slide or patient model (its own key; remote code also names the pin)."""
    if spec.weights is None:
        return f"{spec.level.capitalize()} encoder {spec.name!r}: {reason}."
    pin = f" --revision {spec.weights.revision or '<commit>'}" if spec.trust_remote_code else ""
    remote = (
        f"\nIt runs the repository's own code: also set {TRUST_REMOTE_CODE_CONFIG_KEY}: true and "
        f"{REVISION_CONFIG_KEY}: <the same commit>."
        if spec.trust_remote_code
        else ""
    )
    what = f"{spec.level} encoder {spec.name!r}"
    return _download_help(what, spec.name, spec.weights, reason, SLIDE_WEIGHTS_CONFIG_KEY, pin) + remote


def _download_help(what: str, name: str, source: Any, reason: str, config_key: str, pin: str = "") -> str:
    local = f"/models/{name}"
    files = f" {source.filename}" if source.filename else ""
    target = f"{local}/{source.filename}" if source.filename else local
    gated = (
        f" The repository is gated: first accept its licence ({source.license}) on {source.url} with the "
        "Hugging Face account you log in with."
        if source.gated
        else f" Licence: {source.license}."
    )
    return (
        f"Weights for {what} are not available: {reason}.\n"
        f"They are published in the Hugging Face repository {source.repo_id!r} ({source.url}).{gated}\n"
        "Download them once on a machine with internet access:\n"
        "    hf auth login\n"
        f"    hf download {source.repo_id}{files}{pin} --local-dir {local}\n"
        f"(huggingface_hub < 1.0 names the CLI huggingface-cli: huggingface-cli login; "
        f"huggingface-cli download {source.repo_id}{files}{pin} --local-dir {local}),\n"
        f"then point the pipeline at that copy with the config key\n"
        f"    {config_key}: {target}\n"
        "(or pre-fill the Hugging Face cache (HF_HOME / HF_HUB_CACHE) and run with HF_HUB_OFFLINE=1)."
    )


def remote_code_help(spec: SlideEncoderSpec, problems: Sequence[str]) -> str:
    """Why a remote-code preset refused to load, and the two keys that allow it."""
    assert spec.weights is not None
    repo = spec.weights.repo_id
    tested = f"  # slide2vec 7.1.4 uses {spec.weights.revision}" if spec.weights.revision else ""
    return (
        f"Slide encoder {spec.name!r} runs Python code from its Hugging Face repository {repo!r} (transformers "
        "trust_remote_code=True): that code executes inside this pipeline with its permissions, and the hub "
        "serves whatever the repository holds today. It is therefore loaded only when the config opts in "
        "explicitly and pins the commit the code and weights come from. Set both keys:\n"
        f"    {TRUST_REMOTE_CODE_CONFIG_KEY}: true\n"
        f"    {REVISION_CONFIG_KEY}: <40-character commit of {repo}>{tested}\n"
        f"after reviewing the code at {spec.weights.url}/tree/<commit>. Not accepted now: {'; '.join(problems)}."
    )


def require_slide(spec: SlideEncoderSpec) -> None:
    missing = spec.missing_requirements()
    if not missing:
        return
    build = spec.build
    hint = getattr(build, "install_hint", None) or f"pip install {' '.join(missing)}"
    raise EncoderDependencyError(
        f"{spec.level.capitalize()} encoder {spec.name!r} needs the Python package(s) {', '.join(missing)}, which "
        f"are not installed in this environment ({hint}). The weight-free 'mean-pool' baselines need nothing."
    )


def raise_slide_unavailable(spec: SlideEncoderSpec) -> NoReturn:
    build = spec.build
    if isinstance(build, ExternalBuild):
        raise EncoderDependencyError(
            f"{spec.level.capitalize()} encoder {spec.name!r} cannot be run by this platform: {build.reason}. "
            f"Its official code: {build.install_hint}."
        )
    raise EncoderDependencyError(f"{spec.name!r}: unsupported build {type(build).__name__}")


def check_local_revision(spec: SlideEncoderSpec, path: Path, revision: str) -> None:
    """``hf download --local-dir`` records the commit of each file; refuse a copy of another commit."""
    metadata = path / ".cache" / "huggingface" / "download" / "config.json.metadata"
    if not metadata.is_file():
        return
    recorded = metadata.read_text().split("\n", 1)[0].strip()
    if recorded and recorded != revision:
        raise EncoderConfigError(
            f"{path} is a copy of {spec.weights.repo_id if spec.weights else spec.name} at commit {recorded}, but "
            f"{REVISION_CONFIG_KEY} pins {revision}: download that commit or pin the one you reviewed"
        )
