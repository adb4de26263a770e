"""The CLI's user-facing errors: a bad config or manifest names the file and the key or row, exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from slide2vec_dagster.cli import main
from slide2vec_dagster.config import CONFIG_ENV_VAR
from tests.dagster_helpers import GOOD_ROWS, write_manifest, write_platform_config


@pytest.fixture(autouse=True)
def _restore_environment(monkeypatch: pytest.MonkeyPatch):
    """The CLI exports the config path for its runs; undo that after each test."""
    monkeypatch.setenv(CONFIG_ENV_VAR, "unset-by-test")
    monkeypatch.setenv("DAGSTER_HOME", "unset-by-test")


def test_check_config_reports_an_unknown_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    write_manifest(tmp_path / "cohort.csv", GOOD_ROWS)
    config = write_platform_config(tmp_path, ["cohort.csv"])
    raw = yaml.safe_load(config.read_text())
    raw["pipelines"]["p1"]["tiling"]["seg_params"] = {"methd": "otsu"}
    config.write_text(yaml.safe_dump(raw))
    assert main(["check-config", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert str(config) in err and "pipelines.p1.tiling.seg_params.methd" in err and "unknown key" in err


def test_check_config_reports_a_bad_manifest_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    (tmp_path / "cohort.csv").write_text("sample_id,image_path\nok,a.svs\n../up,b.svs\n", encoding="utf-8")
    config = write_platform_config(tmp_path, ["cohort.csv"])
    assert main(["check-config", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "cohort.csv row 2" in err and "'../up'" in err


def test_check_config_summarises_a_good_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    write_manifest(tmp_path / "cohort.csv", GOOD_ROWS)
    config = write_platform_config(tmp_path, ["cohort.csv"])
    assert main(["check-config", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "2 slide(s)" in out and str(tmp_path / "out" / "p1") in out


def test_materialize_refuses_an_unknown_sample(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    write_manifest(tmp_path / "cohort.csv", GOOD_ROWS)
    config = write_platform_config(tmp_path, ["cohort.csv"])
    assert main(["materialize", "--config", str(config), "--sample", "nope"]) == 2
    assert "'nope'" in capsys.readouterr().err


def test_lineage_and_status_after_a_cli_materialisation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    rows = [GOOD_ROWS[0], {"sample_id": "gone", "image_path": str(tmp_path / "no-such.svs")}]
    write_manifest(tmp_path / "cohort.csv", rows)
    config = write_platform_config(tmp_path, ["cohort.csv"])
    assert main(["materialize", "--config", str(config)]) == 1  # "gone" fails, alone
    capsys.readouterr()
    out = tmp_path / "out" / "p1"
    npz = out / "tiles" / "001.coordinates.npz"

    assert main(["lineage", str(npz), "--json", "--ui-url", "http://ui:9/"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["platform_file"] and found["asset_key"] == ["p1", "coordinates"]
    assert found["partition"] == {"sample_id": "001"} and found["run"]["status"] == "SUCCESS"
    assert found["run"]["url"] == f"http://ui:9/runs/{found['run']['run_id']}"
    assert found["inputs"][0]["current"] is True

    assert main(["lineage", str(npz)]) == 0
    text = capsys.readouterr().out
    assert "asset key:  p1/coordinates" in text and found["run"]["run_id"] in text

    stray = tmp_path / "stray.npz"
    stray.write_bytes(b"not ours")
    assert main(["lineage", str(stray)]) == 1
    assert "NOT A PLATFORM ARTIFACT" in capsys.readouterr().out
    assert main(["lineage", str(tmp_path / "nothing.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err

    write_manifest(tmp_path / "cohort.csv", [*rows, {"sample_id": "late", "image_path": GOOD_ROWS[1]["image_path"]}])
    assert main(["status", "--config", str(config)]) == 0
    text = capsys.readouterr().out
    row = next(line for line in text.splitlines() if line.strip().startswith("coordinates"))
    assert row.split()[-4:] == ["1", "0", "0", "1"]  # done, missing, stale, failed
    assert "p1/coordinates sample_id=gone" in text and "FileNotFoundError" in text
    assert "1 manifest slide(s) are not registered" in text and "late" in text

    assert main(["status", "--config", str(config), "--json"]) == 0
    (pipeline,) = json.loads(capsys.readouterr().out)["pipelines"]
    assert pipeline["pipeline"] == "p1" and pipeline["assets"][0]["done"] == ["001"]
    assert main(["status", "--config", str(config), "--pipeline", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
