"""Concrete slide readers: cuCIM, OpenSlide and tifffile, and the ``auto`` choice between them."""

from __future__ import annotations

import itertools
import math
import os
import re
import struct
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np

from slide2vec_dagster.wsi.base import (
    MissingSpacingError,
    PyramidInfo,
    SlideOpenError,
    SlideReader,
    to_rgb_uint8,
)

AUTO_ORDER = ("cucim", "openslide", "tifffile")
# Masks are label rasters (often single-channel deflate TIFFs): tifffile decodes their values exactly,
# where cuCIM falls back to a slow RGBA path for them.
MASK_AUTO_ORDER = ("tifffile", "openslide", "cucim")
BACKENDS = AUTO_ORDER

_DECODE_THREADS = min(4, os.cpu_count() or 1)
_APERIO_MPP = re.compile(r"\|\s*MPP\s*=\s*([0-9.eE+-]+)")


def _positive_float(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) and number > 0 else None


def aperio_mpp(description: str | None) -> float | None:
    """The ``MPP = x`` entry of an Aperio ImageDescription, if present."""
    if not description:
        return None
    match = _APERIO_MPP.search(description)
    return _positive_float(match.group(1)) if match else None


def _clip_read(
    x: int, y: int, width: int, height: int, downsample: float, level_size: tuple[int, int]
) -> tuple[int, int, int, int, int, int]:
    """Intersect a level-space read with the level bounds.

    Returns ``(level_x, level_y, read_w, read_h, paste_x, paste_y)`` where the read starts at
    ``(level_x, level_y)`` in level pixels and lands at ``(paste_x, paste_y)`` in the output canvas.
    """
    level_x, level_y = int(np.floor(x / downsample)), int(np.floor(y / downsample))
    paste_x, paste_y = max(0, -level_x), max(0, -level_y)
    start_x, start_y = max(0, level_x), max(0, level_y)
    end_x = min(level_size[0], level_x + width)
    end_y = min(level_size[1], level_y + height)
    return start_x, start_y, max(0, end_x - start_x), max(0, end_y - start_y), paste_x, paste_y


