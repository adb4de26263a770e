"""Operating the platform: the backfill schedule (new encoders, missing weights), staleness that tracks what
really changed, and failures classified (bad input not retried, transient I/O retried, out of memory)."""

from __future__ import annotations

import csv
import errno
import os
import shutil
from pathlib import Path

import pytest
import yaml
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    RunRequest,
    build_schedule_context,
    instance_for_test,
    materialize,
)
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.loader import LoadingContextForTest

from slide2vec_dagster import slide_embedding
from slide2vec_dagster.config import load_config
from slide2vec_dagster.defs.build import build_definitions
from slide2vec_dagster.defs.partitions import register
from slide2vec_dagster.defs.slides_asset import changed_slide_observations, manifest_entries
from slide2vec_dagster.encoders import get_spec
from slide2vec_dagster.failures import classify
from slide2vec_dagster.manifest import read_manifests
from slide2vec_dagster.staleness import due_samples
from tests.dagster_helpers import DATA, write_manifest

TILING = {"params": {"requested_spacing_um": 1.0, "requested_tile_size_px": 224}}
BASELINE = {"name": "baseline-color-texture", "batch_size": 32}


def _config(tmp_path: Path, pipelines: dict, rows: list[dict], execution: dict | None = None):
    write_manifest(tmp_path / "cohort.csv", rows)
    raw = {"manifests": ["cohort.csv"], "output_root": "out", "pipelines": pipelines}
    if execution:
        raw["execution"] = execution
    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    return config, build_definitions(config)


def _rows(tmp_path: Path) -> list[dict]:
    slides = tmp_path / "slides"
    slides.mkdir(exist_ok=True)
    rows = []
    for sample_id, source in (("a", "CMU-1-Small-Region.svs"), ("b", "synthetic-he-0.5mpp.tiff")):
        shutil.copyfile(DATA / source, slides / f"{sample_id}{Path(source).suffix}")
        rows.append({"sample_id": sample_id, "image_path": str(slides / f"{sample_id}{Path(source).suffix}")})
    return rows


def _run(defs, instance, partition: str):
    assets = [a for a in defs.assets if a.partitions_def is not None and a.partitions_def.name == "sample_id"]
    executable = [a for a in assets if a.is_executable]
    return materialize(
        executable, partition_key=partition, instance=instance, resources=defs.resources, raise_on_error=False
    )


def _tick(defs, instance):
    schedule = defs.resolve_schedule_def("backfill_schedule")
    # As a context manager: it sets Dagster's current state storage for the evaluation and resets it after.
    with build_schedule_context(instance=instance, repository_def=defs.get_repository_def()) as context:
        result = schedule.evaluate_tick(context)
    return result.run_requests[0] if result.run_requests else result.skip_message


def _requested(request: RunRequest) -> dict[str, set[str]]:
    subset = request.asset_graph_subset
    return {
        key.to_user_string(): set(subset.get_partitions_subset(key).get_partition_keys()) for key in subset.asset_keys
    }


def test_a_new_encoder_with_reused_coordinates_is_backfilled_alone(tmp_path: Path):
    rows = _rows(tmp_path)
    config, defs = _config(tmp_path, {"base": {"tiling": TILING, "model": BASELINE}}, rows)
    with instance_for_test() as instance:
        register(instance, read_manifests(config.manifests))
        for sample_id in ("a", "b"):
            assert _run(defs, instance, sample_id).success
        assert "current" in _tick(defs, instance)  # nothing missing, nothing stale
        # A new encoder is added, reusing the coordinates: only its embeddings are requested, for every slide.
        pipelines = {
            "base": {"tiling": TILING, "model": BASELINE},
            "second": {"tiling": {**TILING, "read_coordinates_from": "base"}, "model": {**BASELINE, "batch_size": 8}},
        }
        config, defs = _config(tmp_path, pipelines, rows)
        request = _tick(defs, instance)
        assert isinstance(request, RunRequest)
        assert _requested(request) == {"second/tile_embeddings": {"a", "b"}}
        assert request.tags["slide2vec/trigger"] == "backfill_schedule"


