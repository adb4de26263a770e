"""Run hs2p's ``tile_slide`` on one slide inside hs2p's own virtual environment.

Invoked by ``benchmarks/tiling.py`` as ``<hs2p-venv>/bin/python _hs2p_runner.py JOB.json OUT.npz``;
it must not import anything from slide2vec_dagster (hs2p lives in a separate environment).
The job JSON holds the slide, the reader backend and the tiling parameters in slide2vec's
vocabulary; the output npz holds x, y, tissue_fractions and timing numbers.
"""

from __future__ import annotations

import json
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np


def main(job_path: str, out_path: str) -> int:
    job = json.loads(Path(job_path).read_text())
    t_import = time.perf_counter()
    import hs2p
    from hs2p import FilterConfig, SegmentationConfig, SlideSpec, TilingConfig, tile_slide
    from hs2p.configs.models import MaskSamplingConfig

    import_s = time.perf_counter() - t_import
    params, seg, filt, masks = job["params"], job["seg_params"], job["filter_params"], job["masks"]
    tiling = TilingConfig(
        requested_spacing_um=float(params["requested_spacing_um"]),
        requested_tile_size_px=int(params["requested_tile_size_px"]),
        tolerance=float(params["tolerance"]),
        overlap=float(params["overlap"]),
        backend=job["backend"],
        mask_backend=job.get("mask_backend", "auto"),
    )
    segmentation = SegmentationConfig(
        method=seg["method"],
        downsample=int(seg["downsample"]),
        sthresh=int(seg["sthresh"]),
        sthresh_up=int(seg["sthresh_up"]),
        mthresh=int(seg["mthresh"]),
        close=int(seg["close"]),
    )
    filtering = FilterConfig(**filt)
    mask_sampling = MaskSamplingConfig(
        pixel_mapping=masks["pixel_mapping"],
        colors=masks.get("colors"),
        min_coverage=masks["min_coverage"],
    )
    spec = SlideSpec(
        sample_id=job.get("sample_id", "slide"),
        image_path=Path(job["image_path"]),
        mask_path=Path(job["mask_path"]) if job.get("mask_path") else None,
        spacing_at_level_0=job.get("spacing_at_level_0"),
    )
    repeats, warmup = int(job.get("repeats", 1)), int(job.get("warmup", 1))
    times = []
    result = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(warmup + repeats):
            t0 = time.perf_counter()
            result = tile_slide(
                spec,
                tiling=tiling,
                segmentation=segmentation,
                filtering=filtering,
                masks=mask_sampling,
                num_workers=int(job.get("workers", 1)),
            )
            if i >= warmup:  # the first run pays one-off costs (imports, codec setup, page cache)
                times.append(time.perf_counter() - t0)
    if isinstance(result, dict):  # annotation sampling: only a single 'tissue' label is compared
        result = result.get("tissue", next(iter(result.values())))
    tiles = result.tiles
    np.savez(
        out_path,
        x=np.asarray(tiles.x, dtype=np.int64),
        y=np.asarray(tiles.y, dtype=np.int64),
        tissue_fractions=np.asarray(tiles.tissue_fractions, dtype=np.float32),
        seconds=np.asarray(times, dtype=np.float64),
        import_s=np.float64(import_s),
        maxrss_kb=np.int64(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss),
        read_level=np.int64(tiles.read_level),
        tile_size_lv0=np.int64(tiles.tile_size_lv0),
        backend=np.str_(result.backend),
        version=np.str_(hs2p.__version__),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
