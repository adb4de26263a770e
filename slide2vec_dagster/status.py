"""Status at a glance: per pipeline and asset, how many registered partitions are done, missing, stale
and failed, and the failed ones with their error (no Dagster here).

Which partitions exist and which are materialised or failed comes from the Dagster instance, through a
``PartitionLookup``; errors come from ``process_list.csv`` (the slide's ``<Type>: <message>``) or, for
partitions without a failed row (patients), from the instance. Whether a materialised partition is
stale is asked of a ``StalenessCheck``: ``FileStaleness`` compares the inputs fingerprints the sidecars
recorded with the ones the current config and slide files give; Dagster's own staleness can replace it
without touching the rest.

Counting rules, per (asset, partition):

- failed: the latest attempt failed (a later success clears it);
- done / stale: materialised, and its files are current / not current;
- missing: never materialised, or materialised but its files are gone since.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from slide2vec_dagster.artifacts import process_list
from slide2vec_dagster.config import PlatformConfig
from slide2vec_dagster.layout import (
    EMBEDDING_KINDS,
    LATENTS_KIND,
    PATIENT_KIND,
    PREVIEW_ARTIFACTS,
    SLIDE_KIND,
    OutputLayout,
)
from slide2vec_dagster.manifest import SlideEntry

TILING_ASSETS = ("coordinates", *PREVIEW_ARTIFACTS)
LISTED_STALE = 10  # stale partitions listed per asset (all are counted)


# ------------------------------------------------------------------------------------- lookups


@dataclass(frozen=True)
class PartitionStates:
    materialized: set[str]
    failed: set[str]
    in_progress: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class FailureInfo:
    run_id: str | None
    error: str
    timestamp: float | None = None


class PartitionLookup(Protocol):
    def registered(self, partitions: str) -> list[str]:
        """The registered keys of a dynamic partitions definition (``sample_id`` / ``patient_id``)."""
        ...

    def partition_states(self, asset_key: Sequence[str], partitions: str) -> PartitionStates: ...

    def failure(self, asset_key: Sequence[str], partition: str) -> FailureInfo | None: ...


@dataclass(frozen=True)
class Verdict:
    """A materialised partition's files: ``done`` (current), ``stale`` (made from other inputs than the
    current ones), ``gone`` (its files are missing) or ``unchecked`` (nothing to compare with)."""

    state: str
    reason: str = ""


class StalenessCheck(Protocol):
    def __call__(self, pipeline: str, asset: str, partition: str) -> Verdict: ...


# ------------------------------------------------------------------------------------- the answer


@dataclass
class FailedPartition:
    partition: str
    error: str
    run_id: str | None
    source: str  # process_list.csv or the instance


@dataclass
class AssetStatus:
    asset: str
    partitions: str  # sample_id / patient_id
    registered: int
    done: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    stale: dict[str, str] = field(default_factory=dict)  # partition -> why
    failed: list[FailedPartition] = field(default_factory=list)
    running: list[str] = field(default_factory=list)  # also counted by their last completed state
    gone: dict[str, str] = field(default_factory=dict)  # materialised, files gone since (counted missing)
    unchecked: dict[str, str] = field(default_factory=dict)  # counted done: nothing to compare with


@dataclass
class PipelineStatus:
    pipeline: str
    output_dir: str
    assets: list[AssetStatus]
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _error_of(
    lookup: PartitionLookup, key: list[str], partition: str, row: dict[str, str] | None
) -> tuple[str, str | None, str]:
    if row is not None and row.get("status") == "failed" and row.get("error"):
        return row["error"], row.get("run_id") or None, "process_list.csv"
    info = lookup.failure(key, partition)
    if info is None:
        return "failed (no error recorded)", None, "the instance"
    return info.error, info.run_id, "the instance"


def pipeline_status(
    pipeline: str,
    output_dir: Path,
    assets: Sequence[tuple[str, str]],
    lookup: PartitionLookup,
    staleness: StalenessCheck,
) -> PipelineStatus:
    """The status of every registered partition of ``assets`` (``(asset name, partitions name)``)."""
    layout = OutputLayout(output_dir)
    rows_file = process_list.read(layout.process_list)
    rows = rows_file.rows
    registered = {name: lookup.registered(name) for name in dict.fromkeys(p for _, p in assets)}
    result = PipelineStatus(pipeline, str(layout.output_dir), [])
    failed_samples: set[str] = set()
    for asset, partitions in assets:
        keys = registered[partitions]
        status = AssetStatus(asset, partitions, len(keys))
        states = lookup.partition_states([pipeline, asset], partitions)
        for partition in keys:
            if partition in states.in_progress:
                status.running.append(partition)
            if partition in states.failed:
                row = rows.get(partition) if partitions == "sample_id" else None
                error, run_id, source = _error_of(lookup, [pipeline, asset], partition, row)
                status.failed.append(FailedPartition(partition, error, run_id, source))
                failed_samples.add(partition)
            elif partition in states.materialized:
                verdict = staleness(pipeline, asset, partition)
                if verdict.state == "stale":
                    status.stale[partition] = verdict.reason
                elif verdict.state == "gone":
                    status.gone[partition] = verdict.reason
                    status.missing.append(partition)
                else:
                    status.done.append(partition)
                    if verdict.state == "unchecked":
                        status.unchecked[partition] = verdict.reason
            else:
                status.missing.append(partition)
        result.assets.append(status)
    if rows_file.problems:
        result.notes.append(f"{layout.process_list} is damaged: {'; '.join(rows_file.problems)}")
    sample_keys = set(registered.get("sample_id", ()))
    unseen = sorted(sid for sid, row in rows.items() if row["status"] == "failed" and sid not in failed_samples)
    unseen = [sid for sid in unseen if sid in sample_keys or not sample_keys]
    if unseen:
        result.notes.append(
            f"process_list.csv marks {len(unseen)} slide(s) failed that the instance does not show as failed "
            f"(run under another DAGSTER_HOME, or succeeded since in a run that did not update the row): "
            + ", ".join(f"{sid} ({rows[sid]['error']})" for sid in unseen)
        )
    return result


# ------------------------------------------------------------------------------------- staleness


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class FileStaleness:
    """Staleness from the files: a sidecar's recorded inputs fingerprint against the one the current
    config and slide (or upstream sidecar) give. Cheap while a slide's stat key is unchanged (the
    fingerprint reuses the recorded hash); a slide whose stat changed is read once."""

    def __init__(self, config: PlatformConfig, slides: Mapping[str, SlideEntry]) -> None:
        self.config = config
        self.slides = slides
        self._coordinates: dict[tuple[str, str], tuple[Verdict, dict[str, Any] | None]] = {}

    def __call__(self, pipeline: str, asset: str, partition: str) -> Verdict:
        layout = OutputLayout(self.config.output_dir(pipeline))
        if asset in TILING_ASSETS:
            verdict, _ = self.coordinates(pipeline, partition)
            if asset in PREVIEW_ARTIFACTS and verdict.state != "gone" and not layout.preview(asset, partition).exists():
                return Verdict("gone", f"{layout.preview(asset, partition)} is missing")
            return verdict
        if asset in EMBEDDING_KINDS:
            return self._tile_embeddings(pipeline, asset, partition, layout)
        if asset in (SLIDE_KIND, LATENTS_KIND):
            verdict = self._slide_embedding(pipeline, partition, layout)
            if asset == LATENTS_KIND and verdict.state != "gone":
                fmt = self.config.pipelines[pipeline].output_format
                if not layout.slide_latents(partition, fmt).exists():
                    return Verdict("gone", f"{layout.slide_latents(partition, fmt)} is missing")
            return verdict
        if asset == PATIENT_KIND:
            return self._patient(pipeline, partition, layout)
        return Verdict("unchecked", f"no staleness rule for asset {asset!r}")

    def coordinates(self, pipeline: str, sample_id: str) -> tuple[Verdict, dict[str, Any] | None]:
        """(verdict, the coordinates sidecar) of one slide; computed once per status."""
        key = (pipeline, sample_id)
        if key not in self._coordinates:
            self._coordinates[key] = self._check_coordinates(pipeline, sample_id)
        return self._coordinates[key]

    def _check_coordinates(self, pipeline: str, sample_id: str) -> tuple[Verdict, dict[str, Any] | None]:
        # One rule for what is stale, shared with the backfill schedule (staleness.py): what status
        # calls stale is exactly what the schedule will run again.
        from slide2vec_dagster.coordinates_source import reused_coordinates
        from slide2vec_dagster.staleness import tiling_staleness

        pipeline_config = self.config.pipelines[pipeline]
        layout = OutputLayout(self.config.output_dir(pipeline))
        if pipeline_config.reuse_dir is not None:
            try:
                return Verdict("done"), reused_coordinates(pipeline_config, sample_id).meta
            except (OSError, ValueError) as exc:
                return Verdict("gone", f"its reused coordinates cannot be read ({type(exc).__name__}: {exc})"), None
        meta_path, npz = layout.coordinates_meta(sample_id), layout.coordinates_npz(sample_id)
        meta = _read_json(meta_path)
        if meta is None:
            return Verdict("gone", f"{meta_path} is missing or unreadable"), None
        if not npz.exists() and (meta.get("tiling") or {}).get("n_tiles") != 0:
            return Verdict("gone", f"{npz} is missing"), meta
        entry = self.slides.get(sample_id)
        if entry is None:
            return Verdict("unchecked", "its manifest row is gone: no current inputs to compare with"), meta
        if entry.problem:
            return Verdict("unchecked", f"its manifest row cannot be used ({entry.problem})"), meta
        reason = tiling_staleness(entry, pipeline_config, layout)
        if reason is None:
            return Verdict("done"), meta
        state, _, why = reason.partition(": ")
        return Verdict("gone" if state == "missing" else "stale", why), meta

    def _upstream_stale(self, pipeline: str, sample_id: str) -> Verdict | None:
        verdict, _ = self.coordinates(pipeline, sample_id)
        if verdict.state == "stale":
            return Verdict("stale", f"its coordinates are stale ({verdict.reason})")
        return None

    def _tile_embeddings(self, pipeline: str, kind: str, sample_id: str, layout: OutputLayout) -> Verdict:
        from slide2vec_dagster.staleness import tile_embedding_staleness

        return self._slide_payload(pipeline, kind, sample_id, layout, tile_embedding_staleness)

    def _slide_embedding(self, pipeline: str, sample_id: str, layout: OutputLayout) -> Verdict:
        from slide2vec_dagster.staleness import slide_embedding_staleness

        return self._slide_payload(pipeline, SLIDE_KIND, sample_id, layout, slide_embedding_staleness)

    def _slide_payload(
        self,
        pipeline: str,
        kind: str,
        sample_id: str,
        layout: OutputLayout,
        staleness: Callable[[str, Any, OutputLayout, dict[str, Any]], str | None],
    ) -> Verdict:
        """A slide's payload made from its coordinates, judged by the schedule's own rule (staleness.py) so
        that what status calls stale is what the schedule runs again; and stale when its coordinates are."""
        _, gone = _paired_payload(kind, sample_id, layout)
        if gone is not None:
            return gone
        _, coords_meta = self.coordinates(pipeline, sample_id)
        if coords_meta is None:
            return Verdict("stale", "its coordinates are gone")
        reason = staleness(sample_id, self.config.pipelines[pipeline], layout, coords_meta)
        if reason is not None:
            state, _, why = reason.partition(": ")
            return Verdict("gone" if state == "missing" else "stale", why)
        return self._upstream_stale(pipeline, sample_id) or Verdict("done")

    def _patient(self, pipeline: str, patient_id: str, layout: OutputLayout) -> Verdict:
        from slide2vec_dagster.slide_level import patient_inputs

        meta, gone = _paired_payload(PATIENT_KIND, patient_id, layout)
        if gone is not None:
            return gone
        members = [entry for entry in self.slides.values() if entry.patient_id == patient_id]
        if not members:
            return Verdict("unchecked", "no manifest row names this patient any more")
        rows = process_list.read_rows(layout.process_list)
        current = patient_inputs(patient_id, members, self.config.pipelines[pipeline], layout, rows)
        if (meta.get("provenance") or {}).get("inputs_key") != current.key:
            return Verdict("stale", "its slides (or their embeddings) changed, or slides were added or removed")
        for sample_id in current.included:
            upstream = self._upstream_stale(pipeline, sample_id)
            if upstream is not None:
                return Verdict("stale", f"slide {sample_id}: {upstream.reason}")
        return Verdict("done")


def _paired_payload(kind: str, partition: str, layout: OutputLayout) -> tuple[dict[str, Any], Verdict | None]:
    """The sidecar of a partition's payload, or why the pair is gone."""
    meta = _read_json(layout.embedding_meta(kind, partition))
    if meta is None:
        return {}, Verdict("gone", f"{layout.embedding_meta(kind, partition)} is missing or unreadable")
    payload = layout.embedding_payload(kind, partition, str(meta.get("format", "pt")))
    if not payload.exists():
        return meta, Verdict("gone", f"{payload} is missing")
    return meta, None


