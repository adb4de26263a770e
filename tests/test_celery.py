"""The deployed path against the real servers of this machine: Postgres storage, RabbitMQ broker, Redis result
backend, ``dagster-daemon`` and long-lived ``slide2vec-dagster worker`` processes (a run queue, a cpu queue for
tiling, a gpu queue for the models), each test on its own database and queues.

Skipped, with the reason, only when a server is not reachable.
"""

from __future__ import annotations

import csv
import json
import signal
import time
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterEventType, DagsterInstance, DagsterRunStatus

from benchmarks._deployed_stack import DeployedStack, unreachable_servers
from tests.contract import check_output_dir

DATA = Path(__file__).resolve().parent / "data"
SLOW_WORKER = Path(__file__).resolve().parent / "celery_slow_worker.py"
SLIDES = ["CMU-1-Small-Region.svs", "synthetic-he-0.5mpp.tiff", "synthetic-he-aperio-0.25mpp.svs"]
PIPELINE = {
    "p": {
        "tiling": {"params": {"requested_spacing_um": 1.0, "requested_tile_size_px": 224}},
        "model": {"name": "baseline-color-texture", "batch_size": 8},
    }
}
ASSETS = [AssetKey(["p", name]) for name in ("coordinates", "mask_preview", "tiling_preview", "tile_embeddings")]

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _servers() -> None:
    missing = unreachable_servers()
    if missing:
        pytest.skip(f"the Celery tests need PostgreSQL, RabbitMQ and Redis on 127.0.0.1; not reachable: {missing}")


def _rows(count: int) -> list[dict[str, str]]:
    """``count`` slides: copies of the test slides under distinct ids (two per patient)."""
    return [
        {"sample_id": f"s{i:02d}", "image_path": str(DATA / SLIDES[i % len(SLIDES)]), "patient_id": f"pt{i // 2}"}
        for i in range(count)
    ]


def _partition(run) -> str:
    """A backfill's run names its single partition as a range of one."""
    tags = run.tags
    if "dagster/partition" in tags:
        return tags["dagster/partition"]
    assert tags["dagster/asset_partition_range_start"] == tags["dagster/asset_partition_range_end"], tags
    return tags["dagster/asset_partition_range_start"]


def _process_list(stack: DeployedStack) -> dict[str, dict[str, str]]:
    with (stack.output_dir("p") / "process_list.csv").open(newline="", encoding="utf-8") as handle:
        return {row["sample_id"]: row for row in csv.DictReader(handle)}


def _step_workers(instance: DagsterInstance, run_id: str) -> dict[str, str]:
    """step key -> the Celery worker (hostname) that executed it, from the run's engine events."""
    workers = {}
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        metadata = entry.dagster_event.event_specific_data.metadata or {}
        if "Celery worker" in metadata and entry.step_key:
            workers[entry.step_key] = metadata["Celery worker"].value
    return workers


def _embedding_metadata(instance: DagsterInstance) -> list[dict]:
    records = instance.fetch_materializations(ASSETS[-1], limit=1000).records
    return [record.asset_materialization.metadata for record in records]


def test_a_backfill_of_12_slides_runs_on_celery_workers_with_models_loaded_once(tmp_path: Path):
    from benchmarks import _scale_lib as lib

    with DeployedStack(tmp_path, _rows(12), PIPELINE) as stack:
        registered = stack.cli("register")
        assert registered.returncode == 0, registered.stderr
        stopped = stack.dagster("sensor", "stop", "cohort_sensor")  # the backfill, not the sensor, runs them
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        stack.start_workers(runs=2, cpu=2, gpu=1)
        stack.start_daemon()
        with DagsterInstance.get() as instance:
            with lib.workspace(instance, stack.config_path) as context:
                backfill_id, _ = lib.launch_backfill(context, ASSETS, [row["sample_id"] for row in stack.rows])
            runs = stack.wait_for_runs(12, timeout_s=600, instance=instance)
            assert {run.tags.get("dagster/backfill") for run in runs} == {backfill_id}
            assert sorted(_partition(run) for run in runs) == [f"s{i:02d}" for i in range(12)]
            assert [run.status for run in runs] == [DagsterRunStatus.SUCCESS] * 12, stack.log("daemon")[-3000:]

            # Each step ran on its queue's workers: tiling on the cpu worker, the model on the gpu worker.
            cpu_host, gpu_host = f"{stack.queues['cpu']}-", f"{stack.queues['gpu']}-"
            for run in runs:
                workers = _step_workers(instance, run.run_id)
                assert workers["p__tiling"].startswith(cpu_host), workers
                assert workers["p__tile_embeddings"].startswith(gpu_host), workers
            # One gpu worker process: the model was loaded once and reused for the 11 other slides.
            caches = [json.loads(json.dumps(m["model_cache"].value)) for m in _embedding_metadata(instance)]
            assert len(caches) == 12
            assert {cache["loads"] for cache in caches} == {1}
            assert len({cache["pid"] for cache in caches}) == 1
            assert sorted(cache["hits"] for cache in caches) == list(range(12))

    rows = _process_list(stack)
    assert sorted(rows) == [f"s{i:02d}" for i in range(12)]
    assert {row["status"] for row in rows.values()} == {"done"}
    assert check_output_dir(stack.output_dir("p")) == []


