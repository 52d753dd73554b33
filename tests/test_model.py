"""HybridNet: building, forward on any size, mixed stages and windows, timm interface, checkpoints."""

from __future__ import annotations

import argparse
import warnings

import pytest
import timm
import torch

import blocks
from blocks import HybridNet, ModelSpec, load_official_checkpoint
from blocks.conv import ConvBlock
from blocks.token_block import TokenBlock
from blocks.windows import in_windows
from hybridlab.errors import ConfigError, HybridlabError

TINY = dict(dim=8, in_dim=8, num_heads=[1, 2, 2, 4], window_size=[4, 4, 4, 2], num_classes=5)
TINY_PATTERN = "C | C M | M A | M[branch=gate] A"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny(pattern: str = TINY_PATTERN, **kw) -> HybridNet:
    return HybridNet(pattern, **{**TINY, **kw})


# -- building and forward -------------------------------------------------------------------------------
def test_forward_backward_any_input_size():
    model = tiny()
    x = torch.randn(2, 3, 200, 150)
    y = model(x)
    assert y.shape == (2, 5)
    y.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_layout_and_keys_follow_the_official_names():
    model = tiny()
    keys = list(model.state_dict())
    assert keys[0] == "patch_embed.conv_down.0.weight"
    assert "patch_embed.conv_down.4.running_var" in keys and "patch_embed.conv_down.2.weight" not in keys
    assert [k for k in keys if "downsample" in k] == [f"levels.{i}.downsample.reduction.0.weight" for i in range(3)]
    assert "levels.1.blocks.1.mixer.A_log" in keys and "levels.2.blocks.1.mixer.qkv.bias" in keys
    assert keys[-2:] == ["head.weight", "head.bias"]
    assert model.patch_embed.conv_down[1].eps == 1e-4 and model.norm.num_features == 64
    assert model.levels[3].downsample is None
    assert model.num_features == 64 and model.num_classes == 5


def test_forward_intermediates_strides_and_formats():
    model = tiny().eval()
    x = torch.randn(1, 3, 64, 64)
    final, feats = model.forward_intermediates(x)
    assert [tuple(f.shape) for f in feats] == [(1, 8, 16, 16), (1, 16, 8, 8), (1, 32, 4, 4), (1, 64, 2, 2)]
    torch.testing.assert_close(final, model.forward_features(x))
    last2 = model.forward_intermediates(x, indices=2, intermediates_only=True, output_fmt="NHWC")
    assert [tuple(f.shape) for f in last2] == [(1, 4, 4, 32), (1, 2, 2, 64)]
    torch.testing.assert_close(last2[0].permute(0, 3, 1, 2), feats[2])
    normed = model.forward_intermediates(x, indices=[-1], norm=True, intermediates_only=True)
    torch.testing.assert_close(normed[0], final)
    early = model.forward_intermediates(x, indices=[1], stop_early=True, intermediates_only=True)
    torch.testing.assert_close(early[0], feats[1])
    assert [f["reduction"] for f in model.feature_info] == [4, 8, 16, 32]


@pytest.mark.parametrize("stride,size", [(2, 16), (1, 32)])
def test_small_image_stem_strides(stride, size):
    model = tiny(stem_stride=stride).eval()
    feats = model.forward_multiscale(torch.randn(1, 3, 32, 32))
    assert [f.shape[-1] for f in feats] == [size, size // 2, size // 4, size // 8]
    assert [f["reduction"] for f in model.feature_info] == [stride * 2**i for i in range(4)]


def test_mixed_stage_segments_share_windows_and_compute_as_described():
    model = tiny("C M A[window=2] A[window=2] C M | A", num_heads=[2, 2], window_size=[4, 1]).eval()
    level = model.levels[0]
    assert level.segments == [(None, 0, 1), (4, 1, 2), (2, 2, 4), (None, 4, 5), (4, 5, 6)]
    assert isinstance(level.blocks[0], ConvBlock) and isinstance(level.blocks[1], TokenBlock)
    x = torch.randn(1, 8, 10, 9)  # not divisible by either window
    b = level.blocks
    want = b[0](x)
    want = in_windows(want, 4, b[1])
    want = in_windows(want, 2, lambda t: b[3](b[2](t)))
    want = in_windows(b[4](want), 4, b[5])
    torch.testing.assert_close(level.forward_blocks(x), want)


def test_drop_path_ramps_over_all_blocks():
    model = tiny("C*2 | C M | M A | A", drop_path_rate=0.3)
    blocks_ = [blk for level in model.levels for blk in level.blocks]
    probs = [getattr(blk.drop_path, "drop_prob", 0.0) for blk in blocks_]
    want = torch.linspace(0, 0.3, len(blocks_)).tolist()
    assert probs == pytest.approx(want)
    assert probs[0] == 0.0 and probs[1] > 0  # the second conv block already drops


def test_official_init():
    model = tiny()
    mixer = model.levels[1].blocks[1].mixer
    assert torch.count_nonzero(mixer.dt_proj.bias) == 0  # Mamba's dt init is overwritten, like officially
    fc1 = model.levels[3].blocks[1].mlp.fc1  # 16k weights: timm's trunc_normal_(std=.02) (cut at +-2 absolute)
    assert 0.019 < fc1.weight.std().item() < 0.021 and torch.count_nonzero(fc1.bias) == 0
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear):
            assert m.weight.std().item() < 0.03, name  # dt_proj included (Mamba's init would be ~0.7)
    assert torch.equal(model.norm.weight, torch.ones(64))
    assert torch.equal(model.levels[2].blocks[0].norm1.weight, torch.ones(32))
    torch.testing.assert_close(mixer.A_log[0], torch.log(torch.arange(1.0, 9.0)))


