"""Weight-free colour / stain / texture baseline tile encoder.

NOT a foundation model. It turns each tile into a fixed, hand-crafted 70-d vector of real image
statistics so the whole pipeline (tiling -> inference loop -> artifacts -> aggregation) can run and be
tested offline, on CPU or CUDA, with features that still separate tissue from background and
haematoxylin-rich from eosin-rich tissue. Use it as a sanity baseline, never as a substitute for a
pretrained encoder.

Input: float RGB in [0, 1], shape (B, 3, H, W) with H, W >= 16 (the preset's transform only scales
uint8 by 1/255). Everything is vectorised over the batch in torch, runs in fp32 regardless of
autocast, and is deterministic: histograms and percentiles are integer ``bincount`` s over quantised
codes (no float scatter-adds, so CUDA atomics cannot reorder sums), and there are no per-tile loops.

Working resolution. The full-resolution input is read exactly once, by a 2x2 box average (stride 2,
an area downsample, like OpenCV's INTER_AREA; a trailing odd row / column is dropped). Every feature
below is computed on that half-resolution tile ``A`` (1 um/px for 0.5 um/px tiles), or on ``A``
pooled once more for the second texture scale. This keeps the encoder several times cheaper than
reading and decoding the tile. Values are clamped to [0, 1] after pooling. "Quantised" means
``round(255 * A)`` as 8-bit codes.

Feature order (``FEATURE_NAMES``, 70 features):
  1. RGB of ``A``, per channel R/G/B: mean, std, p10, p50, p90 (percentiles: nearest rank on the
     8-bit codes, from a 256-bin histogram, reported in [0, 1])                             (15)
  2. HSV of ``A``: saturation-weighted circular hue (cos, sin), saturation mean/std,
     value mean/std                                                                           (6)
  3. Optical density OD = -log10(max(code, 1) / 255) of the quantised ``A``: mean per channel
     R/G/B (exact, from the 256-bin histograms) and overall                                   (4)
  4. Tissue fraction: share of pixels of ``A`` with max-channel OD > 0.15 (Macenko's beta)   (1)
  5. Ruifrok-Johnston colour deconvolution (fixed H&E-DAB matrix, skimage's ``rgb_from_hed``) of the
     OD of ``A``, over tissue pixels: H mean/std, global H p90, E mean/std, global E p90, residual
     (3rd stain) mean, H fraction = H / (H + E). The p90s are nearest-rank over all pixels of the
     tile (``kthvalue``), 0 where the tile has no tissue for the means/stds                   (8)
  6. Texture on luminance (BT.601 weights) at downsampling factors 2 and 4 relative to the input
     tile (``A`` and ``A`` 2x2-pooled; names ``tex_s2_*`` / ``tex_s4_*``), per scale: Sobel gradient
     magnitude mean/std, Laplacian variance and mean |Laplacian| (replicate padding),
     rotation-invariant uniform LBP(8, 1) histogram over interior pixels (10 bins: 0..8 = set bits of
     a uniform pattern, 9 = non-uniform), GLCM (8 grey levels, offsets right+down, symmetric,
     averaged) contrast / homogeneity / energy / correlation (correlation = 1 for a flat tile, as in
     skimage)                                                                          (2 x 18 = 36)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from slide2vec_dagster.encoders.precision import no_autocast

_CHANNELS = ("r", "g", "b")
_SCALES = (2, 4)  # downsampling factor of the texture working resolution w.r.t. the input tile
_GLCM_LEVELS = 8
_LBP_BINS = 10
_MIN_SIDE = 16
TISSUE_OD_THRESHOLD = 0.15

# Ruifrok & Johnston (2001) stain OD vectors, rows H, E, DAB (== skimage.color.rgb_from_hed).
_RGB_FROM_HED = (
    (0.65, 0.70, 0.29),
    (0.07, 0.99, 0.11),
    (0.27, 0.57, 0.78),
)
_LUMA = (0.299, 0.587, 0.114)
# LBP neighbours in circular order, as (dy, dx) offsets of a 3x3 window; bit k of the code = neighbour k.
_LBP_OFFSETS = ((0, 0), (0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0))


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


def _lbp_class_matrix() -> torch.Tensor:
    """(256, 10) one-hot map from an 8-bit LBP code to its rotation-invariant uniform class."""
    matrix = torch.zeros(256, _LBP_BINS)
    for code in range(256):
        bits = [(code >> k) & 1 for k in range(8)]
        transitions = sum(bits[k] != bits[k - 1] for k in range(8))
        matrix[code, sum(bits) if transitions <= 2 else _LBP_BINS - 1] = 1.0
    return matrix


class ColorTextureBaseline(nn.Module):
    """Deterministic hand-crafted features; see the module docstring for the exact layout."""

    def __init__(self) -> None:
        super().__init__()
        rgb_from_hed = torch.tensor(_RGB_FROM_HED, dtype=torch.float32)
        rgb_from_hed = rgb_from_hed / rgb_from_hed.norm(dim=1, keepdim=True)
        # conc (stains) = hed_from_rgb^T @ od (channels): stored transposed for a batched matmul.
        self.register_buffer("stain_matrix", torch.linalg.inv(rgb_from_hed).T.contiguous(), persistent=False)
        # 2x2 box average of each RGB channel, stride 2: the single pass over the full-resolution input.
        pool = torch.zeros(3, 3, 2, 2)
        for c in range(3):
            pool[c, c] = 0.25
        self.register_buffer("pool_rgb", pool, persistent=False)
        self.register_buffer("luma", torch.tensor(_LUMA).view(1, 3, 1, 1), persistent=False)
        sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
        kernels = torch.stack([sobel, sobel.T, torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])])
        self.register_buffer("kernels", kernels.unsqueeze(1), persistent=False)  # (3, 1, 3, 3)
        levels = torch.arange(256, dtype=torch.float32)
        self.register_buffer("od_lut", -torch.log10(levels.clamp_min(1.0) / 255.0), persistent=False)
        self.register_buffer("levels_256", levels / 255.0, persistent=False)
        self.register_buffer("lbp_classes", _lbp_class_matrix(), persistent=False)
        i = torch.arange(_GLCM_LEVELS, dtype=torch.float32)
        ii, jj = torch.meshgrid(i, i, indexing="ij")
        self.register_buffer("glcm_ij", torch.stack([ii, jj]), persistent=False)

    @property
    def num_features(self) -> int:
        return FEATURE_DIM

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) RGB in [0, 1], got {tuple(x.shape)}")
        if min(x.shape[-2:]) < _MIN_SIDE:
            raise ValueError(f"tiles must be at least {_MIN_SIDE}px on each side, got {tuple(x.shape[-2:])}")
        if x.device.type == "meta":
            return x.new_empty((x.shape[0], FEATURE_DIM), dtype=torch.float32)
        with no_autocast(x.device):
            # The one pass over the full-resolution tile: 2x2 area average -> (B, 3, H/2, W/2).
            half = F.conv2d(x.float(), self.pool_rgb, stride=2).clamp_(0.0, 1.0).contiguous()
            rgb = half.flatten(2)  # (B, 3, N)
            codes = torch.round(rgb * 255.0).to(torch.int64)  # (B, 3, N) in 0..255
            hist = _row_histograms(codes.flatten(0, 1), 256).view(x.shape[0], 3, 256)  # counts
            od = -torch.log10(rgb.clamp_min(1.0 / 255.0))
            tissue = od.amax(dim=1) > TISSUE_OD_THRESHOLD  # (B, N)
            feats = [
                self._rgb(rgb, hist),
                self._hsv(rgb),
                self._od(hist),
                tissue.float().mean(1, keepdim=True),
                self._stains(od, tissue),
            ]
            gray = (half * self.luma).sum(dim=1, keepdim=True)  # (B, 1, H/2, W/2)
            feats.append(self._texture(gray))
            feats.append(self._texture(F.avg_pool2d(gray, 2)))
            out = torch.cat(feats, dim=1)
        return torch.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)

    # ------------------------------------------------------------------ groups
    def _rgb(self, rgb: torch.Tensor, hist: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(rgb, dim=-1, correction=0)
        q = _hist_quantiles(hist, (0.1, 0.5, 0.9)) / 255.0  # (B, 3, 3)
        return torch.cat([mean[..., None], var.sqrt()[..., None], q], dim=-1).flatten(1)

    def _od(self, hist: torch.Tensor) -> torch.Tensor:
        per_channel = (hist @ self.od_lut) / hist.sum(-1)  # exact mean OD of the quantised pixels
        return torch.cat([per_channel, per_channel.mean(1, keepdim=True)], dim=1)

    @staticmethod
    def _hsv(rgb: torch.Tensor) -> torch.Tensor:
        r, g, b = rgb.unbind(1)
        maxc, argmax = rgb.max(dim=1)
        delta = maxc - rgb.amin(dim=1)
        safe = delta.clamp_min(1e-6)
        hue = torch.where(
            argmax == 0,
            torch.remainder((g - b) / safe, 6.0),
            torch.where(argmax == 1, (b - r) / safe + 2.0, (r - g) / safe + 4.0),
        )
        sat = delta / maxc.clamp_min(1e-6)  # 0 where maxc == 0 because delta == 0 there
        angle = hue * (2.0 * math.pi / 6.0)
        norm = sat.sum(1).clamp_min(1e-6)
        hue_cos = (sat * torch.cos(angle)).sum(1) / norm
        hue_sin = (sat * torch.sin(angle)).sum(1) / norm
        s_var, s_mean = torch.var_mean(sat, dim=1, correction=0)
        v_var, v_mean = torch.var_mean(maxc, dim=1, correction=0)
        return torch.stack([hue_cos, hue_sin, s_mean, s_var.sqrt(), v_mean, v_var.sqrt()], dim=1)

    def _stains(self, od: torch.Tensor, tissue: torch.Tensor) -> torch.Tensor:
        conc = torch.matmul(self.stain_matrix, od).clamp_min_(0.0)  # (B, 3 stains, N)
        mask = tissue.float()[:, None, :]  # (B, 1, N)
        count = mask.sum(-1).clamp_min(1.0)
        mean = (conc * mask).sum(-1) / count  # zero where there is no tissue
        std = (((conc - mean[..., None]) ** 2 * mask).sum(-1) / count).sqrt()
        p90 = _quantiles(conc[:, :2], 0.9)  # (B, 2) global H / E p90
        h_fraction = mean[:, 0] / (mean[:, 0] + mean[:, 1]).clamp_min(1e-6)
        return torch.stack(
            [mean[:, 0], std[:, 0], p90[:, 0], mean[:, 1], std[:, 1], p90[:, 1], mean[:, 2], h_fraction], dim=1
        )

    def _texture(self, gray: torch.Tensor) -> torch.Tensor:
        responses = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), self.kernels).flatten(2)  # (B, 3, N)
        grad = torch.hypot(responses[:, 0], responses[:, 1])
        grad_var, grad_mean = torch.var_mean(grad, dim=1, correction=0)
        lap = responses[:, 2]
        lap_var = lap.var(dim=1, correction=0)
        parts = [
            torch.stack([grad_mean, grad_var.sqrt(), lap_var, lap.abs().mean(1)], dim=1),
            self._lbp_histogram(gray[:, 0]),
            self._glcm_features(gray[:, 0]),
        ]
        return torch.cat(parts, dim=1)

    def _lbp_histogram(self, gray: torch.Tensor) -> torch.Tensor:
        h, w = gray.shape[-2] - 2, gray.shape[-1] - 2
        center = gray[:, 1:-1, 1:-1]
        code = torch.zeros(center.shape, dtype=torch.uint8, device=gray.device)
        for k, (dy, dx) in enumerate(_LBP_OFFSETS):
            code += (gray[:, dy : dy + h, dx : dx + w] >= center).to(torch.uint8) * (1 << k)
        counts = _row_histograms(code.flatten(1).to(torch.int64), 256)  # (B, 256)
        return (counts @ self.lbp_classes) / (h * w)

    def _glcm_features(self, gray: torch.Tensor) -> torch.Tensor:
        levels = _GLCM_LEVELS
        q = (gray * levels).floor_().clamp_(0, levels - 1).to(torch.int64)
        right = (q[:, :, :-1] * levels + q[:, :, 1:]).flatten(1)
        down = (q[:, :-1, :] * levels + q[:, 1:, :]).flatten(1) + levels * levels  # second block of bins
        counts = _row_histograms(torch.cat([right, down], dim=1), 2 * levels * levels)
        p = counts.view(-1, 2, levels, levels)
        p = p / p.sum((2, 3), keepdim=True)
        p = 0.5 * (p + p.transpose(2, 3))  # symmetric
        ii, jj = self.glcm_ij
        diff = ii - jj
        contrast = (p * diff**2).sum((2, 3))
        homogeneity = (p / (1.0 + diff.abs())).sum((2, 3))
        energy = (p**2).sum((2, 3)).sqrt()
        mu = (p * ii).sum((2, 3))[..., None, None]
        var = (p * (ii - mu) ** 2).sum((2, 3))
        cov = (p * (ii - mu) * (jj - mu)).sum((2, 3))
        correlation = torch.where(var > 1e-12, cov / var.clamp_min(1e-12), torch.ones_like(var))  # skimage: 1 if flat
        return torch.stack([contrast, homogeneity, energy, correlation], dim=2).mean(1)  # average right / down


def _row_histograms(codes: torch.Tensor, bins: int) -> torch.Tensor:
    """Per-row float counts of integer codes (R, N) in [0, bins) -> (R, bins), via one integer bincount."""
    rows = codes.shape[0]
    offsets = torch.arange(rows, device=codes.device, dtype=torch.int64).mul_(bins)[:, None]
    return torch.bincount((codes + offsets).flatten(), minlength=rows * bins).view(rows, bins).float()


def _hist_quantiles(hist: torch.Tensor, qs: tuple[float, ...]) -> torch.Tensor:
    """Nearest-rank quantiles (bin indices) from per-row histograms (..., bins) -> (..., len(qs))."""
    ranks = torch.tensor(qs, device=hist.device, dtype=hist.dtype)
    ranks = torch.round(ranks * (hist.sum(-1, keepdim=True) - 1.0))  # 0-based ranks, (..., len(qs))
    cdf = hist.cumsum(-1)
    # value of rank r (0-based) = number of bins whose cumulative count is <= r
    return (cdf[..., None, :] <= ranks[..., :, None]).sum(-1).to(hist.dtype)


def _quantiles(values: torch.Tensor, q: float) -> torch.Tensor:
    """Nearest-rank quantile along the last dim (``kthvalue``: a selection, no full sort)."""
    n = values.shape[-1]
    return values.kthvalue(round(q * (n - 1)) + 1, dim=-1).values
