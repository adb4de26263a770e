"""Regenerate ``tests/data/slide2vec-7.1.4/`` by running the real slide2vec 7.1.4 (hs2p 6.1) on test slides.

The fixtures are what a lab's old slide2vec run leaves behind, for ``tiling.read_coordinates_from``.
slide2vec lives in its own venv (``.s2v-venv/``, git-ignored) because it pins numpy<2 through
``hs2p[asap]`` and pulls torch; it never goes into the project's ``.venv``.

    python3 scripts/make_slide2vec_fixtures.py            # creates the venv if missing (~7 GB, ~2 min)

slide2vec runs with ``--tiling-only --run-on-cpu``: its model preset (``uni``: 224 px at 0.5 um/px) only
supplies defaults and is never loaded, so no weights are downloaded. Standard library only, so any
Python 3.10+ can run this.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
FIXTURES = DATA / "slide2vec-7.1.4"
VENV = REPO / ".s2v-venv"
# A fixed run folder (inside the ignored venv folder) so the absolute paths slide2vec writes into
# process_list.csv and config.yaml are the same on every regeneration.
RUN_DIR = VENV / "fixture-run"
SLIDE2VEC = "slide2vec==7.1.4"
# slide2vec writes absolute paths (this repository's) into its text outputs; the copies here hold this
# stand-in instead, so that no tracked file names the generating machine (readers never use those paths).
GENERATING_ROOT = "/lab-disk/slide2vec-dagster"
TEXT_SUFFIXES = (".csv", ".yaml", ".json")

# (sample_id, slide in tests/data, spacing_at_level_0 override): the TCGA slide has no MPP in the file.
SLIDES = (
    ("CMU-1-Small-Region", "CMU-1-Small-Region.svs", None),
    ("synthetic-he-0.5mpp", "synthetic-he-0.5mpp.tiff", None),
    ("tcga-cr-7395-01a-01-ts1", "tcga-cr-7395-01a-01-ts1.svs", 0.5),
)
# One small preview pair only (the others are 0.25-0.8 MB of JPEG each).
PREVIEW_SAMPLE = "synthetic-he-0.5mpp"
VERSIONED = (
    "slide2vec", "hs2p", "numpy", "opencv-python", "opencv-python-headless", "openslide-python", "openslide-bin",
    "tifffile", "pandas", "omegaconf", "torch",
)  # fmt: skip


def config_yaml(manifest: Path, output_dir: Path) -> str:
    # Only what differs from slide2vec's configs/default.yaml. min_coverage.tissue 0.1 is our contract's
    # value (slide2vec's default is 0.01), so these tiles are reusable by a default pipeline of ours.
    # backend pinned to openslide: "auto" tries cuCIM first, whose decoder differs from ours.
    return f"""\
csv: {manifest}
output_dir: {output_dir}
model:
  name: uni
tiling:
  backend: openslide
  params:
    requested_spacing_um: 0.5
    requested_tile_size_px: 224
    tolerance: 0.05
    overlap: 0.0
  masks:
    min_coverage:
      background:
      tissue: 0.1
speed:
  num_preprocessing_workers: 1
"""


def venv_python() -> Path:
    return VENV / "bin" / "python"


def ensure_venv() -> None:
    python = venv_python()
    probe = [str(python), "-c", "import importlib.metadata as m; assert m.version('slide2vec') == '7.1.4'"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    # Plain install: slide2vec's hard dependency hs2p[asap,cucim,openslide,sam2,tifffile,vips] already
    # brings openslide-bin and tifffile+imagecodecs, so no extra is needed for CPU tiling.
    subprocess.run([str(python), "-m", "pip", "install", SLIDE2VEC], check=True)


def versions() -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, sys\n"
        f"names = {list(VERSIONED)!r}\n"
        "out = {'python': sys.version.split()[0]}\n"
        "for n in names:\n"
        "    try: out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: out[n] = 'not installed'\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run([str(venv_python()), "-c", code], check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def run_slide2vec() -> tuple[list[str], float]:
    if RUN_DIR.exists():
        shutil.rmtree(RUN_DIR)
    RUN_DIR.mkdir(parents=True)
    manifest = RUN_DIR / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sample_id", "image_path", "mask_path", "spacing_at_level_0"])
        for sample_id, name, spacing in SLIDES:
            writer.writerow([sample_id, DATA / name, "", "" if spacing is None else spacing])
    config = RUN_DIR / "config.yaml"
    config.write_text(config_yaml(manifest, RUN_DIR / "output"), encoding="utf-8")
    command = [str(venv_python()), "-m", "slide2vec", str(config), "--tiling-only", "--run-on-cpu", "--skip-datetime"]
    start = time.monotonic()
    with (RUN_DIR / "run.log").open("w", encoding="utf-8") as log:
        done = subprocess.run(command, cwd=RUN_DIR, stdout=log, stderr=subprocess.STDOUT)
    elapsed = time.monotonic() - start
    if done.returncode != 0:
        raise SystemExit(f"slide2vec failed (exit {done.returncode}); see {RUN_DIR / 'run.log'}")
    return command, elapsed


def copy_outputs() -> list[Path]:
    out = RUN_DIR / "output"
    if FIXTURES.exists():
        shutil.rmtree(FIXTURES)
    wanted = [Path("process_list.csv"), Path("config.yaml")]
    for sample_id, _, _ in SLIDES:
        wanted += [Path("tiles") / f"{sample_id}.coordinates.npz", Path("tiles") / f"{sample_id}.coordinates.meta.json"]
    wanted += [Path("preview") / kind / f"{PREVIEW_SAMPLE}.jpg" for kind in ("mask", "tiling")]
    for rel in wanted:
        source = out / rel
        if not source.is_file():
            raise SystemExit(f"slide2vec did not write {source}")
        (FIXTURES / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, FIXTURES / rel)  # copyfile: slide2vec writes tiles/ with mode 0600
    shutil.copyfile(RUN_DIR / "manifest.csv", FIXTURES / "manifest.csv")
    files = [*wanted, Path("manifest.csv")]
    for rel in files:
        if rel.suffix in TEXT_SUFFIXES:
            make_portable(FIXTURES / rel)
    return files


def make_portable(path: Path) -> None:
    """Replace this repository's absolute path with GENERATING_ROOT (the only change to slide2vec's bytes)."""
    path.write_text(path.read_text(encoding="utf-8").replace(str(REPO), GENERATING_ROOT), encoding="utf-8")


def write_origins(command: list[str], elapsed: float, found: dict[str, str], files: list[Path]) -> None:
    rows = []
    for sample_id, name, spacing in SLIDES:
        meta = json.loads((FIXTURES / "tiles" / f"{sample_id}.coordinates.meta.json").read_text(encoding="utf-8"))
        override = "" if spacing is None else f", spacing_at_level_0 {spacing}"
        rows.append(
            f"| `{sample_id}` | `tests/data/{name}`{override} | `{meta['provenance']['image_path']}` | "
            f"{meta['tiling']['n_tiles']} |"
        )
    version_lines = "\n".join(f"- {name} {value}" for name, value in found.items())
    listing = "\n".join(f"- `{rel.as_posix()}` ({(FIXTURES / rel).stat().st_size} B)" for rel in sorted(files))
    shown = " ".join(str(part).replace(str(REPO), "<repo>") for part in command)
    text = f"""\
