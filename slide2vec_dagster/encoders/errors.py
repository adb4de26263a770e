"""Errors raised by the encoder package.

Each one says what the user must do next; none of them is ever swallowed into random weights.
"""

from __future__ import annotations


class EncoderError(Exception):
    """Base class for every encoder-package error."""


class UnknownEncoderError(EncoderError, KeyError):
    """The requested preset name (or output variant) is not registered."""

    def __str__(self) -> str:  # KeyError would otherwise print the message wrapped in quotes
        return str(self.args[0]) if self.args else ""


class EncoderDependencyError(EncoderError, ImportError):
    """The preset needs a package (or Hugging Face remote code) that is not available here."""


class EncoderWeightsError(EncoderError, RuntimeError):
    """Weights could not be found or do not fit the preset's architecture."""


class EncoderConfigError(EncoderError, ValueError):
    """Invalid precision / output dtype / variant / registration."""
