"""Shared set-up for the Dagster-layer tests: a cohort of tests/data slides in a temporary folder."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import tifffile
import yaml

DATA = Path(__file__).resolve().parent / "data"


def write_manifest(path: Path, rows: list[dict[str, str]]) -> Path:
    columns = ["sample_id", "image_path", "mask_path", "spacing_at_level_0", "patient_id"]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({column: row.get(column, "") for column in columns})
    return path


def write_platform_config(folder: Path, manifests: list[str], pipelines: dict | None = None) -> Path:
    pipelines = pipelines or {
        "p1": {
            "tiling": {
                "params": {"requested_spacing_um": 0.5, "requested_tile_size_px": 224},
                "preview": {"save_mask_preview": True, "save_tiling_preview": True},
            }
        }
    }
    config = {"manifests": manifests, "output_root": "out", "pipelines": pipelines}
    path = folder / "platform.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


GOOD_ROWS = [
    {"sample_id": "001", "image_path": str(DATA / "synthetic-he-0.5mpp.tiff"), "patient_id": "pa"},
    {
        "sample_id": "002",
        "image_path": str(DATA / "synthetic-he-0.5mpp.tiff"),
        "mask_path": str(DATA / "synthetic-he-0.5mpp-mask.tiff"),
        "patient_id": "pa",
    },
]
BAD_ROWS = [
    {"sample_id": "missing", "image_path": str(DATA / "no-such-slide.svs"), "patient_id": "pb"},
    # JPEG 2000 SVS without MPP and no override: must fail with a message about spacing_at_level_0.
    {"sample_id": "no-spacing", "image_path": str(DATA / "tcga-cr-7395-01a-01-ts1.svs"), "patient_id": "pb"},
]


def blank_slide(path: Path) -> Path:
    """A white 2-level pyramid at 0.5 µm/px (in its resolution tags): no tissue at all."""
    image = np.full((1024, 1024, 3), 250, np.uint8)
    with tifffile.TiffWriter(path) as tif:
        for level, subfiletype in ((image, 0), (image[::4, ::4], 1)):
            tif.write(
                level, tile=(256, 256), photometric="rgb", compression="jpeg", subfiletype=subfiletype,
                resolution=(20000, 20000), resolutionunit="CENTIMETER",
            )  # fmt: skip
    return path