def test_a_worker_killed_mid_slide_leaves_no_partial_file_and_the_slide_is_done_after_redelivery(tmp_path: Path):
    marker = tmp_path / "embedding-started"
    slow = {"S2V_SLOW_MARKER": str(marker), "S2V_SLOW_SECONDS": "600"}
    with DeployedStack(tmp_path / "stack", _rows(1), PIPELINE) as stack:
        stack.start_worker("worker-runs", "runs")
        stack.start_worker("worker-cpu", "cpu")
        stack.start_worker("worker-gpu-slow", "gpu", shim=SLOW_WORKER, extra_env=slow)
        stack.wait_ready(["worker-runs", "worker-cpu", "worker-gpu-slow"])
        stack.start_daemon()  # the cohort sensor registers the slide and starts its run
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert time.monotonic() < deadline, stack.log("worker-gpu-slow")[-3000:]
            time.sleep(0.5)
        out = stack.output_dir("p")
        holder = json.loads(stack.output_dir("p").joinpath(".locks/sample_id/s00.lock").read_text())
        assert holder["pid"] == int(marker.read_text().split()[0])  # the slow worker holds the slide

        stack.kill("worker-gpu-slow", signal.SIGKILL)  # mid-slide: inside the model's forward pass

        # Nothing half-written: no embedding files for the slide, no temporary siblings anywhere.
        assert (
            not (out / "tile_embeddings" / "s00.pt").exists()
            and not (out / "tile_embeddings" / "s00.meta.json").exists()
        )
        assert [p for p in out.rglob("*") if ".tmp" in p.name] == []
        # The broker redelivers the unacknowledged step to the next gpu worker, which finishes the slide.
        stack.start_worker("worker-gpu", "gpu")
        with DagsterInstance.get() as instance:
            (run,) = stack.wait_for_runs(1, timeout_s=300, instance=instance)
            assert run.status == DagsterRunStatus.SUCCESS, stack.log("worker-runs")[-3000:]
            messages = [entry.message for entry in instance.all_logs(run.run_id)]
            assert any("died before finishing" in message and str(holder["pid"]) in message for message in messages)
            workers = _step_workers(instance, run.run_id)
            assert workers["p__tile_embeddings"].startswith(f"{stack.queues['gpu']}-")

    rows = _process_list(stack)
    assert rows["s00"]["status"] == "done" and rows["s00"]["feature_path"].endswith("s00.pt")
    assert check_output_dir(out) == []
    assert out.joinpath(".locks/sample_id/s00.lock").read_text() == ""


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_a_run_worker_killed_mid_run_is_resumed_by_another(tmp_path: Path):
    """The run's own worker dies while the slide is being embedded: the broker delivers the run again to the
    other run worker, which resumes it (tiling kept), and the slide ends done."""
    marker = tmp_path / "embedding-started"
    slow = {"S2V_SLOW_MARKER": str(marker), "S2V_SLOW_SECONDS": "4"}
    with DeployedStack(tmp_path / "stack", _rows(1), PIPELINE) as stack:
        for name in ("worker-runs-a", "worker-runs-b"):
            stack.start_worker(name, "runs", concurrency=1)
        stack.start_worker("worker-cpu", "cpu")
        stack.start_worker("worker-gpu-slow", "gpu", shim=SLOW_WORKER, extra_env=slow)
        stack.wait_ready(["worker-runs-a", "worker-runs-b", "worker-cpu", "worker-gpu-slow"])
        stack.start_daemon()
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert time.monotonic() < deadline, stack.log("worker-gpu-slow")[-3000:]
            time.sleep(0.5)
        with DagsterInstance.get() as instance:
            (run,) = instance.get_runs()
            started = [e.message for e in instance.all_logs(run.run_id) if "Started process for run" in e.message]
            run_pid = int(started[0].rsplit("pid: ", 1)[1].rstrip(")."))
            owner = next(
                name for name in ("worker-runs-a", "worker-runs-b") if stack.processes[name].pid == _parent(run_pid)
            )
            stack.kill(owner, signal.SIGKILL)  # the run worker and its pool: the run's process is gone

            (run,) = stack.wait_for_runs(1, timeout_s=300, instance=instance)
            assert run.status == DagsterRunStatus.SUCCESS, stack.log("daemon")[-3000:]
            messages = [entry.message for entry in instance.all_logs(run.run_id)]
            assert any("the run worker that ran this run is gone" in m for m in messages), messages[-20:]
            # The tiling was done before the kill: kept, not done again.
            resumed = next(m for m in messages if m.startswith("Resuming the run:"))
            assert "p__tiling" in resumed.split("kept", 1)[1].split(";")[0], resumed
            tiling_starts = [m for m in messages if m.startswith('Started execution of step "p__tiling"')]
            assert len(tiling_starts) == 1, tiling_starts

    row = _process_list(stack)["s00"]
    assert row["status"] == "done" and row["feature_path"].endswith("s00.pt")
    assert check_output_dir(stack.output_dir("p")) == []


