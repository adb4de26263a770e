#!/usr/bin/env python3
"""Orchestration overhead (issue #9 item 1): what running each slide as a Dagster run costs on top of the work.

Usage (from the project venv, in the repository root):
    python benchmarks/orchestration.py [--copies 4] [--paths loop,in-process,default,celery] [--json FILE]

The cohort: the demo's six slides (tests/data) ``--copies`` times under distinct ids (24 slides by default);
the pipeline: the demo's ``demo`` pipeline (tiling at 0.5 µm/px, 224 px, both previews, baseline-color-texture
tile embeddings). Measured in this one run, on this machine:

  loop        the same library calls the assets make (tile_sample, write the previews and the coordinates,
              embed_sample, write the embedding, update process_list.csv), slide after slide in one process:
              the baseline;
  in-process  ``slide2vec-dagster materialize`` (one run per slide, in the CLI's process, SQLite instance),
              the whole command's wall time;
  default     the deployed path with Dagster's default run launcher: Postgres, dagster-daemon, the cohort
              sensor, a new process per run (what the project had before Celery);
  celery      the deployed path of dagster.celery.yaml: Postgres, dagster-daemon, the cohort sensor, the
              Celery run launcher and long-lived workers (runs, cpu and gpu queues) on RabbitMQ + Redis.

For the deployed paths, two warm-up slides go first (the workers import torch and the code location, load
the model), then the cohort's rows are appended to the manifest; the clock starts at that write. One slide
is computed at a time, as in the loop (default launcher: max_concurrent_runs 1; Celery: one run worker
process, the next run already waiting in the broker), so the figures are overhead, not parallelism. Printed
per path: seconds per slide (wall / slides); overhead per slide: for the deployed paths the median over
slides of (its run's end - when it could start, i.e. its launch or the previous run's end if later) - the
loop's time for the same slide, for in-process the median over slides of the run's time (as the CLI prints
it) - the loop's time; the ratio of the wall times to the loop's; the time
from the manifest write to the first run starting (the sensor ticks every 5 s here, 30 s by default); and
the model loads per worker process, counted by the model cache (``model_cache`` metadata). With the
in-process path it also prints Dagster's floor: the median time of a run that does nothing, and the best
ratio to the loop that one run per slide allows with it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _deployed_stack as deployed  # sibling module of this script

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
DEMO_SLIDES = [
    ("cmu", "CMU-1-Small-Region.svs", None, None),
    ("cmu-dicom", "dicom-cmu-1-small-region", None, None),
    ("tcga", "tcga-cr-7395-01a-01-ts1.svs", None, "0.5"),
    ("synthetic", "synthetic-he-0.5mpp.tiff", None, None),
    ("synthetic-masked", "synthetic-he-0.5mpp.tiff", "synthetic-he-0.5mpp-mask.tiff", None),
    ("synthetic-aperio", "synthetic-he-aperio-0.25mpp.svs", None, None),
]
PIPELINE = "bench"
PIPELINES = {
    PIPELINE: {
        "tiling": {
            "params": {"requested_spacing_um": 0.5, "requested_tile_size_px": 224, "tolerance": 0.05},
            "seg_params": {"method": "hsv"},
            "preview": {"save_mask_preview": True, "save_tiling_preview": True},
        },
        "model": {"name": "baseline-color-texture", "batch_size": 64},
        "output_format": "pt",
    }
}
TARGETS = {"in-process ratio": 1.10, "deployed overhead s/slide": 1.5}


def cohort(copies: int, prefix: str = "b") -> list[dict[str, str]]:
    rows = []
    for copy in range(copies):
        for name, image, mask, spacing in DEMO_SLIDES:
            row = {"sample_id": f"{prefix}{copy}-{name}", "image_path": str(DATA / image), "patient_id": f"p-{name}"}
            row["mask_path"] = str(DATA / mask) if mask else ""
            row["spacing_at_level_0"] = spacing or ""
            rows.append(row)
    return rows


@dataclass
class PathResult:
    path: str
    slides: int
    wall_s: float
    overhead_s: float  # per slide (median for the deployed paths)
    first_run_latency_s: float | None = None
    model_loads: dict[str, int] = field(default_factory=dict)  # worker process -> loads
    failed: int = 0
    note: str = ""

    def per_slide(self) -> float:
        return self.wall_s / self.slides


def write_config(root: Path, rows: list[dict[str, str]]) -> Path:
    import yaml

    deployed.write_manifest(root / "cohort.csv", rows)
    config = {"manifests": ["cohort.csv"], "output_root": "out", "pipelines": PIPELINES}
    path = root / "platform.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


# --- the plain loop -------------------------------------------------------------------------------------------
def run_loop(root: Path, rows: list[dict[str, str]]) -> tuple[PathResult, dict[str, float]]:
    from slide2vec_dagster.artifacts import process_list
    from slide2vec_dagster.artifacts.config_file import write_config_yaml
    from slide2vec_dagster.artifacts.coordinates import read_coordinates, write_coordinates
    from slide2vec_dagster.artifacts.embeddings import write_embedding
    from slide2vec_dagster.artifacts.previews import write_png
    from slide2vec_dagster.config import load_config
    from slide2vec_dagster.coordinates_source import own_coordinates
    from slide2vec_dagster.layout import OutputLayout
    from slide2vec_dagster.manifest import read_manifests
    from slide2vec_dagster.slide_embedding import embed_sample
    from slide2vec_dagster.slide_tiling import tile_sample

    config = load_config(write_config(root, rows))
    pipeline = config.pipelines[PIPELINE]
    layout = OutputLayout(config.output_dir(PIPELINE))
    slides = read_manifests(config.manifests)
    per_slide: dict[str, float] = {}
    start = time.perf_counter()
    for sample_id, entry in slides.items():
        t0 = time.perf_counter()
        tiled = tile_sample(entry, pipeline, layout, run_id="loop", reuse_existing=False)
        write_config_yaml(layout.config_yaml, config.resolved_pipeline(PIPELINE))
        for name, image in (("mask_preview", tiled.mask_preview), ("tiling_preview", tiled.tiling_preview)):
            if image is not None:
                write_png(layout.preview(name, sample_id), image)
        npz, meta = layout.coordinates_npz(sample_id), layout.coordinates_meta(sample_id)
        write_coordinates(npz, meta, tiled.coordinates, tiled.meta)
        process_list.update(
            layout.process_list, sample_id, "done", num_tiles=tiled.n_tiles, image_path=entry.image_path,
            coordinates_npz_path=npz, run_id="loop",
        )  # fmt: skip
        coordinates = own_coordinates(layout, sample_id, read_coordinates(npz, meta))  # as the IO manager loads it
        embedded = embed_sample(
            entry, pipeline, layout, coordinates.pair, run_id="loop", reuse_existing=False, source=coordinates
        )
        payload = layout.embedding_payload(embedded.kind, sample_id, "pt")
        write_embedding(payload, layout.embedding_meta(embedded.kind, sample_id), embedded.features, embedded.meta)
        process_list.update(
            layout.process_list, sample_id, "done", encoder_name=embedded.meta["encoder_name"], feature_path=payload
        )
        per_slide[sample_id] = time.perf_counter() - t0
    wall = time.perf_counter() - start
    return PathResult("loop", len(rows), wall, 0.0, note="one process, no Dagster"), per_slide


# --- the in-process CLI ---------------------------------------------------------------------------------------
def run_in_process(
    root: Path, rows: list[dict[str, str]], loop_wall: float, loop_times: dict[str, float]
) -> PathResult:
    from dagster import AssetKey, DagsterInstance, DagsterRunStatus

    config_path = write_config(root, rows)
    home = root / "dagster_home"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "slide2vec_dagster.cli", "materialize", "--config", str(config_path)],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    wall = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise RuntimeError(f"materialize failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    previous = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        with DagsterInstance.get() as instance:
            failed = sum(run.status != DagsterRunStatus.SUCCESS for run in instance.get_runs())
            loads = model_loads(instance, AssetKey([PIPELINE, "tile_embeddings"]))
    finally:
        if previous is None:
            os.environ.pop("DAGSTER_HOME")
        else:
            os.environ["DAGSTER_HOME"] = previous
    # The CLI prints each run's own time ("  bench/<sample_id>: done ... (2.1 s, run 1a2b3c4d)").
    run_times = {
        match.group(1): float(match.group(2))
        for match in re.finditer(rf"^  {PIPELINE}/(\S+): \w+ .*\((\d+\.\d) s, run ", done.stdout, re.MULTILINE)
    }
    overheads = [run_times[sid] - loop_times[sid] for sid in run_times if sid in loop_times]
    runs_total = sum(run_times.values())
    note = (
        f"whole command {wall:.1f} s, of which its {len(run_times)} runs {runs_total:.1f} s "
        f"({runs_total / loop_wall:.2f}x the loop) and start-up, imports, registration {wall - runs_total:.1f} s"
    )
    overhead = statistics.median(overheads) if overheads else (wall - loop_wall) / len(rows)
    return PathResult("in-process", len(rows), wall, overhead, model_loads=loads, failed=failed, note=note)


def model_loads(instance: Any, key: Any) -> dict[str, int]:
    """Worker process -> models it loaded, from the embedding materialisations' model cache counters."""
    loads: dict[str, int] = defaultdict(int)
    for record in instance.fetch_materializations(key, limit=10_000).records:
        cache = record.asset_materialization.metadata.get("model_cache")
        if cache is not None:
            value = cache.value
            worker = f"{value.get('host', '?')}:{value['pid']}"
            loads[worker] = max(loads[worker], int(value["loads"]))
    return dict(loads)


