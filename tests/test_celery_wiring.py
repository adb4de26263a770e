"""How the definitions are wired for Celery, without servers: the executor, the steps' queues and pools, the
gpu pool's size, the model cache and the platform config's execution block."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from dagster import instance_for_test

from slide2vec_dagster.config import ConfigError, load_config
from slide2vec_dagster.defs.build import build_definitions, celery_executor_config
from slide2vec_dagster.defs.slide_runs import GPU_POOL, ensure_gpu_pool
from slide2vec_dagster.encoders.cache import ModelCache
from tests.dagster_helpers import GOOD_ROWS, write_manifest

QUEUE_TAG = "dagster-celery/queue"


def _config(tmp_path: Path, execution: dict | None = None):
    write_manifest(tmp_path / "cohort.csv", GOOD_ROWS)
    pipelines = {
        "p": {
            "tiling": {"params": {"requested_spacing_um": 0.5, "requested_tile_size_px": 224}},
            "model": {"name": "baseline-color-texture"},
        }
    }
    config = {"manifests": ["cohort.csv"], "output_root": "out", "pipelines": pipelines}
    if execution is not None:
        config["execution"] = execution
    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return load_config(path)


def test_in_process_by_default_and_celery_when_asked(tmp_path: Path):
    plain = build_definitions(_config(tmp_path))
    assert plain.resolve_job_def("p_job").executor_def.name == "in_process"

    celery = {"executor": "celery", "celery": {"cpu_queue": "tiles", "gpu_queue": "models"}}
    defs = build_definitions(_config(tmp_path, celery))
    executor = defs.resolve_job_def("p_job").executor_def
    assert executor.name == "celery"
    settings = celery_executor_config(_config(tmp_path, celery))
    assert settings["broker"] == "pyamqp://guest@127.0.0.1:5672//"
    assert settings["backend"].startswith("redis://")  # a shared store: run monitoring reads it
    source = settings["config_source"]
    assert source["task_acks_late"] and source["task_reject_on_worker_lost"] and source["task_track_started"]
    assert source["worker_prefetch_multiplier"] == 1
    assert source["task_default_queue"] == "tiles"  # untagged steps (the slide observation) are light


def test_steps_go_to_their_queues_and_the_models_to_the_gpu_pool(tmp_path: Path):
    celery = {"executor": "celery", "celery": {"cpu_queue": "tiles", "gpu_queue": "models"}}
    job = build_definitions(_config(tmp_path, celery)).resolve_job_def("p_job")
    nodes = {node.name: node for node in job.graph.nodes}
    assert nodes["p__tiling"].definition.tags[QUEUE_TAG] == "tiles"
    assert nodes["p__tile_embeddings"].definition.tags[QUEUE_TAG] == "models"
    assert nodes["p__tile_embeddings"].definition.pool == GPU_POOL
    assert nodes["p__tiling"].definition.pool is None  # tiling never waits for a GPU


def test_the_gpu_pool_takes_its_size_from_the_config(tmp_path: Path):
    config = _config(tmp_path, {"gpu_pool_size": 3})
    with instance_for_test() as instance:
        ensure_gpu_pool(instance, config)
        assert instance.event_log_storage.get_concurrency_info(GPU_POOL).slot_count == 3
        ensure_gpu_pool(instance, _config(tmp_path, {"gpu_pool_size": 1}))
        assert instance.event_log_storage.get_concurrency_info(GPU_POOL).slot_count == 1


@pytest.mark.parametrize(
    "execution, key",
    [
        ({"executor": "ray"}, "executor"),
        ({"celery": {"gpu_queue": "gpu queue!"}}, "gpu_queue"),
        ({"gpu_pool_size": 0}, "gpu_pool_size"),
        ({"encoder_cache_gb": 0}, "encoder_cache_gb"),
        ({"celery": {"brokr": "x"}}, "brokr"),
    ],
)
def test_bad_execution_settings_are_refused_naming_the_key(tmp_path: Path, execution: dict, key: str):
    with pytest.raises(ConfigError, match=key):
        _config(tmp_path, execution)


class _Model:
    def __init__(self, size: int) -> None:
        self.size = size


def test_the_model_cache_loads_once_and_evicts_the_least_recently_used(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("slide2vec_dagster.encoders.cache.model_bytes", lambda model: model.size)
    cache = ModelCache(budget_bytes=100)
    loads: list[str] = []

    def loader(name: str, size: int):
        return lambda: loads.append(name) or _Model(size)

    a = cache.get("a", loader("a", 60))
    assert cache.get("a", loader("a", 60)) is a  # a hit: not loaded again
    cache.get("b", loader("b", 30))
    cache.get("a", loader("a", 60))  # a is now the most recently used
    cache.get("c", loader("c", 30))  # 120 > 100: b (least recently used) goes, a stays
    assert loads == ["a", "b", "c"]
    assert cache.get("a", loader("a", 60)) is a
    cache.get("b", loader("b", 30))
    assert loads == ["a", "b", "c", "b"]
    stats = cache.stats.as_dict()
    assert stats["loads"] == 4 and stats["hits"] == 3 and stats["evictions"] == 2
    # A model larger than the whole budget is still kept (alone): evicting it would reload it every slide.
    cache.get("huge", loader("huge", 500))
    assert cache.get("huge", loader("huge", 500)) is not None and loads[-1] == "huge" and loads.count("huge") == 1


def test_a_resumed_run_keeps_the_steps_it_finished_and_runs_the_rest():
    """What ``ResumingCeleryExecutor`` gives the Celery loop when a run worker died: the steps after the last
    success, with the finished steps' outputs known (a run whose second step was cut off stands in for it)."""
    from types import SimpleNamespace

    from dagster import DagsterInstance, Failure, job, op
    from dagster._core.definitions.job_base import InMemoryJob
    from dagster._core.execution.api import create_execution_plan

    from slide2vec_dagster.defs.celery_executor import steps_left_to_run

    @op
    def tiled() -> int:
        return 1

    @op
    def embedded(n: int) -> int:
        raise Failure("the worker died here")

    @op
    def summarised(n: int) -> int:
        return n

    @job
    def slide_job():
        summarised(embedded(tiled()))

    with instance_for_test() as instance:
        assert isinstance(instance, DagsterInstance)
        result = slide_job.execute_in_process(instance=instance, raise_on_error=False)
        run = instance.get_run_by_id(result.run_id)
        context = SimpleNamespace(dagster_run=run, instance=instance, job=InMemoryJob(slide_job))
        plan, left = steps_left_to_run(context, create_execution_plan(slide_job))
    assert left == ["embedded", "summarised"]
    assert plan.step_keys_to_execute == ["embedded", "summarised"]
    # The kept step's output is read from this same run (its IO manager's path): the step is not run again.
    produced = plan.known_state.parent_state
    assert produced.run_id == run.run_id
    assert {handle.step_key for handle in produced.produced_outputs} == {"tiled"}
