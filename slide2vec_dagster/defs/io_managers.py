"""The IO manager that writes (and reads back) every artifact file, in slide2vec's exact layout.

Asset keys are ``[<pipeline>, <artifact>]``; the pipeline's output_dir comes from the platform
config and every path from ``OutputLayout``. Writes go through ``slide2vec_dagster.artifacts``.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import numpy as np
from dagster import ConfigurableIOManager, Failure, InputContext, MetadataValue, OutputContext

from slide2vec_dagster.artifacts import process_list
from slide2vec_dagster.artifacts.config_file import write_config_yaml
from slide2vec_dagster.artifacts.coordinates import Coordinates, read_coordinates, refresh_sidecar, write_coordinates
from slide2vec_dagster.artifacts.process_list import TILE_EMBEDDING_COLUMNS, TILING_COLUMNS, format_error
from slide2vec_dagster.artifacts.slide_state import (
    failed_step_files,
    patient_files,
    rows_from_artifacts,
    withdraw,
)
from slide2vec_dagster.defs.resources import PlatformResource
from slide2vec_dagster.defs.slide_runs import fail_slide
from slide2vec_dagster.failures import classify
from slide2vec_dagster.layout import (
    EMBEDDING_KINDS,
    LATENTS_KIND,
    PATIENT_KIND,
    PREVIEW_ARTIFACTS,
    SLIDE_KIND,
    OutputLayout,
)
from slide2vec_dagster.provenance import metadata_facts, reuse_status

if TYPE_CHECKING:
    from slide2vec_dagster.slide_embedding import EmbeddingOutcome
    from slide2vec_dagster.slide_level import PatientOutcome, SlideOutcome
    from slide2vec_dagster.slide_tiling import TilingOutcome


# The writers that need torch or PIL are imported when first used, so the code location loads light.
def write_embedding(*args: Any, **kwargs: Any) -> None:
    from slide2vec_dagster.artifacts.embeddings import write_embedding as write

    write(*args, **kwargs)


def write_slide_embedding(*args: Any, **kwargs: Any) -> None:
    from slide2vec_dagster.artifacts.embeddings import write_slide_embedding as write

    write(*args, **kwargs)


def read_embedding(path: Any) -> Any:
    from slide2vec_dagster.artifacts.embeddings import read_embedding as read

    return read(path)


def read_meta(path: Any) -> dict[str, Any]:
    from slide2vec_dagster.artifacts.embeddings import read_meta as read

    return read(path)


def _png(path: Any) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _partition_keys(context: OutputContext | InputContext) -> list[str]:
    """Backfill runs carry range tags even for one partition, so ask for the asset's partition keys
    rather than ``partition_key``."""
    keys = list(context.asset_partition_keys) if context.has_asset_partitions else []
    if not keys:
        raise ValueError(f"{context.asset_key.to_user_string()} is partitioned by sample_id; run it for a partition")
    return keys


def _partition_values(context: OutputContext, obj: Any) -> dict[str, Any]:
    """{sample_id: value} for the partitions this output covers."""
    keys = _partition_keys(context)
    if len(keys) == 1:
        return {keys[0]: obj}
    if not isinstance(obj, dict) or set(obj) != set(keys):
        raise ValueError("a multi-partition output must be a dict keyed by every partition of the run")
    return obj


class Slide2vecIOManager(ConfigurableIOManager):
    """Writes coordinates, previews, ``process_list.csv`` and ``config.yaml`` of each pipeline."""

    config_path: str

    def _platform(self) -> PlatformResource:
        return PlatformResource(config_path=self.config_path)

    def _where(self, context: OutputContext | InputContext) -> tuple[str, str, OutputLayout]:
        pipeline, artifact = context.asset_key.path[0], context.asset_key.path[-1]
        return pipeline, artifact, self._platform().layout(pipeline)

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        pipeline, artifact, layout = self._where(context)
        metadata: dict[str, Any] = {}
        for sample_id, value in _partition_values(context, obj).items():
            try:
                if artifact == "coordinates":
                    metadata = self._write_coordinates(context, pipeline, layout, value)
                elif artifact in PREVIEW_ARTIFACTS:
                    metadata = self._write_preview(layout, artifact, sample_id, value)
                elif artifact in EMBEDDING_KINDS:
                    metadata = self._write_embedding(context, pipeline, layout, value)
                elif artifact == SLIDE_KIND:
                    metadata = self._write_slide(context, layout, value)
                elif artifact == LATENTS_KIND:
                    metadata = self._describe_latents(layout, value)
                elif artifact == PATIENT_KIND:
                    metadata = self._write_patient(layout, value)
                else:
                    raise ValueError(
                        f"no writer for artifact {artifact!r} (asset {context.asset_key.to_user_string()})"
                    )
            except Exception as exc:
                # The step's files may now be half replaced: withdraw them (and, for the tiling, what was
                # computed from the old coordinates) so the failed row is the whole truth.
                if artifact == PATIENT_KIND:  # patients have no process_list row: the run's failure says it
                    withdraw(patient_files(layout, sample_id))
                    raise Failure(
                        description=f"patient {sample_id!r}: writing failed: {format_error(exc)}",
                        allow_retries=classify(exc).retry,  # a transient I/O error, not a bad input, is retried
                    ) from exc
                tiling = artifact not in (*EMBEDDING_KINDS, SLIDE_KIND, LATENTS_KIND)
                meta = getattr(value, "meta", None) or {}  # previews are bare arrays
                image_path = meta.get("image_path") or meta.get("provenance", {}).get("image_path")
                raise fail_slide(
                    self._platform(),
                    pipeline,
                    sample_id,
                    f"writing {artifact}",
                    exc,
                    image_path=image_path,
                    run_id=context.run_id,
                    context=context,
                    asset_keys=[context.asset_key],
                    keep=()
                    if tiling
                    else TILE_EMBEDDING_COLUMNS
                    if artifact in (SLIDE_KIND, LATENTS_KIND)
                    else TILING_COLUMNS,
                    withdraw_files=failed_step_files(layout, artifact, sample_id),
                ) from exc
        for value in _partition_values(context, obj).values():
            if isinstance(getattr(value, "meta", None), dict):
                # What `slide2vec-dagster lineage <file>` prints, next to the materialisation in the UI.
                metadata.update(metadata_facts(value.meta))
        context.add_output_metadata(metadata)

    def _update_row(self, context: OutputContext, layout: OutputLayout, *args: Any, **kwargs: Any) -> dict[str, Any]:
        problems = process_list.update(
            layout.process_list, *args, recover=lambda: rows_from_artifacts(layout), **kwargs
        )
        for problem in problems:
            context.log.warning(problem)
        return {"process_list_repaired": "; ".join(problems)} if problems else {}

    def _write_coordinates(
        self, context: OutputContext, pipeline: str, layout: OutputLayout, outcome: TilingOutcome
    ) -> dict[str, Any]:
        sample_id = outcome.sample_id
        npz, meta = layout.coordinates_npz(sample_id), layout.coordinates_meta(sample_id)
        write_config_yaml(layout.config_yaml, self._platform().config().resolved_pipeline(pipeline))
        if outcome.status == "done":
            write_coordinates(npz, meta, outcome.coordinates, outcome.meta)
        elif outcome.refresh_sidecar:
            refresh_sidecar(meta, outcome.meta)
        mask_png, tiling_png = layout.mask_preview(sample_id), layout.tiling_preview(sample_id)
        repaired = self._update_row(
            context,
            layout,
            sample_id,
            reuse_status(outcome.status, outcome.meta, context.run_id),
            # A fresh tiling makes the row's embedding columns (an older run's) stale; a skip keeps them.
            keep=() if outcome.status == "done" else None,
            num_tiles=outcome.n_tiles,
            image_path=outcome.meta["provenance"]["image_path"],
            coordinates_npz_path=npz,
            mask_preview_path=mask_png if mask_png.exists() else "",
            tiling_preview_path=tiling_png if tiling_png.exists() else "",
            run_id=context.run_id,
        )
        return {
            "coordinates_npz": MetadataValue.path(str(npz)),
            "coordinates_meta": MetadataValue.path(str(meta)),
            "process_list": MetadataValue.path(str(layout.process_list)),
            **repaired,
        }

    def _write_embedding(
        self, context: OutputContext, pipeline: str, layout: OutputLayout, outcome: EmbeddingOutcome
    ) -> dict[str, Any]:
        output_format = outcome.meta["format"]
        reused = self._reused_coordinates_row(layout, outcome)
        payload = layout.embedding_payload(outcome.kind, outcome.sample_id, output_format)
        meta = layout.embedding_meta(outcome.kind, outcome.sample_id)
        write_config_yaml(layout.config_yaml, self._platform().config().resolved_pipeline(pipeline))
        if outcome.status == "done":
            assert outcome.features is not None
            write_embedding(payload, meta, outcome.features, outcome.meta)
        repaired = self._update_row(
            context,
            layout,
            outcome.sample_id,
            reuse_status(outcome.status, outcome.meta, context.run_id),
            encoder_name=outcome.meta["encoder_name"],
            feature_path=payload,
            run_id=context.run_id,
            **reused,
        )
        return {"payload": MetadataValue.path(str(payload)), "meta": MetadataValue.path(str(meta)), **repaired}

    def _reused_coordinates_row(self, layout: OutputLayout, outcome: Any) -> dict[str, Any]:
        """For a pipeline that reuses coordinates: copy ours into its tiles/ (before the payload lands) and
        give the process_list row its tiling columns; slide2vec 7.1's files are referenced, not copied."""
        meta = outcome.meta
        if "coordinates_source" not in meta and outcome.coordinates_copy is None:
            return {}
        copy = outcome.coordinates_copy
        if copy is not None:
            sid = outcome.sample_id
            npz, sidecar = layout.coordinates_npz(sid), layout.coordinates_meta(sid)
            recorded = None
            if npz.exists() and sidecar.exists():
                with contextlib.suppress(OSError, ValueError):
                    recorded = read_meta(sidecar).get("artifact", {}).get("inputs_fingerprint")
            if recorded != copy.meta["artifact"]["inputs_fingerprint"]:
                copied = {**copy.meta, "artifact": {**copy.meta["artifact"], "reused_from": str(copy.meta_path)}}
                arrays = copy.arrays
                write_coordinates(
                    npz, sidecar, Coordinates(arrays["x"], arrays["y"], arrays["tissue_fractions"]), copied
                )
            return {"num_tiles": len(copy.arrays["x"]), "coordinates_npz_path": npz, "image_path": meta["image_path"]}
        return {
            "num_tiles": meta.get("num_regions", meta.get("num_tiles", "")),
            "coordinates_npz_path": meta.get("coordinates_npz_path", ""),
            "image_path": meta["image_path"],
        }

    def _write_slide(self, context: OutputContext, layout: OutputLayout, outcome: SlideOutcome) -> dict[str, Any]:
        sample_id, output_format = outcome.sample_id, outcome.meta["format"]
        reused = self._reused_coordinates_row(layout, outcome)
        payload = layout.embedding_payload(SLIDE_KIND, sample_id, output_format)
        meta = layout.embedding_meta(SLIDE_KIND, sample_id)
        if outcome.status == "done":
            assert outcome.embedding is not None
            write_slide_embedding(
                payload,
                meta,
                outcome.embedding,
                outcome.meta,
                layout.slide_latents(sample_id, output_format),
                outcome.latents,
            )
        status = reuse_status(outcome.status, outcome.meta, context.run_id)
        repaired = self._update_row(context, layout, sample_id, status, slide_feature_path=payload, **reused)
        return {"payload": MetadataValue.path(str(payload)), "meta": MetadataValue.path(str(meta)), **repaired}

    def _describe_latents(self, layout: OutputLayout, outcome: SlideOutcome) -> dict[str, Any]:
        # Written with the slide embedding (before its sidecar); this output only reports them.
        path = layout.slide_latents(outcome.sample_id, outcome.meta["format"])
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing after the slide step; materialise the slide again")
        shape = outcome.meta.get("provenance", {}).get("latents_shape")
        return {"path": MetadataValue.path(str(path)), "shape": str(shape)}

    def _write_patient(self, layout: OutputLayout, outcome: PatientOutcome) -> dict[str, Any]:
        payload = layout.embedding_payload(PATIENT_KIND, outcome.patient_id, outcome.meta["format"])
        meta = layout.embedding_meta(PATIENT_KIND, outcome.patient_id)
        if outcome.status == "done":
            assert outcome.embedding is not None
            write_embedding(payload, meta, outcome.embedding, outcome.meta)
        return {"payload": MetadataValue.path(str(payload)), "meta": MetadataValue.path(str(meta))}

    def _write_preview(
        self, layout: OutputLayout, artifact: str, sample_id: str, rgb: np.ndarray | None
    ) -> dict[str, Any]:
        from slide2vec_dagster.artifacts.previews import thumbnail_markdown, write_png

        path = layout.preview(artifact, sample_id)
        if rgb is None:  # skipped slide: the preview on disk is current
            rgb = _png(path)
        else:
            write_png(path, rgb)
        return {
            "path": MetadataValue.path(str(path)),
            "size_px": f"{rgb.shape[1]} x {rgb.shape[0]}",
            "preview": MetadataValue.md(thumbnail_markdown(rgb, f"{artifact} of {sample_id}")),
        }

    def load_input(self, context: InputContext) -> Any:
        _, artifact, layout = self._where(context)
        loaded: dict[str, Any] = {}
        for sample_id in _partition_keys(context):
            if artifact == "coordinates":
                loaded[sample_id] = read_coordinates(
                    layout.coordinates_npz(sample_id), layout.coordinates_meta(sample_id)
                )
            elif artifact in PREVIEW_ARTIFACTS:
                loaded[sample_id] = _png(layout.preview(artifact, sample_id))
            elif artifact in EMBEDDING_KINDS:
                meta = read_meta(layout.embedding_meta(artifact, sample_id))
                payload = layout.embedding_payload(artifact, sample_id, str(meta["format"]))
                loaded[sample_id] = (read_embedding(payload), meta)
            else:
                raise ValueError(f"no reader for artifact {artifact!r}")
        return next(iter(loaded.values())) if len(loaded) == 1 else loaded
