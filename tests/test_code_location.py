"""The code location is light: loading the definitions imports neither torch, timm nor the slide readers
(the steps that need them import them; long-lived workers do so once)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "timm", "transformers", "openslide", "cucim", "tifffile", "cv2")


def test_loading_the_definitions_imports_no_model_or_reader_library():
    script = (
        "import json, sys, time; t = time.perf_counter(); import slide2vec_dagster.definitions as d; "
        "d.defs.resolve_asset_graph(); "
        f"print(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )
    imported = json.loads(result.stdout.strip().splitlines()[-1])
    assert not any(imported.values()), {name for name, loaded in imported.items() if loaded}


def test_a_step_still_finds_what_the_package_exports_lazily():
    import slide2vec_dagster.encoders as encoders
    import slide2vec_dagster.tiling as tiling

    assert callable(encoders.load_encoder) and encoders.BASELINE_FEATURE_DIM == 70
    assert callable(tiling.tile_slide)
    try:
        encoders.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("unknown names must raise AttributeError")


def test_a_remote_code_slide_model_and_the_schedule_preflight_import_no_model_library(tmp_path: Path):
    """Validating a prism config (its remote-code opt-in check) and importing the schedule's weights
    preflight need only the loaders' messages, not the loaders."""
    (tmp_path / "cohort.csv").write_text("sample_id,image_path\ns1,/data/s1.svs\n", encoding="utf-8")
    model = {"name": "prism", "trust_remote_code": True, "revision": "0" * 40}
    pipeline = {"tiling": {"params": {"requested_spacing_um": 0.5, "requested_tile_size_px": 224}}, "model": model}
    config = {"manifests": ["cohort.csv"], "output_root": "out", "pipelines": {"p": pipeline}}
    (tmp_path / "platform.yaml").write_text(json.dumps(config), encoding="utf-8")
    script = (
        "import json, sys; from slide2vec_dagster.config import load_config; "
        "from slide2vec_dagster.defs.build import build_definitions; "
        "import slide2vec_dagster.encoders.preflight; "
        f"build_definitions(load_config({str(tmp_path / 'platform.yaml')!r})).resolve_asset_graph(); "
        f"print(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    imported = json.loads(result.stdout.strip().splitlines()[-1])
    assert not any(imported.values()), {name for name, loaded in imported.items() if loaded}
