"""Slide readers (cuCIM, OpenSlide, tifffile) behind one interface; no Dagster here."""

from slide2vec_dagster.wsi.base import (
    MissingSpacingError,
    PyramidInfo,
    SlideOpenError,
    SlideReader,
    read_level_resized,
)
from slide2vec_dagster.wsi.modality import ModalityAssessment, assess_modality
from slide2vec_dagster.wsi.readers import AUTO_ORDER, BACKENDS, MASK_AUTO_ORDER, open_reader, open_slide

__all__ = [
    "AUTO_ORDER",
    "BACKENDS",
    "MASK_AUTO_ORDER",
    "MissingSpacingError",
    "ModalityAssessment",
    "PyramidInfo",
    "SlideOpenError",
    "SlideReader",
    "assess_modality",
    "open_reader",
    "open_slide",
    "read_level_resized",
]