# --- the deployed paths ---------------------------------------------------------------------------------------
def run_deployed(root: Path, rows: list[dict[str, str]], launcher: str, loop_times: dict[str, float]) -> PathResult:
    from dagster import AssetKey, DagsterInstance, DagsterRunStatus

    warm = cohort(1, prefix="w")[:2]
    # Celery: one run in the run worker and the next one waiting in the broker (delivered the moment the
    # first is acknowledged), so the daemon's dequeue interval is not on the clock. Default launcher: one.
    stack = deployed.DeployedStack(
        root, warm, PIPELINES, launcher=launcher, max_concurrent_runs=2 if launcher == "celery" else 1
    )
    with stack:
        if launcher == "celery":
            stack.start_workers(runs=1, cpu=1, gpu=1)
        stack.start_daemon()
        with DagsterInstance.get() as instance:
            stack.wait_for_runs(len(warm), timeout_s=600, instance=instance)
            warm_ids = {run.run_id for run in instance.get_runs()}
            # The clock starts when the new rows land in the manifest (written whole, then renamed).
            manifest = root / "cohort.csv"
            deployed.write_manifest(root / ".cohort.csv.new", warm + rows)
            start = time.time()
            os.replace(root / ".cohort.csv.new", manifest)
            runs = stack.wait_for_runs(len(warm) + len(rows), timeout_s=3600, instance=instance)
            new = [run for run in runs if run.run_id not in warm_ids]
            stats = {run.run_id: instance.get_run_stats(run.run_id) for run in new}
            end = max(s.end_time for s in stats.values())
            first_start = min(s.start_time for s in stats.values() if s.start_time)
            # A slide's overhead: from when it could start (its launch, or the end of the run before it: one
            # runs at a time) to its end, minus the loop's time for the same slide.
            overheads, previous_end = [], start
            for run in sorted(new, key=lambda r: stats[r.run_id].end_time or 0):
                s = stats[run.run_id]
                sample_id = run.tags.get("dagster/partition", "")
                if s.launch_time and s.end_time and sample_id in loop_times:
                    overheads.append(s.end_time - max(s.launch_time, previous_end) - loop_times[sample_id])
                previous_end = s.end_time or previous_end
            failed = sum(run.status != DagsterRunStatus.SUCCESS for run in new)
            loads = model_loads(instance, AssetKey([PIPELINE, "tile_embeddings"]))
    note = (
        "Celery: 1 run worker, 1 cpu and 1 gpu worker process, warm"
        if launcher == "celery"
        else "Dagster's default run launcher: a new process per run"
    )
    return PathResult(
        launcher,
        len(rows),
        end - start,
        statistics.median(overheads) if overheads else float("nan"),
        first_run_latency_s=first_start - start,
        model_loads=loads,
        failed=failed,
        note=note,
    )


