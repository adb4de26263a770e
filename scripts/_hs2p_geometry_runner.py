"""Compute hs2p's tile geometry for a list of cases, inside hs2p's own virtual environment.

Invoked by ``scripts/regenerate_hs2p_fixtures.py`` as ``<hs2p-venv>/bin/python _hs2p_geometry_runner.py IN.json
OUT.json``; it must not import anything from slide2vec_dagster. Each input case holds ``s0`` (level-0 spacing),
``downsamples``, ``r`` (requested spacing), ``T`` (requested tile size), ``tol`` and ``overlap``; the output is
one ``expect`` per case: the geometry hs2p tiles with, or ``"error"`` where hs2p refuses to upsample.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def expect(case: dict[str, Any]) -> dict[str, Any] | str:
    from hs2p.tiling.contours import _normalize_level_downsamples
    from hs2p.wsi.geometry import plan_spacing_read, resolve_tile_stride, tile_size_lv0_from_plan

    # The same calls, in the same order, as hs2p.tiling.generate.generate_tiles makes before laying its grid.
    downsamples = _normalize_level_downsamples(case["downsamples"])
    try:
        plan = plan_spacing_read(
            requested_spacing_um=case["r"],
            level0_spacing_um=case["s0"],
            level_downsamples=[(float(d), float(d)) for d in downsamples],
            target_size_px=(case["T"], case["T"]),
            tolerance=case["tol"],
            content_kind="image",
        )
    except ValueError as exc:
        if "upsampling is forbidden" not in str(exc):
            raise  # any other refusal is not a case the fixture describes
        return "error"
    read_tile_size_px = plan.read_size_px[0]
    tile_size_lv0 = tile_size_lv0_from_plan(plan, level0_spacing_um=case["s0"])
    stride = resolve_tile_stride(
        read_tile_size_px=read_tile_size_px, tile_size_lv0=tile_size_lv0, overlap=case["overlap"]
    )
    return {
        "read_level": plan.level,
        "read_spacing_um": plan.read_spacing_um,
        "is_within_tolerance": plan.is_within_tolerance,
        "read_tile_size_px": read_tile_size_px,
        "tile_size_lv0": tile_size_lv0,
        "step_px_lv0": stride.step_px_lv0,
    }


def main(in_path: str, out_path: str) -> int:
    cases = json.loads(Path(in_path).read_text())
    Path(out_path).write_text(json.dumps([expect(c) for c in cases]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