def test_meta_device_build_and_param_count():
    with torch.device("meta"):
        model = blocks.preset_spec("mambavision_t").build()
    assert all(p.is_meta for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == 31_794_248


def test_head_interface():
    model = tiny().eval()
    x = torch.randn(2, 3, 32, 32)
    feats = model.forward_features(x)
    pooled = model.forward_head(feats, pre_logits=True)
    assert pooled.shape == (2, 64)
    torch.testing.assert_close(model.forward_head(pooled), model(x))
    model.reset_classifier(0)
    assert model(x).shape == (2, 64) and isinstance(model.get_classifier(), torch.nn.Identity)
    model.reset_classifier(7)
    assert model(x).shape == (2, 7) and model.num_classes == 7
    assert tiny(num_classes=0)(x).shape == (2, 64)
    assert model.no_weight_decay_keywords() == {"rpb"}


def test_spec_build_and_overrides():
    spec = ModelSpec.create(TINY_PATTERN, **TINY)
    model = spec.build()
    assert model.spec == spec and model.pattern == spec.pattern
    changed = HybridNet(spec=spec, num_classes=3)
    assert changed.num_classes == 3 and changed.spec.dim == 8
    other = HybridNet("C | C | M | A", spec=spec)
    assert other.depths == (1, 1, 1, 1)


def test_settings_given_with_a_spec_override_it_even_at_their_defaults():
    """A setting equal to ModelSpec's default still overrides a spec that has another value."""
    spec = ModelSpec.create(TINY_PATTERN, **{**TINY, "dim": 16})
    assert spec.dim == 16 and ModelSpec.create(TINY_PATTERN).dim == 80
    assert HybridNet(spec=spec, dim=8).spec == spec.with_settings(dim=8)
    with torch.device("meta"):
        assert HybridNet(spec=spec, dim=80).spec.dim == 80  # 80 is ModelSpec's default: once silently dropped
    assert HybridNet(spec=spec, mlp_ratio=4.0, init="official").spec == spec  # defaults, and the spec's values
    assert HybridNet(spec=spec).spec is spec
    assert HybridNet(spec=spec, dim=None).spec is spec  # None: not given
    scaled = HybridNet(spec=spec.with_settings(layer_scale=1e-5), layer_scale=None)
    assert scaled.spec.layer_scale is None  # None is a value for layer_scale
    with pytest.raises(ConfigError, match="^dim: expected an integer"):
        HybridNet(spec=spec, dim="wide")


def test_official_style_constructor_arguments():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = HybridNet(depths=[1, 3, 8, 4], dim=16, in_dim=8, num_heads=[2, 2, 2, 2], resolution=224)
    assert model.pattern == "C | C*3 | M*4 A*4 | M*2 A*2"
    with pytest.warns(UserWarning, match="drop_paht"):
        tiny(drop_paht=0.1)
    with pytest.raises(ConfigError, match="do not match"):
        HybridNet("C | M", depths=[2, 2], num_heads=1, window_size=2)


def test_timm_hybrid_model_from_kwargs():
    model = timm.create_model("hybrid", pattern=TINY_PATTERN, **TINY).eval()
    assert isinstance(model, HybridNet) and model.pattern == blocks.canonical(TINY_PATTERN)
    assert model.pretrained_cfg["architecture"] == "hybrid"
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    feats = timm.create_model("hybrid", pattern=TINY_PATTERN, features_only=True, out_indices=(1, 3), **TINY).eval()
    assert [f.shape[1] for f in feats(torch.randn(1, 3, 64, 64))] == [16, 64]


def test_table4_variants_build_and_train_step():
    pattern = "C | M[conv=causal,branch=none] M[branch=none] | M[branch=gate] M | A"
    model = tiny(pattern)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = torch.nn.functional.cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.tensor([0, 1]))
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert model.levels[1].blocks[0].mixer.conv == "causal"
    assert not hasattr(model.levels[1].blocks[0].mixer, "conv1d_z")


