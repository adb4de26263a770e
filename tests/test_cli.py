"""The CLI's user-facing errors: a bad config or manifest names the file and the key or row, exit code 2."""

from __future__ import annotations

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
