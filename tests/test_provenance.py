"""Run provenance (code version, library versions, weights checksums) and the config history."""

from __future__ import annotations

import hashlib
import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from slide2vec_dagster import __version__, fingerprint, provenance
from slide2vec_dagster.artifacts.config_file import (
    config_hash,
    read_config_version,
    text_hash,
    write_config_yaml,
)
from slide2vec_dagster.layout import CONFIG_HISTORY as HISTORY_DIR

REPO = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


# ------------------------------------------------------------------------------------- code


def test_code_version_is_the_checkouts_commit():
    head = _git("rev-parse", "HEAD")
    tracked = _git("ls-files", "--error-unmatch", "slide2vec_dagster/__init__.py")
    code = provenance.code_version()
    assert code["package_version"] == __version__
    if head is None or tracked is None:
        pytest.skip("the package does not run from a git checkout here")
    assert code["git_commit"] == head
    status = _git("status", "--porcelain", "--untracked-files=normal", "--", "slide2vec_dagster", "pyproject.toml")
    assert code["git_dirty"] is bool(status)


def test_code_version_outside_git_is_the_package_version_only(tmp_path: Path):
    package = tmp_path / "copy"
    package.mkdir()
    (package / "__init__.py").write_text("")
    assert provenance._code_version(package) == (None, None)


def test_library_versions_read_metadata_without_importing_torch():
    versions = provenance.library_versions()
    assert versions["torch"] == importlib.metadata.version("torch")
    assert versions["dagster"] == importlib.metadata.version("dagster")
    assert versions["numpy"] == importlib.metadata.version("numpy")
    assert set(versions) >= {"timm", "openslide_python", "openslide_library", "cucim", "tifffile", "python"}
    code = (
        "import sys; from slide2vec_dagster.provenance import run_provenance; run_provenance(); "
        "print(sorted(m for m in ('torch', 'timm', 'cucim', 'dagster') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_run_provenance_combines_code_and_libraries():
    record = provenance.run_provenance()
    assert record["code"] == provenance.code_version()
    assert record["libraries"] == provenance.library_versions()


def test_sidecar_lineage_records_a_config_hash_that_resolves(tmp_path: Path):
    resolved = {"output_dir": str(tmp_path), "model": {"name": "uni"}}
    keys = provenance.sidecar_lineage("p1", resolved)
    assert keys["pipeline"] == "p1" and keys["run_provenance"] == provenance.run_provenance()
    written = write_config_yaml(tmp_path / "config.yaml", resolved)
    assert keys["config_hash"] == written
    assert read_config_version(tmp_path / "config.yaml", keys["config_hash"])[1] == resolved


# ------------------------------------------------------------------------------------- weights


def test_weights_checksum_of_a_file_and_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"weights" * 1000)
    assert provenance.weights_checksum(file) == hashlib.sha256(file.read_bytes()).hexdigest()

    folder = tmp_path / "uni"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    shutil.copy(file, folder / "model.safetensors")
    first = provenance.weights_checksum(folder)
    # Tool bookkeeping (hf download's .cache/) is not part of the weights.
    (folder / ".cache" / "huggingface").mkdir(parents=True)
    (folder / ".cache" / "huggingface" / "model.safetensors.metadata").write_text("downloaded at 12:00")
    assert provenance.weights_checksum(folder) == first

    reads = []
    real = fingerprint._sha256
    monkeypatch.setattr(fingerprint, "_sha256", lambda path: reads.append(path) or real(path))
    assert provenance.weights_checksum(folder) == first
    assert reads == []  # stat keys unchanged: nothing read again
    (folder / "model.safetensors").write_bytes(b"other weights")
    changed = provenance.weights_checksum(folder)
    assert changed != first and reads == [folder / "model.safetensors"]


def test_weights_checksum_of_a_missing_path_names_it(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"model\.weights"):
        provenance.weights_checksum(tmp_path / "nope")


def test_tile_weights_lineage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    local = tmp_path / "ckpt.pth"
    local.write_bytes(b"\x00\x01" * 50)
    assert provenance.tile_weights_lineage(str(local)) == {
        "weights_origin": str(local),
        "weights_revision": None,
        "weights_sha256": hashlib.sha256(local.read_bytes()).hexdigest(),
    }
    assert provenance.tile_weights_lineage("none (baseline)")["weights_sha256"] is None

    # Hub weights: hashed from the cache copy; the snapshot folder names the commit.
    from huggingface_hub import constants

    commit = "a" * 40
    repo = tmp_path / "hub" / "models--org--model"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").write_bytes(b"hub weights")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    found = provenance.tile_weights_lineage("hf-hub:org/model")
    assert found["weights_revision"] == commit
    assert found["weights_sha256"] == hashlib.sha256(b"hub weights").hexdigest()
    assert provenance.tile_weights_lineage("hf-hub:org/not-cached")["weights_sha256"] is None


