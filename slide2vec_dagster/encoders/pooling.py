"""Weight-free mean pooling: the ``mean-pool`` slide and ``mean-pool-patient`` baselines.

Baselines for the offline demo and for sanity checks, not models: a slide is the mean of its tile
features, a patient the mean of its slide embeddings. Computed in float32 whatever the stored dtype
(fp16 features are common), so the result does not depend on how the inputs were stored.
"""

from __future__ import annotations

import torch


def mean_pool(rows: torch.Tensor) -> torch.Tensor:
    """``(N, D)`` -> ``(D,)`` float32 mean over the rows; an empty bag is refused."""
    if rows.ndim != 2:
        raise ValueError(f"expected a (N, D) tensor, got shape {tuple(rows.shape)}")
    if rows.shape[0] == 0:
        raise ValueError("cannot mean-pool zero rows")
    return rows.to(torch.float32).mean(dim=0)


__all__ = ["mean_pool"]
