"""A cheap brightfield / fluorescence check on a low-resolution RGB image of a slide.

Tissue segmentation and the embedding models assume brightfield stains (H&E and the like): tissue seen in
transmitted light on bright glass. A fluorescence slide is the opposite: a dark background with sparse
bright signal (DAPI shows as blue nuclei on black). Tiled with brightfield settings it still yields tiles
and embeddings, silently meaningless; this check lets the pipeline say so.

Evidence, on Rec. 601 luma (0-255) of every pixel:
- ``bright_fraction``: share of pixels with luma >= ``BRIGHT_LUMA`` (glass, or unstained tissue);
- ``dark_fraction``: share with luma < ``DARK_LUMA`` (fluorescence background, or scanner black padding);
- ``signal_fraction``: share whose brightest channel reaches ``DARK_LUMA`` (a pixel that is not black);
- ``median_luminance``.
Rules: brightfield when under half the image is dark and there is glass (``bright_fraction`` >= 0.1) or
the image is bright overall (median luma >= 120, a field of tissue without glass); fluorescence when at
least half is dark, almost nothing is bright (< 5 %) and some signal exists (>= 0.1 % of pixels); else
unknown. The thresholds sit far from every test slide: H&E slides have 40-70 % bright pixels and at most
3 % dark ones, the DAPI slide 100 % dark luma, 0 % bright and 20-30 % signal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

Modality = Literal["brightfield", "fluorescence", "unknown"]

BRIGHT_LUMA = 200
DARK_LUMA = 50
_BRIGHTFIELD_MIN_BRIGHT = 0.1
_BRIGHTFIELD_MIN_MEDIAN = 120.0
_FLUORESCENCE_MIN_DARK = 0.5
_FLUORESCENCE_MAX_BRIGHT = 0.05
_FLUORESCENCE_MIN_SIGNAL = 0.001


@dataclass(frozen=True)
class ModalityAssessment:
    """What the slide looks like, the numbers behind it, and a one-line warning (``None`` for brightfield)."""

    modality: Modality
    median_luminance: float
    bright_fraction: float
    dark_fraction: float
    signal_fraction: float
    warning: str | None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready, for a sidecar or a log line."""
        return {
            "modality": self.modality,
            "median_luminance": round(self.median_luminance, 1),
            "bright_fraction": round(self.bright_fraction, 4),
            "dark_fraction": round(self.dark_fraction, 4),
            "signal_fraction": round(self.signal_fraction, 4),
            "warning": self.warning,
        }


def assess_modality(thumbnail_rgb: np.ndarray) -> ModalityAssessment:
    """Classify a low-resolution RGB ``uint8`` image ``(height, width, 3)`` of a whole slide.

    Use the segmentation-level image (or any image of the whole slide at a few µm/px or coarser); a crop
    of tissue alone has no background to judge by.
    """
    image = np.asarray(thumbnail_rgb)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or image.size == 0:
        raise ValueError(
            f"assess_modality needs a non-empty RGB uint8 image (height, width, 3), got {image.dtype} {image.shape}"
        )
    luma = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    median = float(np.median(luma))
    bright = float(np.mean(luma >= BRIGHT_LUMA))
    dark = float(np.mean(luma < DARK_LUMA))
    signal = float(np.mean(image.max(axis=2) >= DARK_LUMA))
    evidence = (
        f"median brightness {median:.0f}/255, {dark:.0%} dark pixels, {bright:.0%} bright pixels, "
        f"{signal:.0%} with signal"
    )
    modality: Modality
    if dark < _FLUORESCENCE_MIN_DARK and (bright >= _BRIGHTFIELD_MIN_BRIGHT or median >= _BRIGHTFIELD_MIN_MEDIAN):
        modality, warning = "brightfield", None
    elif dark >= _FLUORESCENCE_MIN_DARK and bright < _FLUORESCENCE_MAX_BRIGHT and signal >= _FLUORESCENCE_MIN_SIGNAL:
        modality = "fluorescence"
        warning = (
            f"looks like a fluorescence slide (dark background with sparse signal: {evidence}); tissue "
            "segmentation and the embedding models expect brightfield (e.g. H&E): check the slide, or leave it out"
        )
    else:
        modality = "unknown"
        warning = (
            f"cannot tell whether this is a brightfield or a fluorescence slide ({evidence}); tissue "
            "segmentation and the embedding models expect brightfield (e.g. H&E): check the slide and its previews"
        )
    return ModalityAssessment(
        modality=modality,
        median_luminance=median,
        bright_fraction=bright,
        dark_fraction=dark,
        signal_fraction=signal,
        warning=warning,
    )


__all__ = ["BRIGHT_LUMA", "DARK_LUMA", "Modality", "ModalityAssessment", "assess_modality"]