# --- report ---------------------------------------------------------------------------------------------------
def empty_run_floor(folder: Path, runs: int = 20) -> float:
    """Median wall time of a run that does nothing (one partitioned asset returning 1) on a fresh SQLite
    instance like the CLI's: the least one Dagster run costs here, whatever the pipeline does."""
    from dagster import DagsterInstance, StaticPartitionsDefinition, asset, materialize

    partitions = StaticPartitionsDefinition([f"s{i}" for i in range(runs + 1)])

    @asset(partitions_def=partitions)
    def nothing() -> int:
        return 1

    times = []
    folder.mkdir(parents=True, exist_ok=True)
    with DagsterInstance.local_temp(str(folder)) as instance:
        for i in range(runs + 1):  # the first run creates the instance's databases: not counted
            started = time.perf_counter()
            materialize([nothing], instance=instance, partition_key=f"s{i}", raise_on_error=True)
            times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def floor_note(floor_s: float, loop: PathResult) -> str:
    best = (loop.wall_s + loop.slides * floor_s) / loop.wall_s
    return (
        f"Dagster's floor here: a run that does nothing takes {floor_s:.3f} s (median, SQLite instance); with one "
        f"run per slide the in-process path cannot beat {best:.2f}x the loop on these slides "
        f"({loop.per_slide():.2f} s of work each)."
    )


