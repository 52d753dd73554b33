"""Pretrained weights through timm: the presets name the official Hugging Face files; a local file (official
`.pth.tar` layout or a plain state dict) loads with `pretrained_cfg_overlay=dict(file=...)`; without network
the error is one line saying how to pass a file. No test touches the network."""

from __future__ import annotations

import argparse

import pytest
import timm
import torch

import blocks  # noqa: F401 - registers the presets with timm
from blocks.presets import HF_WEIGHTS, PRESETS
from hybridlab.errors import HybridlabError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """mambavision_t with seeded random weights, saved in the official layout and as a plain state dict."""
    torch.manual_seed(0)
    model = timm.create_model("mambavision_t")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    folder = tmp_path_factory.mktemp("weights")
    official = folder / "mambavision_tiny_1k.pth.tar"
    torch.save({"state_dict": state, "epoch": 309, "arch": "mamba_vision_T",
                "args": argparse.Namespace(lr=0.005, model="mamba_vision_T")}, official)
    plain = folder / "plain.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, plain)
    return state, official, plain


def _same(model: torch.nn.Module, state: dict[str, torch.Tensor], skip: str = "\0") -> None:
    own = model.state_dict()
    checked = [k for k in state if not k.startswith(skip)]
    assert len(checked) > 200
    for key in checked:
        assert torch.equal(own[key], state[key]), key


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_names_the_official_weights(name):
    cfg = timm.models.get_pretrained_cfg(name)
    assert cfg.hf_hub_id.startswith("nvidia/MambaVision-") and cfg.hf_hub_filename.endswith(".pth.tar")
    assert (cfg.hf_hub_id, cfg.hf_hub_filename) == HF_WEIGHTS[f"{name}.{cfg.tag}"]
    assert timm.models.get_pretrained_cfg("mambavision_t").hf_hub_id == "nvidia/MambaVision-T-1K"
    assert timm.models.get_pretrained_cfg("mambavision_b.in21k_ft_in1k").hf_hub_id == "nvidia/MambaVision-B-21K"


@pytest.mark.slow
def test_official_layout_file_loads_exactly(tiny):
    state, official, _ = tiny
    model = timm.create_model("mambavision_t", pretrained=True, pretrained_cfg_overlay=dict(file=str(official)))
    _same(model, state)
    assert "state_dict" not in model.pretrained_cfg and model.pretrained_cfg["file"] == str(official)


@pytest.mark.slow
def test_plain_state_dict_loads_and_a_new_class_count_replaces_the_head(tiny):
    state, _, plain = tiny
    model = timm.create_model("mambavision_t", pretrained=True, num_classes=10,
                              pretrained_cfg_overlay=dict(file=str(plain)))
    assert model.head.out_features == 10
    _same(model, state, skip="head.")


@pytest.mark.slow
def test_weights_that_do_not_fit_are_one_line(tiny, tmp_path):
    state, _, _ = tiny
    broken = dict(state)
    broken.pop("norm.weight")
    broken["head.bias"] = torch.zeros(7)
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(HybridlabError) as info:
        timm.create_model("mambavision_t", pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / "broken.pth")))
    message = str(info.value)
    assert "\n" not in message and "do not fit mambavision_t" in message
    assert "1 missing (norm.weight)" in message and "head.bias: checkpoint [7] vs model [1000]" in message
    with pytest.raises(HybridlabError, match="checkpoint not found: .*nowhere.pth"):
        timm.create_model("mambavision_t", pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / "nowhere.pth")))


def test_without_network_the_error_says_how_to_pass_a_file(monkeypatch):
    import huggingface_hub

    asked = []

    def offline(repo_id, filename, **_kwargs):
        asked.append((repo_id, filename))
        raise OSError("[Errno -2] Name or service not known.\nRetrying in 1s")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(HybridlabError) as info:
        timm.create_model("mambavision_t", pretrained=True)
    message = str(info.value)
    assert asked == [("nvidia/MambaVision-T-1K", "mambavision_tiny_1k.pth.tar")]
    assert "\n" not in message and "Name or service not known" in message
    assert "pretrained_cfg_overlay=dict(file='/path/to/mambavision_tiny_1k.pth.tar')" in message


def test_a_model_without_published_weights_asks_for_a_file():
    with pytest.raises(HybridlabError, match="hybrid has no published weights; pass a file"):
        timm.create_model("hybrid", pretrained=True, pattern="C | M", dim=16)
