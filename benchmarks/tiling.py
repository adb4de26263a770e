#!/usr/bin/env python3
"""Tiling benchmark + conformance check against hs2p 6.1 (slide2vec's tiling library).

Usage (from the project venv, in the repository root):
    python benchmarks/tiling.py [SLIDE ...] [--sets default,otsu,...] [--large 20000x15000]
                                [--hs2p-python PATH] [--repeats 3] [--backend openslide]

Slides default to tests/data (a slide ``X.tiff`` with ``X-mask.tiff`` beside it is also run with its
mask); pass files (or a DICOM folder) to use others, e.g. a folder of your own slides. For every slide and
parameter set it runs our tiler and hs2p's ``tile_slide`` each in a child process (same reader
backend, timings taken inside the child after imports, median of ``--repeats`` runs, peak RSS of the
child), and prints seconds per slide, tiles per second, the share of time spent reading pixels, peak
memory, the speed ratio (hs2p seconds / our seconds) and whether the tile sets are identical (tiles
only in ours / only in hs2p / equal coordinates with different tissue fractions).

hs2p is installed by this script into its own virtual environment (``.bench-venv/``, created on first
use with ``pip install hs2p[openslide,tifffile]==6.1.0``) unless ``--hs2p-python`` names an
interpreter that already has it. It is never imported into the project's environment.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RUNNER = Path(__file__).resolve().parent / "_hs2p_runner.py"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _synthetic_wsi import write_synthetic_wsi  # noqa: E402  (sibling module of this script)

HS2P_SPEC = "hs2p[openslide,tifffile]==6.1.0"

# Spacing overrides for slides whose files carry none (see the test-data README).
SLIDE_SUFFIXES = {".svs", ".tif", ".tiff", ".ndpi", ".dcm", ".mrxs", ".scn", ".bif", ".vms", ".svslide"}
SPACING_OVERRIDES = {"tcga-cr-7395-01a-01-ts1.svs": 0.5}

_QC_ALL = {"filter_white": True, "filter_black": True, "filter_grayspace": True, "filter_blur": True}
PARAM_SETS: dict[str, dict] = {
    "default": {"params": {"requested_spacing_um": 0.5, "requested_tile_size_px": 224}},
    "r1-T256-tol07-ov25-otsu": {
        "params": {
            "requested_spacing_um": 1.0,
            "requested_tile_size_px": 256,
            "tolerance": 0.07,
            "overlap": 0.25,
        },
        "seg_params": {"method": "otsu"},
    },
    "r025-T224-threshold": {
        "params": {"requested_spacing_um": 0.25, "requested_tile_size_px": 224},
        "seg_params": {"method": "threshold"},
    },
    "r05-T256-tol07-ov25-qc": {
        "params": {
            "requested_spacing_um": 0.5,
            "requested_tile_size_px": 256,
            "tolerance": 0.07,
            "overlap": 0.25,
        },
        "filter_params": dict(_QC_ALL),
    },
    "r1-T224-otsu-qc-white": {
        "params": {"requested_spacing_um": 1.0, "requested_tile_size_px": 224},
        "seg_params": {"method": "otsu"},
        "filter_params": {"filter_white": True, "filter_black": True, "qc_spacing_um": 4.0},
    },
    "r05-T224-tol07-ov50-at1-cov05": {
        "params": {
            "requested_spacing_um": 0.5,
            "requested_tile_size_px": 224,
            "tolerance": 0.07,
            "overlap": 0.5,
        },
        "filter_params": {"a_t": 1},
        "masks": {"min_coverage": {"background": None, "tissue": 0.5}},
    },
}


# --------------------------------------------------------------------------- child processes
def _child_ours(job_path: str, out_path: str) -> int:
    """Run our tiler on one slide (called as a child process so its peak RSS is its own)."""
    sys.path.insert(0, str(ROOT))
    job = json.loads(Path(job_path).read_text())
    from slide2vec_dagster.tiling import TilingConfig, tile_slide
    from slide2vec_dagster.wsi import open_reader, open_slide

    cfg = TilingConfig.model_validate(job["config"])
    times, reads = [], []
    result = None
    warmup = int(job.get("warmup", 1))
    for i in range(warmup + int(job.get("repeats", 1))):
        t0 = time.perf_counter()
        reader = open_slide(job["image_path"], job["backend"], job.get("spacing_at_level_0"))
        # A mask needs no spacing of its own: its size relative to the slide decides.
        mask_reader = open_reader(job["mask_path"], "auto") if job.get("mask_path") else None
        try:
            result = tile_slide(
                reader,
                reader.base_spacing_um,
                cfg,
                mask_reader=mask_reader,
                workers=int(job.get("workers", 2)),
            )
        finally:
            reader.close()
            if mask_reader is not None:
                mask_reader.close()
        if i >= warmup:  # the first run pays one-off costs (imports, codec setup, page cache)
            times.append(time.perf_counter() - t0)
            reads.append(result.timings.get("read_s", 0.0) + result.timings.get("qc_read_s", 0.0))
    assert result is not None
    np.savez(
        out_path,
        x=result.x,
        y=result.y,
        tissue_fractions=result.tissue_fractions,
        seconds=np.asarray(times),
        read_seconds=np.asarray(reads),
        maxrss_kb=np.int64(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss),
        tile_size_lv0=np.int64(result.geometry.tile_size_lv0),
        read_level=np.int64(result.geometry.read_level),
    )
    return 0


def _run_child(cmd: list[str], timeout: float = 900) -> tuple[dict | None, str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if ln.strip()]
        return None, (lines[-1] if lines else f"exit {proc.returncode}")[:300]
    return {}, ""


# --------------------------------------------------------------------------- hs2p environment
def ensure_hs2p(python: str | None) -> str:
    if python:
        return python
    venv = ROOT / ".bench-venv"
    py = venv / "bin" / "python"
    probe = [str(py), "-c", "import hs2p, openslide, tifffile, cucim; assert hs2p.__version__ == '6.1.0'"]
    if py.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return str(py)
    print(f"[setup] creating {venv} with {HS2P_SPEC} (one-off)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    quiet = {"check": True, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    subprocess.run([str(py), "-m", "pip", "install", "-q", HS2P_SPEC, "imagecodecs"], **quiet)
    # cuCIM's CPU reader for `--backend cucim`, installed the way the project installs it (no CUDA wheels).
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "cucim-cu13==26.10.0", "lazy-loader"], **quiet)
    return str(py)


# --------------------------------------------------------------------------- slides
def default_slides() -> list[Path]:
    data = ROOT / "tests" / "data"
    if not data.is_dir():
        return []
    out = []
    for p in sorted(data.iterdir()):
        if p.name.endswith("-mask.tiff") or p.suffix in {".md", ".txt"} or p.name.startswith("."):
            continue
        if p.is_dir() and not any(p.glob("*.dcm")):
            continue
        if p.is_file() and p.suffix.lower() not in SLIDE_SUFFIXES:
            continue
        out.append(p)
    return out


def slide_cases(paths: list[Path]) -> list[dict]:
    cases = []
    for p in paths:
        if p.is_file() and p.suffix.lower() not in SLIDE_SUFFIXES:
            continue
        image = p
        if p.is_dir():  # DICOM series: OpenSlide opens it from any one of its files
            dcms = sorted(p.glob("*.dcm"))
            if not dcms:
                continue
            image = dcms[0]
        if p.name.endswith("-mask.tiff"):
            continue
        base = {"name": p.name, "image_path": str(image), "spacing_at_level_0": SPACING_OVERRIDES.get(p.name)}
        cases.append(base)
        mask = p.with_name(p.stem + "-mask.tiff")
        if p.suffix in {".tif", ".tiff"} and mask.exists():
            cases.append({**base, "name": p.name + "+mask", "mask_path": str(mask)})
    return cases


def binary01_copy(mask_path: str, tmp: Path) -> str:
    """hs2p's default vocabulary is {background: 0, tissue: 1}; hand it a 0/1 copy of a 0/255 mask."""
    import tifffile

    arr = tifffile.imread(mask_path)
    if arr.max() <= 1:
        return mask_path
    out = tmp / (Path(mask_path).stem + "-01.tiff")
    if not out.exists():
        with tifffile.TiffFile(mask_path) as tf:
            page = tf.pages[0]
            res = page.tags["XResolution"].value if "XResolution" in page.tags else None
        kwargs = {"resolution": (res[0] / res[1],) * 2, "resolutionunit": "CENTIMETER"} if res else {}
        tifffile.imwrite(out, (arr > 0).astype(np.uint8), compression="zlib", metadata=None, **kwargs)
    return str(out)