def test_a_pipeline_whose_weights_are_missing_launches_nothing(tmp_path: Path):
    rows = _rows(tmp_path)
    model = {"name": "uni", "weights": str(tmp_path / "models" / "uni")}
    config, defs = _config(tmp_path, {"uni20x": {"tiling": TILING, "model": model}}, rows)
    with instance_for_test() as instance:
        register(instance, read_manifests(config.manifests))
        message = _tick(defs, instance)
    assert isinstance(message, str) and "uni20x: 2 slide(s) due, none launched" in message
    # The words of the weights error: the repository, the download command, the key to set.
    repo = get_spec("uni").weights.repo_id
    assert repo in message and f"download {repo}" in message and "model.weights" in message


def test_a_changed_slide_or_manifest_row_makes_exactly_that_slide_stale(tmp_path: Path):
    rows = _rows(tmp_path)
    config, defs = _config(tmp_path, {"p": {"tiling": TILING, "model": BASELINE}}, rows)
    layout_dir = config.output_dir("p")
    pipeline = config.pipelines["p"]
    from slide2vec_dagster.layout import OutputLayout

    layout = OutputLayout(layout_dir)
    with instance_for_test() as instance:
        register(instance, read_manifests(config.manifests))
        registered = {"a", "b"}
        # Never observed: left to the slides' runs, whose first step observes them.
        assert changed_slide_observations(instance, manifest_entries(config), registered) == []
        for sample_id in ("a", "b"):
            assert defs.resolve_job_def("p_job").execute_in_process(partition_key=sample_id, instance=instance).success
        assert due_samples(pipeline, layout, manifest_entries(config)) == []
        assert _stale(instance, defs) == set()

        # Slide a's file is rewritten in place; slide b's manifest row gets a spacing override.
        path = Path(rows[0]["image_path"])
        stat = path.stat()
        path.write_bytes(path.read_bytes())
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with its mtime restored
        rows[1]["spacing_at_level_0"] = "0.5"
        config, defs = _config(tmp_path, {"p": {"tiling": TILING, "model": BASELINE}}, rows)
        due = {d.sample_id: d.reason for d in due_samples(config.pipelines["p"], layout, manifest_entries(config))}
        assert due == {
            "a": "stale: the slide file changed (or moved)",
            "b": "stale: the manifest's spacing_at_level_0 changed",
        }
        observed = changed_slide_observations(instance, manifest_entries(config), registered)
        assert {o.partition for o in observed} == {"a", "b"}
        for event in observed:
            instance.report_runless_asset_event(event)
        # The UI sees it too: every asset downstream of those two slides is stale.
        assert _stale(instance, defs) == {
            (key, sid)
            for sid in ("a", "b")
            for key in ("p/coordinates", "p/mask_preview", "p/tiling_preview", "p/tile_embeddings")
        }
        request = _tick(defs, instance)
        assert _requested(request)["p/coordinates"] == {"a", "b"}
        # The re-run finds a's content unchanged: it is re-checked, not recomputed.
        result = _run(defs, instance, "a")
        statuses = {
            e.asset_key.path[-1]: e.materialization.metadata["status"].value
            for e in result.get_asset_materialization_events()
            if "status" in e.materialization.metadata
        }
        assert statuses["coordinates"] == "skipped"


def test_settings_that_do_not_change_the_numbers_make_nothing_stale(tmp_path: Path):
    rows = _rows(tmp_path)
    config, defs = _config(tmp_path, {"p": {"tiling": TILING, "model": BASELINE}}, rows)
    with instance_for_test() as instance:
        register(instance, read_manifests(config.manifests))
        for sample_id in ("a", "b"):
            assert _run(defs, instance, sample_id).success
        changed = {
            "tiling": TILING,
            "model": {**BASELINE, "batch_size": 7},
            "speed": {"num_workers": 1, "prefetch_batches": 5},
        }
        config, defs = _config(tmp_path, {"p": changed}, rows)
        assert "current" in _tick(defs, instance)
        assert _stale(instance, defs) == set()
        # ...and one that does change them makes everything of the pipeline stale.
        changed["speed"]["output_dtype"] = "fp16"
        config, defs = _config(tmp_path, {"p": changed}, rows)
        assert _requested(_tick(defs, instance)) == {
            "p/coordinates": {"a", "b"}, "p/mask_preview": {"a", "b"}, "p/tiling_preview": {"a", "b"},
            "p/tile_embeddings": {"a", "b"},
        }  # fmt: skip
        assert {key for key, _ in _stale(instance, defs)} == {"p/tile_embeddings"}


