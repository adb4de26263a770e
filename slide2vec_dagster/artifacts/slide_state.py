"""What a slide's run does around its writes so that an output_dir only ever holds complete artifacts.

- ``begin_slide``: before writing, remove the temporary files killed writers left for this slide (and
  for the shared ``process_list.csv`` / ``config.yaml``) and withdraw incomplete pairs (a payload
  whose sidecar is missing, a sidecar whose payload is missing).
- ``record_failure``: the slide's ``failed`` row (``<ExceptionType>: <message>``, no stale columns), and,
  when the failure happened while artifacts were being written, the withdrawal of what that step had
  started to replace, so no file describes or depends on a half-finished state.

Files of a previous success that the failed run never touched stay: they are complete pairs whose own
sidecars say what they were made from.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

from slide2vec_dagster.artifacts import atomic, process_list
from slide2vec_dagster.layout import (
    EMBEDDING_KINDS,
    LATENTS_KIND,
    PATIENT_KIND,
    PAYLOAD_FORMATS,
    SAMPLE_KINDS,
    SLIDE_KIND,
    OutputLayout,
)

logger = logging.getLogger(__name__)


def withdraw_incomplete(layout: OutputLayout, sample_id: str) -> list[Path]:
    """Remove payloads without their sidecar and sidecars without any payload, for one slide."""
    removed: list[Path] = []
    by_sidecar: dict[Path, list[Path]] = {}
    for payload, sidecar in layout.slide_artifacts(sample_id):
        if sidecar is not None:
            by_sidecar.setdefault(sidecar, []).append(payload)
    for sidecar, payloads in by_sidecar.items():
        present = [p for p in payloads if p.exists()]
        if not sidecar.exists():
            removed += atomic.remove(*present)
        elif not present:
            removed += atomic.remove(sidecar)
    return removed


def begin_slide(layout: OutputLayout, sample_id: str) -> list[Path]:
    """Clean this slide's debris before its run writes anything; returns what was removed."""
    targets = [path for pair in layout.slide_artifacts(sample_id) for path in pair if path is not None]
    removed = atomic.sweep_debris_of(targets + layout.shared_files())
    removed += withdraw_incomplete(layout, sample_id)
    if removed:
        logger.info("%s: removed %d leftover file(s) of interrupted runs: %s", sample_id, len(removed), removed)
    return removed


def tiling_files(layout: OutputLayout, sample_id: str) -> list[Path]:
    return [layout.coordinates_npz(sample_id), layout.coordinates_meta(sample_id)] + [
        layout.preview(name, sample_id) for name in ("mask_preview", "tiling_preview")
    ]


def embedding_files(layout: OutputLayout, kind: str, sample_id: str) -> list[Path]:
    return [layout.embedding_payload(kind, sample_id, fmt) for fmt in PAYLOAD_FORMATS] + [
        layout.embedding_meta(kind, sample_id)
    ]


def withdraw(paths: Iterable[Path]) -> list[Path]:
    """Remove an artifact's files, sidecars first so no sidecar outlives its payload even for a moment."""
    ordered = sorted(paths, key=lambda p: not p.name.endswith(".json"))
    return atomic.remove(*ordered)


def downstream_of_tiling(layout: OutputLayout, sample_id: str) -> list[Path]:
    """Everything computed from a slide's coordinates: it cannot outlive them."""
    return [path for kind in SAMPLE_KINDS for path in embedding_files(layout, kind, sample_id)] + latents_files(
        layout, sample_id
    )


def latents_files(layout: OutputLayout, sample_id: str) -> list[Path]:
    return [layout.slide_latents(sample_id, fmt) for fmt in PAYLOAD_FORMATS]


def patient_files(layout: OutputLayout, patient_id: str) -> list[Path]:
    return [path for pair in layout.patient_artifacts(patient_id) for path in pair if path is not None]


