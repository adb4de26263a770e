"""DICOM WSI whose JPEG frames hold YCbCr under PhotometricInterpretation RGB (issue #6).

``tests/data/dicom-cmu-1-small-region`` is CMU-1-Small-Region.svs converted with Bio-Formats: JFIF (YCbCr)
frames labelled RGB. OpenSlide honours the label and returns raw YCbCr; the OpenSlide reader must detect
this, convert on every read, and say so in ``colour_correction``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from slide2vec_dagster.tiling import TilingConfig, tile_slide
from slide2vec_dagster.wsi import SlideOpenError, open_reader, open_slide
from slide2vec_dagster.wsi.readers import (
    _COLUMN_POSITION,
    _COLUMNS,
    _CONCATENATION_OFFSET,
    _DIMENSION_ORGANISATION,
    _IMAGE_TYPE,
    _PER_FRAME_GROUPS,
    _PHOTOMETRIC,
    _PIXEL_DATA,
    _PLANE_POSITION,
    _ROW_POSITION,
    _ROWS,
    _TOTAL_COLUMNS,
    _TOTAL_ROWS,
    YCBCR_TO_RGB,
    _dicom_entry,
    _dicom_frames,
    _dicom_jpeg_header,
    _frame_origin,
    dicom_ycbcr_levels,
)

openslide = pytest.importorskip("openslide")

DATA = Path(__file__).resolve().parent / "data"
DICOM = DATA / "dicom-cmu-1-small-region"
SVS = DATA / "CMU-1-Small-Region.svs"
# Level-0 regions of 224 px: glass, dense tissue, tissue edge, glass near the bottom, mixed.
REGIONS = [(0, 0), (1000, 1500), (1800, 2500), (300, 2700), (600, 800)]
PHOTOMETRIC_RGB = b"\x28\x00\x04\x00CS\x04\x00RGB "
PHOTOMETRIC_YBR = b"\x28\x00\x04\x00CS\x0c\x00YBR_FULL_422"

pytestmark = pytest.mark.skipif(not DICOM.is_dir() or not SVS.exists(), reason="DICOM / SVS test slides missing")


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.fixture(scope="module")
def dicom():
    reader = open_reader(DICOM, "openslide")
    yield reader
    reader.close()


@pytest.fixture(scope="module")
def svs():
    reader = open_reader(SVS, "openslide")
    yield reader
    reader.close()


@pytest.fixture(scope="module")
def relabelled(tmp_path_factory) -> Path:
    """A copy of the series whose frames say what they hold (YBR_FULL_422), which OpenSlide converts itself."""
    folder = tmp_path_factory.mktemp("dicom-ybr")
    for path in sorted(DICOM.glob("*.dcm")):
        data = path.read_bytes()
        assert data.count(PHOTOMETRIC_RGB) == 1, path
        (folder / path.name).write_bytes(data.replace(PHOTOMETRIC_RGB, PHOTOMETRIC_YBR))
    return folder


def test_the_test_slide_really_reads_as_ycbcr_without_the_correction(svs):
    # Control: OpenSlide alone returns YCbCr: glass is bright Y with neutral chroma (~128), far from the twin.
    slide = openslide.OpenSlide(str(_dicom_entry(DICOM)))
    try:
        raw = np.asarray(slide.read_region((0, 0), 0, (224, 224)))[:, :, :3]
    finally:
        slide.close()
    y, cb, cr = np.median(raw.reshape(-1, 3), axis=0)
    assert y > 200 and abs(cb - 128) <= 3 and abs(cr - 128) <= 3
    assert _mad(raw, svs.read_region(0, 0, 0, 224, 224)) > 50


def test_dicom_ycbcr_labelled_rgb_is_corrected_and_recorded(dicom, svs):
    assert dicom.colour_correction is not None
    assert dicom.colour_correction.startswith(f"{YCBCR_TO_RGB}: DICOM JPEG frames labelled RGB hold YCbCr")
    assert "levels 0-11 of 12" in dicom.colour_correction
    for x, y in REGIONS:
        ours, twin = dicom.read_region(x, y, 0, 224, 224), svs.read_region(x, y, 0, 224, 224)
        # JPEG re-encoding with 4:2:0 chroma costs a few levels on detailed tissue, nothing like 50+.
        assert _mad(ours, twin) < 10, (x, y)
        assert np.abs(ours.reshape(-1, 3).mean(0) - twin.reshape(-1, 3).mean(0)).max() < 3, (x, y)


def test_the_correction_equals_openslides_own_conversion_of_a_correctly_labelled_copy(dicom, relabelled):
    with open_reader(relabelled, "openslide") as honest:
        assert honest.colour_correction is None  # its label is right: nothing to correct
        for level in (0, 3, 6, 11):
            assert _mad(dicom.read_level(level), honest.read_level(level)) < 0.1, level
        # A read over the slide's corner: converted inside, white padding outside.
        ours = dicom.read_region(2100, 2850, 0, 224, 224)
        assert _mad(ours, honest.read_region(2100, 2850, 0, 224, 224)) < 0.1
        assert (ours[-10:, -10:] == 255).all()


def test_the_check_leaves_frames_alone_when_openslide_already_converts(relabelled):
    # Headers of the mislabelled series, pixels from an OpenSlide that converts: no level needs correcting.
    slide = openslide.OpenSlide(str(_dicom_entry(relabelled)))
    try:
        dims = tuple(tuple(int(v) for v in d) for d in slide.level_dimensions)
        downsamples = tuple(float(d) for d in slide.level_downsamples)
        assert dicom_ycbcr_levels(slide, _dicom_entry(DICOM), dims, downsamples) == ()
    finally:
        slide.close()


class _NoisySlide:
    """Stands in for OpenSlide returning pixels that match no reading of the frame."""

    def __init__(self, slide) -> None:
        self.properties = slide.properties

    def read_region(self, location, level, size):
        rng = np.random.default_rng(0)
        rgba = rng.integers(0, 256, size=(size[1], size[0], 4), dtype=np.uint8)
        rgba[:, :, 3] = 255
        return rgba


def test_pixels_matching_no_reading_of_the_frame_fail_naming_the_file():
    slide = openslide.OpenSlide(str(_dicom_entry(DICOM)))
    try:
        dims = tuple(tuple(int(v) for v in d) for d in slide.level_dimensions)
        downsamples = tuple(float(d) for d in slide.level_downsamples)
        with pytest.raises(SlideOpenError, match=r"level-0-frames-0-30\.dcm.*match neither"):
            dicom_ycbcr_levels(_NoisySlide(slide), _dicom_entry(DICOM), dims, downsamples)
    finally:
        slide.close()


def _tiles(path: Path, seg_downsample: int, *, correct: bool = True):
    cfg = TilingConfig.model_validate(
        {
            "backend": "openslide",
            "params": {"requested_spacing_um": 0.5, "requested_tile_size_px": 224},
            "seg_params": {"downsample": seg_downsample},
        }
    )
    with open_slide(path, "openslide") as reader:
        if not correct:
            reader._ycbcr_levels = frozenset()  # the reading before the fix, as a control
        return tile_slide(reader, reader.base_spacing_um, cfg)


def _footprint_iou(a, b, scale: int = 8) -> float:
    """IoU of the areas the two tile sets cover (grids may start a few pixels apart)."""
    w, h = a.slide_dimensions
    masks = []
    for res in (a, b):
        mask = np.zeros((h // scale + 1, w // scale + 1), bool)
        side = res.geometry.tile_size_lv0 // scale
        for x, y in zip(res.x // scale, res.y // scale, strict=True):
            mask[y : y + side, x : x + side] = True
        masks.append(mask)
    return float((masks[0] & masks[1]).sum() / (masks[0] | masks[1]).sum())


def test_tiling_the_dicom_gives_the_tiles_of_its_svs_twin():
    # Same segmentation level on both (level 0): the tile sets agree tile for tile.
    svs, ours, raw = _tiles(SVS, 1), _tiles(DICOM, 1), _tiles(DICOM, 1, correct=False)
    assert abs(ours.n_tiles - svs.n_tiles) <= 3
    twin = np.stack([svs.x, svs.y], axis=1)
    nearest = np.abs(np.stack([ours.x, ours.y], axis=1)[:, None, :] - twin[None]).max(axis=2).min(axis=1)
    assert (nearest <= svs.geometry.tile_size_lv0 // 4).mean() >= 0.9
    assert _footprint_iou(svs, ours) >= 0.9
    # Without the correction glass counts as tissue (119 tiles here): the checks above would fail.
    assert raw.n_tiles > svs.n_tiles * 1.5 and _footprint_iou(svs, raw) < 0.7


def test_default_tiling_of_the_dicom_is_close_to_its_svs_twin():
    # Default seg downsample 64: the DICOM segments its 34 x 46 level 6, the single-level SVS its level 0,
    # so the contours differ somewhat (77 vs 67 tiles); uncorrected colours gave 112.
    svs, ours, raw = _tiles(SVS, 64), _tiles(DICOM, 64), _tiles(DICOM, 64, correct=False)
    assert abs(ours.n_tiles - svs.n_tiles) <= 0.2 * svs.n_tiles
    assert _footprint_iou(svs, ours) >= 0.65
    assert raw.n_tiles > svs.n_tiles * 1.5 and _footprint_iou(svs, raw) < 0.6


def test_a_series_file_that_cannot_be_parsed_fails_naming_it(tmp_path: Path):
    for path in DICOM.glob("*.dcm"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    broken = tmp_path / "level-1-frames-0-9.dcm"
    data = broken.read_bytes()
    image_type = data.index(b"\x08\x00\x08\x00CS")  # ImageType, now an undefined-length UN element
    broken.write_bytes(data[:image_type] + b"\x08\x00\x08\x00UN\x00\x00\xff\xff\xff\xff" + data[image_type + 8 :])
    slide = openslide.OpenSlide(str(_dicom_entry(DICOM)))
    try:
        dims = tuple(tuple(int(v) for v in d) for d in slide.level_dimensions)
        downsamples = tuple(float(d) for d in slide.level_downsamples)
        with pytest.raises(SlideOpenError, match=r"colour encoding of DICOM file .*level-1-frames-0-9\.dcm"):
            dicom_ycbcr_levels(slide, tmp_path / "level-0-frames-0-30.dcm", dims, downsamples)
    finally:
        slide.close()


# ----------------------------------------------------------------------------------- DICOM parsing


def test_the_header_and_frames_of_a_level_file_are_read():
    with (DICOM / "level-0-frames-0-30.dcm").open("rb") as handle:
        header = _dicom_jpeg_header(handle)
        assert header is not None
        assert header[_PHOTOMETRIC] == "RGB" and header[_IMAGE_TYPE] == "DERIVED\\PRIMARY\\VOLUME\\NONE"
        assert (header[_TOTAL_COLUMNS], header[_TOTAL_ROWS], header[_COLUMNS], header[_ROWS]) == (2220, 2967, 500, 500)
        offset, _ = header[_PIXEL_DATA]
        frames = list(_dicom_frames(handle, offset))
    assert len(frames) == 30 == 5 * 6  # TILED_FULL: 5 frames across, 6 down
    assert all(f.startswith(b"\xff\xd8") for f in frames)
    assert [_frame_origin(header, i) for i in (0, 1, 5, 29)] == [(0, 0), (500, 0), (0, 500), (2000, 2500)]
    with SVS.open("rb") as handle:
        assert _dicom_jpeg_header(handle) is None  # not DICOM


def test_frame_origins_of_concatenations_and_sparse_tiling():
    full = {_COLUMNS: 500, _ROWS: 500, _TOTAL_COLUMNS: 2220, _TOTAL_ROWS: 2967, _DIMENSION_ORGANISATION: "TILED_FULL"}
    assert _frame_origin({**full, _CONCATENATION_OFFSET: 7}, 0) == (1000, 500)
    planes = [{_PLANE_POSITION: [{_COLUMN_POSITION: 1001, _ROW_POSITION: 501}]}]
    sparse = {_COLUMNS: 500, _ROWS: 500, _PER_FRAME_GROUPS: planes}
    assert _frame_origin(sparse, 0) == (1000, 500)
    assert _frame_origin(sparse, 1) is None  # the file does not say: the check raises rather than guesses
