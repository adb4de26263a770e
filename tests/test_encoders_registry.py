"""Preset registry: required presets, card facts, offline architecture / dimension checks."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json

import pytest
import torch

from slide2vec_dagster.encoders import (
    EncoderConfigError,
    EncoderDependencyError,
    TimmBuild,
    UnknownEncoderError,
    all_specs,
    build_architecture,
    get_spec,
    list_encoders,
    load_encoder,
    register,
    unregister,
)
from tests.encoder_fixtures import tiny_spec

REQUIRED = {
    "lunit", "prost40m", "phikon", "phikonv2", "hibou-b", "hibou-l", "uni", "uni2", "virchow", "virchow2",
    "gigapath", "h-optimus-0", "h-optimus-1", "h0-mini", "midnight", "conch", "conchv15", "dinov2-vitb14",
    "gpfm", "mstar", "rudolfv2-s", "baseline-color-texture",
}  # fmt: skip

TIMM_CASES = [
    (spec.name, variant)
    for spec in all_specs()
    if isinstance(spec.build, TimmBuild)
    for variant in spec.output_variants
]
NON_TIMM = [spec.name for spec in all_specs() if spec.backend in {"transformers", "external"}]


def test_required_presets_are_registered():
    assert REQUIRED <= set(list_encoders())
    assert len(TIMM_CASES) >= 20 and len(list_encoders()) >= 30


def test_dimensions_from_the_cards():
    dims = {
        ("lunit", None): 384, ("prost40m", None): 384, ("phikon", None): 768, ("phikonv2", None): 1024,
        ("hibou-b", None): 768, ("hibou-l", None): 1024, ("uni", None): 1024, ("uni2", None): 1536,
        ("virchow", "cls"): 1280, ("virchow", None): 2560, ("virchow2", None): 2560, ("gigapath", None): 1536,
        ("h-optimus-0", None): 1536, ("h-optimus-0", "cls_patch_mean"): 3072, ("h0-mini", None): 1536,
        ("h0-mini", "cls"): 768, ("midnight", None): 3072, ("conch", None): 512, ("conchv15", None): 768,
        ("gpfm", None): 1024, ("mstar", None): 1024, ("rudolfv2-s", None): 768, ("rudolfv2-s", "cls"): 384,
        ("dinov2-vitb14", None): 768, ("musk", None): 2048,
    }  # fmt: skip
    assert {key: get_spec(key[0]).feature_dim(key[1]) for key in dims} == dims


def test_card_build_kwargs_are_recorded():
    uni = get_spec("uni").build
    assert isinstance(uni, TimmBuild)
    assert uni.hub_name == "hf-hub:MahmoodLab/uni"
    assert dict(uni.kwargs) == {"init_values": 1e-5, "dynamic_img_size": True}
    v2 = get_spec("virchow2").build
    assert isinstance(v2, TimmBuild)
    assert v2.kwargs["mlp_layer"].endswith("SwiGLUPacked") and v2.kwargs["act_layer"].endswith("SiLU")
    assert get_spec("gigapath").build.hub_name == "hf_hub:prov-gigapath/prov-gigapath"  # type: ignore[union-attr]
    h0 = get_spec("h-optimus-0")
    assert h0.build.kwargs == {"init_values": 1e-5, "dynamic_img_size": False}  # type: ignore[union-attr]
    assert h0.preprocessing.mean == (0.707223, 0.578729, 0.703617)
    assert get_spec("gigapath").tile_size_px == 256 and get_spec("gigapath").preprocessing.crop == 224
    assert get_spec("uni2").precision == "bf16" and get_spec("lunit").precision == "fp32"
    assert get_spec("virchow2").supported_spacings_um == (0.5, 1.0, 2.0)


@pytest.mark.parametrize("spec", all_specs(), ids=lambda s: s.name)
def test_every_spec_is_coherent(spec):
    assert spec.level == "tile" and spec.tile_size_px > 0
    assert spec.spacing_um in spec.supported_spacings_um
    assert spec.feature_dim() > 0 and spec.description
    if spec.backend == "baseline":
        assert spec.weights is None and "not a foundation model" in spec.description
    else:
        assert spec.weights is not None and "/" in spec.weights.repo_id and spec.weights.license
    size = spec.preprocessing.output_size or spec.tile_size_px
    tile = torch.zeros(2, spec.tile_size_px, spec.tile_size_px, 3, dtype=torch.uint8)
    from slide2vec_dagster.encoders import TileTransform

    assert TileTransform(spec.preprocessing)(tile).shape == (2, 3, size, size)
    json.dumps(spec.to_dict())  # manifests / fingerprints need plain JSON


@pytest.mark.parametrize(("name", "variant"), TIMM_CASES, ids=[f"{n}:{v}" for n, v in TIMM_CASES])
def test_timm_architecture_matches_registered_dim_on_meta(name, variant):
    spec = get_spec(name)
    size = spec.preprocessing.output_size or spec.tile_size_px
    with torch.device("meta"):
        model = build_architecture(spec, variant)
        out = model(torch.empty(2, 3, size, size))
    assert out.device.type == "meta"
    assert tuple(out.shape) == (2, spec.feature_dim(variant))


@pytest.mark.parametrize("name", NON_TIMM)
def test_non_timm_presets_name_their_missing_dependency(name, monkeypatch):
    spec = get_spec(name)
    assert spec.requires, f"{name} must declare what it needs"
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda mod, *a: None if mod in spec.requires else real_find_spec(mod, *a)
    )
    for call in (lambda: load_encoder(name), lambda: build_architecture(name)):
        with pytest.raises(EncoderDependencyError) as info:
            call()
        message = str(info.value)
        assert name in message and spec.requires[0] in message and "pip install" in message
        if spec.trust_remote_code:
            assert "trust_remote_code" in message


def test_external_presets_fail_clearly_even_with_the_package(monkeypatch):
    # conch installed or not, this platform does not run it: it must say so rather than build something else.
    real_find_spec = importlib.util.find_spec
    present = importlib.machinery.ModuleSpec("conch", None)
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda mod, *a: present if mod == "conch" else real_find_spec(mod, *a)
    )
    with pytest.raises(EncoderDependencyError, match="cannot be run by this platform"):
        load_encoder("conch")


def test_lookup_aliases_and_unknown_names():
    assert get_spec("Prov-GigaPath") is get_spec("gigapath")
    assert get_spec("hoptimus0") is get_spec("h-optimus-0")
    with pytest.raises(UnknownEncoderError, match=r"Available: .*uni2"):
        get_spec("not-a-model")
    with pytest.raises(UnknownEncoderError, match="cls_patch_mean"):
        get_spec("virchow").variant("nope")


def test_registration_is_one_call_and_rejects_duplicates():
    spec = tiny_spec("tiny-registry-test")
    register(spec)
    try:
        assert get_spec("tiny-registry-test") is spec
        with pytest.raises(EncoderConfigError, match="already registered"):
            register(tiny_spec("tiny-registry-test"))
        with pytest.raises(EncoderConfigError, match="already registered"):
            register(tiny_spec("UNI"))
    finally:
        unregister("tiny-registry-test")
    assert "tiny-registry-test" not in list_encoders()


def test_invalid_specs_are_rejected():
    import dataclasses

    with pytest.raises(EncoderConfigError, match="default_variant"):
        dataclasses.replace(tiny_spec(), default_variant="missing")
    with pytest.raises(EncoderConfigError, match="precision"):
        dataclasses.replace(tiny_spec(), precision="fp8")  # type: ignore[arg-type]
