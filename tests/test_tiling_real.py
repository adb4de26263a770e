"""Real slides in tests/data: our tile sets equal hs2p 6.1's (expected digests computed with hs2p).

``tiling_hs2p_expected.json`` holds, per slide and parameter set, the tile count and a digest of
hs2p's (x, y, tissue_fractions) sorted row-major, produced with benchmarks/_hs2p_runner.py and the
OpenSlide backend. A slide that is not in tests/data is skipped with the reason.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from slide2vec_dagster.tiling import TilingConfig, tile_slide

DATA = Path(__file__).parent / "data"
EXPECTED = json.loads((Path(__file__).parent / "tiling_hs2p_expected.json").read_text())
SPACING = {"tcga-cr-7395-01a-01-ts1.svs": 0.5}
QC_ALL = {"filter_white": True, "filter_black": True, "filter_grayspace": True, "filter_blur": True}
SETS = {
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
    "r05-T256-tol07-ov25-qc": {
        "params": {
            "requested_spacing_um": 0.5,
            "requested_tile_size_px": 256,
            "tolerance": 0.07,
            "overlap": 0.25,
        },
        "filter_params": QC_ALL,
    },
}


def _digest(x: np.ndarray, y: np.ndarray, f: np.ndarray) -> str:
    return hashlib.sha256(
        x.astype(np.int64).tobytes() + y.astype(np.int64).tobytes() + f.astype(np.float32).tobytes()
    ).hexdigest()[:16]


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_tile_set_equals_hs2p(key: str) -> None:
    pytest.importorskip("openslide")
    from slide2vec_dagster.wsi import open_reader, open_slide

    name, set_name = key.split("|")
    slide_name = name.removesuffix("+mask")
    path = DATA / slide_name
    if not path.exists():
        pytest.skip(f"{path} is not present (copy it from the shared test data to run this check)")
    if path.is_dir():
        path = sorted(path.glob("*.dcm"))[0]
    cfg = TilingConfig.model_validate({"backend": "openslide", **SETS[set_name]})
    mask_path = DATA / (Path(slide_name).stem + "-mask.tiff") if name.endswith("+mask") else None
    if mask_path is not None and not mask_path.exists():
        pytest.skip(f"{mask_path} is not present")
    with open_slide(path, "openslide", SPACING.get(slide_name)) as reader:
        mask_reader = open_reader(mask_path, "auto") if mask_path is not None else None
        try:
            res = tile_slide(reader, reader.base_spacing_um, cfg, mask_reader=mask_reader)
        finally:
            if mask_reader is not None:
                mask_reader.close()
    want = EXPECTED[key]
    assert res.n_tiles == want["n"]
    assert _digest(res.x, res.y, res.tissue_fractions) == want["sha"]