def make_large(size: str, cache: Path) -> Path:
    w, h = (int(v) for v in size.lower().split("x"))
    out = cache / f"large-{w}x{h}.tiff"
    if not out.exists():
        print(f"[setup] writing {out} ({w}x{h} px, 0.25 um/px)", flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_synthetic_wsi(out, w, h, mpp=0.25, seed=3)
    return out


# --------------------------------------------------------------------------- main
def full_config(overrides: dict, backend: str) -> dict:
    sys.path.insert(0, str(ROOT))
    from slide2vec_dagster.tiling import TilingConfig

    cfg = {"backend": backend, **{k: v for k, v in overrides.items()}}
    return TilingConfig.model_validate(cfg).model_dump(mode="json")


def hs2p_job(case: dict, cfg: dict, backend: str, repeats: int, workers: int, tmp: Path) -> dict:
    fp = dict(cfg["filter_params"])
    masks = cfg["masks"]
    return {
        "image_path": case["image_path"],
        "mask_path": binary01_copy(case["mask_path"], tmp) if case.get("mask_path") else None,
        "spacing_at_level_0": case.get("spacing_at_level_0"),
        "backend": backend,
        # hs2p's auto mask backend skips tifffile for 8-bit masks, and OpenSlide cannot open a
        # stripped single-level TIFF; tifffile reads such masks losslessly.
        "mask_backend": "tifffile" if case.get("mask_path") else "auto",
        "params": cfg["params"],
        "seg_params": cfg["seg_params"],
        "filter_params": fp,
        "masks": {
            "pixel_mapping": masks["pixel_mapping"],
            "colors": None,
            "min_coverage": {k: v for k, v in masks["min_coverage"].items() if v is not None},
        },
        "repeats": repeats,
        "workers": workers,
    }


def compare(ours: dict, ref: dict) -> tuple[int, int, int]:
    a = {(int(x), int(y)): f for x, y, f in zip(ours["x"], ours["y"], ours["tissue_fractions"], strict=True)}
    b = {(int(x), int(y)): f for x, y, f in zip(ref["x"], ref["y"], ref["tissue_fractions"], strict=True)}
    only_a, only_b = len(a.keys() - b.keys()), len(b.keys() - a.keys())
    diff_f = sum(1 for k in a.keys() & b.keys() if a[k] != b[k])
    return only_a, only_b, diff_f


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--child"]:
        return _child_ours(argv[1], argv[2])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("slides", nargs="*", type=Path)
    ap.add_argument("--sets", default="default", help=f"comma list or 'all' ({', '.join(PARAM_SETS)})")
    ap.add_argument("--backend", default="openslide", help="reader backend for both tilers")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="reader threads per slide, both tilers")
    ap.add_argument("--large", default=None, help="also tile a generated WxH slide, e.g. 20000x15000")
    ap.add_argument("--cache", type=Path, default=ROOT / ".bench-cache")
    ap.add_argument("--hs2p-python", default=None, help="interpreter with hs2p 6.1.0 (else .bench-venv/)")
    ap.add_argument("--json", type=Path, default=None, help="also write all rows here")
    args = ap.parse_args(argv)

    paths = list(args.slides) or default_slides()
    args.cache.mkdir(parents=True, exist_ok=True)
    if args.large:
        paths.append(make_large(args.large, args.cache))
    if not paths:
        print("no slides: put some in tests/data or pass paths", file=sys.stderr)
        return 2
    sets = list(PARAM_SETS) if args.sets == "all" else args.sets.split(",")
    hs2p_py = ensure_hs2p(args.hs2p_python)
    cases = slide_cases(paths)
    rows = []
    header = (
        f"{'slide':38s} {'params':30s} {'ours s':>7s} {'hs2p s':>7s} {'ratio':>6s} {'tiles/s':>9s} "
        f"{'read%':>6s} {'MB ours':>8s} {'MB hs2p':>8s} {'n ours':>7s} {'n hs2p':>7s} "
        f"{'+ours':>6s} {'+hs2p':>6s} {'frac≠':>6s}  result"
    )
    print(header)
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        for case in cases:
            for set_name in sets:
                cfg = full_config(PARAM_SETS[set_name], args.backend)
                job_o = tmp / "ours.json"
                job_o.write_text(
                    json.dumps(
                        {
                            **case,
                            "config": cfg,
                            "backend": args.backend,
                            "repeats": args.repeats,
                            "workers": args.workers,
                        }
                    )
                )
                job_h = tmp / "hs2p.json"
                job_h.write_text(json.dumps(hs2p_job(case, cfg, args.backend, args.repeats, args.workers, tmp)))
                out_o, out_h = tmp / "ours.npz", tmp / "hs2p.npz"
                for f in (out_o, out_h):
                    f.unlink(missing_ok=True)
                ok_o, err_o = _run_child([sys.executable, __file__, "--child", str(job_o), str(out_o)])
                ok_h, err_h = _run_child([hs2p_py, str(RUNNER), str(job_h), str(out_h)])
                row = {"slide": case["name"], "params": set_name}
                if ok_o is None or ok_h is None:
                    both = ok_o is None and ok_h is None
                    row["result"] = ("both refuse: " if both else "ERROR ") + (err_o or "-") + " | " + (err_h or "-")
                    row["identical"] = both
                    print(f"{case['name'][:38]:38s} {set_name[:30]:30s} {row['result']}")
                    rows.append(row)
                    continue
                o, h = dict(np.load(out_o)), dict(np.load(out_h))
                to, th = statistics.median(o["seconds"]), statistics.median(h["seconds"])
                read_share = statistics.median(o["read_seconds"]) / to if to else 0.0
                only_o, only_h, diff_f = compare(o, h)
                identical = only_o == only_h == diff_f == 0
                row.update(
                    ours_s=to,
                    hs2p_s=th,
                    ratio=th / to if to else float("inf"),
                    tiles_per_s=len(o["x"]) / to if to else 0.0,
                    read_share=read_share,
                    ours_mb=int(o["maxrss_kb"]) / 1024,
                    hs2p_mb=int(h["maxrss_kb"]) / 1024,
                    n_ours=len(o["x"]),
                    n_hs2p=len(h["x"]),
                    only_ours=only_o,
                    only_hs2p=only_h,
                    fraction_mismatch=diff_f,
                    identical=identical,
                    result="IDENTICAL" if identical else "MISMATCH",
                )
                rows.append(row)
                cells = (
                    f"{to:7.3f} {th:7.3f} {row['ratio']:6.2f} {row['tiles_per_s']:9.0f} "
                    f"{100 * read_share:5.0f}% "
                    f"{row['ours_mb']:8.0f} {row['hs2p_mb']:8.0f} {row['n_ours']:7d} {row['n_hs2p']:7d} "
                    f"{only_o:6d} {only_h:6d} {diff_f:6d}  {row['result']}"
                )
                print(f"{case['name'][:38]:38s} {set_name[:30]:30s} {cells}", flush=True)
    timed = [r for r in rows if "ratio" in r]
    if timed:
        tot_o = sum(r["ours_s"] for r in timed)
        tot_h = sum(r["hs2p_s"] for r in timed)
        ratios = [r["ratio"] for r in timed]
        print(
            f"\n{len(timed)} timed cases: total ours {tot_o:.2f} s, hs2p {tot_h:.2f} s, overall ratio "
            f"{tot_h / tot_o:.2f}x, geometric-mean ratio {statistics.geometric_mean(ratios):.2f}x"
        )
    bad = [r for r in rows if not r.get("identical")]
    print(
        f"conformance: {len(rows) - len(bad)}/{len(rows)} cases identical to hs2p 6.1"
        + ("" if not bad else "; mismatches: " + ", ".join(f"{r['slide']}/{r['params']}" for r in bad))
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=float))
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