def begin_patient(layout: OutputLayout, patient_id: str) -> list[Path]:
    """Clean a patient's debris (killed writes, a payload without its sidecar) before its run writes."""
    files = patient_files(layout, patient_id)
    removed = atomic.sweep_debris_of(files)
    sidecar = layout.embedding_meta(PATIENT_KIND, patient_id)
    payloads = [path for path in files if path != sidecar and path.exists()]
    if not sidecar.exists():
        removed += atomic.remove(*payloads)
    elif not payloads:
        removed += atomic.remove(sidecar)
    return removed


def slide_level_files(layout: OutputLayout, sample_id: str) -> list[Path]:
    """A slide embedding and its latents: withdrawn together."""
    return embedding_files(layout, SLIDE_KIND, sample_id) + latents_files(layout, sample_id)


def failed_step_files(layout: OutputLayout, artifact: str, sample_id: str) -> list[Path]:
    """What a slide's step withdraws when it fails after writing ``artifact`` (its files may be half replaced
    or wrong): those files and everything computed from them, so that the failed row is the whole truth."""
    if artifact in EMBEDDING_KINDS:
        return embedding_files(layout, artifact, sample_id) + slide_level_files(layout, sample_id)
    if artifact in (SLIDE_KIND, LATENTS_KIND):
        return slide_level_files(layout, sample_id)
    return tiling_files(layout, sample_id) + downstream_of_tiling(layout, sample_id)


def record_failure(
    layout: OutputLayout,
    sample_id: str,
    error: str,
    *,
    run_id: str | None,
    image_path: str | Path | None = None,
    keep: tuple[str, ...] = (),
    withdraw_files: Iterable[Path] = (),
) -> list[str]:
    """Write the slide's ``failed`` row (``error`` is ``<ExceptionType>: <message>``, see
    ``process_list.format_error``) and withdraw ``withdraw_files``.

    Returns what went wrong while recording: a process list that cannot be written is reported, never
    raised over the slide's own error.
    """
    notes: list[str] = []
    try:
        removed = withdraw(withdraw_files)
        if removed:
            notes.append(f"withdrew {len(removed)} file(s) the failed step had started to replace")
    except OSError as cleanup_error:
        notes.append(f"could not withdraw partial files: {process_list.format_error(cleanup_error)}")
    try:
        notes += process_list.update(
            layout.process_list,
            sample_id,
            "failed",
            error,
            keep=keep,
            recover=lambda: rows_from_artifacts(layout),
            image_path=str(image_path) if image_path else "",
            run_id=run_id or "",
        )
    except Exception as row_error:  # the slide's own error must reach the user even so
        why = process_list.format_error(row_error)
        notes.append(f"could not record the failed row in {layout.process_list}: {why}")
    return notes


def rows_from_artifacts(layout: OutputLayout) -> dict[str, dict[str, str]]:
    """``process_list.csv`` rows describing the complete artifacts on disk: what a lost or damaged
    process list is rebuilt from (the sidecars say what each file is and which run wrote it)."""
    rows: dict[str, dict[str, str]] = {}
    for sample_id in layout.tiled_sample_ids():
        try:
            meta = json.loads(layout.coordinates_meta(sample_id).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        row = {
            "sample_id": sample_id,
            "status": "done",
            "num_tiles": str(meta.get("tiling", {}).get("n_tiles", "")),
            "image_path": str(meta.get("provenance", {}).get("image_path", "")),
            "coordinates_npz_path": str(layout.coordinates_npz(sample_id)),
            "run_id": str(meta.get("artifact", {}).get("run_id") or ""),
        }
        for name, column in (("mask_preview", "mask_preview_path"), ("tiling_preview", "tiling_preview_path")):
            if layout.preview(name, sample_id).exists():
                row[column] = str(layout.preview(name, sample_id))
        for kind in EMBEDDING_KINDS:
            try:
                embedding = json.loads(layout.embedding_meta(kind, sample_id).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            payload = layout.embedding_payload(kind, sample_id, str(embedding.get("format", "pt")))
            if payload.exists():
                row.update(encoder_name=str(embedding.get("encoder_name", "")), feature_path=str(payload))
        rows[sample_id] = {column: row.get(column, "") for column in process_list.COLUMNS}
    return rows
