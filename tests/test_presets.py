"""MambaVision presets: exact official parameter counts, state-dict keys/shapes, pattern rule, timm names."""

from __future__ import annotations

import math

import pytest
import timm
import torch

from blocks import PRESETS, ModelSpec, official_pattern, preset_spec
from hybridlab.errors import ConfigError

# name: (depths, dim, in_dim, layer_scale, trainable params, state-dict keys), from the official code
OFFICIAL = {
    "mambavision_t": ((1, 3, 8, 4), 80, 32, None, 31_794_248, 252),
    "mambavision_t2": ((1, 3, 11, 4), 80, 32, None, 35_104_008, 298),
    "mambavision_s": ((3, 3, 7, 5), 96, 64, None, 50_140_584, 285),
    "mambavision_b": ((3, 3, 10, 5), 128, 64, 1e-5, 97_685_288, 356),
    "mambavision_l": ((3, 3, 10, 5), 196, 64, 1e-5, 227_961_048, 356),
    "mambavision_l2": ((3, 3, 12, 5), 196, 64, 1e-5, 241_554_824, 389),
    "mambavision_l3_256": ((3, 3, 20, 10), 256, 64, 1e-5, 739_570_472, 601),
    "mambavision_l3_512": ((3, 3, 20, 10), 256, 64, 1e-5, 739_570_472, 601),
}


