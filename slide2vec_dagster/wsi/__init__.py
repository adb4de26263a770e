"""Slide readers (cuCIM, OpenSlide, tifffile) behind one interface; no Dagster here."""

from slide2vec_dagster.wsi.base import MissingSpacingError, PyramidInfo, SlideOpenError, SlideReader
from slide2vec_dagster.wsi.readers import AUTO_ORDER, BACKENDS, MASK_AUTO_ORDER, open_reader, open_slide

__all__ = [
    "AUTO_ORDER",
    "BACKENDS",
    "MASK_AUTO_ORDER",
    "MissingSpacingError",
    "PyramidInfo",
    "SlideOpenError",
    "SlideReader",
    "open_reader",
    "open_slide",
]
