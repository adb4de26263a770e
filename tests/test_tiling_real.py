"""Real slides in tests/data: our tile sets equal hs2p 6.1's (expected digests computed with hs2p).

``tiling_hs2p_expected.json`` holds, per slide and parameter set (``HS2P_SETS`` in tiling_helpers.py), the
tile count and a digest of hs2p's (x, y, tissue_fractions) sorted row-major, from hs2p's ``tile_slide`` with
the OpenSlide backend; its ``"_generated"`` record names the versions used. Regenerate it (and the geometry
cases) with ``.venv/bin/python scripts/regenerate_hs2p_fixtures.py`` (hs2p in its own venv, about 15 s;
``--check`` compares without writing). DICOM is not compared (see the script). A slide that is not in
tests/data is skipped with the reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from slide2vec_dagster.tiling import TilingConfig, tile_slide

from .tiling_helpers import HS2P_SETS, tile_digest

DATA = Path(__file__).parent / "data"
EXPECTED = {
    k: v
    for k, v in json.loads((Path(__file__).parent / "tiling_hs2p_expected.json").read_text()).items()
    if k != "_generated"
}
SPACING = {"tcga-cr-7395-01a-01-ts1.svs": 0.5}


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
    cfg = TilingConfig.model_validate({"backend": "openslide", **HS2P_SETS[set_name]})
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
    assert want["n"] > 0, "a case without tiles compares nothing: regenerate it with another set"
    assert res.n_tiles == want["n"]
    assert np.array_equal(np.lexsort((res.x, res.y)), np.arange(res.n_tiles))  # ours come row-major already
    assert tile_digest(res.x, res.y, res.tissue_fractions) == want["sha"]