class CuCIMReader(SlideReader):
    """cuCIM's CuImage reader. Works on the CPU; reads SVS and generic tiled TIFF (not NDPI, DICOM)."""

    backend = "cucim"

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        try:
            from cucim import CuImage
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise SlideOpenError(
                "cuCIM is not installed; install it with `pip install --no-deps cucim-cu13 lazy-loader` "
                "or choose tiling.backend: openslide"
            ) from exc
        if self.path.suffix.lower() in {".ndpi", ".dcm", ".mrxs", ".vms", ".scn"} or self.path.is_dir():
            raise SlideOpenError(f"cuCIM does not read {self.path.suffix or 'directory'} slides")
        try:
            self._image = CuImage(str(self.path))
        except Exception as exc:
            raise SlideOpenError(f"cuCIM could not open {self.path}: {exc}") from exc
        resolutions = self._image.resolutions
        dims = tuple((int(w), int(h)) for w, h in resolutions["level_dimensions"])
        self._tile_sizes = tuple((int(w), int(h)) for w, h in resolutions["level_tile_sizes"])
        # cuCIM maps a level-0 location to floor(location / its own downsample), which is the mean of the
        # x and y ratios (e.g. 2.000505 where width alone gives 2.000450); keep it to address level pixels.
        self._cucim_downsamples = tuple(float(d) for d in resolutions["level_downsamples"])
        # Report cuCIM's own downsamples, as slide2vec's tiling library does with this backend: the
        # tile geometry (tile_size_lv0 rounding, QC windows) must be computed from the same numbers.
        self.info = PyramidInfo(
            level_dimensions=dims,
            level_downsamples=self._cucim_downsamples,
            native_spacing_um=self._native_spacing(),
        )

    def _native_spacing(self) -> float | None:
        metadata = self._image.metadata
        aperio = metadata.get("aperio", {}) if isinstance(metadata, dict) else {}
        # cuCIM reports [1, 1, 1] for Aperio files; the real value is in the MPP tag.
        if "MPP" in aperio:
            return _positive_float(aperio["MPP"])
        units = list(self._image.spacing_units())
        spacing = list(self._image.spacing())
        dims = self._image.dims
        if "X" in dims and units[dims.index("X")] in {"micrometer", "micron", "um", "µm"}:
            return _positive_float(spacing[dims.index("X")])
        return None

    def read_region(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        downsample = self.info.level_downsamples[level]
        sx, sy, rw, rh, px, py = _clip_read(x, y, width, height, downsample, self.info.level_dimensions[level])
        if rw <= 0 or rh <= 0:
            return np.full((height, width, 3), 255, dtype=np.uint8)
        # The smallest level-0 location that cuCIM maps back to level pixel (sx, sy); rounding
        # sx * downsample instead lands one level pixel early when the downsample is not an integer.
        cucim_downsample = self._cucim_downsamples[level]
        lv0_x, lv0_y = math.ceil(sx * cucim_downsample), math.ceil(sy * cucim_downsample)
        # A large read (a whole segmentation or preview level of many tiles) decodes its tiles on several
        # threads: same pixels, about half the time on 2 cores. Below ~32 tiles the thread hand-off
        # costs more than it saves (measured on JPEG tiles), so small reads stay single-threaded.
        tile_w, tile_h = self._tile_sizes[level]
        workers = _DECODE_THREADS if rw * rh >= 32 * tile_w * tile_h else 0
        region = to_rgb_uint8(np.asarray(self._image.read_region((lv0_x, lv0_y), (rw, rh), level, num_workers=workers)))
        if (px, py, rw, rh) == (0, 0, width, height):
            return region
        canvas = np.full((height, width, 3), 255, dtype=np.uint8)
        canvas[py : py + rh, px : px + rw] = region
        return canvas

    def close(self) -> None:
        close = getattr(self._image, "close", None)
        if close is not None:
            close()


def _dicom_entry(path: Path) -> Path:
    """OpenSlide opens a DICOM WSI from any one file of its series; accept the folder too."""
    if path.is_dir():
        files = sorted(path.glob("*.dcm"))
        if not files:
            raise SlideOpenError(f"{path} is a directory without .dcm files")
        return files[0]
    return path


# ------------------------------------------------------------------------------------ DICOM colours
# Some converters (Bio-Formats among them) store YCbCr JPEG frames under PhotometricInterpretation RGB.
# OpenSlide follows the label and hands the YCbCr samples out as RGB (white glass reads about
# (239, 128, 129)), so segmentation and embeddings would see wrong colours without any error. The check
# decodes one frame of each level file itself and compares it with what OpenSlide returns for that frame.

YCBCR_TO_RGB = "ycbcr_to_rgb"
_DICOM_JPEG_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"})  # baseline, extended
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_TEXT_VRS = frozenset({b"AE", b"AS", b"CS", b"DA", b"DS", b"DT", b"IS", b"LO", b"PN", b"SH", b"TM", b"UI"})
_INT_VRS = {b"US": "<H", b"SS": "<h", b"UL": "<I", b"SL": "<i"}
_UNDEFINED_LENGTH = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_TRANSFER_SYNTAX = 0x00020010
_IMAGE_TYPE, _SERIES_UID = 0x00080008, 0x0020000E
_CONCATENATION_OFFSET, _DIMENSION_ORGANISATION = 0x00209228, 0x00209311
_PHOTOMETRIC, _ROWS, _COLUMNS = 0x00280004, 0x00280010, 0x00280011
_TOTAL_COLUMNS, _TOTAL_ROWS = 0x00480006, 0x00480007
_PER_FRAME_GROUPS, _PLANE_POSITION, _COLUMN_POSITION, _ROW_POSITION = 0x52009230, 0x0048021A, 0x0048021E, 0x0048021F
_PIXEL_DATA = 0x7FE00010
# Frames whose two readings (as signalled vs raw samples) differ by less than this mean |diff| cannot tell
# the encodings apart (mid-grey content, or a stream that really is RGB); the next frame is tried.
_MIN_FRAME_CONTRAST = 10.0
_MAX_FRAMES_TRIED = 16
# OpenSlide's pixels "match" a reading within this mean |diff| (decoder rounding; resampling of a frame
# whose level-0 origin is fractional).
_FRAME_MATCH = 6.0


def _item_header(handle: BinaryIO) -> tuple[int, int]:
    head = handle.read(8)
    if len(head) < 8:
        return _SEQUENCE_END, 0
    group, element, length = struct.unpack("<HHI", head)
    return group << 16 | element, length


def _dicom_elements(handle: BinaryIO, end: int | None, *, group_only: int | None = None) -> dict[int, object]:
    """Explicit-VR little-endian elements until ``end``, an item delimiter, the pixel data, or (with
    ``group_only``) the first element of another group.

    Text and integer values are decoded, sequences become lists of element dicts, other values are
    skipped; the pixel data is recorded as ``(offset, length)`` of its value.
    """
    elements: dict[int, object] = {}
    while end is None or handle.tell() < end:
        head = handle.read(8)
        if len(head) < 8:
            break
        group, element = struct.unpack_from("<HH", head)
        tag = group << 16 | element
        if tag == _ITEM_END:
            break
        if group_only is not None and group != group_only:
            handle.seek(-8, os.SEEK_CUR)
            break
        vr = head[4:6]
        length = struct.unpack("<I", handle.read(4))[0] if vr in _LONG_VRS else struct.unpack_from("<H", head, 6)[0]
        if tag == _PIXEL_DATA:
            elements[tag] = (handle.tell(), length)
            break
        if vr == b"SQ":
            elements[tag] = _dicom_sequence(handle, length)
        elif length == _UNDEFINED_LENGTH:
            raise ValueError(f"element ({group:04X},{element:04X}) {vr.decode(errors='replace')} has no length")
        elif vr in _TEXT_VRS:
            elements[tag] = handle.read(length).decode("latin-1").strip("\x00 ")
        elif vr in _INT_VRS and length >= struct.calcsize(_INT_VRS[vr]):
            elements[tag] = struct.unpack_from(_INT_VRS[vr], handle.read(length))[0]
        else:
            handle.seek(length, os.SEEK_CUR)
    return elements


def _dicom_sequence(handle: BinaryIO, length: int) -> list[dict[int, object]]:
    end = None if length == _UNDEFINED_LENGTH else handle.tell() + length
    items: list[dict[int, object]] = []
    while end is None or handle.tell() < end:
        tag, item_length = _item_header(handle)
        if tag == _SEQUENCE_END:
            break
        if tag != _ITEM:
            raise ValueError(f"expected a sequence item, found tag {tag:08X}")
        items.append(_dicom_elements(handle, None if item_length == _UNDEFINED_LENGTH else handle.tell() + item_length))
    return items


def _dicom_jpeg_header(handle: BinaryIO) -> dict[int, object] | None:
    """The elements of a DICOM file whose pixel data is baseline/extended JPEG, else ``None``."""
    if handle.read(132)[128:] != b"DICM":
        return None
    meta = _dicom_elements(handle, None, group_only=0x0002)  # file meta information: always explicit VR LE
    if meta.get(_TRANSFER_SYNTAX) not in _DICOM_JPEG_SYNTAXES:
        return None
    return _dicom_elements(handle, None)  # encapsulated syntaxes are explicit-VR little endian


def _dicom_frames(handle: BinaryIO, offset: int) -> Iterator[bytes]:
    """The JPEG bitstreams of an encapsulated pixel data element, one per frame (fragments joined)."""
    handle.seek(offset)
    tag, length = _item_header(handle)
    if tag != _ITEM:
        raise ValueError("encapsulated pixel data does not start with its offset table item")
    handle.seek(length, os.SEEK_CUR)
    frame = b""
    while True:
        tag, length = _item_header(handle)
        if tag != _ITEM:
            return
        frame += handle.read(length)
        if frame.rstrip(b"\x00").endswith(b"\xff\xd9"):  # a frame ends with the JPEG EOI marker
            yield frame
            frame = b""


def _frame_origin(header: dict[int, object], index: int) -> tuple[int, int] | None:
    """Level-pixel position of the ``index``-th frame of this file, ``None`` when the file does not say."""
    columns, rows = int(header[_COLUMNS]), int(header[_ROWS])  # type: ignore[call-overload]
    if header.get(_DIMENSION_ORGANISATION) == "TILED_FULL":
        across = math.ceil(int(header[_TOTAL_COLUMNS]) / columns)  # type: ignore[call-overload]
        down = math.ceil(int(header[_TOTAL_ROWS]) / rows)  # type: ignore[call-overload]
        position = int(header.get(_CONCATENATION_OFFSET, 0)) + index  # type: ignore[call-overload]
        return position % across * columns, position // across % down * rows
    groups = header.get(_PER_FRAME_GROUPS)
    try:
        plane = groups[index][_PLANE_POSITION][0]  # type: ignore[index]
        return int(plane[_COLUMN_POSITION]) - 1, int(plane[_ROW_POSITION]) - 1  # 1-based in the file
    except (TypeError, IndexError, KeyError):
        return None


def _mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def _level_holds_ycbcr(
    slide: object, level: int, downsample: float, header: dict[int, object], handle: BinaryIO, path: Path
) -> bool:
    """Whether OpenSlide returns this level's frames as raw samples although their JPEG stream signals YCbCr.

    libjpeg's default reading follows the stream's own colour signalling (JFIF or Adobe marker, component
    ids); the raw reading skips the colour transform. The first frame where the two differ decides, and
    OpenSlide's pixels must match one of them. A stream that really holds RGB reads the same both ways.
    """
    import imagecodecs

    total_w, total_h = int(header[_TOTAL_COLUMNS]), int(header[_TOTAL_ROWS])  # type: ignore[call-overload]
    offset, _ = header[_PIXEL_DATA]  # type: ignore[misc]
    frames = itertools.islice(_dicom_frames(handle, int(offset)), _MAX_FRAMES_TRIED)
    for index, frame in enumerate(frames):
        origin = _frame_origin(header, index)
        if origin is None:
            raise ValueError(f"the position of frame {index} is not in the file")
        x, y = origin
        w, h = min(int(header[_COLUMNS]), total_w - x), min(int(header[_ROWS]), total_h - y)  # type: ignore[call-overload]
        if w <= 0 or h <= 0:
            continue
        signalled = np.asarray(imagecodecs.jpeg8_decode(frame))[:h, :w, :3]
        samples = np.asarray(imagecodecs.jpeg8_decode(frame, colorspace="RGB", outcolorspace="RGB"))[:h, :w, :3]
        if signalled.shape != (h, w, 3) or _mean_abs_diff(signalled, samples) < _MIN_FRAME_CONTRAST:
            continue
        shown = np.asarray(slide.read_region((round(x * downsample), round(y * downsample)), level, (w, h)))  # type: ignore[attr-defined]
        opaque = shown[:, :, 3] == 255
        if opaque.mean() < 0.5:
            continue
        to_signalled = _mean_abs_diff(shown[:, :, :3][opaque], signalled[opaque])
        to_samples = _mean_abs_diff(shown[:, :, :3][opaque], samples[opaque])
        if to_signalled <= _FRAME_MATCH and to_signalled < to_samples:
            return False
        if to_samples <= _FRAME_MATCH and to_samples < to_signalled:
            return True
        raise SlideOpenError(
            f"{path}: OpenSlide's pixels of frame {index} (level {level}) match neither the JPEG frame decoded as "
            f"its stream signals (mean |diff| {to_signalled:.1f}) nor its raw samples ({to_samples:.1f}); the "
            "colours of this DICOM slide cannot be trusted: re-export it (e.g. with PhotometricInterpretation "
            "YBR_FULL_422 for YCbCr JPEG frames)"
        )
    return False  # no frame tells the readings apart: both give the same colours


def dicom_ycbcr_levels(
    slide: object, entry: Path, level_dimensions: tuple[tuple[int, int], ...], level_downsamples: tuple[float, ...]
) -> tuple[int, ...]:
    """Levels of an open OpenSlide DICOM series whose JPEG frames are labelled RGB but read back as YCbCr.

    Every file of the series (same SeriesInstanceUID, in ``entry``'s folder, as OpenSlide finds them)
    whose pixel data is JPEG labelled RGB is matched to its level by size; one file per level is checked.
    """
    series = slide.properties.get("dicom.SeriesInstanceUID")  # type: ignore[attr-defined]
    checked: dict[int, bool] = {}
    for path in sorted(p for p in entry.parent.iterdir() if p.is_file()):
        try:
            with path.open("rb") as handle:
                header = _dicom_jpeg_header(handle)
                if header is None or header.get(_PHOTOMETRIC) != "RGB" or _PIXEL_DATA not in header:
                    continue
                if series and header.get(_SERIES_UID) != series:
                    continue
                if "VOLUME" not in str(header.get(_IMAGE_TYPE, "")).split("\\"):
                    continue  # label, overview and thumbnail images are no pyramid level
                size = (int(header.get(_TOTAL_COLUMNS, -1)), int(header.get(_TOTAL_ROWS, -1)))  # type: ignore[call-overload]
                if size not in level_dimensions or level_dimensions.index(size) in checked:
                    continue
                level = level_dimensions.index(size)
                checked[level] = _level_holds_ycbcr(slide, level, level_downsamples[level], header, handle, path)
        except SlideOpenError:
            raise
        except Exception as exc:
            raise SlideOpenError(
                f"could not check the colour encoding of DICOM file {path} ({type(exc).__name__}: {exc})"
            ) from exc
    return tuple(sorted(level for level, ycbcr in checked.items() if ycbcr))


def _level_ranges(levels: tuple[int, ...]) -> str:
    """``(0, 1, 2, 5)`` -> ``"0-2, 5"``."""
    runs: list[list[int]] = []
    for level in levels:
        if runs and level == runs[-1][-1] + 1:
            runs[-1].append(level)
        else:
            runs.append([level])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def ycbcr_to_rgb(image: np.ndarray) -> np.ndarray:
    """Full-range (JFIF) YCbCr to RGB on the first three channels; a fourth (alpha) channel is kept."""
    ycrcb = np.ascontiguousarray(image[:, :, (0, 2, 1)])
    rgb = cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2RGB)
    return np.dstack((rgb, image[:, :, 3])) if image.shape[2] == 4 else rgb


