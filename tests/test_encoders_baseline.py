"""The weight-free colour / stain / texture baseline encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide
import pytest
import torch

from slide2vec_dagster.encoders import BASELINE_FEATURE_NAMES, ColorTextureBaseline, get_spec, load_encoder
from slide2vec_dagster.encoders import baseline as baseline_module
from tests.encoder_fixtures import background_tile, stained_tile

SLIDE = Path(__file__).resolve().parent / "data" / "CMU-1-Small-Region.svs"
NAMES = list(BASELINE_FEATURE_NAMES)


def f(features: torch.Tensor, name: str) -> torch.Tensor:
    return features[..., NAMES.index(name)]


@pytest.fixture(scope="module")
def encoder():
    return load_encoder("baseline-color-texture")


@pytest.fixture(scope="module")
def cmu_tiles() -> dict[str, np.ndarray]:
    """Real 224 px tiles of CMU-1-Small-Region (0.5 µm/px): dense tissue and the empty glass at the bottom."""
    with openslide.OpenSlide(SLIDE) as slide:

        def read(x: int, y: int) -> np.ndarray:
            return np.asarray(slide.read_region((x, y), 0, (224, 224)).convert("RGB"))

        return {"tissue": read(1120, 896), "tissue2": read(1344, 896), "glass": read(224, 2464)}


def test_layout_is_fixed_and_documented(encoder):
    spec = get_spec("baseline")
    assert len(NAMES) == len(set(NAMES)) == spec.feature_dim() == encoder.feature_dim == 70
    assert NAMES[:2] == ["rgb_r_mean", "rgb_r_std"] and NAMES[-1] == "tex_s4_glcm_correlation"
    assert "not a foundation model" in spec.description
    assert "not a foundation model" in (baseline_module.__doc__ or "").lower()


def test_deterministic_finite_and_batch_independent(encoder, cmu_tiles):
    batch = np.stack([cmu_tiles["tissue"], cmu_tiles["glass"], stained_tile(0.7, 0.2), background_tile()])
    first, second = encoder(batch), encoder(batch.copy())
    assert first.shape == (4, 70) and first.dtype == torch.float32
    assert torch.equal(first, second) and torch.isfinite(first).all()
    torch.testing.assert_close(encoder(batch[1:2])[0], first[1], rtol=0, atol=1e-6)  # no cross-tile leakage
    assert first.std(dim=0).gt(0).sum() > 60  # features actually vary between tiles


def test_tissue_and_background_differ_clearly(encoder, cmu_tiles):
    feats = encoder(np.stack([cmu_tiles["tissue"], cmu_tiles["tissue2"], cmu_tiles["glass"], background_tile()]))
    tissue, glass = feats[:2], feats[2:]
    assert (f(tissue, "tissue_fraction") > 0.8).all() and (f(glass, "tissue_fraction") < 0.05).all()
    assert f(tissue, "od_mean").min() > 4 * f(glass, "od_mean").max()
    assert f(tissue, "hsv_sat_mean").min() > 3 * f(glass, "hsv_sat_mean").max()
    assert f(tissue, "stain_h_mean").min() > 0.1 and (f(glass, "stain_h_mean") == 0).all()  # masked to tissue
    assert f(tissue, "tex_s2_grad_mean").min() > f(glass, "tex_s2_grad_mean").max()
    # whole vectors: the two tissue tiles are closer to each other than to glass (standardised features)
    z = (feats - feats.mean(0)) / feats.std(0).clamp_min(1e-6)
    assert torch.dist(z[0], z[1]) < 0.5 * min(torch.dist(z[0], z[2]), torch.dist(z[1], z[2]))


def test_real_he_tissue_has_plausible_stain_balance(encoder, cmu_tiles):
    feats = encoder(np.stack([cmu_tiles["tissue"], cmu_tiles["tissue2"]]))
    assert ((f(feats, "stain_h_fraction") > 0.2) & (f(feats, "stain_h_fraction") < 0.9)).all()
    assert (f(feats, "hsv_hue_cos") > 0).all()  # pink / purple hues sit near red on the hue circle


def test_hematoxylin_vs_eosin_dominant_tiles(encoder):
    h_tiles = np.stack([stained_tile(0.8, 0.1, seed=s) for s in range(3)])
    e_tiles = np.stack([stained_tile(0.1, 0.8, seed=s) for s in range(3)])
    h, e = encoder(h_tiles), encoder(e_tiles)
    assert f(h, "stain_h_mean").min() > 3 * f(e, "stain_h_mean").max()
    assert f(e, "stain_e_mean").min() > 3 * f(h, "stain_e_mean").max()
    assert f(h, "stain_h_fraction").min() > 0.7 and f(e, "stain_h_fraction").max() < 0.3
    # H&E vectors from Ruifrok: haematoxylin absorbs red more than eosin does, so H tiles are bluer
    assert f(h, "od_r_mean").min() > f(e, "od_r_mean").max()


def test_texture_features_respond_to_structure(encoder):
    flat = np.full((1, 224, 224, 3), 180, dtype=np.uint8)
    checker = np.kron(np.indices((28, 28)).sum(0) % 2, np.ones((8, 8)))[None, ..., None] * 120 + 60
    checker = np.repeat(checker, 3, axis=-1).astype(np.uint8)
    feats = encoder(np.concatenate([flat, checker]))
    assert f(feats[0], "tex_s2_grad_mean") == 0 and f(feats[1], "tex_s2_grad_mean") > 0.1
    assert f(feats[0], "tex_s2_glcm_contrast") == 0 and f(feats[1], "tex_s2_glcm_contrast") > 1
    assert f(feats[0], "tex_s2_lbp_8") == 1.0  # flat: every neighbour >= centre
    assert f(feats[0], "tex_s2_glcm_correlation") == 1.0


def test_conv_and_pooling_paths_agree(cmu_tiles):
    """CPU uses strided convolutions, other devices plain pooling: same features (a CPU stand-in for CUDA)."""
    tiles = np.stack([cmu_tiles["tissue"], cmu_tiles["glass"], stained_tile(0.7, 0.2), background_tile()])
    tiles = np.concatenate([tiles, np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)])
    x = torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255.0
    conv = ColorTextureBaseline()
    pool = ColorTextureBaseline()
    pool.conv_pooling_on_cpu = False
    a, b = conv(x), pool(x)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    quantised = [i for i, n in enumerate(NAMES) if n.endswith(("_p10", "_p50", "_p90")) or "_lbp_" in n or "glcm" in n]
    assert torch.equal(a[:, quantised], b[:, quantised])  # 8-bit codes identical, not just close


def test_colour_statistics_are_exact(cmu_tiles):
    """Means are area-preserving; percentiles are nearest-rank on the 8-bit codes of the 4x4-averaged tile."""
    tile = cmu_tiles["tissue"]
    feats = ColorTextureBaseline()(torch.from_numpy(tile[None].copy()).permute(0, 3, 1, 2).float() / 255.0)[0]
    small = tile.reshape(56, 4, 56, 4, 3).astype(np.float64).mean(axis=(1, 3)) / 255.0  # (56, 56, 3)
    codes = np.floor(small * 255.0 + 33 / 64).reshape(-1, 3)
    for c, ch in enumerate("rgb"):
        assert abs(float(f(feats, f"rgb_{ch}_mean")) - tile[..., c].mean() / 255.0) < 1e-5
        assert abs(float(f(feats, f"rgb_{ch}_std")) - small[..., c].std()) < 1e-5
        ordered = np.sort(codes[:, c])
        for q in (10, 50, 90):
            expected = ordered[round(q / 100 * (len(ordered) - 1))] / 255.0
            assert abs(float(f(feats, f"rgb_{ch}_p{q}")) - expected) < 1e-6


def test_runs_on_any_tile_size_and_on_meta():
    model = ColorTextureBaseline()
    assert model(torch.rand(2, 3, 64, 96)).shape == (2, 70)
    assert torch.isfinite(model(torch.rand(1, 3, 17, 23))).all()  # odd sizes: trailing rows / columns dropped
    with pytest.raises(ValueError, match="at least 16px"):
        model(torch.rand(1, 3, 8, 8))
    with torch.device("meta"):
        assert ColorTextureBaseline()(torch.empty(3, 3, 224, 224)).shape == (3, 70)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(cmu_tiles):
    batch = np.stack([cmu_tiles["tissue"], cmu_tiles["glass"]])
    cpu = load_encoder("baseline")(batch)
    gpu = load_encoder("baseline", device="cuda")(batch)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4)