# ------------------------------------------------------------------------------------- text

COLUMNS = ("done", "missing", "stale", "failed")


def format_status(statuses: Sequence[PipelineStatus]) -> str:
    lines: list[str] = []
    for status in statuses:
        lines.append(f"pipeline {status.pipeline}  ({status.output_dir})")
        width = max([len("asset")] + [len(a.asset) for a in status.assets])
        lines.append(f"  {'asset':{width}}  {'partitions':10}  " + "  ".join(f"{c:>7}" for c in COLUMNS))
        for asset in status.assets:
            counts = (len(asset.done), len(asset.missing), len(asset.stale), len(asset.failed))
            lines.append(f"  {asset.asset:{width}}  {asset.partitions:10}  " + "  ".join(f"{n:>7}" for n in counts))
        failed = [(a, f) for a in status.assets for f in a.failed]
        if failed:
            lines.append("  failed:")
            for asset, item in failed:
                run = f"run {item.run_id[:8]}" if item.run_id else "no run recorded"
                lines.append(
                    f"    {status.pipeline}/{asset.asset} {asset.partitions}={item.partition} ({run}): {item.error}"
                )
        stale = [(a, p, why) for a in status.assets for p, why in a.stale.items()]
        if stale:
            lines.append("  stale:")
            for asset in status.assets:
                items = list(asset.stale.items())
                for partition, why in items[:LISTED_STALE]:
                    lines.append(f"    {status.pipeline}/{asset.asset} {asset.partitions}={partition}: {why}")
                if len(items) > LISTED_STALE:
                    lines.append(f"    {status.pipeline}/{asset.asset}: ... and {len(items) - LISTED_STALE} more")
        gone = sum(len(a.gone) for a in status.assets)
        if gone:
            lines.append(f"  {gone} materialised partition(s) counted missing because their files are gone since:")
            for asset in status.assets:
                for partition, why in list(asset.gone.items())[:LISTED_STALE]:
                    lines.append(f"    {status.pipeline}/{asset.asset} {asset.partitions}={partition}: {why}")
        running = sorted({p for a in status.assets for p in a.running})
        if running:
            lines.append(f"  running now (counted by their last completed state): {', '.join(running)}")
        unchecked = sum(len(a.unchecked) for a in status.assets)
        if unchecked:
            lines.append(f"  {unchecked} done partition(s) could not be checked for staleness (no manifest row)")
        for note in status.notes:
            lines.append(f"  note: {note}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