def _stale(instance, defs) -> set[tuple[str, str]]:
    graph = defs.resolve_asset_graph()
    resolver = CachingStaleStatusResolver(instance, graph, LoadingContextForTest(instance))
    stale = set()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if not node.is_materializable:
            continue
        for sid in ("a", "b"):
            if resolver.get_status(key, sid) == StaleStatus.STALE:
                stale.add((key.to_user_string(), sid))
    return stale


# ------------------------------------------------------------------------------------ failure classes
@pytest.mark.parametrize(
    ("exc", "kind", "retry"),
    [
        (OSError(errno.EIO, "Input/output error"), "transient", True),
        (OSError(errno.ESTALE, "Stale file handle"), "transient", True),
        (OSError(errno.ETIMEDOUT, "Connection timed out"), "transient", True),
        (FileNotFoundError("slide file not found: /x.svs"), "input", False),
        (MemoryError(), "out_of_memory", False),
        (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), "out_of_memory", False),
        (ValueError("something unexpected"), "other", False),
    ],
)
def test_failures_are_classified(exc: BaseException, kind: str, retry: bool):
    found = classify(exc, batch_size=64)
    assert (found.kind, found.retry) == (kind, retry)
    if kind == "out_of_memory":
        assert "model.batch_size (now 64)" in found.hint and "32" in found.hint


def _retries(instance, run_id: str) -> int:
    events = instance.all_logs(run_id)
    return sum(1 for e in events if e.dagster_event and e.dagster_event.event_type_value == "STEP_UP_FOR_RETRY")


def test_a_transient_io_error_is_retried_and_bad_input_is_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    rows = _rows(tmp_path)
    config, defs = _config(
        tmp_path, {"p": {"tiling": TILING, "model": BASELINE}}, rows, {"max_retries": 2, "retry_delay_seconds": 0}
    )
    real = slide_embedding.cached_encoder
    hiccups = {"left": 1}

    def flaky(pipeline):
        if hiccups["left"]:
            hiccups["left"] -= 1
            raise OSError(errno.EIO, "Input/output error", "/nfs/slides/a.svs")
        return real(pipeline)

    monkeypatch.setattr(slide_embedding, "cached_encoder", flaky)
    with instance_for_test() as instance:
        register(instance, read_manifests(config.manifests))
        retried = _run(defs, instance, "a")
        assert retried.success  # the second attempt worked
        assert _retries(instance, retried.run_id) == 1  # the embedding step, once
        # A corrupt slide is bad input: one attempt, however many retries are allowed.
        Path(rows[1]["image_path"]).write_bytes(b"not a slide")
        broken = _run(defs, instance, "b")
        assert not broken.success and _retries(instance, broken.run_id) == 0
        # The error is on the failed partition itself (what the UI's partition page lists), not only in the log.
        records = instance.fetch_observations(
            AssetRecordsFilter(asset_key=AssetKey(["p", "coordinates"]), asset_partitions=["b"]), limit=10
        ).records
        metadata = records[0].asset_observation.metadata
        assert metadata["status"].value == "failed" and metadata["failure_kind"].value == "input"
        assert metadata["error"].value.startswith("SlideOpenError:")
    with (config.output_dir("p") / "process_list.csv").open() as handle:
        row = next(r for r in csv.DictReader(handle) if r["sample_id"] == "b")
    assert row["status"] == "failed" and row["error"].startswith("SlideOpenError:")


def test_out_of_memory_names_the_batch_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    rows = _rows(tmp_path)
    config, defs = _config(tmp_path, {"p": {"tiling": TILING, "model": BASELINE}}, rows[:1], {"retry_delay_seconds": 0})

    class Hungry:
        weights_origin = "test"

        def __call__(self, batch):
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(slide_embedding, "cached_encoder", lambda pipeline: Hungry())
    with instance_for_test() as instance:
        register(instance, read_manifests(config.manifests))
        result = _run(defs, instance, "a")
        assert not result.success and _retries(instance, result.run_id) == 0
    with (config.output_dir("p") / "process_list.csv").open() as handle:
        row = next(r for r in csv.DictReader(handle) if r["sample_id"] == "a")
    assert "out of memory: lower model.batch_size (now 32), e.g. to 16" in row["error"]


def test_the_schedule_skips_cleanly_with_nothing_registered(tmp_path: Path):
    _, defs = _config(tmp_path, {"p": {"tiling": TILING, "model": BASELINE}}, _rows(tmp_path))
    with instance_for_test() as instance:
        assert _tick(defs, instance) == "every registered slide is current for every pipeline"
