"""Measurement records name the SSD path and the scan backend that ran, and every slow fallback among them."""

from __future__ import annotations

import json

import pytest
from torch import nn

import blocks.ssd_scan as ssd_scan
from blocks.mixer import MambaVisionMixer
from blocks.ssd import Mamba2Mixer
from hybridlab.measure import MeasureProfile, measure
from hybridlab.measure.env import collect_env, env_fingerprint, slow_paths, ssd_path

TINY = dict(device="cpu", batch_size=2, img_size=8, repeats=1, warmup_iters=0, warmup_s=0.0, window_s=0.0,
            iters=1, threads=1)  # fmt: skip


def _md(backend: str = "auto") -> Mamba2Mixer:
    return Mamba2Mixer(8, d_state=4, headdim=4, chunk=4, backend=backend)


def test_cpu_record_names_the_chunked_path_and_no_slow_path():
    env = collect_env("cpu", modules=_md().modules())
    assert env["ssd_path"] == "chunked"
    assert not any(line.startswith("SSD") for line in env["slow_paths"])
    json.dumps(env)


def test_models_without_ssd_record_none():
    env = collect_env("cpu", modules=MambaVisionMixer(8).modules())
    assert env["ssd_path"] is None
    assert ssd_path("cpu", [nn.Linear(2, 2)]) is None


def test_the_sequential_reference_is_recorded_as_slow():
    env = collect_env("cpu", modules=_md("sequential").modules())
    assert env["ssd_path"].startswith("sequential")
    assert [line for line in env["slow_paths"] if line.startswith("SSD")] == [f"SSD {env['ssd_path']}"]


def test_two_paths_in_one_model_are_both_named():
    mixers = [_md(), _md("sequential")]
    assert ssd_path("cpu", mixers) == "chunked+sequential (slow: the token-by-token reference)"


def test_cuda_without_mamba_ssm_is_a_named_fallback(monkeypatch):
    """The path is resolved from the device and mamba-ssm's presence, so no GPU is needed to check it."""
    monkeypatch.setattr(ssd_scan, "_mamba_kernel", lambda: None)
    path = ssd_path("cuda", [_md()])
    assert path == "chunked (fallback: mamba-ssm not installed)"
    assert slow_paths("cuda", [_md()], "mamba_ssm", path) == [f"SSD {path}"]
    monkeypatch.setattr(ssd_scan, "_mamba_kernel", lambda: object())
    assert ssd_path("cuda", [_md()]) == "mamba_ssm" and slow_paths("cuda", [_md()], "mamba_ssm", "mamba_ssm") == []
    assert ssd_path("cuda", [_md("chunked")]) == "chunked"  # asked for by name: not a fallback


@pytest.mark.parametrize(
    ("device", "scan", "expected"),
    [
        ("cpu", "fast:compiled", None),
        ("cpu", "fast:blocked", "no C compiler"),
        ("cpu", "fast:compiled+reference", "sequential reference"),
        ("cuda", "mamba_ssm", None),
        ("cuda", "fast:compiled", "without mamba-ssm"),
    ],
)
def test_scan_fallbacks_are_named_for_scan_models_only(device, scan, expected):
    lines = slow_paths(device, [MambaVisionMixer(8)], scan, None)
    if expected is None:
        assert lines == []
    else:
        assert len(lines) == 1 and expected in lines[0] and scan in lines[0]
    assert slow_paths(device, [nn.Conv2d(2, 2, 1)], scan, None) == []  # no scan mixer: nothing ran slowly


def test_a_mixer_built_on_the_reference_scan_says_so():
    env = collect_env("cpu", modules=MambaVisionMixer(8, scan_backend="reference").modules())
    assert "reference" in env["scan_backend"]
    assert any("sequential reference" in line for line in env["slow_paths"])


def test_fingerprint_ignores_the_paths():
    """Paths follow from the device and installed packages (already fingerprinted): caches stay valid."""
    env = collect_env("cpu")
    assert env_fingerprint(env) == env_fingerprint(dict(env, ssd_path="chunked", slow_paths=["SSD x"]))


def test_measured_record_carries_the_ssd_path():
    rec = measure("C | Md[d_state=4,headdim=4,chunk=4]", MeasureProfile(**TINY), figures=("compute", "throughput"),
                  dim=8, in_dim=8, num_heads=1, window_size=2, num_classes=3)  # fmt: skip
    assert rec.env["ssd_path"] == "chunked"
    assert rec.slow_paths == rec.env["slow_paths"]
    assert not any(line.startswith("SSD") for line in rec.slow_paths)
    assert rec.macs and rec.flops_breakdown["matmul"] > 0
