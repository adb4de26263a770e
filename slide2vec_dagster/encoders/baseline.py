"""Weight-free colour / stain / texture baseline tile encoder.

NOT a foundation model. It turns each tile into a fixed, hand-crafted 70-d vector of real image
statistics so the whole pipeline (tiling -> inference loop -> artifacts -> aggregation) can run and be
tested offline, on CPU or CUDA, with features that still separate tissue from background and
haematoxylin-rich from eosin-rich tissue. Use it as a sanity baseline, never as a substitute for a
pretrained encoder.

Input: float RGB in [0, 1], shape (B, 3, H, W) with H, W >= 16 (the preset's transform only scales
uint8 by 1/255). Everything is vectorised over the batch in torch (no per-tile Python loops), runs in
fp32 regardless of autocast, and is deterministic: histograms and percentiles come from integer
``bincount`` s / ``kthvalue`` (no float scatter-adds, so CUDA atomics cannot reorder sums).

Working resolutions (this is what makes the encoder several times cheaper than decoding the tile).
The full-resolution input is read only by two strided box averages (area downsamples, like OpenCV's
INTER_AREA; trailing rows / columns that do not fill a block are dropped), then clamped to [0, 1]:

* ``C`` = R, G, B averaged over 4x4 blocks (56 x 56 for a 224 px tile; 2 um/px at 0.5 um/px):
  every colour / stain feature (groups 1-5) is a statistic of the pixels of ``C``;
* ``L2`` = BT.601 luminance (0.299 R + 0.587 G + 0.114 B) averaged over 2x2 blocks (112 x 112) and
  ``L4`` = ``L2`` 2x2-averaged again (56 x 56): the two texture scales (group 6, ``tex_s2_*`` and
  ``tex_s4_*``, named by their downsampling factor relative to the input tile).

"8-bit codes" means ``round(255 * v)``. Means / stds are population statistics.

Feature order (``FEATURE_NAMES``, 70 features):
  1. RGB of ``C``, per channel R/G/B: mean, std, p10, p50, p90 (percentiles: nearest rank on the
     8-bit codes via a 256-bin histogram, reported in [0, 1])                                (15)
  2. HSV of ``C``: saturation-weighted circular hue (cos, sin), saturation mean/std,
     value mean/std                                                                           (6)
  3. Optical density OD = -log10(max(v, 1/255)) of ``C``: mean per channel R/G/B and overall    (4)
  4. Tissue fraction: share of pixels of ``C`` with max-channel OD > 0.15 (Macenko's beta)     (1)
  5. Ruifrok-Johnston colour deconvolution (fixed H&E-DAB matrix, skimage's ``rgb_from_hed``) of the
     OD of ``C``, over tissue pixels: H mean/std, global H p90, E mean/std, global E p90, residual
     (3rd stain) mean, H fraction = H / (H + E). Concentrations are clamped at 0; the p90s are
     nearest-rank over all pixels of ``C``; means / stds are 0 when the tile has no tissue    (8)
  6. Texture, per scale (``L2`` then ``L4``): Sobel gradient magnitude mean/std, Laplacian
     (4-neighbour) variance and mean |Laplacian| (replicate padding), rotation-invariant uniform
     LBP(8, 1) histogram of the 8-bit codes over interior pixels (10 bins: 0..8 = set bits of a
     uniform pattern, 9 = non-uniform; neighbour >= centre sets a bit), GLCM on 8 grey levels (the
     top 3 bits of the 8-bit codes), offsets right + down, symmetric, normalised, averaged over the
     two offsets: contrast / homogeneity / energy / correlation (correlation = 1 for a flat tile,
     as in skimage)                                                                  (2 x 18 = 36)
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

    #: On CPU the box averages run as strided oneDNN convolutions (fastest); False forces the plain pooling
    #: path used on other devices (the tests compare the two).
    conv_pooling_on_cpu: bool = True

    def __init__(self) -> None:
        super().__init__()
        rgb_from_hed = torch.tensor(_RGB_FROM_HED, dtype=torch.float32)
        rgb_from_hed = rgb_from_hed / rgb_from_hed.norm(dim=1, keepdim=True)
        # conc (stains, rows) = hed_from_rgb^T @ OD (channels, rows): stored transposed for a batched matmul.
        self.register_buffer("stain_matrix", torch.linalg.inv(rgb_from_hed).T.contiguous(), persistent=False)
        # The full-resolution input is only read by two strided box-average convolutions: BT.601 luminance
        # averaged over 2x2 blocks (texture) and R, G, B averaged over 4x4 blocks (colour).
        pool_luma = torch.tensor(_LUMA).view(1, 3, 1, 1).expand(1, 3, 2, 2) / 4.0
        self.register_buffer("pool_luma", pool_luma, persistent=False)
        self.register_buffer("luma", torch.tensor(_LUMA).view(1, 3, 1, 1), persistent=False)
        pool_rgb = torch.zeros(3, 3, 4, 4)
        for c in range(3):
            pool_rgb[c, c] = 1.0 / 16.0
        self.register_buffer("pool_rgb", pool_rgb, persistent=False)
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
            x = x.float()
            luma2, rgb = self._box_averages(x)  # (B, 1, H/2, W/2) texture scale 2, (B, 3, H/4, W/4) colour
            luma2_codes = _codes(luma2)
            # Scale 4: float 2x2 average of L2; its 8-bit codes are integer 2x2 averages of L2's (device-exact).
            luma4 = F.avg_pool2d(luma2, 2)[:, 0]
            luma4_codes = _integer_avg2x2(luma2_codes)
            rgb = rgb.flatten(2)  # (B, 3, N)
            od = rgb.clamp_min(1.0 / 255.0).log_().mul_(-1.0 / math.log(10.0))  # OD = -log10(I)
            tissue = od.amax(dim=1) > TISSUE_OD_THRESHOLD  # (B, N)
            od_mean = od.mean(-1)
            feats = [
                self._rgb(rgb),
                self._hsv(rgb),
                od_mean,
                od_mean.mean(1, keepdim=True),
                tissue.float().mean(1, keepdim=True),
                self._stains(od, tissue),
                self._texture(luma2[:, 0], luma2_codes[:, 0]),
                self._texture(luma4, luma4_codes[:, 0]),
            ]
            out = torch.cat(feats, dim=1)
        return torch.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)

    def _box_averages(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The only reads of the full-resolution tile: 2x2-averaged luminance and 4x4-averaged RGB, in [0, 1]."""
        if self.conv_pooling_on_cpu and x.device.type == "cpu":  # strided oneDNN convs: the fastest on CPU
            luma2 = F.conv2d(x, self.pool_luma, stride=2)
            rgb = F.conv2d(x, self.pool_rgb, stride=4)
        else:  # plain fp32 pooling elsewhere: cuDNN convolutions may run in TF32
            luma2 = F.avg_pool2d((x * self.luma).sum(1, keepdim=True), 2)
            rgb = F.avg_pool2d(x, 4)
        return luma2.clamp_(0.0, 1.0), rgb.clamp_(0.0, 1.0)

    # ------------------------------------------------------------------ groups
    @staticmethod
    def _rgb(rgb: torch.Tensor) -> torch.Tensor:
        mean, std = _mean_std(rgb)
        codes = _codes(rgb)  # 8-bit codes for the percentiles
        hist = _row_histograms(codes.flatten(0, 1), 256).view(*rgb.shape[:2], 256)
        q = _hist_quantiles(hist, (0.1, 0.5, 0.9)) / 255.0  # (B, 3, 3)
        return torch.cat([mean[..., None], std[..., None], q], dim=-1).flatten(1)

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
        s_mean, s_std = _mean_std(sat)
        v_mean, v_std = _mean_std(maxc)
        return torch.stack([hue_cos, hue_sin, s_mean, s_std, v_mean, v_std], dim=1)

    def _stains(self, od: torch.Tensor, tissue: torch.Tensor) -> torch.Tensor:
        conc = torch.matmul(self.stain_matrix, od).clamp_min_(0.0)  # (B, 3 stains, N)
        mask = tissue.float()[:, None, :]  # (B, 1, N)
        count = mask.sum(-1).clamp_min(1.0)
        masked = conc * mask
        mean = masked.sum(-1) / count  # zero where there is no tissue
        std = ((masked * conc).sum(-1) / count - mean**2).clamp_min_(0.0).sqrt()
        p90 = _quantile(conc[:, :2], 0.9)  # (B, 2) global H / E p90
        h_fraction = mean[:, 0] / (mean[:, 0] + mean[:, 1]).clamp_min(1e-6)
        return torch.stack(
            [mean[:, 0], std[:, 0], p90[:, 0], mean[:, 1], std[:, 1], p90[:, 1], mean[:, 2], h_fraction], dim=1
        )

    def _texture(self, gray: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """(B, h, w) luminance in [0, 1] and its 8-bit codes -> 18 features (see the module docstring)."""
        p = F.pad(gray[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]  # (B, h + 2, w + 2)
        # Sobel (separable) and 4-neighbour Laplacian by shifted slices: cheaper than a 1-channel conv on CPU.
        vertical = p[:, :-2] + 2.0 * p[:, 1:-1] + p[:, 2:]  # (B, h, w + 2)
        horizontal = p[:, :, :-2] + 2.0 * p[:, :, 1:-1] + p[:, :, 2:]  # (B, h + 2, w)
        grad = torch.hypot(vertical[:, :, 2:] - vertical[:, :, :-2], horizontal[:, 2:] - horizontal[:, :-2])
        lap = p[:, :-2, 1:-1] + p[:, 2:, 1:-1] + p[:, 1:-1, :-2] + p[:, 1:-1, 2:] - 4.0 * gray
        grad_mean, grad_std = _mean_std(grad.flatten(1))
        _, lap_std = _mean_std(lap.flatten(1))
        parts = [
            torch.stack([grad_mean, grad_std, lap_std**2, lap.abs().flatten(1).mean(1)], dim=1),
            self._lbp_histogram(codes),
            self._glcm_features(codes),
        ]
        return torch.cat(parts, dim=1)

    def _lbp_histogram(self, codes: torch.Tensor) -> torch.Tensor:
        """Rotation-invariant uniform LBP(8, 1) on the interior pixels of 8-bit luminance (B, h, w)."""
        h, w = codes.shape[-2] - 2, codes.shape[-1] - 2
        center = codes[:, 1:-1, 1:-1]
        pattern = torch.zeros(center.shape, dtype=torch.uint8, device=codes.device)
        for k, (dy, dx) in enumerate(_LBP_OFFSETS):
            pattern += (codes[:, dy : dy + h, dx : dx + w] >= center).to(torch.uint8) * (1 << k)
        counts = _row_histograms(pattern.flatten(1), 256)  # (B, 256 patterns)
        return (counts @ self.lbp_classes) / (h * w)

    def _glcm_features(self, codes: torch.Tensor) -> torch.Tensor:
        """GLCM on 8 grey levels (top 3 bits of the 8-bit luminance), offsets right and down."""
        levels = _GLCM_LEVELS
        q = torch.bitwise_right_shift(codes, 5)  # 0..7
        right = (q[:, :, :-1] * levels + q[:, :, 1:]).flatten(1)
        down = (q[:, :-1, :] * levels + q[:, 1:, :] + levels * levels).flatten(1)  # second block of bins
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


def _mean_std(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Population mean / std along the last dim from one sum and one sum of squares."""
    n = values.shape[-1]
    mean = values.sum(-1) / n
    var = (values * values).sum(-1) / n - mean * mean
    return mean, var.clamp_min_(0.0).sqrt()


def _codes(values: torch.Tensor) -> torch.Tensor:
    """8-bit codes ``floor(255 v + 33/64)`` of values in [0, 1]: round to nearest (halves up), offset by 1/64
    of a code so that box averages of 8-bit pixels (multiples of 1/16 or 1/4000 of a code) never sit within
    float rounding error of a boundary: CPU and CUDA, any batch size, quantise them identically."""
    return values.mul(255.0).add_(33.0 / 64.0).floor_().clamp_(0.0, 255.0).to(torch.uint8)


def _integer_avg2x2(codes: torch.Tensor) -> torch.Tensor:
    """(B, 1, h, w) uint8 -> (B, 1, h // 2, w // 2) uint8: rounded (halves up) mean of each 2x2 block."""
    c = codes[..., : codes.shape[-2] // 2 * 2, : codes.shape[-1] // 2 * 2].to(torch.int16)
    total = c[..., 0::2, 0::2] + c[..., 0::2, 1::2] + c[..., 1::2, 0::2] + c[..., 1::2, 1::2]
    return torch.div(total + 2, 4, rounding_mode="floor").to(torch.uint8)


def _row_histograms(codes: torch.Tensor, bins: int) -> torch.Tensor:
    """Per-row float counts of integer codes (R, N) in [0, bins) -> (R, bins), via one integer bincount."""
    rows = codes.shape[0]
    dtype = torch.int32 if rows * bins < 2**31 else torch.int64
    offsets = torch.arange(rows, device=codes.device, dtype=dtype).mul_(bins)[:, None]
    return torch.bincount((codes.to(dtype) + offsets).flatten(), minlength=rows * bins).view(rows, bins).float()


def _hist_quantiles(hist: torch.Tensor, qs: tuple[float, ...]) -> torch.Tensor:
    """Nearest-rank quantiles (bin indices) from per-row histograms (..., bins) -> (..., len(qs))."""
    ranks = torch.tensor(qs, device=hist.device, dtype=hist.dtype)
    ranks = torch.round(ranks * (hist.sum(-1, keepdim=True) - 1.0))  # 0-based ranks, (..., len(qs))
    cdf = hist.cumsum(-1)
    # value of rank r (0-based) = number of bins whose cumulative count is <= r
    return (cdf[..., None, :] <= ranks[..., :, None]).sum(-1).to(hist.dtype)


def _quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """Nearest-rank quantile along the last dim (``kthvalue``: a selection, no full sort)."""
    n = values.shape[-1]
    return values.kthvalue(round(q * (n - 1)) + 1, dim=-1).values
