"""Brightfield / fluorescence check (slide2vec_dagster.wsi.modality) on the test slides and synthetic images."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from slide2vec_dagster.tiling.preview import preview_image
from slide2vec_dagster.wsi import open_reader
from slide2vec_dagster.wsi.modality import ModalityAssessment, assess_modality

DATA = Path(__file__).resolve().parent / "data"

SLIDES = [
    ("CMU-1-Small-Region.svs", "brightfield"),
    ("dicom-cmu-1-small-region", "brightfield"),  # read through the YCbCr correction
    ("tcga-cr-7395-01a-01-ts1.svs", "brightfield"),  # JPEG 2000, frozen section
    ("synthetic-he-0.5mpp.tiff", "brightfield"),
    ("synthetic-he-aperio-0.25mpp.svs", "brightfield"),
    ("hamamatsu-fluorescence-dapi.ndpi", "fluorescence"),
]


def thumbnail(path: Path, downsample: int) -> np.ndarray:
    """The whole slide at ``downsample``, from the closest level, in bounded memory (as the previews read it)."""
    with open_reader(path) as reader:
        return preview_image(reader, downsample)[0]


@pytest.mark.parametrize(("name", "expected"), SLIDES)
@pytest.mark.parametrize("downsample", [16, 64])
def test_real_slides_are_classified(name: str, expected: str, downsample: int):
    path = DATA / name
    if not path.exists():
        pytest.skip(f"{path} is not present")
    result = assess_modality(thumbnail(path, downsample))
    assert result.modality == expected, result
    if expected == "brightfield":
        assert result.warning is None
        assert result.bright_fraction > 0.3 and result.dark_fraction < 0.05
    else:
        assert result.warning is not None and "fluorescence" in result.warning
        assert result.dark_fraction > 0.9 and result.bright_fraction == 0.0
        assert 0.05 < result.signal_fraction < 0.5  # sparse DAPI signal


def test_white_image_is_brightfield():
    result = assess_modality(np.full((64, 48, 3), 255, np.uint8))
    assert result.modality == "brightfield" and result.warning is None
    assert result.bright_fraction == 1.0 and result.median_luminance == 255.0


def test_black_with_sparse_blue_blobs_is_fluorescence():
    image = np.zeros((200, 300, 3), np.uint8)
    rng = np.random.default_rng(0)
    for _ in range(40):
        x, y = (int(v) for v in rng.integers(10, 190, size=2))
        cv2.circle(image, (x + 50, y), 4, (10, 20, 200), -1)
    result = assess_modality(image)
    assert result.modality == "fluorescence"
    assert result.warning is not None and result.warning.startswith("looks like a fluorescence slide")
    assert 0.01 < result.signal_fraction < 0.2 and result.dark_fraction > 0.9


def test_tissue_filling_the_whole_image_is_still_brightfield():
    # No glass at all (a crop inside tissue): bright enough overall.
    rng = np.random.default_rng(1)
    image = np.clip(rng.normal((220, 150, 190), 20, size=(100, 100, 3)), 0, 255).astype(np.uint8)
    assert assess_modality(image).modality == "brightfield"


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((50, 50, 3), np.uint8),  # black without any signal
        np.full((50, 50, 3), 100, np.uint8),  # mid grey: neither bright glass nor a dark field
    ],
    ids=["black", "grey"],
)
def test_images_that_fit_neither_are_unknown_with_a_warning(image: np.ndarray):
    result = assess_modality(image)
    assert result.modality == "unknown"
    assert result.warning is not None and result.warning.startswith("cannot tell")


def test_evidence_is_json_ready():
    result = assess_modality(np.full((4, 4, 3), 255, np.uint8))
    assert isinstance(result, ModalityAssessment)
    assert result.as_dict() == {
        "modality": "brightfield",
        "median_luminance": 255.0,
        "bright_fraction": 1.0,
        "dark_fraction": 0.0,
        "signal_fraction": 1.0,
        "warning": None,
    }


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((8, 8), np.uint8),
        np.zeros((8, 8, 4), np.uint8),
        np.zeros((8, 8, 3), np.float32),
        np.zeros((0, 8, 3), np.uint8),
    ],
    ids=["gray", "rgba", "float", "empty"],
)
def test_anything_but_a_non_empty_rgb_uint8_image_is_refused(image: np.ndarray):
    with pytest.raises(ValueError, match="RGB uint8"):
        assess_modality(image)