def test_a_slide_that_kills_every_worker_fails_with_a_clear_row(tmp_path: Path):
    """execution.max_retries: 0 -> the first redelivery after a worker died is refused: a failed row, no loop."""
    marker = tmp_path / "embedding-started"
    slow = {"S2V_SLOW_MARKER": str(marker), "S2V_SLOW_SECONDS": "600"}
    with DeployedStack(tmp_path / "stack", _rows(1), PIPELINE, execution={"max_retries": 0}) as stack:
        stack.start_worker("worker-runs", "runs")
        stack.start_worker("worker-cpu", "cpu")
        stack.start_worker("worker-gpu-slow", "gpu", shim=SLOW_WORKER, extra_env=slow)
        stack.wait_ready(["worker-runs", "worker-cpu", "worker-gpu-slow"])
        stack.start_daemon()
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert time.monotonic() < deadline, stack.log("worker-gpu-slow")[-3000:]
            time.sleep(0.5)
        stack.kill("worker-gpu-slow", signal.SIGKILL)
        stack.start_worker("worker-gpu", "gpu")
        with DagsterInstance.get() as instance:
            (run,) = stack.wait_for_runs(1, timeout_s=300, instance=instance)
            assert run.status == DagsterRunStatus.FAILURE
    row = _process_list(stack)["s00"]
    assert row["status"] == "failed"
    assert row["error"].startswith("WorkerDiedError: ") and "died 1 times in a row" in row["error"]
    assert "execution.max_retries = 0" in row["error"]
    # Its tiling was done before the embedding step died: kept. No embedding file.
    assert row["num_tiles"] and not row["feature_path"]
    assert not (stack.output_dir("p") / "tile_embeddings" / "s00.pt").exists()


def test_two_workers_never_write_the_same_partition_at_once(tmp_path: Path):
    """Two runs of the same slide at once, two gpu workers and a gpu pool of 2: the second embedding step waits
    for the first one's lock, then finds the embeddings current and leaves them alone."""
    from benchmarks import _scale_lib as lib

    marker = tmp_path / "forward-calls"
    slow = {"S2V_SLOW_MARKER": str(marker), "S2V_SLOW_SECONDS": "3"}
    with DeployedStack(tmp_path / "stack", _rows(1), PIPELINE, execution={"gpu_pool_size": 2}) as stack:
        assert stack.cli("register").returncode == 0
        assert stack.dagster("sensor", "stop", "cohort_sensor").returncode == 0
        stack.start_worker("worker-runs", "runs", concurrency=2)
        stack.start_worker("worker-cpu", "cpu", concurrency=2)
        for name in ("worker-gpu0", "worker-gpu1"):
            stack.start_worker(name, "gpu", shim=SLOW_WORKER, extra_env=slow)
        stack.wait_ready(["worker-runs", "worker-cpu", "worker-gpu0", "worker-gpu1"])
        stack.start_daemon()
        with DagsterInstance.get() as instance:
            with lib.workspace(instance, stack.config_path) as context:
                for _ in range(2):
                    lib.launch_backfill(context, ASSETS, ["s00"])
            runs = stack.wait_for_runs(2, timeout_s=600, instance=instance)
            assert [run.status for run in runs] == [DagsterRunStatus.SUCCESS] * 2
            messages = [entry.message for run in runs for entry in instance.all_logs(run.run_id)]
            statuses = sorted(str(m["status"].value) for m in _embedding_metadata(instance))
            gpu_workers = {_step_workers(instance, run.run_id)["p__tile_embeddings"] for run in runs}
    # Both steps ran at once on the two gpu workers, but only one wrote: the other waited, then skipped.
    assert len(gpu_workers) == 2, gpu_workers
    forward_pids = {line.split()[0] for line in marker.read_text().splitlines()}
    assert len(forward_pids) == 1, "both workers ran the model on the same slide"
    assert statuses == ["done", "skipped"], statuses
    assert any("waited" in message and "another worker writing it" in message for message in messages), messages
    assert check_output_dir(stack.output_dir("p")) == []
