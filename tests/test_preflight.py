"""Pre-flight size check: giant specs are refused from an estimate, before any memory is allocated."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from blocks import ModelSpec, preset_spec
from blocks.preflight import available_bytes, check_fits, estimate, format_bytes
from hybridlab.errors import ConfigError

GiB = 1 << 30


def _counted(spec: ModelSpec) -> tuple[int, int, list[int]]:
    """Trainable parameters, buffers and per-stage parameters of the model itself (built on meta)."""
    with torch.device("meta"):
        model = spec.build()
    stages = [0] * len(model.levels)
    for name, p in model.named_parameters():
        if name.startswith("levels."):
            stages[int(name.split(".")[1])] += p.numel()
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return params, sum(b.numel() for b in model.buffers()), stages


@pytest.mark.parametrize("settings", [{}, {"layer_scale": 1e-5, "layer_scale_conv": 1e-5, "num_classes": 0}])
def test_parameter_estimate_is_exact(settings: dict) -> None:
    pattern = "C M[branch=none,expand=2] | A[qkv_bias=false,window=3] C M[d_state=4]"
    spec = ModelSpec.create(pattern, dims=[32, 64], num_heads=2, window_size=4, stem_stride=2, **settings)
    footprint = estimate(spec, 64, 2)
    assert (footprint.params, footprint.buffers, list(footprint.stage_params)) == _counted(spec)
    assert footprint.param_bytes == 4 * (footprint.params + footprint.buffers)


def test_normal_preset_passes() -> None:
    spec = preset_spec("mambavision_t")
    footprint = check_fits(spec, 224, 1, budget_bytes=2 * GiB)
    assert footprint.params == _counted(spec)[0] == 31_794_248  # MambaVision-T's published count
    assert 100 * (1 << 20) < footprint.total() < 2 * GiB


def test_giant_depth_is_refused_with_the_estimate() -> None:
    spec = ModelSpec.create("C | M*1000 | M*1000 | M*1000")
    with pytest.raises(ConfigError) as info:
        check_fits(spec, 224, 128, budget_bytes=8 * GiB)
    message = str(info.value)
    assert message.startswith("model: 'C | M*1000 | M*1000 | M*1000' would need about 21.7 GiB for inference")
    assert "weights 20.3 GiB" in message and "but 8.0 GiB is the budget" in message
    assert "\n" not in message


def test_window_padding_is_counted() -> None:
    """A 4096 window pads stage 3's 14x14 map to 4096x4096 tokens of width 320 (times 4 for the MLP)."""
    spec = ModelSpec.create("C | C*3 | M*4 A[window=4096]*4 | M*2 A*2")
    footprint = estimate(spec, 224, 1)
    assert footprint.largest_activation_bytes == 4096 * 4096 * 320 * 4 * 4
    with pytest.raises(ConfigError, match=r"largest activation 80\.0 GiB\)"):
        check_fits(spec, 224, 1, budget_bytes=16 * GiB)


def test_training_needs_more_than_inference() -> None:
    footprint = estimate(preset_spec("mambavision_t"), 224, 32)
    assert footprint.total(training=True) > footprint.total() > footprint.param_bytes
    with pytest.raises(ConfigError, match="for training at 224 px, batch 32"):
        check_fits(preset_spec("mambavision_t"), 224, 32, budget_bytes=footprint.total() + 1, training=True)


def test_budget_defaults_to_mem_available(tmp_path, monkeypatch) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       1000000 kB\nMemFree:         5000 kB\nMemAvailable:    10240 kB\n")
    monkeypatch.setattr("blocks.preflight.MEMINFO", meminfo)
    assert available_bytes() == 10240 * 1024
    with pytest.raises(ConfigError, match=r"but 10\.0 MiB is available on cpu"):
        check_fits(preset_spec("mambavision_t"), 224, 1)
    monkeypatch.setattr("blocks.preflight.MEMINFO", tmp_path / "missing")
    assert available_bytes() is None
    check_fits(preset_spec("mambavision_t"), 224, 1)  # unknown budget: nothing is refused


def test_bad_sizes_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="at least 1"):
        estimate(preset_spec("mambavision_t"), 0, 1)


def test_format_bytes() -> None:
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(3 * GiB) == "3.0 GiB"


# --- `hybridlab show` ---------------------------------------------------------------------------------

def test_show_reports_the_estimate_and_the_stem_rounding(capsys) -> None:
    from hybridlab.cli import main as cli_main

    assert cli_main(["show", "mambavision_t", "--img-size", "30", "--batch-size", "4", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    spec = preset_spec("mambavision_t")
    assert [s["map"][0] for s in info["stages"]] == list(spec.feature_map_sides(30)) == [8, 4, 2, 1]
    footprint = estimate(spec, 30, 4)
    assert info["memory"]["inference_bytes"] == footprint.total()
    assert info["memory"]["training_bytes"] == footprint.total(training=True)
    assert info["params"] == footprint.params and [s["params"] for s in info["stages"]] == _counted(spec)[2]
    assert cli_main(["show", "C | A[window=4096]", "--num-heads", "2", "--window-size", "7"]) == 0
    out = capsys.readouterr().out
    assert "memory     about " in out and "largest activation" in out


@pytest.mark.subprocess
def test_show_parser_does_not_import_torch() -> None:
    code = (
        "import argparse, sys\n"
        "import hybridlab.commands.show as show\n"
        "show.add_parser(argparse.ArgumentParser().add_subparsers())\n"
        "print(sorted(m for m in ('torch', 'timm', 'blocks') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"


def test_show_names_each_block_and_what_its_scan_runs_here() -> None:
    """A scan mixer's implementation is printed, so a slow fallback (no C compiler) is never silent."""
    from blocks.scan.backends import describe_backend
    from blocks.spec import ModelSpec
    from hybridlab.commands.show import describe, render

    spec = ModelSpec.create("C | C | M Md | A", dim=16, in_dim=8, num_heads=[1, 1, 2, 4], window_size=[4, 4, 4, 2])
    info = describe(spec, 32)
    by_symbol = {b["symbol"]: b for b in info["blocks"]}
    assert sorted(by_symbol) == ["A", "C", "M", "Md"]
    assert by_symbol["M"]["runs"].startswith(f"selective scan {describe_backend('fast')}")
    assert by_symbol["Md"]["runs"] == "SSD chunked" and "runs" not in by_symbol["A"]
    assert "[on cpu: selective scan fast:" in render(info)
