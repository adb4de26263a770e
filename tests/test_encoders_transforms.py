"""Batched tile preprocessing against torchvision's reference recipe."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from slide2vec_dagster.encoders import Preprocessing, TileTransform, get_spec


def _torchvision(p: Preprocessing, batch: np.ndarray) -> torch.Tensor:
    mode = v2.InterpolationMode.BICUBIC if p.interpolation == "bicubic" else v2.InterpolationMode.BILINEAR
    steps = [v2.ToDtype(torch.float32, scale=True)]
    if p.resize is not None:
        steps.append(v2.Resize(p.resize, interpolation=mode, antialias=True))
    if p.crop is not None:
        steps.append(v2.CenterCrop(p.crop))
    steps.append(v2.Normalize(mean=p.mean, std=p.std))
    pipeline = v2.Compose(steps)
    return torch.stack([pipeline(torch.from_numpy(tile).permute(2, 0, 1)) for tile in batch])


@pytest.mark.parametrize(("name", "size"), [("gigapath", 256), ("uni", 224), ("dinov2-vitb14", 224), ("uni", 300)])
def test_matches_torchvision_resize_crop_normalise(name, size):
    p = get_spec(name).preprocessing
    batch = np.random.default_rng(0).integers(0, 256, (3, size, size, 3), dtype=np.uint8)
    ours = TileTransform(p)(batch)
    assert ours.shape == (3, 3, p.output_size, p.output_size)
    # torchvision does not clamp the overshoot of bicubic resizing on float tensors; we do (like PIL on uint8)
    reference = _torchvision(p, batch)
    lo = (torch.zeros(3) - torch.tensor(p.mean)) / torch.tensor(p.std)
    hi = (torch.ones(3) - torch.tensor(p.mean)) / torch.tensor(p.std)
    reference = torch.max(torch.min(reference, hi.view(1, 3, 1, 1)), lo.view(1, 3, 1, 1))
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-4)


def test_constant_tile_normalises_exactly():
    p = get_spec("h-optimus-0").preprocessing
    batch = np.full((2, 224, 224, 3), (200, 100, 50), dtype=np.uint8)
    out = TileTransform(p)(batch)
    expected = (torch.tensor([200, 100, 50]) / 255.0 - torch.tensor(p.mean)) / torch.tensor(p.std)
    torch.testing.assert_close(out[:, :, 5, 7], expected.expand(2, 3))


def test_rejects_wrong_layouts():
    transform = TileTransform(get_spec("uni").preprocessing)
    with pytest.raises(ValueError, match="uint8"):
        transform(np.zeros((1, 224, 224, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
        transform(np.zeros((1, 3, 224, 224), dtype=np.uint8))
    with pytest.raises(ValueError, match="smaller than"):
        TileTransform(Preprocessing(resize=None, crop=224))(np.zeros((1, 100, 100, 3), dtype=np.uint8))
