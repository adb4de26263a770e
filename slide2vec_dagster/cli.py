"""``slide2vec-dagster``: check a config, register a cohort, materialise it, run the demo."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import time
import warnings
from pathlib import Path

from slide2vec_dagster.config import (
    CONFIG_ENV_VAR,
    REPO_ROOT,
    ConfigError,
    PlatformConfig,
    default_config_path,
    load_config,
    output_location_problems,
)
from slide2vec_dagster.manifest import ManifestError, patients_of, read_manifests


def ensure_dagster_home() -> Path:
    """$DAGSTER_HOME, defaulting to ./.dagster_home, with the repository's dagster.yaml in it."""
    home = Path(os.environ.get("DAGSTER_HOME") or Path.cwd() / ".dagster_home").absolute()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    instance_yaml = home / "dagster.yaml"
    template = REPO_ROOT / "dagster.yaml"
    if not instance_yaml.exists() and template.exists():
        shutil.copyfile(template, instance_yaml)
    return home


def _load(args: argparse.Namespace) -> PlatformConfig:
    path = Path(args.config) if args.config else default_config_path()
    os.environ[CONFIG_ENV_VAR] = str(path.absolute())  # runs and `dagster dev` see the same config
    return load_config(path)


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args)
    slides = read_manifests(config.manifests)
    print(f"config {config.source_path}: OK")
    print(f"  manifests: {len(config.manifests)} file(s), {len(slides)} slide(s)")
    for name in config.pipelines:
        print(f"  pipeline {name}: output_dir {config.output_dir(name)}")
    problems = output_location_problems(config)
    rows = [f"{entry.where}: {entry.problem}" for entry in slides.values() if entry.problem]
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if rows:
        print(f"{len(rows)} row(s) will fail their own slide until fixed:", file=sys.stderr)
        for row in rows:
            print(f"  {row}", file=sys.stderr)
    return 1 if problems or rows else 0


def cmd_register(args: argparse.Namespace) -> int:
    from dagster import DagsterInstance

    from slide2vec_dagster.defs.partitions import register
    from slide2vec_dagster.defs.slide_runs import ensure_gpu_pool

    config = _load(args)
    ensure_dagster_home()
    with DagsterInstance.get() as instance:
        new_samples, new_patients = register(instance, read_manifests(config.manifests))
        ensure_gpu_pool(instance, config)  # backfills launched from the UI find the pool sized
    print(f"registered {len(new_samples)} new sample_id and {len(new_patients)} new patient_id partition(s)")
    return 0


def cmd_materialize(args: argparse.Namespace) -> int:
    from dagster import DagsterInstance

    from slide2vec_dagster.artifacts.atomic import sweep_debris
    from slide2vec_dagster.defs.build import build_definitions
    from slide2vec_dagster.defs.partitions import register
    from slide2vec_dagster.defs.run_results import run_outcome
    from slide2vec_dagster.defs.slide_runs import HOST_TAG, PID_TAG, ensure_gpu_pool, mark_orphaned_runs

    config = _load(args)
    home = ensure_dagster_home()
    slides = read_manifests(config.manifests)
    pipelines = args.pipeline or list(config.pipelines)
    unknown = [p for p in pipelines if p not in config.pipelines]
    if unknown:
        print(f"unknown pipeline(s) {unknown}; the config defines {list(config.pipelines)}", file=sys.stderr)
        return 2
    samples = args.sample or list(slides)
    missing = [s for s in samples if s not in slides]
    if missing:
        print(f"sample_id(s) {missing} are in no manifest of {config.source_path}", file=sys.stderr)
        return 2
    problems = output_location_problems(config)
    if problems:
        print("error: " + "\nerror: ".join(problems), file=sys.stderr)
        return 2
    for pipeline in pipelines:
        swept = sweep_debris(config.output_dir(pipeline))
        if swept:
            print(f"removed {len(swept)} temporary file(s) left by interrupted runs in {config.output_dir(pipeline)}")
    defs = build_definitions(config)
    failures = 0
    with DagsterInstance.get() as instance:
        ensure_gpu_pool(instance, config)
        orphans = mark_orphaned_runs(instance)
        if orphans:
            print(f"marked {len(orphans)} run(s) failed whose process had died: {', '.join(o[:8] for o in orphans)}")
        new_samples, _ = register(instance, slides)
        print(f"DAGSTER_HOME={home}: {len(new_samples)} new sample partition(s) registered")
        tags = {"slide2vec/trigger": "cli", PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}

        def run(job_name: str, partition: str, label: str, unit: str) -> bool:
            started = time.perf_counter()
            result = defs.resolve_job_def(job_name).execute_in_process(
                partition_key=partition,
                instance=instance,
                raise_on_error=False,
                # Who runs it, so a later command can fail it if this process is killed.
                tags=tags,
                run_config={"loggers": {"console": {"config": {"log_level": args.log_level}}}},
            )
            outcome = run_outcome(result)
            if outcome.status == "failed":
                detail = outcome.error
            elif outcome.num_slides is not None:
                detail = f"{outcome.num_slides} slide(s), {outcome.encoder}"
            else:
                detail = f"{outcome.num_tiles} {unit}" + (f", {outcome.encoder} features" if outcome.encoder else "")
            timing = f"({time.perf_counter() - started:.1f} s, run {result.run_id[:8]})"
            print(f"  {label}: {outcome.status:7s} {detail}  {timing}")
            return outcome.status == "failed"

        for pipeline in pipelines:
            unit = "regions" if config.pipelines[pipeline].is_hierarchical else "tiles"
            for sample_id in samples:
                failures += run(f"{pipeline}_job", sample_id, f"{pipeline}/{sample_id}", unit)
        # Patients after every slide: a patient's run reads its slides' embeddings.
        patients = patients_of({sid: slides[sid] for sid in samples})
        for pipeline in pipelines:
            if config.pipelines[pipeline].level != "patient":
                continue
            for patient_id in patients:
                failures += run(f"{pipeline}_patients_job", patient_id, f"{pipeline}/patient {patient_id}", "")
    for pipeline in pipelines:
        print(f"outputs of {pipeline}: {config.output_dir(pipeline)}")
    if failures:
        print(f"{failures} partition(s) failed; see process_list.csv and the runs in the UI", file=sys.stderr)
    return 1 if failures else 0


