"""The IO manager that writes (and reads back) every artifact file, in slide2vec's exact layout.

Asset keys are ``[<pipeline>, <artifact>]``; the pipeline's output_dir comes from the platform
config and every path from ``OutputLayout``. Writes go through ``slide2vec_dagster.artifacts``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from dagster import ConfigurableIOManager, InputContext, MetadataValue, OutputContext
from PIL import Image

from slide2vec_dagster.artifacts import process_list
from slide2vec_dagster.artifacts.config_file import write_config_yaml
from slide2vec_dagster.artifacts.coordinates import read_coordinates, write_coordinates
from slide2vec_dagster.artifacts.embeddings import write_embedding
from slide2vec_dagster.artifacts.previews import thumbnail_markdown, write_png
from slide2vec_dagster.defs.resources import PlatformResource
from slide2vec_dagster.layout import EMBEDDING_KINDS, PREVIEW_ARTIFACTS, OutputLayout
from slide2vec_dagster.slide_embedding import EmbeddingOutcome
from slide2vec_dagster.slide_tiling import TilingOutcome


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
            if artifact == "coordinates":
                metadata = self._write_coordinates(context, pipeline, layout, value)
            elif artifact in PREVIEW_ARTIFACTS:
                metadata = self._write_preview(layout, artifact, sample_id, value)
            elif artifact in EMBEDDING_KINDS:
                metadata = self._write_embedding(context, pipeline, layout, value)
            else:
                raise ValueError(f"no writer for artifact {artifact!r} (asset {context.asset_key.to_user_string()})")
        context.add_output_metadata(metadata)

    def _write_coordinates(
        self, context: OutputContext, pipeline: str, layout: OutputLayout, outcome: TilingOutcome
    ) -> dict[str, Any]:
        sample_id = outcome.sample_id
        npz, meta = layout.coordinates_npz(sample_id), layout.coordinates_meta(sample_id)
        write_config_yaml(layout.config_yaml, self._platform().config().resolved_pipeline(pipeline))
        if outcome.status == "done":
            write_coordinates(npz, meta, outcome.coordinates, outcome.meta)
        mask_png, tiling_png = layout.mask_preview(sample_id), layout.tiling_preview(sample_id)
        process_list.update(
            layout.process_list,
            sample_id,
            outcome.status,
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
        }

    def _write_embedding(
        self, context: OutputContext, pipeline: str, layout: OutputLayout, outcome: EmbeddingOutcome
    ) -> dict[str, Any]:
        output_format = outcome.meta["format"]
        payload = layout.embedding_payload(outcome.kind, outcome.sample_id, output_format)
        meta = layout.embedding_meta(outcome.kind, outcome.sample_id)
        write_config_yaml(layout.config_yaml, self._platform().config().resolved_pipeline(pipeline))
        if outcome.status == "done":
            assert outcome.features is not None
            write_embedding(payload, meta, outcome.features, outcome.meta)
        process_list.update(
            layout.process_list,
            outcome.sample_id,
            outcome.status,
            encoder_name=outcome.meta["encoder_name"],
            feature_path=payload,
            run_id=context.run_id,
        )
        return {"payload": MetadataValue.path(str(payload)), "meta": MetadataValue.path(str(meta))}

    def _write_preview(
        self, layout: OutputLayout, artifact: str, sample_id: str, rgb: np.ndarray | None
    ) -> dict[str, Any]:
        path = layout.preview(artifact, sample_id)
        if rgb is None:  # skipped slide: the preview on disk is current
            with Image.open(path) as image:
                rgb = np.asarray(image.convert("RGB"))
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
                path = layout.preview(artifact, sample_id)
                with Image.open(path) as image:
                    loaded[sample_id] = np.asarray(image.convert("RGB"))
            else:
                raise ValueError(f"no reader for artifact {artifact!r}")
        return next(iter(loaded.values())) if len(loaded) == 1 else loaded
