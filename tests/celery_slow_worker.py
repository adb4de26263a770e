"""``slide2vec-dagster worker`` with the baseline encoder slowed down, for the Celery tests: each batch first
writes this process's pid to ``$S2V_SLOW_MARKER`` (the test then knows a slide is mid-embedding), then sleeps
``$S2V_SLOW_SECONDS``. Nothing else changes: the worker, its tasks and the steps are the real ones."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

from slide2vec_dagster.cli import main
from slide2vec_dagster.encoders.baseline import ColorTextureBaseline

_forward = ColorTextureBaseline.forward


def _slow_forward(self: ColorTextureBaseline, x: torch.Tensor) -> torch.Tensor:
    with Path(os.environ["S2V_SLOW_MARKER"]).open("a") as marker:
        marker.write(f"{os.getpid()} {time.time()}\n")
    time.sleep(float(os.environ["S2V_SLOW_SECONDS"]))
    return _forward(self, x)


ColorTextureBaseline.forward = _slow_forward

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