def cmd_demo(args: argparse.Namespace) -> int:
    args.config = args.config or str(REPO_ROOT / "demo" / "config.yaml")
    code = cmd_materialize(args)
    print(
        "\nOpen the UI:  DAGSTER_HOME=$PWD/.dagster_home "
        f"{CONFIG_ENV_VAR}={Path(args.config).absolute()} dagster dev -h 127.0.0.1 -p 3000\n"
        "then browse http://127.0.0.1:3000 (Assets -> demo)."
    )
    return code


def cmd_lineage(args: argparse.Namespace) -> int:
    from slide2vec_dagster.defs.instance_queries import open_instance_queries
    from slide2vec_dagster.lineage import format_lineage, lineage_of

    pipelines = None
    if args.config:  # only then: names pipelines whose output_dir is not <output_root>/<name>
        config = _load(args)
        pipelines = {config.output_dir(name): name for name in config.pipelines}
    ensure_dagster_home()
    try:
        with open_instance_queries(args.ui_url) as queries:
            found = lineage_of(args.path, queries, pipelines)
    except (FileNotFoundError, IsADirectoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(found.to_json(), indent=2, default=str) if args.json else format_lineage(found))
    return 0 if found.platform_file else 1


def cmd_status(args: argparse.Namespace) -> int:
    from slide2vec_dagster.defs.instance_queries import open_instance_queries, pipeline_assets
    from slide2vec_dagster.status import FileStaleness, format_status, pipeline_status

    config = _load(args)
    pipelines = args.pipeline or list(config.pipelines)
    unknown = [p for p in pipelines if p not in config.pipelines]
    if unknown:
        print(f"unknown pipeline(s) {unknown}; the config defines {list(config.pipelines)}", file=sys.stderr)
        return 2
    notes = []
    try:
        slides = read_manifests(config.manifests)
    except ManifestError as exc:  # the instance and the files can still be reported on
        slides = {}
        notes.append(f"staleness not checked: {exc}")
    home = ensure_dagster_home()
    with open_instance_queries() as queries:
        staleness = FileStaleness(config, slides)
        statuses = [
            pipeline_status(name, config.output_dir(name), pipeline_assets(config, name), queries, staleness)
            for name in pipelines
        ]
        registered = set(queries.registered("sample_id"))
    unregistered = [sid for sid in slides if sid not in registered]
    if unregistered:
        notes.append(
            f"{len(unregistered)} manifest slide(s) are not registered in DAGSTER_HOME={home} yet (run "
            f"`slide2vec-dagster register --config {config.source_path}`, or let the cohort sensor do it): "
            + ", ".join(unregistered[:20])
            + (" ..." if len(unregistered) > 20 else "")
        )
    if args.json:
        payload = {"dagster_home": str(home), "pipelines": [s.to_json() for s in statuses], "notes": notes}
        print(json.dumps(payload, indent=2))
    else:
        print(f"DAGSTER_HOME={home}\n")
        print(format_status(statuses), end="")
        for note in notes:
            print(f"note: {note}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """A long-lived Celery worker for one queue (by default ``dagster``: runs; ``cpu``: tiling; ``gpu``: models)."""
    config = _load(args)  # exports the config path: the tasks' code location loads the same config
    ensure_dagster_home()
    if config.execution.executor != "celery":
        print(
            f"warning: {config.source_path} has execution.executor {config.execution.executor!r}: runs will not "
            "send steps to Celery workers (set execution.executor: celery)",
            file=sys.stderr,
        )
    if args.gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(args.gpu)
    from slide2vec_dagster.defs.celery_app import app, let_runs_wait_on_their_steps, warm_up

    celery = config.execution.celery
    queue = args.queue or celery.run_queue
    runs_worker = queue == celery.run_queue
    warm_up(steps=not runs_worker)
    if runs_worker:
        let_runs_wait_on_their_steps()
    # Processes, never threads: two Dagster runs in one process deadlock on the logging lock (each run
    # reconfigures logging while the other logs). The gpu queue runs one step at a time per GPU: solo.
    pool = "solo" if queue == celery.gpu_queue else "prefork"
    name = f"{queue}{'' if args.gpu is None else f'-gpu{args.gpu}'}-{os.getpid()}@{socket.gethostname()}"
    argv = ["worker", "-Q", queue, "-n", name, f"--pool={pool}", "--prefetch-multiplier=1", "-l", args.log_level]
    if pool != "solo":
        argv.append(f"--concurrency={args.concurrency}")
    app.worker_main(argv)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slide2vec-dagster", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--config", help=f"platform config YAML (default: ${CONFIG_ENV_VAR} or demo/config.yaml)")
        p.set_defaults(handler=handler)
        return p

    add("check-config", cmd_check_config, "validate the platform config and its manifests")
    add("register", cmd_register, "register the manifests' sample_id / patient_id partitions")
    for name, handler, text in (
        ("materialize", cmd_materialize, "tile the manifests' slides (one run per slide and pipeline)"),
        ("demo", cmd_demo, "materialise the demo cohort of tests/data into outputs/"),
    ):
        p = add(name, handler, text)
        p.add_argument("--pipeline", action="append", help="only this pipeline (repeatable)")
        p.add_argument("--sample", action="append", help="only this sample_id (repeatable)")
        p.add_argument("--log-level", default="WARNING", help="Dagster console log level of the runs (default WARNING)")
    p = add("status", cmd_status, "per pipeline and asset: partitions done, missing, stale and failed")
    p.add_argument("--pipeline", action="append", help="only this pipeline (repeatable)")
    p.add_argument("--json", action="store_true", help="print a JSON object instead of tables")
    p = sub.add_parser("lineage", help="where an artifact file came from: run, code, config, encoder, slide, upstream")
    p.add_argument("path", help="an artifact file: payload, sidecar, preview or coordinates")
    p.add_argument("--json", action="store_true", help="print a JSON object instead of text")
    p.add_argument("--ui-url", default="http://127.0.0.1:3000", help="base URL of the Dagster UI for run links")
    p.add_argument("--config", help="platform config, to name pipelines whose output_dir is not <output_root>/<name>")
    p.set_defaults(handler=cmd_lineage)
    worker = add("worker", cmd_worker, "run a long-lived Celery worker (execution.executor: celery)")
    worker.add_argument(
        "--queue",
        help="the queue to serve: execution.celery.run_queue (runs; the default), .cpu_queue (tiling) or .gpu_queue "
        "(models)",
    )
    worker.add_argument("--concurrency", type=int, default=2, help="tasks at once (processes; the gpu queue runs one)")
    worker.add_argument("--gpu", type=int, default=None, help="the GPU this worker owns (CUDA_VISIBLE_DEVICES)")
    worker.add_argument("--log-level", default="INFO", help="Celery log level")
    return parser


def main(argv: list[str] | None = None) -> int:
    # Dagster flags the partitioned checks and backfill policies as preview/beta on every import: noise here.
    warnings.filterwarnings("ignore", message=r".*(currently in (preview|beta)|is in beta)")
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ConfigError, ManifestError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
