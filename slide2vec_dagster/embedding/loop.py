"""The inference loop: read tiles in worker threads while the model runs on the previous batch.

slide2vec measured most of its extraction time waiting on the slide reader. Here readers decode
batches ahead of the model (``prefetch_batches`` deep, ``num_workers`` threads per batch), so the
forward pass and the JPEG decoding overlap; memory is bounded by batch size x prefetch, not by the
slide's size.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from slide2vec_dagster.wsi.base import SlideReader


@dataclass(frozen=True)
class ReadPlan:
    """Where and how to read each tile: level-0 origins, the pyramid level, the size read there and
    the size the encoder wants (an area resize when they differ)."""

    x: np.ndarray
    y: np.ndarray
    read_level: int
    read_size_px: int
    target_size_px: int

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class LoopStats:
    tiles: int = 0
    seconds: float = 0.0
    read_wait_seconds: float = 0.0  # time the model sat waiting for pixels
    forward_seconds: float = 0.0

    @property
    def tiles_per_second(self) -> float:
        return self.tiles / self.seconds if self.seconds else 0.0


def read_tile(reader: SlideReader, x: int, y: int, plan: ReadPlan) -> np.ndarray:
    tile = reader.read_region(int(x), int(y), plan.read_level, plan.read_size_px, plan.read_size_px)
    if plan.read_size_px != plan.target_size_px:
        # INTER_AREA is the area (box) resize slide2vec specifies; it never invents detail.
        tile = cv2.resize(tile, (plan.target_size_px, plan.target_size_px), interpolation=cv2.INTER_AREA)
    return tile


def _read_batch(reader: SlideReader, plan: ReadPlan, indices: range, pool: ThreadPoolExecutor) -> np.ndarray:
    tiles = list(pool.map(lambda i: read_tile(reader, plan.x[i], plan.y[i], plan), indices))
    return np.stack(tiles) if tiles else np.zeros((0, plan.target_size_px, plan.target_size_px, 3), np.uint8)


def iterate_batches(reader: SlideReader, plan: ReadPlan, batch_size: int, num_workers: int, prefetch_batches: int):
    """Yield ``(start, uint8 batch (B, T, T, 3))`` in order, decoding up to ``prefetch_batches`` ahead."""
    if batch_size < 1 or num_workers < 1 or prefetch_batches < 1:
        raise ValueError("batch_size, num_workers and prefetch_batches must all be >= 1")
    starts: Sequence[int] = range(0, len(plan), batch_size)
    # One thread schedules whole batches; ``num_workers`` threads decode the tiles of a batch.
    with (
        ThreadPoolExecutor(num_workers, thread_name_prefix="tile-read") as tile_pool,
        ThreadPoolExecutor(1, thread_name_prefix="batch-read") as batch_pool,
    ):
        pending: deque[tuple[int, Future[np.ndarray]]] = deque()
        next_index = 0
        while next_index < len(starts) or pending:
            while next_index < len(starts) and len(pending) < prefetch_batches:
                start = starts[next_index]
                indices = range(start, min(start + batch_size, len(plan)))
                pending.append((start, batch_pool.submit(_read_batch, reader, plan, indices, tile_pool)))
                next_index += 1
            start, future = pending.popleft()
            yield start, future


def run_encoder(
    reader: SlideReader,
    plan: ReadPlan,
    encode: Callable[[np.ndarray], torch.Tensor],
    feature_dim: int,
    batch_size: int = 32,
    num_workers: int = 2,
    prefetch_batches: int = 2,
    progress: Callable[[LoopStats], None] | None = None,
    progress_every_s: float = 10.0,
) -> tuple[torch.Tensor, LoopStats]:
    """Embed every tile of ``plan``; returns ``(N, feature_dim)`` float32 on the CPU, rows in plan order.

    ``encode`` takes a uint8 batch ``(B, T, T, 3)`` and returns ``(B, D)`` features (transform, device
    transfer, autocast and the forward pass are its business).
    """
    stats = LoopStats()
    features = torch.empty((len(plan), feature_dim), dtype=torch.float32)
    started = last_report = time.perf_counter()
    for start, future in iterate_batches(reader, plan, batch_size, num_workers, prefetch_batches):
        wait_started = time.perf_counter()
        batch = future.result()
        forward_started = time.perf_counter()
        stats.read_wait_seconds += forward_started - wait_started
        output = encode(batch)
        if output.shape != (len(batch), feature_dim):
            raise RuntimeError(
                f"the encoder returned shape {tuple(output.shape)} for a batch of {len(batch)} tiles; "
                f"expected ({len(batch)}, {feature_dim})"
            )
        features[start : start + len(batch)] = output.detach().to("cpu", torch.float32)
        stats.forward_seconds += time.perf_counter() - forward_started
        stats.tiles += len(batch)
        stats.seconds = time.perf_counter() - started
        if progress is not None and time.perf_counter() - last_report >= progress_every_s:
            progress(stats)
            last_report = time.perf_counter()
    stats.seconds = time.perf_counter() - started
    return features, stats