def official_shapes(depths, dim, in_dim, layer_scale) -> dict[str, tuple[int, ...]]:
    """State-dict keys and shapes of the official MambaVision, in module order (as in the released checkpoints)."""
    out: dict[str, tuple[int, ...]] = {}

    def bn(p, c):
        for s in ("weight", "bias", "running_mean", "running_var"):
            out[f"{p}.{s}"] = (c,)
        out[f"{p}.num_batches_tracked"] = ()

    out["patch_embed.conv_down.0.weight"] = (in_dim, 3, 3, 3)
    bn("patch_embed.conv_down.1", in_dim)
    out["patch_embed.conv_down.3.weight"] = (dim, in_dim, 3, 3)
    bn("patch_embed.conv_down.4", dim)
    for i, n in enumerate(depths):
        c = dim * 2**i
        attention = range(n // 2 + 1, n) if n % 2 else range(n // 2, n)  # the official L688 rule
        for j in range(n):
            p = f"levels.{i}.blocks.{j}"
            if i < 2:
                out.update({f"{p}.conv1.weight": (c, c, 3, 3), f"{p}.conv1.bias": (c,)})
                bn(f"{p}.norm1", c)
                out.update({f"{p}.conv2.weight": (c, c, 3, 3), f"{p}.conv2.bias": (c,)})
                bn(f"{p}.norm2", c)
                continue
            if layer_scale is not None:
                out.update({f"{p}.gamma_1": (c,), f"{p}.gamma_2": (c,)})
            out.update({f"{p}.norm1.weight": (c,), f"{p}.norm1.bias": (c,)})
            if j in attention:
                out.update({f"{p}.mixer.qkv.weight": (3 * c, c), f"{p}.mixer.qkv.bias": (3 * c,),
                            f"{p}.mixer.proj.weight": (c, c), f"{p}.mixer.proj.bias": (c,)})  # fmt: skip
            else:
                h, r = c // 2, math.ceil(c / 16)
                out.update({f"{p}.mixer.A_log": (h, 8), f"{p}.mixer.D": (h,), f"{p}.mixer.in_proj.weight": (c, c),
                            f"{p}.mixer.x_proj.weight": (r + 16, h), f"{p}.mixer.dt_proj.weight": (h, r),
                            f"{p}.mixer.dt_proj.bias": (h,), f"{p}.mixer.out_proj.weight": (c, c),
                            f"{p}.mixer.conv1d_x.weight": (h, 1, 3), f"{p}.mixer.conv1d_z.weight": (h, 1, 3)})  # fmt: skip
            out.update({f"{p}.norm2.weight": (c,), f"{p}.norm2.bias": (c,), f"{p}.mlp.fc1.weight": (4 * c, c),
                        f"{p}.mlp.fc1.bias": (4 * c,), f"{p}.mlp.fc2.weight": (c, 4 * c), f"{p}.mlp.fc2.bias": (c,)})  # fmt: skip
        if i < len(depths) - 1:
            out[f"levels.{i}.downsample.reduction.0.weight"] = (2 * c, c, 3, 3)
    c = dim * 2 ** (len(depths) - 1)
    bn("norm", c)
    out.update({"head.weight": (1000, c), "head.bias": (1000,)})
    return out


@pytest.mark.parametrize("name", list(OFFICIAL))
def test_preset_matches_official_params_keys_and_shapes(name):
    depths, dim, in_dim, layer_scale, params, nkeys = OFFICIAL[name]
    with torch.device("meta"):
        model = preset_spec(name).build()
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == params
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    want = official_shapes(depths, dim, in_dim, layer_scale)
    assert len(ours) == len(want) == nkeys
    assert list(ours) == list(want)
    assert ours == want


def test_preset_settings_are_the_official_ones():
    assert set(PRESETS) == set(OFFICIAL)
    for name, (depths, dim, in_dim, layer_scale, _, _) in OFFICIAL.items():
        spec = preset_spec(name)
        assert (spec.depths, spec.dim, spec.in_dim, spec.layer_scale, spec.layer_scale_conv) == (
            depths, dim, in_dim, layer_scale, None
        )  # fmt: skip
        assert spec.mlp_ratio == 4.0
        large = name.startswith("mambavision_l")
        assert spec.num_heads == ((4, 8, 16, 32) if large else (2, 4, 8, 16))
    assert preset_spec("mambavision_t").drop_path_rate == 0.2
    assert preset_spec("mambavision_b").drop_path_rate == 0.3
    assert preset_spec("mambavision_l3_256").drop_path_rate == 0.5
    assert preset_spec("mambavision_t").window_size == (8, 8, 14, 7)
    assert preset_spec("mambavision_l3_256").window_size == (8, 8, 16, 8)
    assert preset_spec("mambavision_l3_512").window_size == (8, 8, 32, 16)


def test_official_pattern_rule():
    assert official_pattern([1, 3, 8, 4]) == "C | C*3 | M*4 A*4 | M*2 A*2"
    assert PRESETS["mambavision_t"]["pattern"] == "C | C*3 | M*4 A*4 | M*2 A*2"
    assert PRESETS["mambavision_s"]["pattern"] == "C*3 | C*3 | M*4 A*3 | M*3 A*2"  # odd N: ceil(N/2) mixers
    assert PRESETS["mambavision_t2"]["pattern"] == "C | C*3 | M*6 A*5 | M*2 A*2"
    assert official_pattern([1, 1, 1, 1]) == "C | C | M | M"
    assert official_pattern([2, 2, 3]) == "C*2 | C*2 | M*2 A"


def test_preset_overrides_and_other_patterns():
    spec = preset_spec("mambavision_t", num_classes=10, drop_path_rate=0.1)
    assert isinstance(spec, ModelSpec) and spec.num_classes == 10 and spec.dim == 80
    alt = preset_spec("mambavision_t", pattern="C | C*3 | (A M)*4 | M*2 A*2")
    assert alt.depths == (1, 3, 8, 4) and alt.parsed.symbols()[2] == "AMAMAMAM"
    with pytest.raises(ConfigError) as err:
        preset_spec("mambavision_t", pattern="C | C*3 | M*2 A*2 | M*2 A*2")
    assert "\n" not in str(err.value) and "depths [1, 3, 4, 4]" in str(err.value)
    with pytest.raises(ConfigError, match="unknown preset"):
        preset_spec("mambavision_xl")


def test_timm_presets_accept_same_depth_patterns_only():
    assert set(PRESETS) <= set(timm.list_models("mambavision_*"))
    with torch.device("meta"):
        model = timm.create_model("mambavision_t", pattern="C | C*3 | (A M)*4 | M*2 A*2")
        assert sum(p.numel() for p in model.parameters()) == 31_794_248  # iso-parameter (Table 5)
        assert model.pretrained_cfg["crop_pct"] == 1.0 and model.pretrained_cfg["architecture"] == "mambavision_t"
        with pytest.raises(ConfigError, match="has depths"):
            timm.create_model("mambavision_t", pattern="C | C | M | A")
        l3 = timm.create_model("mambavision_l3_512", num_classes=0)
        generic = timm.create_model(
            "hybrid", pattern="C | C*3 | M*4 A*4 | M*2 A*2", dim=80, in_dim=32, num_heads=[2, 4, 8, 16],
            window_size=[8, 8, 14, 7], mlp_ratio=4, drop_path_rate=0.2, layer_scale=None, layer_scale_conv=None,
            num_classes=1000, in_chans=3,
        )  # fmt: skip
        assert sum(p.numel() for p in generic.parameters()) == 31_794_248
    assert l3.pretrained_cfg["input_size"] == (3, 512, 512) and l3.num_features == 2048


def test_tiny_preset_forward_at_its_resolution():
    """The T preset's real forward (small batch) at 224 gives one global window in stages 3 and 4."""
    torch.manual_seed(0)
    model = timm.create_model("mambavision_t", num_classes=3).eval()
    with torch.no_grad():
        feats = model.forward_intermediates(torch.randn(1, 3, 224, 224), intermediates_only=True)
    assert [tuple(f.shape[1:]) for f in feats] == [(80, 56, 56), (160, 28, 28), (320, 14, 14), (640, 7, 7)]
    assert [lvl.segments for lvl in model.levels[2:]] == [[(14, 0, 8)], [(7, 0, 4)]]
