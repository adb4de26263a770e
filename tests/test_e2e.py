"""End to end: the real CLI materialises a cohort into a fresh DAGSTER_HOME, and the real webserver
lists the partitioned assets and their materialised partitions over GraphQL."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.contract import check_output_dir
from tests.dagster_helpers import BAD_ROWS, GOOD_ROWS, write_manifest, write_platform_config

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "slide2vec_dagster.cli"]

pytestmark = pytest.mark.e2e


def _env(tmp_path: Path, config: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(DAGSTER_HOME=str(tmp_path / "dagster_home"), SLIDE2VEC_DAGSTER_CONFIG=str(config))
    return env


def test_cli_materialises_a_cohort_and_the_webserver_lists_it(tmp_path: Path):
    write_manifest(tmp_path / "cohort.csv", GOOD_ROWS + BAD_ROWS[:1])
    pipelines = {
        "p1": {
            "tiling": {"params": {"requested_spacing_um": 0.5, "requested_tile_size_px": 224}},
            "model": {"name": "baseline-color-texture"},
        },
        # Slide and patient levels on top (mean-pool baselines), every level kept.
        "p2": {
            "tiling": {"params": {"requested_spacing_um": 1.0, "requested_tile_size_px": 224}},
            "model": {
                "name": "baseline-color-texture",
                "slide_encoder": "mean-pool",
                "patient_encoder": "mean-pool",
                "save_tile_embeddings": True,
                "save_slide_embeddings": True,
            },
        },
    }
    config = write_platform_config(tmp_path, ["cohort.csv"], pipelines)
    env = _env(tmp_path, config)

    checked = subprocess.run([*CLI, "check-config"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "3 slide(s)" in checked.stdout

    run = subprocess.run([*CLI, "materialize"], env=env, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    # One slide is missing: the command reports it and exits 1, the others are done.
    assert run.returncode == 1, run.stdout + run.stderr
    assert "p1/001: done" in run.stdout and "p1/002: done" in run.stdout
    assert "p1/missing: failed" in run.stdout and "FileNotFoundError" in run.stdout
    assert "p2/patient pa: done    2 slide(s)" in run.stdout
    assert "p2/patient pb: failed" in run.stdout and "PatientWithoutSlidesError" in run.stdout
    assert (tmp_path / "dagster_home" / "dagster.yaml").exists()
    assert check_output_dir(tmp_path / "out" / "p1", require=("tile_embeddings",)) == []

    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dagster_webserver",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            str(REPO / "workspace.yaml"),
        ],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        data = _graphql(
            port,
            """{ assetNodes { assetKey { path } groupName isPartitioned
                 partitionKeysByDimension { name partitionKeys }
                 partitionStats { numMaterialized numPartitions numFailed } } }""",
        )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    nodes = {"/".join(node["assetKey"]["path"]): node for node in data["assetNodes"]}
    assert {k for k in nodes if k.startswith("p1/")} == {
        "p1/coordinates",
        "p1/mask_preview",
        "p1/tiling_preview",
        "p1/tile_embeddings",
    }
    # The patient asset's partitions page lists the patients; pb's only slide failed, so pb failed.
    patients = nodes["p2/patient_embeddings"]
    assert patients["partitionKeysByDimension"][0]["partitionKeys"] == ["pa", "pb"]
    assert patients["partitionStats"] == {"numMaterialized": 1, "numPartitions": 2, "numFailed": 1}
    assert nodes["p2/slide_embeddings"]["partitionStats"]["numMaterialized"] == 2
    assert check_output_dir(tmp_path / "out" / "p2", require=("slide_embeddings", "patient_embeddings")) == []
    coordinates = nodes["p1/coordinates"]
    assert coordinates["isPartitioned"] and coordinates["groupName"] == "p1"
    assert coordinates["partitionStats"]["numPartitions"] == 3
    assert coordinates["partitionStats"]["numMaterialized"] == 2
    assert coordinates["partitionStats"]["numFailed"] == 1
    assert nodes["p1/tile_embeddings"]["partitionStats"]["numMaterialized"] == 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _graphql(port: int, query: str, timeout_s: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout_s
    body = json.dumps({"query": query}).encode()
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/graphql", data=body, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                payload = json.loads(response.read())
            if payload.get("data", {}).get("assetNodes"):
                return payload["data"]
            last_error = RuntimeError(str(payload)[:500])
        except OSError as exc:  # server still starting
            last_error = exc
        time.sleep(1)
    raise AssertionError(f"webserver did not answer the asset query in {timeout_s} s: {last_error}")
