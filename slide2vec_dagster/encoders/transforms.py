"""Batched, device-agnostic tile preprocessing (uint8 RGB (B, H, W, 3) -> normalised float (B, 3, h, w))."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from slide2vec_dagster.encoders.spec import Preprocessing


@dataclass(frozen=True)
class TileTransform:
    """Apply a :class:`Preprocessing` recipe to a whole batch on whatever device the batch lives on.

    Steps match torchvision's ``Resize(shorter side) -> CenterCrop -> ToTensor -> Normalize`` recipes on
    the model cards. Resizing happens in float with antialiasing and is clamped to [0, 1], like PIL's
    uint8 output; it is skipped entirely when the tile already has the target size (the usual case:
    tiles are read at the encoder's tile size).
    """

    preprocessing: Preprocessing

    def __call__(self, batch: torch.Tensor | np.ndarray) -> torch.Tensor:
        if isinstance(batch, np.ndarray) and not batch.flags.writeable:
            batch = batch.copy()  # torch warns on read-only arrays (e.g. views of an OpenSlide read)
        images = torch.as_tensor(batch)
        if images.ndim == 3:
            images = images.unsqueeze(0)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected a uint8 RGB batch shaped (B, H, W, 3), got {tuple(images.shape)}")
        if images.dtype != torch.uint8:
            raise ValueError(f"expected uint8 pixels, got {images.dtype}")
        p = self.preprocessing
        x = images.permute(0, 3, 1, 2).float()
        mean = torch.tensor(p.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(p.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        if p.resize is None and p.crop is None:
            # The usual case (tiles read at the encoder's size): fold /255, -mean and /std into one
            # multiply-add, in place, instead of three passes over the batch.
            return x.mul_(1.0 / (255.0 * std)).add_(-mean / std)
        x = x.div_(255.0)
        if p.resize is not None:
            x = _resize_shorter_side(x, p.resize, p.interpolation)
        if p.crop is not None:
            x = _center_crop(x, p.crop)
        return (x - mean) / std

    def output_size(self, tile_size_px: int) -> int:
        p = self.preprocessing
        if p.crop is not None:
            return p.crop
        return p.resize if p.resize is not None else tile_size_px


def _resize_shorter_side(x: torch.Tensor, size: int, interpolation: str) -> torch.Tensor:
    height, width = x.shape[-2:]
    short, long = (height, width) if height <= width else (width, height)
    if short == size:
        return x
    new_long = int(size * long / short)  # torchvision truncates the same way
    new_hw = (size, new_long) if height <= width else (new_long, size)
    x = F.interpolate(x, size=new_hw, mode=interpolation, align_corners=False, antialias=True)
    return x.clamp_(0.0, 1.0)


def _center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    height, width = x.shape[-2:]
    if height < size or width < size:
        raise ValueError(f"tile {height}x{width} is smaller than the {size}px center crop")
    top = round((height - size) / 2.0)
    left = round((width - size) / 2.0)
    return x[..., top : top + size, left : left + size]
