"""What kind of failure an error is, and so whether a retry can help.

- bad input (a corrupt or unsupported slide, no spacing, a bad mask or manifest row, zero tiles, reused
  coordinates that do not fit, missing weights): retrying changes nothing, so it is never retried;
- transient I/O (a network filesystem hiccup: ``OSError`` with EIO, ETIMEDOUT, ESTALE, ...): retried with
  backoff by the assets' retry policy;
- out of memory (CPU or GPU): not retried as is; the message names the batch size to lower;
- anything else: reported as is, not retried.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

TRANSIENT_ERRNOS = frozenset(
    {errno.EIO, errno.ETIMEDOUT, errno.ESTALE, errno.EAGAIN, errno.ECONNRESET, errno.ECONNABORTED, errno.EHOSTUNREACH}
)
# Checked by name so this module imports neither torch nor the readers (the code location stays light).
INPUT_ERRORS = frozenset(
    {
        "SlideOpenError",
        "SlideInputError",
        "MissingSpacingError",
        "SpacingTooFineError",
        "ManifestRowError",
        "SampleNotInManifestError",
        "CoordinateReuseError",
        "MissingCoordinatesError",
        "ZeroTilesError",
        "PatientWithoutSlidesError",
        "EncoderWeightsError",
        "EncoderDependencyError",
        "EncoderConfigError",
        "UnknownEncoderError",
        "UnsupportedConfigError",
        "FileNotFoundError",
        "IsADirectoryError",
        "NotADirectoryError",
        "PermissionError",
    }
)


@dataclass(frozen=True)
class FailureKind:
    kind: str  # input | transient | out_of_memory | other
    retry: bool
    hint: str = ""


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def is_out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return bool(_names(exc) & {"OutOfMemoryError", "MemoryError"}) or "out of memory" in text


def classify(exc: BaseException, batch_size: int | None = None) -> FailureKind:
    if is_out_of_memory(exc):
        smaller = max(1, (batch_size or 2) // 2)
        where = f"model.batch_size (now {batch_size})" if batch_size else "model.batch_size"
        return FailureKind(
            "out_of_memory",
            retry=False,
            hint=f"out of memory: lower {where}, e.g. to {smaller}, or speed.prefetch_batches / speed.num_workers",
        )
    if isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS:
        return FailureKind("transient", retry=True, hint="a transient I/O error: retried with backoff")
    if _names(exc) & INPUT_ERRORS:
        return FailureKind("input", retry=False)
    return FailureKind("other", retry=False)
