"""Weight-free colour / stain / texture baseline tile encoder.

NOT a foundation model. It turns each tile into a fixed, hand-crafted 70-d vector of real image
statistics so the whole pipeline (tiling -> inference loop -> artifacts -> aggregation) can run and be
tested offline, on CPU or CUDA, with features that still separate tissue from background and
haematoxylin-rich from eosin-rich tissue. Use it as a sanity baseline, never as a substitute for a
pretrained encoder.

Input: float RGB in [0, 1], shape (B, 3, H, W) (the preset's transform only scales uint8 by 1/255).
Everything is vectorised over the batch in torch, runs in fp32 regardless of autocast, and is
deterministic (histograms are integer scatter-adds, so CUDA atomics do not reorder float sums).

Feature order (``FEATURE_NAMES``):
  1. RGB, per channel R/G/B: mean, std, p10, p50, p90                                    (15)
  2. HSV: saturation-weighted circular hue (cos, sin), saturation mean/std, value mean/std  (6)
  3. Optical density OD = -log10(I): mean per channel R/G/B and overall                    (4)
  4. Tissue fraction: share of pixels with max-channel OD > 0.15 (Macenko's beta)          (1)
  5. Ruifrok-Johnston colour deconvolution (fixed H&E-DAB matrix, skimage's ``rgb_from_hed``),
     over tissue pixels: H mean/std, global H p90, E mean/std, global E p90, residual (3rd
     stain) mean, H fraction = H / (H + E)                                                 (8)
  6. Texture on luminance at scale 1 and 2 (2x2 average-pooled), per scale: Sobel gradient
     magnitude mean/std, Laplacian variance and mean |Laplacian|, rotation-invariant uniform
     LBP(8, 1) histogram (10 bins), GLCM (8 grey levels, offsets right+down, symmetric,
     averaged) contrast / homogeneity / energy / correlation                        (2 x 18 = 36)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from slide2vec_dagster.encoders.precision import no_autocast

_CHANNELS = ("r", "g", "b")
_SCALES = (1, 2)
_GLCM_LEVELS = 8
_LBP_BINS = 10
TISSUE_OD_THRESHOLD = 0.15

# Ruifrok & Johnston (2001) stain OD vectors, rows H, E, DAB (== skimage.color.rgb_from_hed).
_RGB_FROM_HED = (
    (0.65, 0.70, 0.29),
    (0.07, 0.99, 0.11),
    (0.27, 0.57, 0.78),
)


def _names() -> tuple[str, ...]:
    names: list[str] = []
    for c in _CHANNELS:
        names += [f"rgb_{c}_{stat}" for stat in ("mean", "std", "p10", "p50", "p90")]
    names += ["hsv_hue_cos", "hsv_hue_sin", "hsv_sat_mean", "hsv_sat_std", "hsv_val_mean", "hsv_val_std"]
    names += ["od_r_mean", "od_g_mean", "od_b_mean", "od_mean", "tissue_fraction"]
    names += [
        "stain_h_mean",
        "stain_h_std",
        "stain_h_p90",
        "stain_e_mean",
        "stain_e_std",
        "stain_e_p90",
        "stain_residual_mean",
        "stain_h_fraction",
    ]
    for s in _SCALES:
        names += [f"tex_s{s}_grad_mean", f"tex_s{s}_grad_std", f"tex_s{s}_lap_var", f"tex_s{s}_lap_absmean"]
        names += [f"tex_s{s}_lbp_{k}" for k in range(_LBP_BINS)]
        names += [f"tex_s{s}_glcm_{k}" for k in ("contrast", "homogeneity", "energy", "correlation")]
    return tuple(names)


FEATURE_NAMES: tuple[str, ...] = _names()
FEATURE_DIM = len(FEATURE_NAMES)


class ColorTextureBaseline(nn.Module):
    """Deterministic hand-crafted features; see the module docstring for the exact layout."""

    def __init__(self) -> None:
        super().__init__()
        rgb_from_hed = torch.tensor(_RGB_FROM_HED, dtype=torch.float32)
        rgb_from_hed = rgb_from_hed / rgb_from_hed.norm(dim=1, keepdim=True)
        self.register_buffer("hed_from_rgb", torch.linalg.inv(rgb_from_hed), persistent=False)
        sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
        kernels = torch.stack([sobel, sobel.T, torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])])
        self.register_buffer("kernels", kernels.unsqueeze(1), persistent=False)  # (3, 1, 3, 3)
        self.register_buffer("luma", torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1), persistent=False)

    @property
    def num_features(self) -> int:
        return FEATURE_DIM

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) RGB in [0, 1], got {tuple(x.shape)}")
        if x.device.type == "meta":
            return x.new_empty((x.shape[0], FEATURE_DIM), dtype=torch.float32)
        with no_autocast(x.device):
            x = x.float().clamp(0.0, 1.0)
            feats = [self._rgb(x), self._hsv(x)]
            od = -torch.log10(x.clamp_min(1.0 / 255.0))
            tissue = od.amax(dim=1) > TISSUE_OD_THRESHOLD  # (B, H, W)
            feats += [od.mean(dim=(2, 3)), od.mean(dim=(1, 2, 3)).unsqueeze(1), tissue.float().mean((1, 2))[:, None]]
            feats.append(self._stains(od, tissue))
            gray = (x * self.luma).sum(dim=1, keepdim=True)
            for scale in _SCALES:
                g = gray if scale == 1 else F.avg_pool2d(gray, scale)
                feats.append(self._texture(g))
            out = torch.cat(feats, dim=1)
        return torch.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)

    # ------------------------------------------------------------------ groups
    @staticmethod
    def _rgb(x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)  # (B, 3, N)
        q = _quantiles(flat, (0.1, 0.5, 0.9))  # (B, 3, 3)
        stats = torch.stack([flat.mean(-1), flat.std(-1, unbiased=False)], dim=-1)  # (B, 3, 2)
        return torch.cat([stats, q], dim=-1).flatten(1)  # per channel: mean, std, p10, p50, p90

    @staticmethod
    def _hsv(x: torch.Tensor) -> torch.Tensor:
        r, g, b = x.unbind(1)
        maxc, argmax = x.max(dim=1)
        delta = maxc - x.amin(dim=1)
        safe = delta.clamp_min(1e-6)
        hue = (
            torch.where(
                argmax == 0,
                torch.remainder((g - b) / safe, 6.0),
                torch.where(argmax == 1, (b - r) / safe + 2.0, (r - g) / safe + 4.0),
            )
            / 6.0
        )
        sat = torch.where(maxc > 1e-6, delta / maxc.clamp_min(1e-6), torch.zeros_like(maxc))
        angle = 2.0 * math.pi * hue
        weight = sat.flatten(1)
        norm = weight.sum(1).clamp_min(1e-6)
        hue_cos = (weight * torch.cos(angle).flatten(1)).sum(1) / norm
        hue_sin = (weight * torch.sin(angle).flatten(1)).sum(1) / norm
        s, v = sat.flatten(1), maxc.flatten(1)
        return torch.stack(
            [hue_cos, hue_sin, s.mean(1), s.std(1, unbiased=False), v.mean(1), v.std(1, unbiased=False)], dim=1
        )

    def _stains(self, od: torch.Tensor, tissue: torch.Tensor) -> torch.Tensor:
        conc = torch.einsum("bchw,cs->bshw", od, self.hed_from_rgb).clamp_min(0.0)  # (B, 3 stains, H, W)
        flat = conc.flatten(2)
        mask = tissue.flatten(1).float()[:, None, :]  # (B, 1, N)
        count = mask.sum(-1).clamp_min(1.0)
        mean = (flat * mask).sum(-1) / count  # zero where there is no tissue
        std = (((flat - mean[..., None]) ** 2 * mask).sum(-1) / count).sqrt()
        p90 = _quantiles(flat[:, :2], (0.9,))[..., 0]  # (B, 2) global H / E p90
        h_fraction = mean[:, 0] / (mean[:, 0] + mean[:, 1]).clamp_min(1e-6)
        return torch.stack(
            [mean[:, 0], std[:, 0], p90[:, 0], mean[:, 1], std[:, 1], p90[:, 1], mean[:, 2], h_fraction], dim=1
        )

    def _texture(self, gray: torch.Tensor) -> torch.Tensor:
        responses = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), self.kernels)  # (B, 3, H, W)
        grad = torch.sqrt(responses[:, 0] ** 2 + responses[:, 1] ** 2).flatten(1)
        lap = responses[:, 2].flatten(1)
        parts = [
            torch.stack(
                [grad.mean(1), grad.std(1, unbiased=False), lap.var(1, unbiased=False), lap.abs().mean(1)], dim=1
            ),
            _lbp_histogram(gray[:, 0]),
            _glcm_features(gray[:, 0]),
        ]
        return torch.cat(parts, dim=1)


def _quantiles(values: torch.Tensor, qs: tuple[float, ...]) -> torch.Tensor:
    """Nearest-rank quantiles along the last dim (sort-based: torch.quantile caps the input size)."""
    n = values.shape[-1]
    ordered = values.sort(dim=-1).values
    index = torch.tensor([round(q * (n - 1)) for q in qs], device=values.device)
    return ordered.index_select(-1, index)


def _histogram(codes: torch.Tensor, bins: int) -> torch.Tensor:
    """Per-row normalised histogram of integer codes (B, N) -> (B, bins); integer adds are deterministic."""
    counts = torch.zeros(codes.shape[0], bins, dtype=torch.int64, device=codes.device)
    counts.scatter_add_(1, codes, torch.ones_like(codes))
    return counts.float() / codes.shape[1]


def _lbp_histogram(gray: torch.Tensor) -> torch.Tensor:
    """Rotation-invariant uniform LBP(P=8, R=1) on interior pixels: codes 0..8 = number of set bits of a
    uniform pattern, 9 = non-uniform."""
    center = gray[:, 1:-1, 1:-1]
    h, w = center.shape[-2:]
    offsets = ((0, 0), (0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0))  # circular order
    bits = torch.stack([(gray[:, dy : dy + h, dx : dx + w] >= center) for dy, dx in offsets], dim=1).to(torch.int64)
    ones = bits.sum(1)
    transitions = (bits - bits.roll(1, dims=1)).abs().sum(1)
    codes = torch.where(transitions <= 2, ones, torch.full_like(ones, _LBP_BINS - 1))
    return _histogram(codes.flatten(1), _LBP_BINS)


def _glcm_features(gray: torch.Tensor) -> torch.Tensor:
    levels = _GLCM_LEVELS
    q = (gray * levels).floor().clamp(0, levels - 1).to(torch.int64)
    pairs = [(q[:, :, :-1], q[:, :, 1:]), (q[:, :-1, :], q[:, 1:, :])]  # right, down
    i = torch.arange(levels, device=gray.device, dtype=torch.float32)
    ii, jj = torch.meshgrid(i, i, indexing="ij")
    out = []
    for a, b in pairs:
        p = _histogram((a * levels + b).flatten(1), levels * levels).view(-1, levels, levels)
        p = 0.5 * (p + p.transpose(1, 2))  # symmetric
        contrast = (p * (ii - jj) ** 2).sum((1, 2))
        homogeneity = (p / (1.0 + (ii - jj).abs())).sum((1, 2))
        energy = (p**2).sum((1, 2)).sqrt()
        mu = (p * ii).sum((1, 2))
        var = (p * (ii - mu[:, None, None]) ** 2).sum((1, 2))
        cov = (p * (ii - mu[:, None, None]) * (jj - mu[:, None, None])).sum((1, 2))
        correlation = torch.where(var > 1e-12, cov / var.clamp_min(1e-12), torch.ones_like(var))  # skimage: 1 if flat
        out.append(torch.stack([contrast, homogeneity, energy, correlation], dim=1))
    return 0.5 * (out[0] + out[1])
