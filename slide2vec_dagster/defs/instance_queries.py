"""What only the Dagster instance knows, for ``lineage`` and ``status``: runs (status, times, UI link),
registered partitions, and which partitions of an asset are materialised, failed or in progress.

The one Dagster-importing piece of those commands: ``lineage.py`` and ``status.py`` receive an
``InstanceQueries`` through their lookup protocols and never import Dagster themselves.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

from dagster import (
    AssetKey,
    AssetPartitionStatus,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    DynamicPartitionsDefinition,
)

from slide2vec_dagster.config import PlatformConfig
from slide2vec_dagster.defs.asset_keys import patient_asset_key, pipeline_asset_keys
from slide2vec_dagster.defs.partitions import patient_partitions, sample_partitions
from slide2vec_dagster.defs.run_results import step_failure_message
from slide2vec_dagster.lineage import RunInfo
from slide2vec_dagster.status import FailureInfo, PartitionStates

DEFAULT_UI_URL = "http://127.0.0.1:3000"


def pipeline_assets(config: PlatformConfig, pipeline: str) -> list[tuple[str, str]]:
    """``(asset name, partitions name)`` of every asset of ``pipeline``, in graph order: the asset keys
    are decided in ``asset_keys.py`` only."""
    assets = [(key.path[-1], sample_partitions.name) for key in pipeline_asset_keys(pipeline, config)]
    patient = patient_asset_key(pipeline, config)
    return assets + ([(patient.path[-1], patient_partitions.name)] if patient else [])


class InstanceQueries:
    """Run and partition lookups on one Dagster instance (``lineage.RunLookup`` and
    ``status.PartitionLookup``)."""

    def __init__(self, instance: DagsterInstance, ui_url: str = DEFAULT_UI_URL) -> None:
        self.instance = instance
        self.ui_base = ui_url.rstrip("/")

    # lineage.RunLookup
    def run(self, run_id: str) -> RunInfo | None:
        try:
            record = self.instance.get_run_record_by_id(run_id)
        except Exception:  # a malformed id in a hand-edited sidecar is simply not a known run
            return None
        if record is None:
            return None
        run = record.dagster_run
        selection = tuple(tuple(key.path) for key in sorted(run.asset_selection or (), key=lambda k: k.path))
        return RunInfo(
            run_id=run.run_id,
            status=run.status.value,
            start_time=record.start_time,
            end_time=record.end_time,
            job_name=run.job_name,
            asset_keys=selection,
        )

    def ui_url(self, run_id: str) -> str:
        return f"{self.ui_base}/runs/{run_id}"

    def describe(self) -> str:
        home = os.environ.get("DAGSTER_HOME")
        return f"the Dagster instance at DAGSTER_HOME={home}" if home else "this Dagster instance"

    # status.PartitionLookup
    def registered(self, partitions: str) -> list[str]:
        return list(self.instance.get_dynamic_partitions(partitions))

    def partition_states(self, asset_key: Sequence[str], partitions: str) -> PartitionStates:
        key = AssetKey(list(asset_key))
        materialized = set(self.instance.get_materialized_partitions(key))
        registered = self.registered(partitions)
        # The asset status cache is what the UI shows: a partition is failed when its latest attempt
        # failed (a later success clears it), in progress while a run holds it.
        by_partition = (
            self.instance.get_status_by_partition(key, registered, DynamicPartitionsDefinition(name=partitions)) or {}
        )
        failed = {p for p, state in by_partition.items() if state == AssetPartitionStatus.FAILED}
        running = {p for p, state in by_partition.items() if state == AssetPartitionStatus.IN_PROGRESS}
        return PartitionStates(materialized=materialized, failed=failed, in_progress=running)

    def failure(self, asset_key: Sequence[str], partition: str) -> FailureInfo | None:
        """The latest failed attempt at one partition: its run and error message."""
        records = self.instance.fetch_failed_materializations(
            AssetRecordsFilter(asset_key=AssetKey(list(asset_key)), asset_partitions=[partition]), limit=1
        ).records
        if not records:
            return None
        entry = records[0].event_log_entry
        return FailureInfo(run_id=entry.run_id, error=self._run_error(entry.run_id), timestamp=entry.timestamp)

    def _run_error(self, run_id: str) -> str:
        """The failed steps' messages: our steps put the slide's ``<Type>: <message>`` in the Failure's
        ``error`` metadata; anything else has Dagster's error."""
        messages: list[str] = []
        for entry in self.instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE):
            event = entry.dagster_event
            message = step_failure_message(event.step_failure_data) if event is not None else None
            if message:
                messages.append(message)
        return "; ".join(dict.fromkeys(messages)) or "the run failed before the step ran (see the run in the UI)"


@contextlib.contextmanager
def open_instance_queries(ui_url: str = DEFAULT_UI_URL) -> Iterator[InstanceQueries]:
    """Queries on ``DagsterInstance.get()`` ($DAGSTER_HOME, which the CLI sets up first)."""
    with DagsterInstance.get() as instance:
        yield InstanceQueries(instance, ui_url)
