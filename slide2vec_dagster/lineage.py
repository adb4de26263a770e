"""Where an artifact file came from, worked out from its path and the sidecars around it (no Dagster here).

``lineage_of(path, lookup)`` finds, from the path alone (``OutputLayout``'s conventions: which subfolder,
stem and suffix), the artifact, its output_dir, pipeline, asset key and partition; reads the sidecar that
describes it (a payload's ``.meta.json``; for previews, which have none, the coordinates sidecar and the
``process_list.csv`` row); and follows the recorded fingerprints upstream (tile embeddings <- coordinates
<- slide file; slide embedding <- tile embeddings or coordinates; patient <- its slides' embeddings), each
with the run that wrote it. ``lookup`` answers what only the Dagster instance knows: a run's status and
times, and its UI link.

A file the platform did not write (no sidecar, a sidecar without platform provenance, a path outside any
output layout) gives a ``Lineage`` with ``platform_file=False`` whose ``summary`` says so plainly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from slide2vec_dagster import fingerprint as fp
from slide2vec_dagster.artifacts import process_list
from slide2vec_dagster.artifacts.config_file import history_file, read_config_version, text_hash
from slide2vec_dagster.layout import (
    CONFIG_HISTORY,
    EMBEDDING_KINDS,
    LATENTS_KIND,
    PATIENT_KIND,
    PREVIEW_ARTIFACTS,
    SLIDE_KIND,
    OutputLayout,
)
from slide2vec_dagster.provenance import describe_code, describe_libraries, reader_versions, sidecar_section

TILE_KIND = EMBEDDING_KINDS[0]  # what slide models read (hierarchical pipelines have no slide level)
COORDINATES_SUFFIXES = ((".coordinates.npz", "payload"), (".coordinates.meta.json", "sidecar"))
META_SUFFIX = ".meta.json"


# ------------------------------------------------------------------------------------- run lookups


@dataclass(frozen=True)
class RunInfo:
    """What the Dagster instance knows about one run."""

    run_id: str
    status: str  # DagsterRunStatus value: SUCCESS, FAILURE, STARTED, CANCELED, ...
    start_time: float | None = None
    end_time: float | None = None
    job_name: str | None = None
    asset_keys: tuple[tuple[str, ...], ...] = ()  # the run's asset selection


class RunLookup(Protocol):
    def run(self, run_id: str) -> RunInfo | None: ...

    def ui_url(self, run_id: str) -> str: ...

    def describe(self) -> str:
        """Where runs are looked up, for "not in ..." messages ("" when nowhere)."""
        ...


class NoRuns:
    """A lookup that knows no runs (lineage from the files alone)."""

    def run(self, run_id: str) -> RunInfo | None:
        return None

    def ui_url(self, run_id: str) -> str:
        return ""

    def describe(self) -> str:
        return ""


# ------------------------------------------------------------------------------------- the answer


@dataclass
class RunRef:
    run_id: str
    found: bool
    status: str | None = None
    started: str | None = None  # ISO 8601, UTC
    ended: str | None = None
    url: str | None = None


@dataclass
class Source:
    """One file an artifact was made from, and whether it is still the one it was made from."""

    role: str  # coordinates, tile_embeddings, slide_embeddings, slide file, mask file
    path: str | None
    exists: bool
    current: bool | None  # still what the artifact was made from (None: nothing recorded to compare)
    detail: str
    run: RunRef | None = None
    fingerprint: dict[str, Any] | None = None  # slide and mask files: the full recorded record
    upstream: list[Source] = field(default_factory=list)


@dataclass
class ConfigRef:
    hash: str | None  # the sidecar's config_hash
    file: str | None  # config_history/<hash>.yaml
    found: bool
    problem: str | None
    current_hash: str | None  # config.yaml's, now
    resolved: dict[str, Any] | None = None
    settings_hashes: dict[str, Any] = field(default_factory=dict)  # tiling_config_hash and the like


@dataclass
class Lineage:
    path: str
    platform_file: bool
    summary: str  # what the file is, or plainly why the platform did not write it
    artifact: str | None = None
    role: str | None = None  # payload, sidecar, preview, latents, directory file
    output_dir: str | None = None
    pipeline: str | None = None
    pipeline_from: str | None = None  # how the pipeline name was found
    asset_key: list[str] | None = None
    partition: dict[str, str] | None = None
    sidecar: str | None = None  # the sidecar that describes the file
    run: RunRef | None = None
    code: dict[str, Any] | None = None
    libraries: dict[str, Any] | None = None
    reader: dict[str, Any] | None = None
    config: ConfigRef | None = None
    encoder: dict[str, Any] | None = None
    inputs: list[Source] = field(default_factory=list)  # slide (and mask) files, with fingerprints
    upstream: list[Source] = field(default_factory=list)
    process_list_row: dict[str, str] | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------- locating


@dataclass(frozen=True)
class Located:
    artifact: str  # coordinates, mask_preview, tiling_preview, <embedding kind>, slide_latents, ...
    role: str
    output_dir: Path
    key: str | None  # sample_id / patient_id (or the hash of a config_history file)


def _expected_path(layout: OutputLayout, found: Located, suffix: str) -> Path:
    key = found.key or ""
    if found.artifact == "coordinates":
        return layout.coordinates_npz(key) if found.role == "payload" else layout.coordinates_meta(key)
    if found.artifact in PREVIEW_ARTIFACTS:
        return layout.preview(found.artifact, key)
    if found.artifact == LATENTS_KIND:
        return layout.slide_latents(key, suffix.lstrip("."))
    if found.artifact in (*EMBEDDING_KINDS, SLIDE_KIND, PATIENT_KIND):
        if found.role == "sidecar":
            return layout.embedding_meta(found.artifact, key)
        return layout.embedding_payload(found.artifact, key, suffix.lstrip("."))
    if found.artifact == "process_list":
        return layout.process_list
    if found.artifact == "config":
        return layout.config_yaml
    return history_file(layout.config_yaml, key)


def locate(path: Path) -> Located | None:
    """The artifact ``path`` is by the output layout's conventions, or None. The guess is confirmed by
    asking ``OutputLayout`` for the same artifact's path: layout stays the one place paths are built."""
    name, parent = path.name, path.parent
    found: Located | None = None
    if parent.name == "tiles":
        for suffix, role in COORDINATES_SUFFIXES:
            if name.endswith(suffix) and len(name) > len(suffix):
                found = Located("coordinates", role, parent.parent, name[: -len(suffix)])
    elif parent.parent.name == "preview" and parent.name in ("mask", "tiling") and path.suffix == ".png":
        found = Located(f"{parent.name}_preview", "preview", parent.parent.parent, path.stem)
    elif parent.name in (*EMBEDDING_KINDS, SLIDE_KIND, PATIENT_KIND):
        if name.endswith(META_SUFFIX) and len(name) > len(META_SUFFIX):
            found = Located(parent.name, "sidecar", parent.parent, name[: -len(META_SUFFIX)])
        elif path.suffix in (".pt", ".npz"):
            found = Located(parent.name, "payload", parent.parent, path.stem)
    elif parent.name == LATENTS_KIND and path.suffix in (".pt", ".npz"):
        found = Located(LATENTS_KIND, "latents", parent.parent, path.stem)
    elif name == "process_list.csv":
        found = Located("process_list", "directory file", parent, None)
    elif name == "config.yaml":
        found = Located("config", "directory file", parent, None)
    elif parent.name == CONFIG_HISTORY and path.suffix == ".yaml":
        found = Located("config_version", "directory file", parent.parent, path.stem)
    if found is None:
        return None
    try:
        expected = _expected_path(OutputLayout(found.output_dir), found, path.suffix)
    except ValueError:  # an id layout refuses (unsafe characters, too long): not ours
        return None
    return found if expected == path else None


