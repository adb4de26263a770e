"""Weight loading: local HF folders, single files, the offline hub cache, and the missing-weights errors."""

from __future__ import annotations

import importlib.machinery
import sys
import types

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from slide2vec_dagster.encoders import (
    EncoderWeightsError,
    load_encoder,
    register,
    unregister,
)
from tests.encoder_fixtures import (
    TINY_DIM,
    TINY_REPO,
    fill_hf_cache,
    offline_hub,
    save_hf_folder,
    tiles,
    tiny_model,
    tiny_spec,
)


@pytest.fixture
def tiny():
    spec = register(tiny_spec())
    yield spec
    unregister(spec.name)


def _reference(model: nn.Module, encoder, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(encoder.transform(batch))


def test_local_hf_folder_reproduces_the_original_model(tiny, tmp_path):
    original = tiny_model(seed=1)
    folder = save_hf_folder(original, tmp_path / "tiny")
    encoder = load_encoder("tiny-test-vit", weights=folder)
    batch = tiles(4)
    features = encoder(batch)
    assert features.shape == (4, TINY_DIM) and features.dtype == torch.float32
    torch.testing.assert_close(features, _reference(original, encoder, batch), rtol=0, atol=1e-6)
    # a differently initialised model must not match: the weights really came from the folder
    assert not torch.allclose(features, _reference(tiny_model(seed=2), encoder, batch), atol=1e-3)
    assert encoder.feature_dim == TINY_DIM and encoder.input_size == 32 and str(folder) in encoder.weights_origin


def test_cls_patch_mean_variant_concatenates_cls_and_patch_tokens(tiny, tmp_path):
    original = tiny_model(seed=3)
    encoder = load_encoder("tiny-test-vit", weights=save_hf_folder(original, tmp_path / "t"), variant="cls_patch_mean")
    batch = tiles(3, seed=5)
    with torch.no_grad():
        tokens = original.forward_features(encoder.transform(batch))
    assert original.num_prefix_tokens == 3  # CLS + 2 registers, which the patch mean must skip
    expected = torch.cat([tokens[:, 0], tokens[:, 3:].mean(1)], dim=1)
    assert encoder.feature_dim == 2 * TINY_DIM
    torch.testing.assert_close(encoder(batch), expected, rtol=0, atol=1e-6)


def test_uint8_and_pretransformed_batches_agree(tiny, tmp_path):
    encoder = load_encoder("tiny-test-vit", weights=save_hf_folder(tiny_model(), tmp_path / "t"))
    batch = tiles(2, seed=9)
    torch.testing.assert_close(encoder(batch), encoder(encoder.transform(batch)))
    torch.testing.assert_close(encoder(torch.from_numpy(batch)), encoder(batch))


def test_single_weights_files_load_strictly(tiny, tmp_path):
    original = tiny_model(seed=4)
    batch = tiles(2, seed=1)
    safetensors_file = tmp_path / "weights.safetensors"
    save_file(original.state_dict(), str(safetensors_file))
    wrapped_file = tmp_path / "checkpoint.pth"  # training-style wrapper + DataParallel prefix
    torch.save({"state_dict": {f"module.{k}": v for k, v in original.state_dict().items()}, "epoch": 3}, wrapped_file)
    for weights in (safetensors_file, wrapped_file):
        encoder = load_encoder("tiny-test-vit", weights=weights)
        torch.testing.assert_close(encoder(batch), _reference(original, encoder, batch), rtol=0, atol=1e-6)


def test_folder_with_one_raw_checkpoint_is_accepted(tiny, tmp_path):
    original = tiny_model(seed=6)
    (tmp_path / "ckpt").mkdir()
    torch.save(original.state_dict(), tmp_path / "ckpt" / "pytorch_model.bin")
    encoder = load_encoder("tiny-test-vit", weights=tmp_path / "ckpt")
    batch = tiles(2)
    torch.testing.assert_close(encoder(batch), _reference(original, encoder, batch), rtol=0, atol=1e-6)


def test_a_checkpoint_for_another_architecture_is_refused(tiny, tmp_path):
    state = tiny_model().state_dict()
    state.pop("blocks.1.mlp.fc2.weight")
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(EncoderWeightsError, match=r"missing \['blocks.1.mlp.fc2.weight'\].*extra.weight"):
        load_encoder("tiny-test-vit", weights=tmp_path / "bad.safetensors")
    resized = {k: v[..., :-1] if k == "norm.weight" else v for k, v in tiny_model().state_dict().items()}
    save_file(resized, str(tmp_path / "shape.safetensors"))
    with pytest.raises(EncoderWeightsError, match="does not match"):
        load_encoder("tiny-test-vit", weights=tmp_path / "shape.safetensors")


def test_hub_id_loads_offline_from_the_hf_cache(tiny, tmp_path, monkeypatch):
    original = tiny_model(seed=7)
    fill_hf_cache(tmp_path / "hub", original)
    offline_hub(monkeypatch, tmp_path / "hub")
    encoder = load_encoder("tiny-test-vit")  # weights=None -> hf-hub:test-org/tiny-vit
    batch = tiles(3, seed=2)
    torch.testing.assert_close(encoder(batch), _reference(original, encoder, batch), rtol=0, atol=1e-6)
    assert encoder.weights_origin == f"hf-hub:{TINY_REPO}"


def _assert_actionable(message: str, repo: str, target: str) -> None:
    assert repo in message
    assert f"huggingface-cli download {repo}" in message and "huggingface-cli login" in message
    assert f"model.weights: {target}" in message


def test_missing_hub_weights_say_what_to_download_and_which_key(tiny, tmp_path, monkeypatch):
    offline_hub(monkeypatch, tmp_path / "empty-hub")
    with pytest.raises(EncoderWeightsError) as info:
        load_encoder("tiny-test-vit")
    message = str(info.value)
    _assert_actionable(message, TINY_REPO, "/models/tiny-test-vit")
    assert "gated" in message and "accept its licence" in message and "HF_HUB_OFFLINE" in message


def test_missing_hub_weights_for_a_real_gated_preset(tmp_path, monkeypatch):
    offline_hub(monkeypatch, tmp_path / "empty-hub")
    with pytest.raises(EncoderWeightsError) as info:
        load_encoder("uni")
    _assert_actionable(str(info.value), "MahmoodLab/UNI", "/models/uni")
    assert "https://huggingface.co/MahmoodLab/UNI" in str(info.value)


def test_missing_raw_checkpoint_names_the_file(tmp_path, monkeypatch):
    offline_hub(monkeypatch, tmp_path / "empty-hub")
    with pytest.raises(EncoderWeightsError) as info:
        load_encoder("gpfm")
    message = str(info.value)
    assert "huggingface-cli download majiabo/GPFM GPFM.pth --local-dir /models/gpfm" in message
    assert "model.weights: /models/gpfm/GPFM.pth" in message


def test_bad_local_paths_are_explained(tiny, tmp_path):
    with pytest.raises(EncoderWeightsError, match="does not exist") as info:
        load_encoder("tiny-test-vit", weights=tmp_path / "nowhere")
    _assert_actionable(str(info.value), TINY_REPO, "/models/tiny-test-vit")
    folder = save_hf_folder(tiny_model(), tmp_path / "no-weights")
    (folder / "model.safetensors").unlink()
    with pytest.raises(EncoderWeightsError, match=r"config\.json but no model\.safetensors"):
        load_encoder("tiny-test-vit", weights=folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EncoderWeightsError, match=r"neither config\.json"):
        load_encoder("tiny-test-vit", weights=tmp_path / "empty")


def test_baseline_refuses_weights(tmp_path):
    from slide2vec_dagster.encoders import EncoderConfigError

    with pytest.raises(EncoderConfigError, match="weight-free"):
        load_encoder("baseline-color-texture", weights=tmp_path)


class _FakeHFOutput:
    def __init__(self, hidden: torch.Tensor) -> None:
        self.last_hidden_state = hidden
        self.pooler_output = hidden[:, 0] * 2


class _FakeHFBackbone(nn.Module):
    """Stands in for a transformers Dinov2Model: 1 CLS + 4 registers + 4 patch tokens of width 1536."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3, 1536)

    def forward(self, pixel_values: torch.Tensor) -> _FakeHFOutput:
        pooled = nn.functional.adaptive_avg_pool2d(pixel_values, 3).flatten(2).transpose(1, 2)  # (B, 9, 3)
        return _FakeHFOutput(self.proj(pooled))


def test_transformers_presets_are_wired_through_automodel(monkeypatch):
    calls: list[tuple[str, dict]] = []
    backbone = _FakeHFBackbone()

    def from_pretrained(source: str, **kwargs):
        calls.append((source, kwargs))
        return backbone

    fake = types.ModuleType("transformers")
    fake.__spec__ = importlib.machinery.ModuleSpec("transformers", None)
    fake.AutoModel = types.SimpleNamespace(from_pretrained=from_pretrained)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "transformers", fake)

    batch = tiles(2, size=224)
    midnight = load_encoder("midnight")  # cls + mean of patch tokens (prefix = 1 CLS for Midnight)
    x = midnight.transform(batch)
    hidden = backbone(x).last_hidden_state
    torch.testing.assert_close(midnight(batch), torch.cat([hidden[:, 0], hidden[:, 1:].mean(1)], dim=1))
    hibou = load_encoder("hibou-b", weights=None)
    assert calls[-1] == ("histai/hibou-b", {"trust_remote_code": True, "revision": None})
    assert calls[0][1]["trust_remote_code"] is False
    with pytest.raises(Exception, match="produced features of shape"):
        hibou(batch)  # the fake's pooler is 1536-d, the registry says 768: mismatches are caught