# -- checkpoints -----------------------------------------------------------------------------------------
def _fresh_pair():
    torch.manual_seed(1)
    src = tiny().eval()
    torch.manual_seed(2)
    dst = tiny().eval()
    return src, dst


def test_checkpoint_round_trip_through_file(tmp_path):
    src, dst = _fresh_pair()
    path = tmp_path / "ck.pth.tar"
    torch.save({"state_dict": src.state_dict(), "epoch": 3, "args": argparse.Namespace(lr=0.1)}, path)
    result = load_official_checkpoint(dst, path)
    assert result.ok
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(dst(x), src(x))


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"model": sd},
        lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
        lambda sd: {f"model.{k}": v for k, v in sd.items()},  # Hugging Face wrapper
        lambda sd: {f"module.model.{k}": v for k, v in sd.items()},
        lambda sd: {"state_dict": {}, "state_dict_ema": sd},
    ],
)
def test_checkpoint_wrappers_and_prefixes(wrap):
    src, dst = _fresh_pair()
    ckpt = wrap(src.state_dict())
    load_official_checkpoint(dst, ckpt, use_ema="state_dict_ema" in ckpt)
    for (k, a), b in zip(src.state_dict().items(), dst.state_dict().values()):
        assert torch.equal(a, b), k


def test_checkpoint_errors_are_one_line(tmp_path):
    src, dst = _fresh_pair()
    with pytest.raises(HybridlabError, match="checkpoint not found") as err:
        load_official_checkpoint(dst, tmp_path / "nope.pth")
    assert "\n" not in str(err.value)
    sd = dict(src.state_dict())
    sd.pop("head.bias")
    sd["levels.0.blocks.0.gamma"] = torch.ones(8)
    sd["head.weight"] = torch.zeros(9, 64)
    with pytest.raises(HybridlabError) as err:
        load_official_checkpoint(dst, sd)
    msg = str(err.value)
    assert "\n" not in msg
    assert "1 missing (head.bias)" in msg and "levels.0.blocks.0.gamma" in msg
    assert "head.weight: checkpoint [9, 64] vs model [5, 64]" in msg
    before = dst.patch_embed.conv_down[0].weight.clone()
    result = load_official_checkpoint(dst, sd, strict=False)
    assert result.missing == ["head.bias"] and result.unexpected == ["levels.0.blocks.0.gamma"]
    assert torch.equal(dst.patch_embed.conv_down[0].weight, src.patch_embed.conv_down[0].weight)
    assert not torch.equal(before, dst.patch_embed.conv_down[0].weight)
    with pytest.raises(HybridlabError, match="no EMA weights"):
        load_official_checkpoint(dst, {"state_dict": sd}, use_ema=True)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(HybridlabError, match="cannot read checkpoint") as err:
        load_official_checkpoint(dst, bad)
    assert "\n" not in str(err.value)


