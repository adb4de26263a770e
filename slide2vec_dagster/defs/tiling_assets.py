"""Per pipeline P: ``P/coordinates``, ``P/mask_preview`` and ``P/tiling_preview``, partitioned by sample_id.

One step computes all three (segmentation is shared); each is its own asset written by the IO manager.
"""

from collections.abc import Iterator
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetOut,
    AssetsDefinition,
    BackfillPolicy,
    MetadataValue,
    Output,
    multi_asset,
)

from slide2vec_dagster.config import PlatformConfig
from slide2vec_dagster.defs.asset_keys import tiling_asset_keys
from slide2vec_dagster.defs.partitions import sample_partitions
from slide2vec_dagster.defs.resources import PlatformResource
from slide2vec_dagster.defs.slide_runs import one_writer, retry_policy, slide_step, step_tags
from slide2vec_dagster.defs.slides_asset import SLIDES_KEY
from slide2vec_dagster.provenance import sidecar_lineage

IO_MANAGER_KEY = "slide2vec_io"
DESCRIPTIONS = {
    "coordinates": "Tile origins (level-0 px, row-major) and the tiling sidecar: tiles/<sample_id>.coordinates.*",
    "mask_preview": "Tissue contours drawn on a low-resolution copy of the slide: preview/mask/<sample_id>.png",
    "tiling_preview": "Every kept tile outlined on the slide: preview/tiling/<sample_id>.png",
}


def build_tiling_assets(pipeline: str, config: PlatformConfig) -> AssetsDefinition:
    pipeline_config = config.pipelines[pipeline]
    outs = {
        key.path[-1]: AssetOut(
            key=key,
            io_manager_key=IO_MANAGER_KEY,
            is_required=key.path[-1] == "coordinates",
            group_name=pipeline,
            code_version=pipeline_config.fingerprint(),
            description=DESCRIPTIONS[key.path[-1]],
            kinds={"numpy"} if key.path[-1] == "coordinates" else {"png"},
        )
        for key in tiling_asset_keys(pipeline, config)
    }

    @multi_asset(
        name=f"{pipeline}__tiling",
        outs=outs,
        # The slide file (and its manifest row) is the upstream: a changed one makes these stale in the UI.
        deps=[SLIDES_KEY],
        partitions_def=sample_partitions,
        can_subset=True,
        # One slide per run: a bad slide fails its own run and partition, never its neighbours'.
        backfill_policy=BackfillPolicy.multi_run(1),
        retry_policy=retry_policy(config),
        op_tags=step_tags(config, pipeline, "cpu"),
    )
    def tiling(context: AssetExecutionContext, platform: PlatformResource) -> Iterator[Output[Any]]:
        with one_writer(context, platform, pipeline):
            yield from _tiling(context, platform)

    def _tiling(context: AssetExecutionContext, platform: PlatformResource) -> Iterator[Output[Any]]:
        from slide2vec_dagster.slide_tiling import describe, tile_sample, warnings_of

        with slide_step(context, platform, pipeline, "tiling") as step:
            assert step.entry is not None
            lineage = sidecar_lineage(pipeline, platform.config().resolved_pipeline(pipeline))
            outcome = tile_sample(
                step.entry, platform.config().pipelines[pipeline], step.layout, run_id=context.run_id, lineage=lineage
            )
        sample_id, layout, entry = step.sample_id, step.layout, step.entry
        context.log.info(
            f"{sample_id}: {outcome.status}, {outcome.n_tiles} tiles with the {describe(outcome)['backend']} reader"
        )
        for warning in warnings_of(outcome):
            context.log.warning(warning)
        selected = context.selected_output_names
        # Previews first: the coordinates writer then records their paths in process_list.csv.
        # A fresh render is written; a skipped slide's preview already on disk is re-announced (None).
        for name, image in (("mask_preview", outcome.mask_preview), ("tiling_preview", outcome.tiling_preview)):
            on_disk = outcome.status == "skipped" and layout.preview(name, sample_id).exists()
            if name in selected and (image is not None or on_disk):
                yield Output(image, output_name=name)
        if "coordinates" in selected:
            meta = describe(outcome)
            meta["image_path"] = MetadataValue.path(str(entry.image_path))
            yield Output(outcome, output_name="coordinates", metadata=meta)

    return tiling