def report(results: list[PathResult]) -> str:
    loop = next((r for r in results if r.path == "loop"), None)
    lines = [
        f"{'path':<11} {'slides':>6} {'wall s':>8} {'s/slide':>8} {'overhead s/slide':>17} {'x loop':>7} "
        f"{'new row -> 1st run':>19}  model loads per worker process",
    ]
    for r in results:
        ratio = f"{r.wall_s / loop.wall_s:.2f}" if loop and loop.wall_s else "n/a"
        latency = f"{r.first_run_latency_s:.1f} s" if r.first_run_latency_s is not None else "-"
        loads = ", ".join(f"{n}" for n in r.model_loads.values()) or "-"
        processes = f" ({len(r.model_loads)} process(es))" if r.model_loads else ""
        overhead = "-" if r.path == "loop" else f"{r.overhead_s:.2f}"
        lines.append(
            f"{r.path:<11} {r.slides:>6} {r.wall_s:>8.1f} {r.per_slide():>8.2f} {overhead:>17} {ratio:>7} "
            f"{latency:>19}  {loads}{processes}" + (f"  FAILED RUNS: {r.failed}" if r.failed else "")
        )
    lines.append("")
    for r in results:
        if r.note:
            lines.append(f"  {r.path}: {r.note}")
    lines.append("")
    targets = []
    for r in results:
        if r.path == "in-process" and loop:
            ratio = r.wall_s / loop.wall_s
            verdict = "met" if ratio <= TARGETS["in-process ratio"] else "MISSED"
            targets.append(f"  in-process <= {TARGETS['in-process ratio']:.2f}x the loop: {ratio:.2f}x  {verdict}")
        if r.path in ("default", "celery"):
            verdict = "met" if r.overhead_s <= TARGETS["deployed overhead s/slide"] else "MISSED"
            targets.append(
                f"  {r.path}: overhead <= {TARGETS['deployed overhead s/slide']} s/slide (median): "
                f"{r.overhead_s:.2f} s  {verdict}"
            )
        if r.model_loads:
            most = max(r.model_loads.values())
            targets.append(
                f"  {r.path}: model loaded at most {most} time(s) per worker process over {r.slides} slides "
                f"({'met' if most == 1 else 'MISSED'})"
            )
    return "\n".join([*lines, "targets:", *targets])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=4, help="copies of the six demo slides (default 4: 24)")
    parser.add_argument("--paths", default="loop,in-process,default,celery", help="which paths, in order")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    if paths[0] != "loop":
        parser.error("--paths must start with loop: the other paths are compared with it")
    rows = cohort(args.copies)
    print(f"{len(rows)} slides: the six demo slides x {args.copies}; pipeline: tiling + previews + baseline embeddings")
    results: list[PathResult] = []
    with tempfile.TemporaryDirectory(prefix="s2v-orchestration-") as tmp:
        base = Path(tmp)
        (base / "loop").mkdir()
        loop, loop_times = run_loop(base / "loop", rows)
        results.append(loop)
        print(f"  loop: {loop.wall_s:.1f} s", flush=True)
        for path in paths[1:]:
            folder = base / path
            folder.mkdir()
            if path == "in-process":
                result = run_in_process(folder, rows, loop.wall_s, loop_times)
            elif path in ("default", "celery"):
                missing = deployed.unreachable_servers(
                    ["PostgreSQL", "RabbitMQ", "Redis"] if path == "celery" else ["PostgreSQL"]
                )
                if missing:
                    print(f"  {path}: skipped, not reachable: {', '.join(missing)}")
                    continue
                result = run_deployed(folder, rows, path, loop_times)
            else:
                parser.error(f"unknown path {path!r}")
            results.append(result)
            print(f"  {path}: {result.wall_s:.1f} s", flush=True)
        floor_s = empty_run_floor(base / "floor") if "in-process" in paths else None
    print()
    print(report(results))
    if floor_s is not None:
        print(floor_note(floor_s, loop))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