def _official_tiny_state_dict() -> dict[str, torch.Tensor]:
    """Keys and shapes written from the official MambaVision layout for depths [1, 1, 2, 1], dim 8, in_dim 4.

    Stage 3 (C=32, h=16, R=2) is M then A; stage 4 (C=64, h=32, R=4) is one M; no gammas; no conv1d biases.
    """
    shapes: dict[str, tuple[int, ...]] = {}

    def bn(prefix, c):
        shapes.update({f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
                       f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()})  # fmt: skip

    shapes["patch_embed.conv_down.0.weight"] = (4, 3, 3, 3)
    bn("patch_embed.conv_down.1", 4)
    shapes["patch_embed.conv_down.3.weight"] = (8, 4, 3, 3)
    bn("patch_embed.conv_down.4", 8)
    for i, c in ((0, 8), (1, 16)):
        p = f"levels.{i}.blocks.0"
        shapes.update({f"{p}.conv1.weight": (c, c, 3, 3), f"{p}.conv1.bias": (c,)})
        bn(f"{p}.norm1", c)
        shapes.update({f"{p}.conv2.weight": (c, c, 3, 3), f"{p}.conv2.bias": (c,)})
        bn(f"{p}.norm2", c)
        shapes[f"levels.{i}.downsample.reduction.0.weight"] = (2 * c, c, 3, 3)

    def block_mlp(p, c):
        shapes.update({f"{p}.norm2.weight": (c,), f"{p}.norm2.bias": (c,), f"{p}.mlp.fc1.weight": (4 * c, c),
                       f"{p}.mlp.fc1.bias": (4 * c,), f"{p}.mlp.fc2.weight": (c, 4 * c), f"{p}.mlp.fc2.bias": (c,)})  # fmt: skip

    def mamba(p, c):
        h, r = c // 2, -(-c // 16)
        shapes.update({f"{p}.norm1.weight": (c,), f"{p}.norm1.bias": (c,)})
        shapes.update({f"{p}.mixer.A_log": (h, 8), f"{p}.mixer.D": (h,), f"{p}.mixer.in_proj.weight": (c, c),
                       f"{p}.mixer.x_proj.weight": (r + 16, h), f"{p}.mixer.dt_proj.weight": (h, r),
                       f"{p}.mixer.dt_proj.bias": (h,), f"{p}.mixer.out_proj.weight": (c, c),
                       f"{p}.mixer.conv1d_x.weight": (h, 1, 3), f"{p}.mixer.conv1d_z.weight": (h, 1, 3)})  # fmt: skip
        block_mlp(p, c)

    mamba("levels.2.blocks.0", 32)
    shapes.update({"levels.2.blocks.1.norm1.weight": (32,), "levels.2.blocks.1.norm1.bias": (32,)})
    shapes.update({"levels.2.blocks.1.mixer.qkv.weight": (96, 32), "levels.2.blocks.1.mixer.qkv.bias": (96,),
                   "levels.2.blocks.1.mixer.proj.weight": (32, 32), "levels.2.blocks.1.mixer.proj.bias": (32,)})  # fmt: skip
    block_mlp("levels.2.blocks.1", 32)
    shapes["levels.2.downsample.reduction.0.weight"] = (64, 32, 3, 3)
    mamba("levels.3.blocks.0", 64)
    bn("norm", 64)
    shapes.update({"head.weight": (1000, 64), "head.bias": (1000,)})
    g = torch.Generator().manual_seed(3)
    out = {}
    for k, s in shapes.items():
        if k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(7)
        elif k.endswith("running_var"):
            out[k] = torch.rand(s, generator=g) + 0.5
        else:
            out[k] = torch.randn(s, generator=g) * 0.1
    return out


def test_hand_written_official_state_dict_round_trip(tmp_path):
    official = _official_tiny_state_dict()
    model = HybridNet(depths=[1, 1, 2, 1], dim=8, in_dim=4, num_heads=[1, 1, 2, 4], window_size=[8, 8, 4, 2]).eval()
    assert model.pattern == "C | C | M A | M"
    load_official_checkpoint(model, {"model": {f"module.{k}": v for k, v in official.items()}})
    ours = model.state_dict()
    assert list(ours) == list(official)  # same keys, same order as the official module tree
    for k, v in official.items():
        assert torch.equal(ours[k], v), k
    path = tmp_path / "again.pth"
    torch.save(ours, path)
    again = HybridNet(depths=[1, 1, 2, 1], dim=8, in_dim=4, num_heads=[1, 1, 2, 4], window_size=[8, 8, 4, 2]).eval()
    load_official_checkpoint(again, path)
    x = torch.randn(1, 3, 40, 40)
    torch.testing.assert_close(again(x), model(x))


def test_grad_checkpointing_gives_the_same_gradients():
    model = tiny(drop_path_rate=0.0).eval()
    x = torch.randn(1, 3, 32, 32)
    model(x).sum().backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    for a, p in zip(plain, model.parameters()):
        torch.testing.assert_close(p.grad, a)


def test_layer_decay_groups_with_timm_optimizer():
    from timm.optim import create_optimizer_v2

    model = tiny()
    opt = create_optimizer_v2(model, opt="adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.8)
    scales = sorted({g["lr_scale"] for g in opt.param_groups})
    assert len(scales) > 4 and scales[-1] == 1.0  # stem lowest ... head/norm highest


def test_mlp_ratio_zero_gives_mixer_only_blocks():
    model = tiny("C | M | A | M", mlp_ratio=0)
    token_keys = [k for k in model.state_dict() if k.startswith(("levels.1.", "levels.2.", "levels.3."))]
    assert token_keys and not any(".mlp." in k or ".norm2." in k for k in token_keys)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)