# slide2vec 7.1.4 output fixtures (generated; do not edit by hand)

Written by `scripts/make_slide2vec_fixtures.py` on {datetime.date.today().isoformat()}: the real slide2vec
7.1.4 (PyPI) tiled the slides of `../` in its own venv, and the script copied its small outputs here,
byte for byte but one change, in slide2vec's own layout (`tiles/`, `preview/`, `process_list.csv`,
`config.yaml`): in the text files the generating repository's absolute path is replaced by
`{GENERATING_ROOT}`.
`manifest.csv` and the run's config are the script's inputs. They are what a lab's folder from a slide2vec
run looks like, for `tiling.read_coordinates_from`.

Command (in `{RUN_DIR.relative_to(REPO)}/`, {elapsed:.1f} s wall on a 2-core CPU machine):

    {shown}

`--tiling-only` stops after hs2p's tiling; the `uni` model preset only fixes 224 px at 0.5 um/px and is
never loaded (no weights). Settings: backend openslide, 224 px, 0.5 um/px, tolerance 0.05, overlap 0,
`masks.min_coverage.tissue` 0.1 (slide2vec's default is 0.01), everything else slide2vec's defaults.

## How these files differ from ours (what `slide2vec_dagster/artifacts/foreign.py` absorbs)

- sidecar `artifact`: `coordinate_space` `level0_px`, `tile_order` `x_then_y` (rows sorted by x, then y;
  ours: `level_0`, `row_major`), `selection_strategy` null, none of our extra artifact keys;
- no `tiling.effective_*` keys; `segmentation.sam2_checkpoint_path` / `sam2_config_path` added;
- npz written with `savez_compressed`, arrays in the order tile_index, x, y, tissue_fractions (same dtypes
  as ours); a slide with zero tiles gets a sidecar and no npz;
- previews are JPEG (`preview/<kind>/<id>.jpg`), ours PNG;
- `process_list.csv` has `tiling_status` (`success`/`failed`) instead of our `status`, plus `annotation`,
  `output_mode`, backends, `coordinates_meta_path`, `tiles_tar_path`, `traceback`, `spacing_at_level_0`;
  a `--tiling-only` run writes no `feature_status` column (an embedding run adds it).

## Absolute paths inside the files

The sidecars, `process_list.csv`, `config.yaml` and `manifest.csv` hold absolute paths, as a lab's folder
from another machine would: the generating repository's root, written as `{GENERATING_ROOT}` (run folder
`{GENERATING_ROOT}/{RUN_DIR.relative_to(REPO).as_posix()}`). Readers must not depend on them: the manifest,
not the sidecar, says where a slide is.

| sample_id | slide (spacing override) | `provenance.image_path` as written | tiles |
|---|---|---|---|
{chr(10).join(rows)}

## Versions (the slide2vec venv)

{version_lines}

## Files

{listing}
"""
    (FIXTURES / "ORIGINS.md").write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-install", action="store_true", help="use the existing .s2v-venv as it is")
    args = parser.parse_args(argv)
    if not args.skip_install:
        ensure_venv()
    elif not venv_python().exists():
        raise SystemExit(f"{venv_python()} is missing; run without --skip-install")
    command, elapsed = run_slide2vec()
    files = copy_outputs()
    write_origins(command, elapsed, versions(), files)
    total = sum((FIXTURES / rel).stat().st_size for rel in files)
    print(f"wrote {len(files) + 1} files ({total / 1024:.0f} KiB) to {FIXTURES} in {elapsed:.1f} s of slide2vec")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
