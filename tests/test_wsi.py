"""Slide readers (slide2vec_dagster.wsi) on every test slide of tests/data they support."""

from __future__ import annotations

import itertools
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from slide2vec_dagster.wsi import (
    AUTO_ORDER,
    MASK_AUTO_ORDER,
    MissingSpacingError,
    SlideOpenError,
    open_reader,
    open_slide,
)
from slide2vec_dagster.wsi import readers as readers_module
from slide2vec_dagster.wsi.base import to_rgb_uint8, white_padded
from slide2vec_dagster.wsi.readers import aperio_mpp

DATA = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class Slide:
    name: str
    dimensions: tuple[int, int]
    levels: dict[str, int]  # backend -> level count it shows (the readers this slide is tested with)
    spacing: float | None  # level-0 µm/px in the file, None when the file has none
    auto: str  # the reader `auto` ends up with


SLIDES = [
    Slide("CMU-1-Small-Region.svs", (2220, 2967), {"cucim": 1, "openslide": 1, "tifffile": 1}, 0.499, "cucim"),
    Slide("tcga-cr-7395-01a-01-ts1.svs", (4443, 3567), {"cucim": 2, "openslide": 2, "tifffile": 2}, None, "cucim"),
    Slide("dicom-cmu-1-small-region", (2220, 2967), {"openslide": 12}, 0.499, "openslide"),
    # OpenSlide adds three levels of its own to an NDPI pyramid (JPEG scaling); tifffile shows the file's four.
    Slide("hamamatsu-fluorescence-dapi.ndpi", (3968, 4864), {"openslide": 7, "tifffile": 4}, 0.22818, "openslide"),
    Slide("synthetic-he-0.5mpp.tiff", (4096, 3072), {"cucim": 4, "openslide": 4, "tifffile": 4}, 0.5, "cucim"),
    # A single-channel deflate mask: cuCIM cannot decode it and OpenSlide refuses it.
    Slide("synthetic-he-0.5mpp-mask.tiff", (256, 192), {"tifffile": 1}, 8.0, "tifffile"),
    Slide("synthetic-he-aperio-0.25mpp.svs", (4096, 3072), {"cucim": 4, "openslide": 4, "tifffile": 4}, 0.25, "cucim"),
]
BY_NAME = {slide.name: slide for slide in SLIDES}
SUPPORTED = [pytest.param(s, b, id=f"{s.name}-{b}") for s in SLIDES for b in s.levels]
UNSUPPORTED = [
    pytest.param(s, b, id=f"{s.name}-{b}")
    for s in SLIDES
    for b in ("cucim", "openslide", "tifffile")
    if b not in s.levels
]


def _path(slide: Slide) -> Path:
    return DATA / slide.name


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.fixture(scope="module")
def readers():
    """One open reader per (slide, backend), shared by the tests of this module."""
    opened: dict[tuple[str, str], object] = {}

    def get(slide: Slide, backend: str):
        key = (slide.name, backend)
        if key not in opened:
            opened[key] = open_reader(_path(slide), backend)
        return opened[key]

    yield get
    for reader in opened.values():
        reader.close()


# --------------------------------------------------------------------------------------- geometry


@pytest.mark.parametrize(("slide", "backend"), SUPPORTED)
def test_reader_reports_the_slide_geometry(readers, slide: Slide, backend: str):
    reader = readers(slide, backend)
    assert reader.backend == backend
    assert reader.dimensions == slide.dimensions
    assert reader.info.level_count == slide.levels[backend]
    assert len(reader.level_downsamples) == len(reader.level_dimensions) == slide.levels[backend]
    assert reader.level_downsamples[0] == 1.0
    assert all(b > a for a, b in itertools.pairwise(reader.level_downsamples)), "levels get coarser"
    for (width, _), downsample in zip(reader.level_dimensions, reader.level_downsamples, strict=True):
        # Each backend reports its own downsample (OpenSlide and cuCIM average the x and y ratios), as
        # slide2vec's tiling library uses them; they predict each level's width to within a pixel.
        assert abs(slide.dimensions[0] / downsample - width) <= 1.0
    if slide.spacing is None:
        assert reader.info.native_spacing_um is None
    else:
        assert reader.info.native_spacing_um == pytest.approx(slide.spacing, rel=1e-3)


