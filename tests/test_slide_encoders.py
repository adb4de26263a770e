"""Slide- and patient-level encoders: registry, pairings, mean-pool baselines, MOOZY built from its PyPI
package, remote-code presets through a fake Hugging Face repository, and every refusal message."""

from __future__ import annotations

import hashlib
import importlib.util
import json

import numpy as np
import pytest
import torch

from slide2vec_dagster.encoders import (
    SLIDE2VEC_MODEL_DEFAULTS,
    EncoderConfigError,
    EncoderDependencyError,
    EncoderWeightsError,
    UnknownEncoderError,
    all_slide_specs,
    check_pairing,
    check_patient_pairing,
    check_save_latents,
    get_slide_spec,
    get_spec,
    list_slide_encoders,
    load_patient_encoder,
    load_slide_encoder,
)
from tests.slide_encoder_fixtures import (
    FAKE_REVISION,
    fake_reference,
    fill_hub_cache,
    offline_hub,
    tiny_moozy_modules,
    write_fake_remote_repo,
    write_moozy_checkpoint,
)

TITAN_REVISION = "dac6773d9961cfc75503440676ff157a2c6e8d2e"  # slide2vec 7.1.4 titan.py

# name: (level, tile encoder, tile variant, input dim, output dim, latent shape, backend)
EXPECTED = {
    "prism": ("slide", "virchow", "cls_patch_mean", 2560, 1280, (512, 1280), "remote-code"),
    "prism2": ("slide", "virchow2", "cls", 1280, 2560, None, "remote-code"),
    "titan": ("slide", "conchv15", "default", 768, 768, None, "remote-code"),
    "gigapath-slide": ("slide", "gigapath", "default", 1536, 768, None, "external"),
    "moozy-slide": ("slide", "lunit", "default", 384, 768, None, "package"),
    "moozy": ("patient", "lunit", "default", 768, 768, None, "package"),
    "mean-pool": ("slide", None, None, None, None, None, "mean-pool"),
    "mean-pool-patient": ("patient", None, None, None, None, None, "mean-pool"),
}  # fmt: skip


