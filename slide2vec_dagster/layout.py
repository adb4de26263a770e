"""The ONE module that knows where artifacts live under a pipeline's ``output_dir`` (ARTIFACTS.md s1).

Nothing else in the code base joins artifact path components; everything asks this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

UNSAFE_ID_CHARS = ("/", "\\", "\x00")
EMBEDDING_KINDS = ("tile_embeddings", "hierarchical_embeddings")
PREVIEW_ARTIFACTS = ("mask_preview", "tiling_preview")


def id_problem(value: str) -> str | None:
    """Why ``value`` cannot be a file stem (sample_id, patient_id, class name), or None if it can."""
    if value == "":
        return "it is empty"
    if value in {".", ".."}:
        return f"{value!r} is a relative path component"
    if any(ch in value for ch in UNSAFE_ID_CHARS):
        return "it contains '/', '\\' or NUL"
    if value != value.strip():
        return "it has leading or trailing whitespace"
    return None


def _checked(identifier: str) -> str:
    problem = id_problem(identifier)
    if problem:
        raise ValueError(f"{identifier!r} cannot be used as a file name: {problem}")
    return identifier


def _check_kind(kind: str) -> None:
    if kind not in EMBEDDING_KINDS:
        raise ValueError(f"unknown embedding kind {kind!r}; expected one of {EMBEDDING_KINDS}")


@dataclass(frozen=True)
class OutputLayout:
    """Paths of every artifact of one pipeline's output directory."""

    output_dir: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "output_dir", Path(self.output_dir).absolute())

    # Directory-level files
    @property
    def process_list(self) -> Path:
        return self.output_dir / "process_list.csv"

    @property
    def config_yaml(self) -> Path:
        return self.output_dir / "config.yaml"

    # Per-slide artifacts
    def coordinates_npz(self, sample_id: str) -> Path:
        return self.output_dir / "tiles" / f"{_checked(sample_id)}.coordinates.npz"

    def coordinates_meta(self, sample_id: str) -> Path:
        return self.output_dir / "tiles" / f"{_checked(sample_id)}.coordinates.meta.json"

    def mask_preview(self, sample_id: str) -> Path:
        return self.output_dir / "preview" / "mask" / f"{_checked(sample_id)}.png"

    def tiling_preview(self, sample_id: str) -> Path:
        return self.output_dir / "preview" / "tiling" / f"{_checked(sample_id)}.png"

    def preview(self, artifact: str, sample_id: str) -> Path:
        """``mask_preview`` or ``tiling_preview``, by the asset name."""
        if artifact not in PREVIEW_ARTIFACTS:
            raise ValueError(f"unknown preview {artifact!r}; expected one of {PREVIEW_ARTIFACTS}")
        return self.mask_preview(sample_id) if artifact == "mask_preview" else self.tiling_preview(sample_id)

    def embedding_payload(self, kind: str, sample_id: str, output_format: str) -> Path:
        """``<kind>/<id>.pt|.npz`` for kind ``tile_embeddings`` or ``hierarchical_embeddings``."""
        _check_kind(kind)
        if output_format not in ("pt", "npz"):
            raise ValueError(f"output_format must be pt or npz, got {output_format!r}")
        return self.output_dir / kind / f"{_checked(sample_id)}.{output_format}"

    def embedding_meta(self, kind: str, sample_id: str) -> Path:
        _check_kind(kind)
        return self.output_dir / kind / f"{_checked(sample_id)}.meta.json"