# ------------------------------------------------------------------------------------- helpers


def _read_json(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"{path} does not exist"
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"{path} is not readable JSON ({type(exc).__name__}: {exc})"
    if not isinstance(data, dict):
        return None, f"{path} is not a JSON object"
    return data, None


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


class _Tracer:
    """Builds one Lineage: holds the lookup, the layout and a run cache (upstreams share runs)."""

    def __init__(self, lookup: RunLookup, layout: OutputLayout) -> None:
        self.lookup = lookup
        self.layout = layout
        self._runs: dict[str, RunRef] = {}
        self._fingerprints: dict[str, dict[str, Any]] = {}
        self.run_infos: dict[str, RunInfo] = {}

    def run(self, run_id: Any) -> RunRef | None:
        if not run_id or not isinstance(run_id, str):
            return None
        if run_id not in self._runs:
            try:
                info = self.lookup.run(run_id)
            except Exception:  # a damaged instance must not hide what the files say
                info = None
            if info is None:
                self._runs[run_id] = RunRef(run_id, False, url=self.lookup.ui_url(run_id) or None)
            else:
                self.run_infos[run_id] = info
                self._runs[run_id] = RunRef(
                    run_id, True, info.status, _iso(info.start_time), _iso(info.end_time), self.lookup.ui_url(run_id)
                )
        return self._runs[run_id]

    def input_file(self, role: str, record: Any, recorded_path: Any) -> Source | None:
        """A slide or mask file against its recorded fingerprint."""
        if not record and not recorded_path:
            return None
        if not isinstance(record, dict) or not record.get("path"):
            return Source(role, str(recorded_path), Path(str(recorded_path)).exists(), None, "no fingerprint recorded")
        path = str(record["path"])
        if not Path(path).exists():
            return Source(role, path, False, False, "MISSING: the file is gone or was moved", fingerprint=record)
        try:
            # Once per file per trace: a patient's slides appear at the top and again under each upstream, and a
            # changed multi-GB slide is read in full.
            now = self._fingerprints.get(path) or self._fingerprints.setdefault(path, fp.fingerprint(path, record))
        except OSError as exc:
            return Source(role, path, True, False, f"UNREADABLE now ({exc})", fingerprint=record)
        if now["sha256"] == record.get("sha256"):
            return Source(role, path, True, True, "matches the recorded fingerprint", fingerprint=record)
        detail = f"CHANGED since: its sha256 is now {now['sha256']} (recorded {record.get('sha256')})"
        return Source(role, path, True, False, detail, fingerprint=record)

    def input_files(self, coords_meta: dict[str, Any] | None) -> list[Source]:
        if not coords_meta:
            return []
        artifact = coords_meta.get("artifact") or {}
        provenance = coords_meta.get("provenance") or {}
        found = [
            self.input_file("slide file", artifact.get("slide_fingerprint"), provenance.get("image_path")),
            self.input_file("mask file", artifact.get("mask_fingerprint"), provenance.get("mask_path")),
        ]
        return [source for source in found if source is not None]

    def coordinates(
        self, sample_id: str, made_from: Any, made_from_run: Any = None, downstream: dict[str, Any] | None = None
    ) -> Source:
        """The coordinates now on disk; ``made_from`` is the inputs fingerprint the downstream recorded."""
        npz, meta_path = self.layout.coordinates_npz(sample_id), self.layout.coordinates_meta(sample_id)
        recorded = (downstream or {}).get("coordinates_meta_path")
        if recorded and not meta_path.exists():
            # Coordinates reused from elsewhere (another run's folder) and not copied here: the downstream
            # sidecar recorded where they were read from.
            meta_path = Path(str(recorded))
            npz = Path(str((downstream or {}).get("coordinates_npz_path") or meta_path))
        meta, problem = _read_json(meta_path)
        if meta is None:
            return Source("coordinates", str(npz), npz.exists(), False, f"no sidecar to compare: {problem}")
        artifact = meta.get("artifact") or {}
        run_id = artifact.get("run_id")
        if "inputs_fingerprint" not in artifact:
            current, detail = None, "coordinates written by another tool (e.g. slide2vec), reused as they are"
        elif made_from is None:
            current, detail = None, "the slide's coordinates (nothing recorded to compare them with)"
        elif artifact.get("inputs_fingerprint") == made_from:
            current, detail = True, "the coordinates it was made from"
        else:
            current = False
            detail = (
                f"REWRITTEN since: the coordinates now on disk come from other inputs (inputs_fingerprint "
                f"{artifact.get('inputs_fingerprint')}; it was made from {made_from})"
            )
        if made_from_run and run_id and made_from_run != run_id:
            detail += f"; it was made from coordinates written by run {made_from_run}"
        return Source(
            "coordinates", str(npz), npz.exists(), current, detail, self.run(run_id), upstream=self.input_files(meta)
        )

    def tile_embeddings(self, sample_id: str, made_from_coordinates: Any) -> Source:
        return self._payload(
            TILE_KIND,
            sample_id,
            made_from_coordinates,
            "coordinates_inputs_fingerprint",
            (
                "the slide's tile embeddings",
                "tile embeddings of the same coordinates it was made from",
                "REWRITTEN since: the tile embeddings now on disk come from other coordinates",
            ),
            lambda meta, section: [
                self.coordinates(
                    sample_id, section.get("coordinates_inputs_fingerprint"), section.get("coordinates_run_id"), meta
                )
            ],
        )

    def slide_embedding(self, sample_id: str, made_from: Any) -> Source:
        return self._payload(
            SLIDE_KIND,
            sample_id,
            made_from,
            "inputs_fingerprint",
            (
                "the slide's embedding (nothing recorded to compare it with)",
                "the slide embedding it was made from",
                "REWRITTEN since: the slide embedding now on disk comes from other inputs",
            ),
            lambda _meta, section: self.slide_upstream(sample_id, section),
        )

    def _payload(
        self,
        kind: str,
        sample_id: str,
        made_from: Any,
        recorded_key: str,
        wording: tuple[str, str, str],
        upstream: Callable[[dict[str, Any], dict[str, Any]], list[Source]],
    ) -> Source:
        """A slide's payload as a source of what a downstream file was made from: current when its sidecar's
        ``recorded_key`` is the value the downstream recorded (``made_from``; None: nothing to compare)."""
        meta_path = self.layout.embedding_meta(kind, sample_id)
        meta, problem = _read_json(meta_path)
        if meta is None:
            return Source(kind, str(meta_path), False, False, f"no sidecar: {problem}")
        section = meta.get("provenance") or {}
        payload = self.layout.embedding_payload(kind, sample_id, str(meta.get("format", "pt")))
        unknown, same, rewritten = wording
        if made_from is None:
            current, detail = None, unknown
        elif section.get(recorded_key) == made_from:
            current, detail = True, same
        else:
            current, detail = False, rewritten
        return Source(
            kind, str(payload), payload.exists(), current, detail, self.run(section.get("run_id")), None,
            upstream(meta, section),
        )  # fmt: skip

    def slide_upstream(self, sample_id: str, section: dict[str, Any]) -> list[Source]:
        coordinates_inputs = section.get("coordinates_inputs_fingerprint")
        if section.get("tile_features") == f"{TILE_KIND}/":
            return [self.tile_embeddings(sample_id, coordinates_inputs)]
        return [self.coordinates(sample_id, coordinates_inputs, section.get("coordinates_run_id"))]


# ------------------------------------------------------------------------------------- lineage_of


def _not_ours(path: Path, why: str, **known: Any) -> Lineage:
    return Lineage(str(path), False, why, **known)


def _pipeline_of(
    located: Located, section: dict[str, Any], run: RunInfo | None, pipelines: Mapping[Path, str] | None
) -> tuple[str, str]:
    """(pipeline, how it was found): the sidecar's record, the platform config, the run's assets, or
    the output folder's name (pipeline P writes to <output_root>/P unless it sets output_dir)."""
    if section.get("pipeline"):
        return str(section["pipeline"]), "recorded in the sidecar"
    if pipelines and located.output_dir in pipelines:
        return pipelines[located.output_dir], "the platform config's output_dir"
    if run is not None:
        owners = {key[0] for key in run.asset_keys if len(key) == 2 and key[1] == located.artifact}
        if len(owners) == 1:
            return owners.pop(), "the asset selection of the run that wrote it"
    return located.output_dir.name, "the output folder's name"


def _config_ref(layout: OutputLayout, section: dict[str, Any]) -> ConfigRef:
    try:
        current: str | None = text_hash(layout.config_yaml.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        current = None
    settings = {k: section[k] for k in ("tiling_config_hash", "settings_hash") if section.get(k)}
    recorded = section.get("config_hash")
    if not recorded:
        return ConfigRef(None, None, False, "the sidecar records no config_hash", current, None, settings)
    path, resolved, problem = read_config_version(layout.config_yaml, str(recorded))
    if problem and not path.exists():
        problem = (
            f"{path} is missing: the sidecar predates the config history, or its config_hash is a settings hash; "
            "config.yaml holds the pipeline's current config only"
        )
    return ConfigRef(str(recorded), str(path), resolved is not None, problem, current, resolved, settings)


def _encoder(meta: dict[str, Any], section: dict[str, Any]) -> dict[str, Any] | None:
    if not meta.get("encoder_name"):
        return None
    return {
        "name": meta.get("encoder_name"),
        "level": meta.get("encoder_level"),
        "variant": section.get("encoder_variant") or section.get("tile_encoder_variant"),
        "tile_encoder": section.get("tile_encoder"),
        "slide_encoder": section.get("slide_encoder"),
        "weights": section.get("model_weights"),
        "revision": section.get("weights_revision"),
        "sha256": section.get("weights_sha256"),
        "precision": section.get("precision"),
        "device": section.get("device"),
    }


def _preview_checks(path: Path, tracer: _Tracer, run_id: Any, row: dict[str, str] | None, artifact: str) -> list[str]:
    notes = []
    info = tracer.run_infos.get(run_id) if isinstance(run_id, str) else None
    # Previews are written just before their coordinates, by the same step; a preview older than the
    # run is one that run did not write (e.g. previews switched off later: the old file stays).
    if info is not None and info.start_time is not None and path.stat().st_mtime < info.start_time - 1:
        notes.append(
            f"this preview is older than run {run_id} that wrote the coordinates: an earlier run wrote it, "
            "and it may not show the current tiling"
        )
    column = "mask_preview_path" if artifact == "mask_preview" else "tiling_preview_path"
    if row is not None and row.get(column) and Path(row[column]) != path:
        notes.append(f"process_list.csv names another {artifact} for this slide: {row[column]}")
    return notes


def _trace_upstream(
    path: Path,
    located: Located,
    tracer: _Tracer,
    meta: dict[str, Any],
    section: dict[str, Any],
    coords_meta: dict[str, Any] | None,
    notes: list[str],
) -> tuple[list[Source], list[Source], dict[str, str] | None]:
    """(upstream files, slide and mask files, the process_list row for previews): what the artifact was made
    from, each with the run that wrote it. Adds what it notices to ``notes``."""
    assert located.key is not None
    upstream: list[Source] = []
    inputs: list[Source] = []
    row = None
    if located.artifact in ("coordinates", *PREVIEW_ARTIFACTS):
        inputs = tracer.input_files(meta)
        upstream = list(inputs)
        if located.artifact in PREVIEW_ARTIFACTS:
            row = process_list.read_rows(tracer.layout.process_list).get(located.key)
            notes.extend(_preview_checks(path, tracer, section.get("run_id"), row, located.artifact))
            if row is None:
                notes.append(f"{tracer.layout.process_list} has no row for {located.key!r}")
    elif located.artifact in EMBEDDING_KINDS:
        upstream = [
            tracer.coordinates(
                located.key, section.get("coordinates_inputs_fingerprint"), section.get("coordinates_run_id"), meta
            )
        ]
        inputs = upstream[0].upstream
    elif located.artifact in (SLIDE_KIND, LATENTS_KIND):
        upstream = tracer.slide_upstream(located.key, section)
        inputs = tracer.input_files(coords_meta)
    else:  # patient
        slide_inputs = section.get("slide_inputs") or {}
        for sid in meta.get("sample_ids") or []:
            if section.get("slide_embeddings") == f"{SLIDE_KIND}/":
                source = tracer.slide_embedding(sid, slide_inputs.get(sid))
            else:
                source = tracer.coordinates(sid, None)
                source.detail = "computed in memory from these coordinates (the slide embedding was not kept)"
            upstream.append(source)
            sid_meta, _ = _read_json(tracer.layout.coordinates_meta(sid))
            for found in tracer.input_files(sid_meta):
                found.role = f"{found.role} of {sid}"
                inputs.append(found)
        for sid, why in (section.get("excluded_slides") or {}).items():
            notes.append(f"slide {sid} was left out: {why}")
    return upstream, inputs, row


def lineage_of(path: str | Path, lookup: RunLookup, pipelines: Mapping[Path, str] | None = None) -> Lineage:
    """The lineage of the artifact file at ``path``. ``pipelines`` (output_dir -> pipeline name, from a
    platform config) names pipelines whose output_dir is not <output_root>/<name>.

    Raises FileNotFoundError / IsADirectoryError for a path that is not a file.
    """
    path = Path(os.path.abspath(path))
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; pass the path of an artifact file (payload, sidecar, preview)")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; pass one artifact file in it (payload, sidecar, preview)")
    if path.name.startswith(".") and ".tmp" in path.name:
        return _not_ours(
            path,
            f"{path.name} is a temporary file of an atomic write (in flight, or left by a killed writer, which the "
            "next run of that slide removes); it is not an artifact",
        )
    located = locate(path)
    if located is None:
        return _not_ours(
            path,
            f"{path} is not where this platform writes artifacts (tiles/<id>.coordinates.npz|.meta.json, "
            "preview/mask|tiling/<id>.png, <kind>/<id>.pt|.npz|.meta.json, slide_latents/<id>.pt|.npz, "
            "process_list.csv, config.yaml under a pipeline's output_dir): nothing records how it was made",
        )
    layout = OutputLayout(located.output_dir)
    tracer = _Tracer(lookup, layout)
    base: dict[str, Any] = {
        "artifact": located.artifact,
        "role": located.role,
        "output_dir": str(located.output_dir),
    }
    if located.key is None or located.artifact == "config_version":
        return _directory_file(path, located, layout, pipelines, base)
    patient = located.artifact == PATIENT_KIND
    base["partition"] = {"patient_id" if patient else "sample_id": located.key}

    # The sidecar that describes the file.
    if located.artifact in ("coordinates", *PREVIEW_ARTIFACTS):
        sidecar = layout.coordinates_meta(located.key)
    elif located.artifact == LATENTS_KIND:
        sidecar = layout.embedding_meta(SLIDE_KIND, located.key)
    else:
        sidecar = layout.embedding_meta(located.artifact, located.key)
    base["sidecar"] = str(sidecar)
    meta, problem = _read_json(sidecar)
    if meta is None:
        if not sidecar.exists():
            if located.artifact in PREVIEW_ARTIFACTS:
                why = (
                    f"{path} is described by no coordinates sidecar ({sidecar} does not exist): this platform did not "
                    "write it, or the slide's coordinates were removed since"
                )
            else:
                why = (
                    f"{path} has no sidecar ({sidecar} does not exist), so nothing records how it was made: this "
                    "platform did not write it, or its sidecar was deleted (the platform writes a sidecar last and "
                    "removes it first, so a payload without one is incomplete; the next run of its slide recomputes it)"
                )
            return _not_ours(path, why, **base)
        return _not_ours(path, f"its sidecar cannot be read: {problem}", **base)
    section = sidecar_section(meta)
    if not section:
        return _not_ours(
            path,
            f"its sidecar {sidecar} carries no platform provenance (no run_id, no inputs_fingerprint): it was "
            "written by another tool (e.g. slide2vec / hs2p themselves), not by this platform",
            **base,
        )
    recorded_id = meta.get("patient_id" if patient else "sample_id") or (meta.get("provenance") or {}).get("sample_id")
    if recorded_id is not None and recorded_id != located.key:
        return _not_ours(
            path,
            f"its sidecar {sidecar} describes {recorded_id!r}, not {located.key!r}: the files were renamed or copied "
            "by hand, so the recorded lineage is not this file's",
            **base,
        )
    notes: list[str] = []
    if located.role == "payload" and located.artifact != "coordinates" and path.suffix != f".{meta.get('format')}":
        return _not_ours(
            path,
            f"its sidecar {sidecar} describes a .{meta.get('format')} payload, not this {path.suffix} file: a leftover "
            "no sidecar describes (the platform removes the other format's payload when it writes)",
            **base,
        )
    if located.role == "sidecar":
        payloads = (
            [layout.coordinates_npz(located.key)]
            if located.artifact == "coordinates"
            else [layout.embedding_payload(located.artifact, located.key, str(meta.get("format", "pt")))]
        )
        missing = [str(p) for p in payloads if not p.exists()]
        if missing and (meta.get("tiling") or {}).get("n_tiles", 1) != 0:
            notes.append(f"the payload it describes is missing: {', '.join(missing)}")

    run_id = section.get("run_id")
    run = tracer.run(run_id)
    if run is not None and not run.found:
        where = lookup.describe()
        notes.append(
            f"run {run_id} is not in {where} (it ran under another DAGSTER_HOME, or its runs were deleted)"
            if where
            else f"run {run_id} was not looked up (no Dagster instance was opened)"
        )
    if not run_id:
        notes.append("the sidecar records no run id (written outside a Dagster run)")
    pipeline, pipeline_from = _pipeline_of(located, section, tracer.run_infos.get(run_id or ""), pipelines)

    # Code and libraries: what the writing process recorded, never this process's.
    recorded = section.get("run_provenance") or {}
    code = recorded.get("code") or {"package_version": section.get("code_version")}
    libraries = recorded.get("libraries")
    if not recorded:
        notes.append(
            "the sidecar records no git commit or library versions (written before run provenance was recorded)"
        )

    coords_meta = meta if located.artifact in ("coordinates", *PREVIEW_ARTIFACTS) else None
    if coords_meta is None and not patient:
        coords_meta, _ = _read_json(layout.coordinates_meta(located.key))
    backend = meta.get("backend") or ((coords_meta or {}).get("provenance") or {}).get("backend")

    upstream, inputs, row = _trace_upstream(path, located, tracer, meta, section, coords_meta, notes)
    stale_inputs = [s for s in inputs if s.current is False]
    stale_upstream = [s for s in upstream if s.current is False and s not in inputs]
    owner = "patient" if patient else "sample"
    summary = f"{located.artifact} {located.role} of {owner} {located.key!r}, pipeline {pipeline}"
    if run_id:
        summary += f", written by run {run_id}"
    if stale_inputs:
        summary += f"; {len(stale_inputs)} input file(s) changed or missing since"
    if stale_upstream:
        summary += f"; {len(stale_upstream)} upstream file(s) rewritten since"
    return Lineage(
        str(path),
        True,
        summary,
        pipeline=pipeline,
        pipeline_from=pipeline_from,
        asset_key=[pipeline, located.artifact],
        run=run,
        code=code,
        libraries=libraries,
        reader={"backend": backend, **({"versions": reader_versions(backend, libraries)} if libraries else {})}
        if backend
        else None,
        config=_config_ref(layout, section),
        encoder=_encoder(meta, section),
        inputs=inputs,
        upstream=upstream,
        process_list_row=row,
        notes=notes,
        **base,
    )


def _directory_file(
    path: Path, located: Located, layout: OutputLayout, pipelines: Mapping[Path, str] | None, base: dict[str, Any]
) -> Lineage:
    pipeline, pipeline_from = _pipeline_of(located, {}, None, pipelines)
    notes: list[str] = []
    if located.artifact == "process_list":
        summary = (
            f"the process list of pipeline {pipeline}: one row per slide, each naming the run that last touched it"
        )
    elif located.artifact == "config":
        summary = (
            f"the current resolved config of pipeline {pipeline} (hash {text_hash(path.read_text(encoding='utf-8'))})"
        )
    else:
        _, _, problem = read_config_version(layout.config_yaml, located.key or "")
        summary = f"a resolved config of pipeline {pipeline} kept under its hash {located.key}"
        if problem:
            notes.append(problem)
    return Lineage(str(path), True, summary, pipeline=pipeline, pipeline_from=pipeline_from, notes=notes, **base)


# ------------------------------------------------------------------------------------- text


def _source_lines(source: Source, indent: int) -> list[str]:
    pad = "  " * indent
    state = {True: "current", False: "NOT CURRENT", None: "-"}[source.current]
    run = f"  run {source.run.run_id} ({source.run.status or 'not in the instance'})" if source.run else ""
    lines = [
        f"{pad}{source.role}: {source.path}{'' if source.exists else '  (missing)'}{run}",
        f"{pad}  {state}: {source.detail}",
    ]
    for child in source.upstream:
        lines += _source_lines(child, indent + 1)
    return lines


def format_lineage(lineage: Lineage) -> str:
    """A readable block, one fact per line."""
    lines = [lineage.path]
    if not lineage.platform_file:
        lines.append(f"  NOT A PLATFORM ARTIFACT: {lineage.summary}")
        return "\n".join(lines)
    lines.append(f"  artifact:   {lineage.artifact} ({lineage.role})")
    lines.append(f"  pipeline:   {lineage.pipeline}  (from {lineage.pipeline_from})")
    if lineage.asset_key:
        lines.append(f"  asset key:  {'/'.join(lineage.asset_key)}")
    if lineage.partition:
        lines.append("  partition:  " + ", ".join(f"{k}={v}" for k, v in lineage.partition.items()))
    if lineage.sidecar:
        lines.append(f"  sidecar:    {lineage.sidecar}")
    if lineage.run:
        run = lineage.run
        when = f"{run.started or '?'} -> {run.ended or '?'}" if run.found else "not in the instance"
        lines.append(f"  run:        {run.run_id}  {run.status or ''}  {when}".rstrip())
        if run.url:
            lines.append(f"              {run.url}")
    if lineage.artifact in ("process_list", "config", "config_version"):
        lines.append(f"  {lineage.summary}")
    else:
        lines.append(f"  code:       {describe_code(lineage.code) if lineage.code else 'not recorded'}")
        lines.append(f"  libraries:  {describe_libraries(lineage.libraries)}")
    if lineage.reader:
        versions = lineage.reader.get("versions") or {}
        shown = ", ".join(f"{k} {v}" for k, v in versions.items() if v) or "version not recorded"
        lines.append(f"  reader:     {lineage.reader['backend']} ({shown})")
    if lineage.config:
        config = lineage.config
        if config.found:
            same = (
                " (the current config.yaml)"
                if config.hash == config.current_hash
                else " (config.yaml has changed since)"
            )
            lines.append(f"  config:     {config.hash} -> {config.file}{same}")
        else:
            lines.append(f"  config:     {config.hash or 'no config_hash'}: {config.problem}")
            if config.settings_hashes:
                lines.append(
                    "              settings: " + ", ".join(f"{k} {v}" for k, v in config.settings_hashes.items())
                )
    if lineage.encoder:
        enc = lineage.encoder
        level = f"{enc['level']}, " if enc.get("level") else ""
        lines.append(f"  encoder:    {enc['name']} ({level}variant {enc.get('variant') or '-'})")
        lines.append(f"  weights:    {enc.get('weights') or '-'}")
        lines.append(f"              revision {enc.get('revision') or '-'}, sha256 {enc.get('sha256') or '-'}")
    for source in lineage.inputs:
        lines.append(f"  {source.role + ':':11} {source.path}")
        record = source.fingerprint or {}
        if record:
            count = len(record.get("files") or [])
            lines.append(f"              sha256 {record.get('sha256')}, {record.get('size')} bytes, {count} file(s)")
        lines.append(f"              {source.detail}")
    # A coordinates file's upstream is its input files, already shown above.
    upstream = [source for source in lineage.upstream if source not in lineage.inputs]
    if upstream:
        lines.append("  upstream:")
        for source in upstream:
            lines += _source_lines(source, 2)
    if lineage.process_list_row:
        row = lineage.process_list_row
        run_id, updated = row.get("run_id") or "-", row.get("updated_at") or "-"
        lines.append(f"  process_list.csv row: {row.get('status')}, run {run_id}, updated {updated}")
    for note in lineage.notes:
        lines.append(f"  note: {note}")
    return "\n".join(lines)