@pytest.mark.parametrize(("slide", "backend"), UNSUPPORTED)
def test_unsupported_reader_and_slide_pairs_raise_slide_open_error(slide: Slide, backend: str):
    with pytest.raises(SlideOpenError) as info:
        open_reader(_path(slide), backend)
    assert slide.name in str(info.value) or "directory" in str(info.value) or Path(slide.name).suffix in str(info.value)


# ------------------------------------------------------------------------------------------ reads


@pytest.mark.parametrize(("slide", "backend"), SUPPORTED)
def test_region_reads_are_rgb_uint8_of_the_requested_shape(readers, slide: Slide, backend: str):
    reader = readers(slide, backend)
    width, height = slide.dimensions
    for level in (0, reader.info.level_count - 1):
        # A non-square request catches (width, height) / (rows, columns) mix-ups.
        region = reader.read_region(width // 3, height // 3, level, 37, 23)
        assert region.shape == (23, 37, 3)
        assert region.dtype == np.uint8
        assert region.flags["C_CONTIGUOUS"]
    whole = reader.read_level(reader.info.level_count - 1)
    last_w, last_h = reader.level_dimensions[-1]
    assert whole.shape == (last_h, last_w, 3) and whole.dtype == np.uint8


@pytest.mark.parametrize(("slide", "backend"), SUPPORTED)
def test_reads_beyond_the_slide_are_padded_with_white(readers, slide: Slide, backend: str):
    reader = readers(slide, backend)
    width, height = slide.dimensions
    # Hanging over the bottom-right corner at level 0: 10 px inside, 30 px outside, each way.
    region = reader.read_region(width - 10, height - 10, 0, 40, 40)
    assert region.shape == (40, 40, 3)
    assert (region[10:, :, :] == 255).all() and (region[:, 10:, :] == 255).all()
    # Hanging over the top-left corner: the part before the origin is white.
    region = reader.read_region(-16, -8, 0, 32, 32)
    assert (region[:8, :, :] == 255).all() and (region[:, :16, :] == 255).all()
    # Entirely outside the slide, at the coarsest level too.
    for level in (0, reader.info.level_count - 1):
        assert (reader.read_region(width + 100, height + 100, level, 16, 12) == 255).all()
    # Over the edge of the coarsest level.
    last_w, last_h = reader.level_dimensions[-1]
    downsample = reader.level_downsamples[-1]
    x, y = int((last_w - 4) * downsample), int((last_h - 4) * downsample)
    region = reader.read_region(x, y, reader.info.level_count - 1, 12, 12)
    assert region.shape == (12, 12, 3)
    assert (region[6:, 6:, :] == 255).all()


MULTI_BACKEND = [s for s in SLIDES if len(s.levels) > 1]


@pytest.mark.parametrize("slide", MULTI_BACKEND, ids=lambda s: s.name)
def test_backends_read_nearly_identical_pixels(readers, slide: Slide):
    """The same region read by every reader agrees. cuCIM and tifffile address level pixels the same way
    (floor of the level-0 location / downsample) and agree to the grey level; OpenSlide places a read at
    the fractional level position and interpolates, so at levels > 0 it is compared with the best of the
    four one-pixel alignments of the other reader's read."""
    backends = list(slide.levels)
    common_levels = min(slide.levels.values())
    width, height = slide.dimensions
    for level in range(common_levels):
        # Off the level grid on purpose (odd level-0 coordinates), where an addressing error shows.
        for x, y in ((width // 3 + 1, height // 3 + 1), (width // 2 + 3, height // 5 + 5)):
            regions = {b: readers(slide, b).read_region(x, y, level, 97, 81) for b in backends}
            for a, b in itertools.combinations(backends, 2):
                first, second = regions[a][:80, :96], regions[b]
                if level == 0 or "openslide" not in (a, b):
                    diff, limit = _mad(first, second[:80, :96]), 1.0
                else:
                    if b == "openslide":
                        first, second = regions[b][:80, :96], regions[a]
                    shifts = itertools.product((0, 1), (0, 1))
                    diff, limit = min(_mad(first, second[dy : dy + 80, dx : dx + 96]) for dy, dx in shifts), 8.0
                assert diff < limit, f"{slide.name} level {level} at ({x}, {y}): {a} vs {b} differ by {diff:.2f}"


def test_cucim_addresses_levels_with_a_non_integer_downsample_like_tifffile(readers):
    """Level 1 of the TCGA slide has downsample 2.00045 (x) / 2.00056 (y); cuCIM used to land one
    level pixel early (it divides by the mean of both), a 20-grey-level difference on tissue."""
    slide = BY_NAME["tcga-cr-7395-01a-01-ts1.svs"]
    cucim, tiff = readers(slide, "cucim"), readers(slide, "tifffile")
    full = tiff.read_level(1)
    for x, y in ((1481, 1189), (1480, 1188), (2001, 999), (3, 5)):
        region = cucim.read_region(x, y, 1, 64, 48)
        lx, ly = int(x // tiff.level_downsamples[1]), int(y // tiff.level_downsamples[1])
        np.testing.assert_array_equal(region, full[ly : ly + 48, lx : lx + 64])


def test_dicom_series_opens_from_the_folder_or_any_of_its_files():
    folder = DATA / "dicom-cmu-1-small-region"
    with open_reader(folder / "level-3-frames-0-1.dcm", "openslide") as from_file:
        assert from_file.dimensions == (2220, 2967)
        assert from_file.info.level_count == 12
        # The YCbCr check covers the whole series whichever file opened it (tests/test_wsi_dicom_colour.py).
        assert from_file.colour_correction is not None and "levels 0-11 of 12" in from_file.colour_correction


@pytest.mark.parametrize(("slide", "backend"), SUPPORTED)
def test_only_the_mislabelled_dicom_gets_a_colour_correction(readers, slide: Slide, backend: str):
    """No false positive: SVS, TIFF and NDPI slides are read as stored, by every reader."""
    reader = readers(slide, backend)
    if slide.name == "dicom-cmu-1-small-region":
        assert reader.colour_correction is not None and reader.colour_correction.startswith("ycbcr_to_rgb:")
    else:
        assert reader.colour_correction is None


# --------------------------------------------------------------------------------- auto and spacing


@pytest.mark.parametrize("slide", SLIDES, ids=lambda s: s.name)
def test_auto_picks_the_first_reader_that_decodes_and_records_it(slide: Slide):
    override = 0.5 if slide.spacing is None else None
    with open_slide(_path(slide), "auto", spacing_override=override) as reader:
        assert reader.backend == slide.auto
        assert reader.requested_backend == "auto"
        assert reader.base_spacing_um == pytest.approx(override or slide.spacing, rel=1e-3)


def test_auto_order_is_cucim_then_openslide_then_tifffile(monkeypatch):
    assert AUTO_ORDER == ("cucim", "openslide", "tifffile")
    assert MASK_AUTO_ORDER[0] == "tifffile"
    tried: list[str] = []

    def refusing(name: str):
        class Refusing:
            def __init__(self, path):
                tried.append(name)
                raise SlideOpenError(f"{name} says no")

        return Refusing

    path = DATA / "synthetic-he-0.5mpp.tiff"
    monkeypatch.setitem(readers_module.READER_CLASSES, "cucim", refusing("cucim"))
    with open_reader(path) as reader:
        assert reader.backend == "openslide"
    monkeypatch.setitem(readers_module.READER_CLASSES, "openslide", refusing("openslide"))
    with open_reader(path) as reader:
        assert reader.backend == "tifffile"
    monkeypatch.setitem(readers_module.READER_CLASSES, "tifffile", refusing("tifffile"))
    with pytest.raises(SlideOpenError) as info:
        open_reader(path)
    assert tried == ["cucim", "cucim", "openslide", "cucim", "openslide", "tifffile"]
    message = str(info.value)
    assert str(path) in message and "cucim says no" in message and "tifffile says no" in message
    assert "tiling.backend" in message


def test_auto_skips_a_reader_that_opens_but_cannot_decode():
    # cuCIM opens the deflate mask but cannot decode it: auto must move on (here to tifffile).
    with open_reader(DATA / "synthetic-he-0.5mpp-mask.tiff") as reader:
        assert reader.backend == "tifffile"


def test_an_explicit_reader_that_cannot_decode_fails_at_open_with_slide_open_error():
    with pytest.raises(SlideOpenError) as info:
        open_reader(DATA / "synthetic-he-0.5mpp-mask.tiff", "cucim")
    message = str(info.value)
    assert "synthetic-he-0.5mpp-mask.tiff" in message and "could not decode" in message and "backend" in message


@pytest.mark.parametrize("name", ["CMU-1-Small-Region.svs", "synthetic-he-aperio-0.25mpp.svs"])
def test_cucim_finds_the_aperio_mpp(name: str):
    with open_reader(DATA / name, "cucim") as reader:
        # CuImage.spacing() says 1 for Aperio files; the value must come from the MPP tag.
        assert reader.info.native_spacing_um == pytest.approx(BY_NAME[name].spacing)


def test_aperio_mpp_parser():
    assert aperio_mpp("Aperio Image Library v11 |AppMag = 20|MPP = 0.4990|Left = 1") == pytest.approx(0.499)
    assert aperio_mpp("Aperio |MPP=2.5e-1") == pytest.approx(0.25)
    assert aperio_mpp("Aperio |AppMag = 20") is None
    assert aperio_mpp("|MPP = 0") is None
    assert aperio_mpp(None) is None


@pytest.mark.parametrize("backend", ["auto", "cucim", "openslide", "tifffile"])
def test_the_manifest_spacing_override_wins_over_the_file(backend: str):
    with open_slide(DATA / "CMU-1-Small-Region.svs", backend, spacing_override=0.25) as reader:
        assert reader.info.native_spacing_um == pytest.approx(0.499)
        assert reader.base_spacing_um == 0.25
        assert reader.spacing_override == 0.25
        assert reader.requested_backend == backend
    with open_slide(DATA / "CMU-1-Small-Region.svs", backend) as reader:
        assert reader.base_spacing_um == pytest.approx(0.499)
        assert reader.spacing_override is None


@pytest.mark.parametrize("backend", ["auto", "cucim", "openslide", "tifffile"])
def test_a_slide_without_spacing_needs_the_override(backend: str):
    path = DATA / "tcga-cr-7395-01a-01-ts1.svs"
    with pytest.raises(MissingSpacingError) as info:
        open_slide(path, backend)
    message = str(info.value)
    assert str(path) in message and "spacing_at_level_0" in message
    with open_slide(path, backend, spacing_override=0.5) as reader:
        assert reader.base_spacing_um == 0.5


# ----------------------------------------------------------------------------------- broken inputs


@pytest.mark.parametrize("backend", ["auto", "cucim", "openslide", "tifffile"])
def test_a_missing_file_raises_file_not_found_naming_it(tmp_path: Path, backend: str):
    path = tmp_path / "nowhere" / "slide.svs"
    for opener in (open_reader, open_slide):
        with pytest.raises(FileNotFoundError) as info:
            opener(path, backend)
        assert str(path) in str(info.value)


def test_an_unknown_backend_is_a_value_error():
    with pytest.raises(ValueError, match="unknown slide backend 'pillow'"):
        open_reader(DATA / "CMU-1-Small-Region.svs", "pillow")


def _not_slides(tmp_path: Path) -> dict[str, Path]:
    text = tmp_path / "notes.svs"
    text.write_text("sample_id,image_path\nthis is not a slide\n")
    empty = tmp_path / "empty.svs"
    empty.write_bytes(b"")
    # CMU-1's directory sits at the end of the file: a short copy has no readable directory at all.
    cut_tail = tmp_path / "cut-directory.svs"
    cut_tail.write_bytes((DATA / "CMU-1-Small-Region.svs").read_bytes()[:200_000])
    # The synthetic SVS starts with its directory: a short copy keeps it and loses most tiles.
    cut_tiles = tmp_path / "cut-tiles.svs"
    cut_tiles.write_bytes((DATA / "synthetic-he-aperio-0.25mpp.svs").read_bytes()[:1_000_000])
    cut_tiff = tmp_path / "cut-tiles.tiff"
    cut_tiff.write_bytes((DATA / "synthetic-he-0.5mpp.tiff").read_bytes()[:1_500_000])
    return {"text": text, "empty": empty, "cut-directory": cut_tail, "cut-tiles": cut_tiles, "cut-tiff": cut_tiff}


@pytest.mark.parametrize("kind", ["text", "empty", "cut-directory", "cut-tiles", "cut-tiff"])
@pytest.mark.parametrize("backend", ["auto", "cucim", "openslide", "tifffile"])
def test_a_file_that_is_not_a_whole_slide_raises_slide_open_error(tmp_path: Path, kind: str, backend: str):
    path = _not_slides(tmp_path)[kind]
    with pytest.raises(SlideOpenError) as info:
        open_slide(path, backend, spacing_override=0.5)
    message = str(info.value)
    assert str(path) in message
    if kind.startswith("cut-tiles") or kind == "cut-tiff":
        assert "truncated" in message and "again" in message
    if backend == "auto":
        assert "no reader could open" in message or "truncated" in message


def test_a_complete_copy_in_another_folder_still_opens(tmp_path: Path):
    copy = tmp_path / "copy.svs"
    shutil.copyfile(DATA / "synthetic-he-aperio-0.25mpp.svs", copy)
    with open_slide(copy) as reader:
        assert reader.dimensions == (4096, 3072) and reader.base_spacing_um == 0.25


# ------------------------------------------------------------------------------------ pixel helpers


def test_to_rgb_uint8_normalises_gray_alpha_and_dtype():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for shaped in (gray, gray[:, :, None]):
        rgb = to_rgb_uint8(shaped)
        assert rgb.shape == (3, 4, 3) and rgb.dtype == np.uint8
        assert (rgb == gray[:, :, None]).all()
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)  # opaque: kept
    rgba[1, 1] = (10, 20, 30, 0)  # transparent (outside the slide for OpenSlide): white
    rgb = to_rgb_uint8(rgba)
    assert rgb.shape == (2, 2, 3)
    assert tuple(rgb[0, 0]) == (10, 20, 30) and tuple(rgb[1, 1]) == (255, 255, 255)
    wide = to_rgb_uint8(np.full((2, 2, 3), 300, dtype=np.uint16))
    assert wide.dtype == np.uint8 and (wide == 255).all()


def test_white_padded_fills_a_short_read():
    short = np.zeros((3, 2, 3), dtype=np.uint8)
    padded = white_padded(short, 5, 4)
    assert padded.shape == (4, 5, 3)
    assert (padded[:3, :2] == 0).all() and (padded[3:] == 255).all() and (padded[:, 2:] == 255).all()
    assert white_padded(short, 2, 3) is short
