"""What every per-slide asset step does around its work: insist on one slide per run, and turn an
error into a failed partition with a ``failed`` row in process_list.csv."""

from dagster import AssetExecutionContext, Failure, MetadataValue

from slide2vec_dagster.artifacts import process_list
from slide2vec_dagster.artifacts.config_file import write_config_yaml
from slide2vec_dagster.defs.resources import PlatformResource
from slide2vec_dagster.manifest import SlideEntry


def the_slide_of(context: AssetExecutionContext) -> str:
    """The run's one sample_id. Backfill runs carry a partition range even for one slide, so read the
    keys rather than ``partition_key``."""
    keys = context.partition_keys
    if len(keys) != 1:
        raise Failure(
            description=f"this run covers {len(keys)} slides ({keys[0]} .. {keys[-1]}); runs cover one slide "
            "each so that a bad slide fails only its own partition: launch a backfill (one run per slide) "
            "instead of a single ranged run"
        )
    return keys[0]


def slide_failure(
    platform: PlatformResource,
    pipeline: str,
    sample_id: str,
    step: str,
    exc: Exception,
    entry: SlideEntry | None,
    run_id: str,
) -> Failure:
    """Record ``exc`` as the slide's ``failed`` row and return the Failure that fails its partition."""
    layout = platform.layout(pipeline)
    error = process_list.format_error(exc)
    write_config_yaml(layout.config_yaml, platform.config().resolved_pipeline(pipeline))
    process_list.update(
        layout.process_list, sample_id, "failed", error, image_path=entry.image_path if entry else "", run_id=run_id
    )
    return Failure(
        description=f"sample {sample_id!r}: {step} failed: {error}",
        metadata={"sample_id": sample_id, "error": error, "process_list": MetadataValue.path(str(layout.process_list))},
    )