def test_metadata_facts_flatten_a_sidecar():
    meta = {
        "encoder_name": "uni",
        "provenance": {
            "run_id": "r1",
            "inputs_fingerprint": "f",
            "config_hash": "0123456789abcdef",
            "model_weights": "/models/uni",
            "weights_sha256": "ab" * 32,
            "run_provenance": {
                "code": {"git_commit": "c" * 40, "git_dirty": True, "package_version": "9.9"},
                "libraries": {"torch": "2.0", "cucim": None},
            },
        },
    }
    facts = provenance.metadata_facts(meta)
    assert facts["lineage/config_hash"] == "0123456789abcdef"
    assert facts["lineage/encoder"] == "uni" and facts["lineage/weights"] == "/models/uni"
    assert "c" * 40 in facts["lineage/code"] and "uncommitted" in facts["lineage/code"]
    assert facts["lineage/libraries"] == "torch 2.0"
    assert "lineage/weights_revision" not in facts  # unknown values are left out
    coords = {
        "artifact": {"run_id": "r0", "inputs_fingerprint": "x", "slide_fingerprint": {"path": "/s", "sha256": "d"}}
    }
    assert provenance.metadata_facts(coords)["lineage/slide_sha256"] == "d"
    assert provenance.upstream_run_id(coords) == "r0" and provenance.upstream_run_id(meta) == "r1"


def test_reuse_status_reports_done_only_for_outputs_this_run_wrote():
    meta = {"provenance": {"run_id": "r1", "inputs_fingerprint": "x"}}
    assert provenance.reuse_status("skipped", meta, "r1") == "done"  # a relaunched step found its own outputs
    assert provenance.reuse_status("skipped", meta, "r2") == "skipped"  # an earlier run's outputs
    assert provenance.reuse_status("skipped", meta, None) == "skipped"
    assert provenance.reuse_status("skipped", {}, "r1") == "skipped"
    assert provenance.reuse_status("done", meta, "r2") == "done"


# ------------------------------------------------------------------------------------- config history


def test_config_history_keeps_each_distinct_config_once(tmp_path: Path):
    config_yaml = tmp_path / "out" / "config.yaml"
    first = {"output_dir": str(tmp_path / "out"), "tiling": {"params": {"requested_spacing_um": 0.5}}}
    second = {"output_dir": str(tmp_path / "out"), "tiling": {"params": {"requested_spacing_um": 1.0}}}
    h1 = write_config_yaml(config_yaml, first)
    assert h1 == config_hash(first) == text_hash(config_yaml.read_text(encoding="utf-8"))
    assert write_config_yaml(config_yaml, first) == h1  # idempotent
    history = tmp_path / "out" / HISTORY_DIR
    assert sorted(p.name for p in history.iterdir()) == [f"{h1}.yaml"]

    h2 = write_config_yaml(config_yaml, second)
    assert h2 != h1
    assert yaml.safe_load(config_yaml.read_text(encoding="utf-8")) == second  # config.yaml: the current one
    write_config_yaml(config_yaml, first)
    write_config_yaml(config_yaml, second)
    assert sorted(p.name for p in history.iterdir()) == sorted([f"{h1}.yaml", f"{h2}.yaml"])
    for hash_, block in ((h1, first), (h2, second)):
        path, resolved, problem = read_config_version(config_yaml, hash_)
        assert problem is None and resolved == block and path == history / f"{hash_}.yaml"
        assert text_hash(path.read_text(encoding="utf-8")) == hash_  # a history file hashes to its name


def test_config_history_keeps_a_config_written_before_it(tmp_path: Path):
    config_yaml = tmp_path / "config.yaml"
    config_yaml.write_text("output_dir: /old\n", encoding="utf-8")  # an older platform (or slide2vec) wrote it
    write_config_yaml(config_yaml, {"output_dir": "/new"})
    _, resolved, problem = read_config_version(config_yaml, text_hash("output_dir: /old\n"))
    assert problem is None and resolved == {"output_dir": "/old"}


def test_config_history_reports_a_missing_or_edited_version(tmp_path: Path):
    config_yaml = tmp_path / "config.yaml"
    h = write_config_yaml(config_yaml, {"output_dir": "/o"})
    _, resolved, problem = read_config_version(config_yaml, "0" * 16)
    assert resolved is None and "does not exist" in problem
    (tmp_path / HISTORY_DIR / f"{h}.yaml").write_text("output_dir: /edited\n", encoding="utf-8")
    _, resolved, problem = read_config_version(config_yaml, h)
    assert resolved is None and "edited" in problem
    write_config_yaml(config_yaml, {"output_dir": "/o"})  # a damaged version is written again
    assert read_config_version(config_yaml, h)[2] is None


def test_a_weights_folder_has_one_checksum_for_tile_and_slide_loaders(tmp_path: Path):
    """The slide loaders checksum the files they read with the same formula as the tile weights'."""
    folder = tmp_path / "weights"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "sub" / "config.json").write_text("{}", encoding="utf-8")
    files = [folder / "sub" / "config.json", folder / "model.safetensors"]
    assert provenance.files_checksum(files) == provenance.weights_checksum(folder)
    assert provenance.files_checksum(files[1:]) == provenance.weights_checksum(files[1])
