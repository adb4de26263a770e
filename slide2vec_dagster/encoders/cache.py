"""Loaded models, kept per process and bounded by memory: a long-lived worker loads each model once and
keeps the most recently used ones, evicting the least recently used when the total would pass the budget.

Counts what it does (loads, hits, evictions), so the orchestration benchmark and the materialisation
metadata can show that a model is loaded once per worker process, not once per slide.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)


def model_bytes(model: Any) -> int:
    """Bytes of a model's parameters and buffers (0 for weight-free baselines); walks ``.modules`` /
    ``.model`` wrappers to the torch module."""
    import torch

    seen: set[int] = set()
    total = 0
    stack = [model]
    while stack:
        item = stack.pop()
        if id(item) in seen or item is None:
            continue
        seen.add(id(item))
        if isinstance(item, torch.nn.Module):
            total += sum(t.numel() * t.element_size() for t in (*item.parameters(), *item.buffers()))
            continue
        for name in ("model", "modules", "slide_encoder"):
            value = getattr(item, name, None)
            if isinstance(value, list | tuple):
                stack.extend(value)
            elif value is not None:
                stack.append(value)
    return total


@dataclass
class CacheStats:
    loads: int = 0
    hits: int = 0
    evictions: int = 0
    resident_bytes: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "pid": os.getpid(),
            "loads": self.loads,
            "hits": self.hits,
            "evictions": self.evictions,
            "resident_mb": self.resident_bytes // 2**20,
        }


class ModelCache:
    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._models: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.stats = CacheStats()

    def get(self, key: Hashable, load: Callable[[], Any], budget_bytes: int | None = None) -> Any:
        if budget_bytes is not None:
            self.budget_bytes = budget_bytes
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                self.stats.hits += 1
                return self._models[key][0]
        model = load()  # outside the lock: loading takes seconds; a duplicate load is only wasted work
        size = model_bytes(model)
        with self._lock:
            if key in self._models:
                return self._models[key][0]
            self.stats.loads += 1
            self._models[key] = (model, size)
            self.stats.resident_bytes += size
            while self.stats.resident_bytes > self.budget_bytes and len(self._models) > 1:
                old_key, (_, old_size) = self._models.popitem(last=False)
                self.stats.resident_bytes -= old_size
                self.stats.evictions += 1
                logger.info("evicted model %s (%d MB) to stay within the cache budget", old_key, old_size // 2**20)
        return model


# One per process: tile, slide and patient models share the budget.
MODELS = ModelCache(budget_bytes=16 * 2**30)
