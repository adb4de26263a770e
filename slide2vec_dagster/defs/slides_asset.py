"""The ``slides`` source asset: one partition per ``sample_id``, whose data version is the slide file's
stat key and path plus its manifest row (see ``staleness.slide_data_version``). Tiling steps depend on
it, so a replaced file or an edited row shows every asset downstream of that slide as stale in the UI.

Observed by the cohort sensor (new and changed rows), by the backfill schedule (every slide, nightly) and
from the UI (*Observe sources*).
"""

from collections.abc import Iterable

from dagster import (
    AssetKey,
    AssetObservation,
    DagsterEventType,
    DagsterInstance,
    DataVersion,
    DataVersionsByPartition,
    observable_source_asset,
)
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from slide2vec_dagster.config import PlatformConfig
from slide2vec_dagster.defs.partitions import sample_partitions
from slide2vec_dagster.defs.resources import PlatformResource, manifest_reports
from slide2vec_dagster.manifest import SlideEntry
from slide2vec_dagster.staleness import slide_data_version

SLIDES_KEY = AssetKey("slides")


def manifest_entries(config: PlatformConfig) -> list[SlideEntry]:
    """Every usable row of every manifest (file-level problems are the registration's business)."""
    return [entry for report in manifest_reports(config.manifests) for entry in report.entries]


def changed_slide_observations(
    instance: DagsterInstance, entries: Iterable[SlideEntry], registered: set[str]
) -> list[AssetObservation]:
    """Observations for the registered slides whose data version differs from the last one observed. A
    slide never observed is left to its run, whose first step observes it: observing it here too would
    record every new batch twice (12 ms an event on Postgres: 6 s a tick of 500 new slides)."""
    wanted = {entry.sample_id: entry for entry in entries if entry.sample_id in registered}
    latest = instance.event_log_storage.get_latest_tags_by_partition(
        SLIDES_KEY, DagsterEventType.ASSET_OBSERVATION, [DATA_VERSION_TAG]
    )
    observations = []
    for sample_id, entry in wanted.items():
        recorded = latest.get(sample_id, {}).get(DATA_VERSION_TAG)
        if recorded is None:
            continue
        version = slide_data_version(entry)
        if recorded != version:
            observations.append(
                AssetObservation(
                    asset_key=SLIDES_KEY,
                    partition=sample_id,
                    tags={DATA_VERSION_TAG: version},
                    metadata={"image_path": str(entry.image_path), "manifest": entry.where},
                )
            )
    return observations


def build_slides_asset(config: PlatformConfig):
    @observable_source_asset(
        key=SLIDES_KEY,
        partitions_def=sample_partitions,
        group_name="cohort",
        description="The whole-slide images of the manifests, one partition per sample_id. Data version: the "
        "file's stat key and path plus its manifest row (spacing override, mask, patient).",
    )
    def slides(context) -> DataVersionsByPartition:
        platform = PlatformResource(config_path=str(config.source_path))
        # In a slide's run (its first step), that slide; from the UI's "Observe sources", every slide.
        wanted = set(context.partition_keys) if context.has_partition_key else None
        if wanted is None:
            wanted = set(context.instance.get_dynamic_partitions(sample_partitions.name))
        entries = manifest_entries(platform.config())
        return DataVersionsByPartition(
            {e.sample_id: DataVersion(slide_data_version(e)) for e in entries if e.sample_id in wanted}
        )

    return slides
