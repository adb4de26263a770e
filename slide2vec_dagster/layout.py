"""The ONE module that knows where artifacts live under a pipeline's ``output_dir`` (ARTIFACTS.md s1).

Nothing else in the code base joins artifact path components; everything asks this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from slide2vec_dagster.artifacts.atomic import TEMP_NAME_OVERHEAD

UNSAFE_ID_CHARS = ("/", "\\", "\x00")
# Tile-level kinds (one row per tile or region); slide and patient embeddings are one vector each.
EMBEDDING_KINDS = ("tile_embeddings", "hierarchical_embeddings")
SLIDE_KIND = "slide_embeddings"
LATENTS_KIND = "slide_latents"  # payloads only: the slide embedding's sidecar describes them
PATIENT_KIND = "patient_embeddings"
SAMPLE_KINDS = (*EMBEDDING_KINDS, SLIDE_KIND)
PREVIEW_ARTIFACTS = ("mask_preview", "tiling_preview")
PAYLOAD_FORMATS = ("pt", "npz")
# The longest name an id gets: "<id>.coordinates.meta.json", written through a temporary sibling.
LONGEST_SUFFIX = ".coordinates.meta.json"
NAME_MAX = 255  # bytes, ext4 / xfs / NFS
CONFIG_HISTORY = "config_history"
MAX_ID_BYTES = NAME_MAX - len(LONGEST_SUFFIX) - TEMP_NAME_OVERHEAD


def id_problem(value: str) -> str | None:
    """Why ``value`` cannot be a file stem (sample_id, patient_id, class name), or None if it can."""
    if value == "":
        return "it is empty"
    if len(value.encode("utf-8")) > MAX_ID_BYTES:
        return (
            f"it is {len(value.encode('utf-8'))} bytes long; ids are limited to {MAX_ID_BYTES} bytes so that "
            f"'<id>{LONGEST_SUFFIX}' and its temporary twin fit a file name ({NAME_MAX} bytes)"
        )
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
    if kind not in (*SAMPLE_KINDS, PATIENT_KIND):
        raise ValueError(f"unknown embedding kind {kind!r}; expected one of {(*SAMPLE_KINDS, PATIENT_KIND)}")


def _check_format(output_format: str) -> None:
    if output_format not in PAYLOAD_FORMATS:
        raise ValueError(f"output_format must be pt or npz, got {output_format!r}")


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

    @property
    def config_history_dir(self) -> Path:
        """``config_history/``: every resolved config the pipeline has written under, by hash."""
        return self.output_dir / CONFIG_HISTORY

    def config_version(self, config_hash: str) -> Path:
        return self.config_history_dir / f"{_checked(config_hash)}.yaml"

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
        """``<kind>/<id>.pt|.npz`` for a tile, hierarchical, slide or patient (id = patient_id) kind."""
        _check_kind(kind)
        _check_format(output_format)
        return self.output_dir / kind / f"{_checked(sample_id)}.{output_format}"

    def slide_latents(self, sample_id: str, output_format: str) -> Path:
        """``slide_latents/<id>.pt|.npz``: no sidecar (the slide embedding's sidecar describes them)."""
        _check_format(output_format)
        return self.output_dir / LATENTS_KIND / f"{_checked(sample_id)}.{output_format}"

    def embedding_meta(self, kind: str, sample_id: str) -> Path:
        _check_kind(kind)
        return self.output_dir / kind / f"{_checked(sample_id)}.meta.json"

    def slide_artifacts(self, sample_id: str) -> list[tuple[Path, Path | None]]:
        """Every (payload, sidecar) pair one slide can have in this output_dir, both payload formats;
        previews have no sidecar. What a slide's run cleans up and withdraws."""
        pairs: list[tuple[Path, Path | None]] = [
            (self.coordinates_npz(sample_id), self.coordinates_meta(sample_id)),
            (self.mask_preview(sample_id), None),
            (self.tiling_preview(sample_id), None),
        ]
        for kind in SAMPLE_KINDS:
            meta = self.embedding_meta(kind, sample_id)
            pairs += [(self.embedding_payload(kind, sample_id, fmt), meta) for fmt in PAYLOAD_FORMATS]
        pairs += [(self.slide_latents(sample_id, fmt), None) for fmt in PAYLOAD_FORMATS]
        return pairs

    def patient_artifacts(self, patient_id: str) -> list[tuple[Path, Path | None]]:
        meta = self.embedding_meta(PATIENT_KIND, patient_id)
        return [(self.embedding_payload(PATIENT_KIND, patient_id, fmt), meta) for fmt in PAYLOAD_FORMATS]

    def tiled_sample_ids(self) -> list[str]:
        """The ids that have a coordinates sidecar in tiles/ (for rebuilding a lost process list)."""
        suffix = ".coordinates.meta.json"
        folder = self.output_dir / "tiles"
        if not folder.is_dir():
            return []
        return sorted(p.name[: -len(suffix)] for p in folder.glob(f"*{suffix}") if not p.name.startswith("."))

    def lock_file(self, partition: str, dimension: str = "sample_id") -> Path:
        """``.locks/<dimension>/<id>.lock``: held while a slide's (or patient's) step runs, writes included,
        so two workers never write the same partition at once (a redelivered task waits, then finds the
        outputs current)."""
        return self.output_dir / ".locks" / _checked(dimension) / f"{_checked(partition)}.lock"

    def shared_files(self) -> list[Path]:
        """The files every run of this output_dir updates."""
        return [self.process_list, self.config_yaml]