def _slide(n: int = 12, dim: int = 384, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Tile features and level-0 coordinates of ``n`` tiles on a 224-px grid."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(n, dim, generator=generator)
    cells = np.stack(np.divmod(np.arange(n), 4), axis=1)[:, ::-1]  # (col, row), row-major
    return features, (cells * 224 + np.array([1000, 2000])).astype(np.int64)


# --------------------------------------------------------------------------- registry


def test_registry_holds_slide2vec_presets_with_their_pairings():
    assert set(list_slide_encoders()) == set(EXPECTED)
    assert set(list_slide_encoders("patient")) == {"moozy", "mean-pool-patient"}
    for name, (level, tile, variant, input_dim, feature_dim, latents, backend) in EXPECTED.items():
        spec = get_slide_spec(name)
        got = (spec.level, spec.tile_encoder, spec.tile_variant, spec.input_dim, spec.feature_dim)
        assert got == (level, tile, variant, input_dim, feature_dim), name
        assert (spec.latent_shape, spec.backend, spec.has_latents) == (latents, backend, latents is not None), name
        assert spec.weights is not None or spec.is_baseline, name
    assert get_slide_spec("moozy").slide_encoder == "moozy-slide"
    assert get_slide_spec("mean-pool-patient").slide_encoder is None
    assert get_slide_spec("gigapath-slide").supports_tile_overlap is False
    assert get_slide_spec("prov-gigapath-slide").name == "gigapath-slide"
    assert get_slide_spec("titan").weights.revision == TITAN_REVISION
    assert "BASELINE" in get_slide_spec("mean-pool").description
    json.dumps([spec.to_dict() for spec in all_slide_specs()])  # JSON-friendly metadata


def test_every_pairing_matches_the_tile_registry():
    for spec in all_slide_specs():
        if spec.tile_encoder is None:
            continue
        tile = get_spec(spec.tile_encoder)
        slide_input = spec.input_dim if spec.level == "slide" else get_slide_spec(spec.slide_encoder).input_dim
        assert tile.feature_dim(spec.tile_variant) == slide_input, spec.name
        check_pairing(spec.name, spec.tile_encoder, spec.tile_variant, slide_input)


def test_pairing_errors_name_both_models_and_the_right_tile_encoder():
    with pytest.raises(EncoderConfigError) as info:
        check_pairing("prism", "uni")
    message = str(info.value)
    assert "'prism'" in message and "'uni'" in message and "Use tile encoder 'virchow'" in message
    with pytest.raises(EncoderConfigError, match="output variant 'cls_patch_mean'"):
        check_pairing("prism", "virchow", "cls")  # the right model, the wrong variant
    with pytest.raises(EncoderConfigError, match="'cls'"):
        check_pairing("prism2", "virchow2")  # virchow2's default is cls_patch_mean; PRISM2 takes the class token
    with pytest.raises(EncoderConfigError, match="1024-d"):
        check_pairing("titan", "conchv15", "default", 1024)  # features of another dimension
    with pytest.raises(EncoderConfigError, match="'lunit'"):
        check_pairing("moozy", "uni")  # patient level: its slide encoder's tile encoder
    check_pairing("gigapath-slide", "prov-gigapath")  # tile aliases resolve
    check_pairing("mean-pool", "uni", None, 1024)  # the baseline takes any tile encoder
    check_pairing("mean-pool-patient", "baseline-color-texture")
    with pytest.raises(UnknownEncoderError):
        check_pairing("prism", "no-such-tile-encoder")


def test_patient_pairing_and_latents_are_checkable_before_loading():
    check_patient_pairing("moozy", "moozy-slide")
    check_patient_pairing("mean-pool-patient", "prism")
    with pytest.raises(EncoderConfigError, match="Use slide encoder 'moozy-slide'"):
        check_patient_pairing("moozy", "titan")
    check_save_latents("prism")
    for name in ("titan", "moozy-slide", "mean-pool", "moozy"):
        with pytest.raises(EncoderConfigError, match=r"has no latents.*save_latents: false.*prism"):
            check_save_latents(name)
    assert dict(SLIDE2VEC_MODEL_DEFAULTS) == {
        "save_tile_embeddings": False,
        "save_slide_embeddings": False,
        "save_latents": False,
    }


def test_loaders_refuse_the_other_level_and_unknown_names():
    with pytest.raises(EncoderConfigError, match="patient-level encoder: load it with load_patient_encoder"):
        load_slide_encoder("moozy")
    with pytest.raises(EncoderConfigError, match="slide-level encoder: load it with load_slide_encoder"):
        load_patient_encoder("mean-pool")
    with pytest.raises(UnknownEncoderError, match="Unknown slide-level encoder 'virchow'"):
        load_slide_encoder("virchow")


# --------------------------------------------------------------------------- mean-pool baselines


def test_mean_pool_slide_is_the_mean_of_the_tile_features():
    features = torch.randn(37, 70, dtype=torch.float64).to(torch.float16)  # stored fp16, as written to disk
    encoder = load_slide_encoder("mean-pool")
    out = encoder(features.numpy(), np.zeros((37, 2), dtype=np.int64), 224)
    expected = features.double().sum(0) / 37
    assert out.embedding.dtype == torch.float32 and out.embedding.shape == (70,)
    torch.testing.assert_close(out.embedding.double(), expected, rtol=0, atol=1e-6)
    assert out.latents is None
    assert encoder.output_dim(70) == 70 and encoder.weights_sha256() is None
    assert encoder.lineage()["weights_origin"] == "none (mean-pool baseline)"
    torch.testing.assert_close(encoder(features).embedding, out.embedding)  # coordinates are optional


def test_mean_pool_patient_is_the_mean_of_the_slide_embeddings():
    slides = torch.tensor([[1.0, 2.0, 3.0], [3.0, 6.0, -3.0]])
    patient = load_patient_encoder("mean-pool-patient")
    out = patient(slides)
    assert out.dtype == torch.float32 and out.shape == (3,)
    torch.testing.assert_close(out, torch.tensor([2.0, 4.0, 0.0]))
    assert patient.slide_encoder is None
    torch.testing.assert_close(patient(slides[:1]), slides[0])


def test_zero_tiles_and_empty_patients_are_refused():
    with pytest.raises(ValueError, match="zero tiles"):
        load_slide_encoder("mean-pool")(torch.zeros(0, 8), np.zeros((0, 2), dtype=np.int64), 224)
    with pytest.raises(ValueError, match="no slide embeddings"):
        load_patient_encoder("mean-pool-patient")(torch.zeros(0, 8))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        load_slide_encoder("mean-pool")(torch.zeros(8))


def test_weight_free_presets_refuse_weights():
    with pytest.raises(EncoderConfigError, match="weight-free"):
        load_slide_encoder("mean-pool", weights="/models/x")
    with pytest.raises(EncoderConfigError, match="weight-free"):
        load_patient_encoder("mean-pool-patient", revision=FAKE_REVISION)


# --------------------------------------------------------------------------- MOOZY (built from the moozy package)


@pytest.fixture(scope="module")
def moozy(tmp_path_factory):
    slide, case = tiny_moozy_modules(seed=3)
    path = write_moozy_checkpoint(tmp_path_factory.mktemp("moozy") / "moozy.pt", slide, case)
    return slide, case, path


def _moozy_reference(slide, features, coords, tile_size):
    with torch.no_grad():
        cls, _, _ = slide(
            features[None, None],
            coords_xy=torch.as_tensor(coords)[None].float(),
            patch_sizes=torch.tensor([float(tile_size)]),
        )
    return cls[0]


def test_moozy_slide_encoder_is_built_from_the_package_checkpoint(moozy):
    slide, _, path = moozy
    encoder = load_slide_encoder("moozy-slide", weights=path)
    features, coords = _slide()
    out = encoder(features, coords, 224)
    assert out.embedding.shape == (768,) and out.embedding.dtype == torch.float32 and out.latents is None
    torch.testing.assert_close(out.embedding, _moozy_reference(slide, features, coords, 224), rtol=1e-5, atol=1e-5)
    # the output depends on the features, on the tile layout (2-D ALiBi) and on the tile size
    assert not torch.allclose(encoder(features.flip(0), coords, 224).embedding, out.embedding)
    shuffled = coords[np.random.default_rng(0).permutation(len(coords))]  # same grid, tiles moved around
    assert not torch.allclose(encoder(features, shuffled, 224).embedding, out.embedding)
    assert not torch.allclose(encoder(features, coords, 448).embedding, out.embedding)
    # a folder holding moozy.pt works too, and lineage records the file and its sha256
    folder_encoder = load_slide_encoder("moozy-slide", weights=path.parent)
    torch.testing.assert_close(folder_encoder(features, coords, 224).embedding, out.embedding)
    assert encoder.weights_origin == str(path)
    assert encoder.weights_sha256() == hashlib.sha256(path.read_bytes()).hexdigest()
    assert encoder.lineage()["weights_sha256"] == encoder.weights_sha256()


def test_moozy_slide_needs_coordinates_and_refuses_other_tile_features(moozy):
    encoder = load_slide_encoder("moozy-slide", weights=moozy[2])
    features, coords = _slide()
    with pytest.raises(ValueError, match="level-0 coordinates"):
        encoder(features)
    with pytest.raises(ValueError, match="tile_size_lv0"):
        encoder(features, coords)
    with pytest.raises(ValueError, match=r"shape \(12, 2\)"):
        encoder(features, coords[:5], 224)
    with pytest.raises(EncoderConfigError, match="384-d tile features from 'lunit'"):
        encoder(torch.randn(12, 1536), coords, 224)
    with pytest.raises(ValueError, match="zero tiles"):
        encoder(torch.zeros(0, 384), np.zeros((0, 2), dtype=np.int64), 224)


def test_moozy_patient_encoder_runs_the_case_transformer(moozy):
    slide, case, path = moozy
    patient = load_patient_encoder("moozy", weights=path)
    slides = torch.randn(3, 768, generator=torch.Generator().manual_seed(1))
    out = patient(slides)
    assert out.shape == (768,) and out.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(out, case(slides), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(patient(slides[:2]), out)
    with pytest.raises(EncoderConfigError, match="768-d slide embeddings from 'moozy-slide'"):
        patient(torch.randn(2, 384))
    # the slide encoder that makes its input comes from the same checkpoint
    features, coords = _slide(seed=4)
    assert patient.slide_encoder is not None and patient.slide_encoder.name == "moozy-slide"
    torch.testing.assert_close(
        patient.slide_encoder(features, coords, 224).embedding,
        _moozy_reference(slide, features, coords, 224),
        rtol=1e-5,
        atol=1e-5,
    )


def test_moozy_checkpoints_that_do_not_fit_are_refused(tmp_path):
    narrow, case = tiny_moozy_modules(feat_dim=192)
    with pytest.raises(EncoderWeightsError, match="maps 192-d tile features to 768-d"):
        load_slide_encoder("moozy-slide", weights=write_moozy_checkpoint(tmp_path / "a" / "moozy.pt", narrow, case))
    slide, _ = tiny_moozy_modules()
    stage1 = write_moozy_checkpoint(tmp_path / "b" / "moozy.pt", slide, None)
    load_slide_encoder("moozy-slide", weights=stage1)  # a stage-1 export still has the slide encoder
    with pytest.raises(EncoderWeightsError, match="no case transformer"):
        load_patient_encoder("moozy", weights=stage1)
    payload = torch.load(stage1, weights_only=True)
    payload["teacher_slide_encoder"].pop("norm.weight")
    torch.save(payload, tmp_path / "c.pt")
    with pytest.raises(EncoderWeightsError, match="does not fit moozy-slide's architecture"):
        load_slide_encoder("moozy-slide", weights=tmp_path / "c.pt")
    torch.save({"model": {}}, tmp_path / "d.pt")
    with pytest.raises(EncoderWeightsError, match="not a MOOZY checkpoint"):
        load_slide_encoder("moozy-slide", weights=tmp_path / "d.pt")


def test_missing_moozy_weights_say_what_to_download_and_which_key(tmp_path, monkeypatch):
    offline_hub(monkeypatch, tmp_path / "empty-hub")
    with pytest.raises(EncoderWeightsError) as info:
        load_slide_encoder("moozy-slide")
    message = str(info.value)
    assert "AtlasAnalyticsLab/MOOZY" in message and "HF_HUB_OFFLINE" in message
    assert "hf download AtlasAnalyticsLab/MOOZY moozy.pt --local-dir /models/moozy-slide" in message
    assert "model.slide_weights: /models/moozy-slide/moozy.pt" in message
    with pytest.raises(EncoderWeightsError, match="does not exist"):
        load_patient_encoder("moozy", weights=tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EncoderWeightsError, match=r"holds no moozy\.pt"):
        load_patient_encoder("moozy", weights=tmp_path / "empty")


def test_moozy_loads_offline_from_the_hub_cache(moozy, tmp_path, monkeypatch):
    fill_hub_cache(tmp_path / "hub", "AtlasAnalyticsLab/MOOZY", moozy[2].parent)
    offline_hub(monkeypatch, tmp_path / "hub")
    encoder = load_patient_encoder("moozy")
    assert encoder.weights_origin == "hf://AtlasAnalyticsLab/MOOZY/moozy.pt"
    assert encoder.slide_encoder.weights_origin == encoder.weights_origin
    assert encoder(torch.randn(2, 768)).shape == (768,)


def test_missing_moozy_package_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "moozy" else real(name, *a))
    with pytest.raises(EncoderDependencyError, match=r"pip install --no-deps moozy==0\.1\.1"):
        load_slide_encoder("moozy-slide", weights="/models/moozy")


# --------------------------------------------------------------------------- remote code (fake repository)


def test_remote_code_needs_an_explicit_opt_in_and_a_pinned_commit(tmp_path):
    for kwargs, problem in (
        ({}, "model.trust_remote_code is not true; model.revision is not set"),
        ({"trust_remote_code": True}, "model.revision is not set"),
        ({"revision": TITAN_REVISION}, "model.trust_remote_code is not true"),
        ({"trust_remote_code": True, "revision": "main"}, "'main' is not a full 40-character commit hash"),
    ):
        with pytest.raises(EncoderConfigError) as info:
            load_slide_encoder("titan", weights=tmp_path / "not-even-there", **kwargs)
        message = str(info.value)
        assert problem in message
        assert "model.trust_remote_code: true" in message and "model.revision: <40-character commit" in message
        assert "MahmoodLab/TITAN" in message and TITAN_REVISION in message  # slide2vec's tested commit


def _fake(tmp_path, name, **kwargs):
    folder = tmp_path / name
    return folder, write_fake_remote_repo(folder, **kwargs)


def test_prism_runs_through_its_remote_code(tmp_path):
    folder, tensors = _fake(tmp_path, "prism", in_dim=2560, out_dim=1280, num_latents=512)
    encoder = load_slide_encoder("prism", weights=folder, trust_remote_code=True, revision=FAKE_REVISION)
    features, coords = _slide(n=20, dim=2560)
    out = encoder(features.half(), coords, 224)
    assert out.embedding.shape == (1280,) and out.latents.shape == (512, 1280)
    assert out.embedding.dtype == out.latents.dtype == torch.float32
    embedding, latents = fake_reference("prism", tensors, features.half().float())
    torch.testing.assert_close(out.embedding.double(), embedding, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.latents.double(), latents, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(encoder(features[:10]).embedding, out.embedding)  # coordinates are optional
    assert encoder.revision == FAKE_REVISION and encoder.weights_origin == str(folder)
    assert len(encoder.weights_sha256()) == 64


def test_titan_gets_features_level0_coordinates_and_tile_size(tmp_path):
    folder, tensors = _fake(tmp_path, "titan", in_dim=768, out_dim=768)
    encoder = load_slide_encoder(
        "titan", weights=folder, precision="fp32", trust_remote_code=True, revision=FAKE_REVISION
    )
    features, coords = _slide(n=16, dim=768)
    out = encoder(features, coords, 512)
    assert out.embedding.shape == (768,) and out.latents is None
    reference, _ = fake_reference("titan", tensors, features, torch.as_tensor(coords), 512)
    torch.testing.assert_close(out.embedding.double(), reference, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(encoder(features, coords, 1024).embedding, out.embedding)
    assert not torch.allclose(encoder(features, coords[::-1].copy(), 512).embedding, out.embedding)
    with pytest.raises(ValueError, match="level-0 coordinates"):
        encoder(features)
    with pytest.raises(ValueError, match="zero tiles"):
        encoder(torch.zeros(0, 768), np.zeros((0, 2), dtype=np.int64), 512)


def test_prism2_goes_through_its_processor(tmp_path):
    folder, tensors = _fake(tmp_path, "prism2", in_dim=1280, out_dim=2560, processor=True)
    encoder = load_slide_encoder("prism2", weights=folder, trust_remote_code=True, revision=FAKE_REVISION)
    assert [type(m).__name__ for m in encoder.modules] == ["Linear"]  # only image_resampler goes to the device
    features, _ = _slide(n=9, dim=1280)
    out = encoder(features, None, None)
    assert out.embedding.shape == (2560,) and out.embedding.dtype == torch.float32
    reference, _ = fake_reference("prism2", tensors, features)
    torch.testing.assert_close(out.embedding.double(), reference, rtol=2e-2, atol=2e-2)  # bf16 autocast on CPU
    assert not torch.allclose(encoder(features[:4]).embedding, out.embedding)


def test_remote_outputs_of_the_wrong_shape_are_refused(tmp_path):
    folder, _ = _fake(tmp_path, "wrong", in_dim=768, out_dim=32)
    encoder = load_slide_encoder("titan", weights=folder, trust_remote_code=True, revision=FAKE_REVISION)
    features, coords = _slide(n=4, dim=768)
    with pytest.raises(EncoderConfigError, match=r"the registry says \(768,\)"):
        encoder(features, coords, 512)


def test_remote_code_refuses_missing_weights_and_other_commits(tmp_path):
    folder, _ = _fake(tmp_path, "no-weights", in_dim=768, out_dim=768, weights=False)
    with pytest.raises(EncoderWeightsError) as info:
        load_slide_encoder("titan", weights=folder, trust_remote_code=True, revision=FAKE_REVISION)
    message = str(info.value)
    assert "model.slide_weights: /models/titan" in message
    assert f"hf download MahmoodLab/TITAN --revision {TITAN_REVISION} --local-dir /models/titan" in message
    # partial weights would leave random tensors: refused
    from safetensors.torch import load_file, save_file

    folder, _ = _fake(tmp_path, "partial", in_dim=768, out_dim=768)
    tensors = load_file(str(folder / "model.safetensors"))
    tensors.pop("queries")
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(EncoderWeightsError, match="would be random"):
        load_slide_encoder("titan", weights=folder, trust_remote_code=True, revision=FAKE_REVISION)
    # a local copy downloaded at another commit than the pinned one
    folder, _ = _fake(tmp_path, "other-commit", in_dim=768, out_dim=768)
    metadata = folder / ".cache" / "huggingface" / "download"
    metadata.mkdir(parents=True)
    (metadata / "config.json.metadata").write_text(f"{'0' * 40}\netag\n0\n")
    with pytest.raises(EncoderConfigError, match=f"at commit {'0' * 40}, but model.revision pins {FAKE_REVISION}"):
        load_slide_encoder("titan", weights=folder, trust_remote_code=True, revision=FAKE_REVISION)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EncoderWeightsError, match=r"no config\.json"):
        load_slide_encoder("titan", weights=tmp_path / "empty", trust_remote_code=True, revision=FAKE_REVISION)


def test_remote_code_loads_the_pinned_commit_offline_from_the_hub_cache(tmp_path, monkeypatch):
    folder, tensors = _fake(tmp_path, "titan-src", in_dim=768, out_dim=768)
    fill_hub_cache(tmp_path / "hub", "MahmoodLab/TITAN", folder)
    offline_hub(monkeypatch, tmp_path / "hub")
    encoder = load_slide_encoder("titan", precision="fp32", trust_remote_code=True, revision=FAKE_REVISION)
    assert encoder.weights_origin == f"hf://MahmoodLab/TITAN@{FAKE_REVISION}"
    features, coords = _slide(n=5, dim=768)
    reference, _ = fake_reference("titan", tensors, features, torch.as_tensor(coords), 224)
    torch.testing.assert_close(encoder(features, coords, 224).embedding.double(), reference, rtol=1e-4, atol=1e-6)
    assert encoder.weights_sha256() is not None
    with pytest.raises(EncoderWeightsError, match="--revision"):  # a commit the cache does not hold
        load_slide_encoder("titan", trust_remote_code=True, revision="f" * 40)


def test_remote_code_without_transformers_names_the_install(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "transformers" else real(name, *a)
    )
    with pytest.raises(EncoderDependencyError, match="einops"):
        load_slide_encoder("titan", weights=tmp_path, trust_remote_code=True, revision=FAKE_REVISION)


# --------------------------------------------------------------------------- not runnable here


def test_gigapath_slide_is_refused_with_the_reason():
    with pytest.raises(EncoderDependencyError) as info:
        load_slide_encoder("gigapath-slide", weights="/models/gigapath-slide")
    message = str(info.value)
    assert "cannot be run by this platform" in message and "flash attention" in message
    assert "github.com/prov-gigapath/prov-gigapath" in message and "torchscale" in message


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_encoders_run_on_cuda_and_agree_with_the_cpu(moozy, tmp_path):
    features, coords = _slide()
    cpu = load_slide_encoder("moozy-slide", weights=moozy[2])(features, coords, 224).embedding
    gpu = load_slide_encoder("moozy-slide", weights=moozy[2], device="cuda")(features, coords, 224).embedding
    assert gpu.device.type == "cpu"  # outputs come back to the CPU for the writers
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-3)
    patient = load_patient_encoder("moozy", weights=moozy[2], device="cuda")
    assert patient(torch.randn(2, 768)).shape == (768,)
    assert patient.slide_encoder(features, coords, 224).embedding.shape == (768,)
    folder, tensors = _fake(tmp_path, "titan", in_dim=768, out_dim=768)
    titan = load_slide_encoder("titan", weights=folder, device="cuda", trust_remote_code=True, revision=FAKE_REVISION)
    reference, _ = fake_reference("titan", tensors, features.repeat(1, 2), torch.as_tensor(coords), 224)
    torch.testing.assert_close(
        titan(features.repeat(1, 2), coords, 224).embedding.double(), reference, atol=1e-2, rtol=1e-2
    )
    folder, tensors = _fake(tmp_path, "prism2", in_dim=1280, out_dim=2560, processor=True)
    prism2 = load_slide_encoder("prism2", weights=folder, device="cuda", trust_remote_code=True, revision=FAKE_REVISION)
    wide = torch.randn(9, 1280)
    reference, _ = fake_reference("prism2", tensors, wide)
    torch.testing.assert_close(prism2(wide).embedding.double(), reference, atol=2e-2, rtol=2e-2)


def test_the_schedule_preflight_refuses_a_local_copy_of_another_commit_like_the_loader(tmp_path):
    """Otherwise the backfill would launch and every slide would fail at load with that error."""
    from slide2vec_dagster.encoders.preflight import check_slide_level

    folder, _ = _fake(tmp_path, "other-commit", in_dim=768, out_dim=768)
    assert check_slide_level("titan", folder, FAKE_REVISION) == str(folder)
    metadata = folder / ".cache" / "huggingface" / "download"
    metadata.mkdir(parents=True)
    (metadata / "config.json.metadata").write_text(f"{'0' * 40}\netag\n0\n")
    with pytest.raises(EncoderConfigError, match=f"at commit {'0' * 40}, but model.revision pins {FAKE_REVISION}"):
        check_slide_level("titan", folder, FAKE_REVISION)