class OpenSlideReader(SlideReader):
    """OpenSlide (openslide-bin): SVS, NDPI, DICOM, MRXS, generic TIFF, ..."""

    backend = "openslide"

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        try:
            import openslide
        except ImportError as exc:  # pragma: no cover
            raise SlideOpenError(
                "openslide-python is not installed: `pip install openslide-python openslide-bin`"
            ) from exc
        entry = _dicom_entry(self.path)
        try:
            self._slide = openslide.OpenSlide(str(entry))
        except Exception as exc:
            raise SlideOpenError(f"OpenSlide could not open {self.path}: {exc}") from exc
        props = self._slide.properties
        spacing = _positive_float(props.get("openslide.mpp-x")) or aperio_mpp(props.get("tiff.ImageDescription"))
        dims = tuple((int(w), int(h)) for w, h in self._slide.level_dimensions)
        # OpenSlide's own downsamples (the mean of the x and y ratios), as slide2vec's tiling library uses
        # them with this backend, so tile geometry rounds the same way.
        self.info = PyramidInfo(
            level_dimensions=dims,
            level_downsamples=tuple(float(d) for d in self._slide.level_downsamples),
            native_spacing_um=spacing,
        )
        self._lock = threading.Lock()
        self._ycbcr_levels: frozenset[int] = frozenset()
        if props.get("openslide.vendor") == "dicom":
            try:
                levels = dicom_ycbcr_levels(self._slide, entry, dims, self.info.level_downsamples)
            except Exception:
                self._slide.close()
                raise
            if levels:
                self._ycbcr_levels = frozenset(levels)
                self.colour_correction = (
                    f"{YCBCR_TO_RGB}: DICOM JPEG frames labelled RGB hold YCbCr; converted to RGB on read "
                    f"(levels {_level_ranges(levels)} of {len(dims)})"
                )

    def read_region(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        image = np.asarray(self._slide.read_region((int(x), int(y)), level, (int(width), int(height))))
        if level in self._ycbcr_levels:
            # Before compositing: OpenSlide's transparent padding must still become white, not converted white.
            image = ycbcr_to_rgb(image)
        # OpenSlide pads outside the slide with transparent pixels; to_rgb_uint8 composites on white.
        return to_rgb_uint8(image)

    def close(self) -> None:
        self._slide.close()


def _tiff_resolution_um(page: object) -> float | None:
    tags = page.tags  # type: ignore[attr-defined]
    if "XResolution" not in tags or "ResolutionUnit" not in tags:
        return None
    numerator, denominator = tags["XResolution"].value
    pixels_per_unit = numerator / denominator if denominator else 0
    unit = int(tags["ResolutionUnit"].value)
    um_per_unit = {2: 25_400.0, 3: 10_000.0}.get(unit)  # inch, centimetre; 1 = no absolute unit
    if not um_per_unit or pixels_per_unit <= 1:
        return None
    return _positive_float(um_per_unit / pixels_per_unit)


class TiffFileReader(SlideReader):
    """tifffile: decodes only the tiles or strips a read touches (no whole-level decode)."""

    backend = "tifffile"
    _CACHE_SEGMENTS = 64

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        import tifffile

        try:
            self._tiff = tifffile.TiffFile(str(self.path))
            series = self._tiff.series[0]
            self._pages = [level.pages[0] if hasattr(level, "pages") else level for level in series.levels]
        except Exception as exc:
            raise SlideOpenError(f"tifffile could not open {self.path}: {exc}") from exc
        if not self._pages or self._pages[0].ndim not in (2, 3):
            raise SlideOpenError(f"tifffile: {self.path} has no 2-D image series")
        dims = tuple((int(p.imagewidth), int(p.imagelength)) for p in self._pages)
        first = self._pages[0]
        spacing = aperio_mpp(first.description) if self._tiff.is_svs else None
        spacing = spacing or _tiff_resolution_um(first)
        self.info = PyramidInfo(
            level_dimensions=dims,
            level_downsamples=tuple(dims[0][0] / w for w, _ in dims),
            native_spacing_um=spacing,
        )
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()

    def _segment(self, level: int, index: int) -> np.ndarray:
        key = (level, index)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
            page = self._pages[level]
            handle = self._tiff.filehandle
            handle.seek(page.dataoffsets[index])
            data = handle.read(page.databytecounts[index])
        segment, _, _ = page.decode(data, index, jpegtables=page.jpegtables, jpegheader=page.jpegheader)
        segment = to_rgb_uint8(np.asarray(segment).reshape(segment.shape[-3:]))
        with self._lock:
            self._cache[key] = segment
            while len(self._cache) > self._CACHE_SEGMENTS:
                self._cache.popitem(last=False)
        return segment

    def read_region(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        page = self._pages[level]
        downsample = self.info.level_downsamples[level]
        sx, sy, rw, rh, px, py = _clip_read(x, y, width, height, downsample, self.info.level_dimensions[level])
        canvas = np.full((height, width, 3), 255, dtype=np.uint8)
        if rw <= 0 or rh <= 0:
            return canvas
        if len(page.dataoffsets) == 1 and not page.is_tiled:
            whole = self._segment(level, 0)
            canvas[py : py + rh, px : px + rw] = whole[sy : sy + rh, sx : sx + rw]
            return canvas
        seg_h, seg_w = int(page.chunks[0]), int(page.chunks[1])
        n_cols = int(page.chunked[1])
        for row in range(sy // seg_h, (sy + rh - 1) // seg_h + 1):
            for col in range(sx // seg_w, (sx + rw - 1) // seg_w + 1):
                segment = self._segment(level, row * n_cols + col)
                # Intersection of the segment with the requested window, in level pixels.
                top, left = max(sy, row * seg_h), max(sx, col * seg_w)
                bottom = min(sy + rh, row * seg_h + segment.shape[0])
                right = min(sx + rw, col * seg_w + segment.shape[1])
                if bottom <= top or right <= left:
                    continue
                canvas[py + top - sy : py + bottom - sy, px + left - sx : px + right - sx] = segment[
                    top - row * seg_h : bottom - row * seg_h, left - col * seg_w : right - col * seg_w
                ]
        return canvas

    def close(self) -> None:
        self._tiff.close()


READER_CLASSES: dict[str, type[SlideReader]] = {
    "cucim": CuCIMReader,
    "openslide": OpenSlideReader,
    "tifffile": TiffFileReader,
}


def _probe(reader: SlideReader) -> None:
    """Decode a few pixels of the smallest level: a reader that opens but cannot decode is no choice."""
    level = reader.info.level_count - 1
    width, height = reader.info.level_dimensions[level]
    reader.read_region(0, 0, level, min(width, 16), min(height, 16))


_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _tiff_truncation(path: Path) -> str | None:
    """Why a TIFF-based slide (SVS, TIFF, NDPI) is cut short, or None.

    A copy that stopped early can keep its first directory and first tiles: cuCIM and tifffile then open
    it and fail only when a read reaches the missing bytes, deep inside tiling.
    """
    if not path.is_file():
        return None
    with path.open("rb") as handle:
        if handle.read(4) not in _TIFF_MAGIC:
            return None
    import tifffile

    size = path.stat().st_size
    try:
        with tifffile.TiffFile(str(path)) as tiff:
            for index, page in enumerate(tiff.pages):
                ends = [int(o) + int(c) for o, c in zip(page.dataoffsets, page.databytecounts, strict=False) if c]
                if ends and max(ends) > size:
                    return f"the image data of TIFF page {index} ends at byte {max(ends)} but the file has {size} bytes"
    except Exception:  # files tifffile cannot parse are reported by the readers themselves
        return None
    return None


def open_reader(path: str | Path, backend: str = "auto", auto_order: tuple[str, ...] = AUTO_ORDER) -> SlideReader:
    """Open ``path`` with ``backend``; ``auto`` tries ``auto_order`` (cucim, openslide, tifffile) and
    keeps the first reader that opens the file and decodes pixels."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"slide file not found: {path}; check image_path in the manifest")
    if backend != "auto" and backend not in READER_CLASSES:
        raise ValueError(f"unknown slide backend {backend!r}; choose one of auto, {', '.join(BACKENDS)}")
    truncated = _tiff_truncation(path)
    if truncated:
        raise SlideOpenError(
            f"{path} is truncated: {truncated}; copy or download the slide again (an interrupted transfer "
            "leaves a short file)"
        )
    if backend != "auto":
        reader = READER_CLASSES[backend](path)
        try:
            _probe(reader)
        except Exception as exc:  # cuCIM raises bare RuntimeError for unsupported encodings
            reader.close()
            raise SlideOpenError(
                f"the {backend} reader opened {path} but could not decode its pixels ({type(exc).__name__}: "
                f"{exc}); choose another tiling.backend (or mask_backend), e.g. auto"
            ) from exc
        return reader
    failures: list[str] = []
    for name in auto_order:
        try:
            reader = READER_CLASSES[name](path)
        except SlideOpenError as exc:
            failures.append(f"{name}: {exc}")
            continue
        try:
            _probe(reader)
        except Exception as exc:
            reader.close()
            failures.append(f"{name}: opened but could not decode pixels ({type(exc).__name__}: {exc})")
            continue
        return reader
    raise SlideOpenError(
        f"no reader could open {path} ({'; '.join(failures)}); check that the file is a whole-slide image "
        "and not truncated, or set tiling.backend to a reader that supports its format"
    )


def open_slide(path: str | Path, backend: str = "auto", spacing_override: float | None = None) -> SlideReader:
    """Open a slide and resolve its level-0 spacing (the manifest's override wins over the file).

    The returned reader carries ``base_spacing_um``, ``requested_backend`` and ``spacing_override``.
    """
    reader = open_reader(path, backend)
    native = reader.info.native_spacing_um
    if spacing_override is None and native is None:
        reader.close()
        raise MissingSpacingError(
            f"{path}: the slide file has no level-0 spacing (µm/px) that the {reader.backend} reader can "
            "find; add the slide's spacing in the manifest column spacing_at_level_0 "
            "(for example 0.25 for a 40x or 0.5 for a 20x scan)"
        )
    reader.base_spacing_um = float(spacing_override if spacing_override is not None else native)
    reader.requested_backend = backend
    reader.spacing_override = spacing_override
    return reader


__all__ = [
    "AUTO_ORDER",
    "BACKENDS",
    "MASK_AUTO_ORDER",
    "CuCIMReader",
    "OpenSlideReader",
    "TiffFileReader",
    "aperio_mpp",
    "open_reader",
    "open_slide",
]
