"""hybridlab.measure: exact compute counts, environment, cache, OOM back-off, timing method, bench CLI.

Everything runs on CPU with tiny models; timings here only check the method, never speed.
"""

from __future__ import annotations

import json
import os
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from blocks.scan import scan_flops, selective_scan
from hybridlab.cli import main as cli_main
from hybridlab.errors import ConfigError
from hybridlab.measure import (
    MeasureCache,
    MeasureError,
    MeasureProfile,
    MeasureRecord,
    cache_key_parts,
    collect_env,
    compare,
    count_compute,
    env_fingerprint,
    measure,
    ratios,
    resolve_model,
)
from hybridlab.measure.flops import count_compute_fresh, count_macs
from hybridlab.measure.timing import PeakMemory, median_iqr, time_windows, warm_up, with_oom_backoff

# A profile that takes every figure in well under a second on a tiny model.
TINY = dict(device="cpu", batch_size=4, img_size=8, repeats=2, warmup_iters=1, warmup_s=0.0, window_s=0.0, threads=1)
TINY_PATTERN = "C | M A"


class ConvLinearScan(nn.Module):
    """Conv2d (3->4, k3) on 8x8, tokens -> Linear(4->6) -> selective scan (D=6, N=2, with D) -> Linear(6->5)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.proj = nn.Linear(4, 6)
        self.A = nn.Parameter(-torch.ones(6, 2))
        self.D = nn.Parameter(torch.ones(6))
        self.head = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.proj(self.conv(x).flatten(2).transpose(1, 2))  # (B, 64, 6)
        u = t.transpose(1, 2).contiguous()  # (B, 6, 64)
        bc = torch.ones(u.shape[0], 2, u.shape[2], device=u.device)
        y = selective_scan(u, torch.sigmoid(u), self.A, bc, bc, self.D)
        return self.head(y.mean(-1))


class TinyAttention(nn.Module):
    """Linear qkv (4->12) on 16 tokens, 2 heads of 2, SDPA, Linear proj (4->4)."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(4, 12)
        self.proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.flatten(2).transpose(1, 2)  # (B, 16, 4) for a (B, 4, 4, 4) input
        b, n, c = tokens.shape
        q, k, v = self.qkv(tokens).reshape(b, n, 3, 2, 2).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)
        return self.proj(out).mean(1)


class OOMAbove(nn.Module):
    """Raises torch.OutOfMemoryError for batches larger than `limit` (simulates a too-large batch)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.fc = nn.Linear(3, 3)
        self.seen: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError(f"simulated: batch {x.shape[0]} > {self.limit}")
        return self.fc(x.mean((2, 3)))


# -- compute counts ------------------------------------------------------------------------------
@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_conv_linear_scan_counts_equal_hand_counts(device):
    torch.manual_seed(0)
    with torch.device(device):
        model = ConvLinearScan()
    counts = count_compute(model, 8, 3, device=device)
    conv = 4 * 8 * 8 * (3 * 3 * 3)  # output elements x (in_ch/groups * kh * kw)
    proj = 64 * 4 * 6
    head = 6 * 5
    assert counts.macs == conv + proj + head
    scan = scan_flops(batch=1, dim=6, length=64, state=2, with_D=True)
    assert scan == 9 * 64 * 6 * 2 + 6 * 64
    assert counts.breakdown["scan"] == scan
    assert counts.breakdown["conv"] == 2 * conv
    assert counts.breakdown["matmul"] == 2 * (proj + head)
    assert counts.flops == 2 * (conv + proj + head) + scan
    assert counts.params == sum(p.numel() for p in model.parameters())


def test_counts_are_per_image():
    model = ConvLinearScan()
    one = count_compute(model, 8, 3, batch=1, device="cpu")
    three = count_compute(model, 8, 3, batch=3, device="cpu")
    assert (one.macs, one.flops) == (three.macs, three.flops)


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_attention_flops_counted_on_cpu_and_meta(device):
    with torch.device(device):
        model = TinyAttention()
    counts = count_compute(model, 4, 4, device=device)
    linear = 16 * 4 * 12 + 16 * 4 * 4
    attention = 4 * 1 * 2 * 16 * 16 * 2  # 4 * B * heads * N * N * head_dim
    assert counts.attention_calls == 1
    assert counts.macs == linear  # the paper's MACs leave attention matmuls out
    assert counts.breakdown["attention"] == attention
    assert counts.breakdown["matmul"] == 2 * linear
    assert counts.flops == 2 * linear + attention


def test_fresh_count_on_meta_matches_real_model():
    real = count_compute(ConvLinearScan(), 8, 3, device="cpu")
    meta = count_compute_fresh(ConvLinearScan, 8, 3)
    assert meta.counted_on == "meta"
    assert (meta.macs, meta.flops, meta.params, meta.breakdown) == (real.macs, real.flops, real.params, real.breakdown)


def test_counting_works_inside_a_cuda_scan_context():
    """benchmarks/gpu_measure.py measures under scan_backend("mamba_ssm"); counting (on meta) must not
    try to run the CUDA kernel there."""
    from blocks.scan import scan_backend

    plain = count_compute_fresh(ConvLinearScan, 8, 3)
    with scan_backend("mamba_ssm"):
        inside = count_compute_fresh(ConvLinearScan, 8, 3)
    assert (inside.macs, inside.flops) == (plain.macs, plain.flops)


# MambaVision Table 1 compute column: Conv2d + Linear MACs at 224 px (the paper's "FLOPs", G).
TABLE1_GMACS = {
    "mambavision_t": 4.46,
    "mambavision_t2": 5.10,
    "mambavision_s": 7.48,
    "mambavision_b": 14.95,
    "mambavision_l": 34.84,
    "mambavision_l2": 37.50,
}


@pytest.mark.parametrize("name", list(TABLE1_GMACS))
def test_table1_macs_within_a_tenth_of_a_percent(name):
    """The README claims the presets reproduce Table 1's compute to 0.1%."""
    from blocks.presets import preset_spec

    with torch.device("meta"):  # no weights allocated: the largest preset costs nothing
        model = preset_spec(name).build()
    gmacs = count_macs(model, 224, 3, device="meta") / 1e9
    assert abs(gmacs - TABLE1_GMACS[name]) / TABLE1_GMACS[name] <= 0.001, gmacs


# -- environment ------------------------------------------------------------------------------------
ENV_KEYS = {
    "device", "device_name", "torch", "cuda", "driver", "cudnn", "cpu_model", "cpu_count", "threads",
    "precision", "tf32_matmul", "tf32_cudnn", "float32_matmul_precision", "channels_last", "compile",
    "scan_backend", "hybridlab", "timm", "python",
}  # fmt: skip


def test_environment_fields_present():
    env = collect_env("cpu", "amp-bf16", channels_last=True, compile_mode="max-autotune")
    assert ENV_KEYS <= set(env)
    assert env["device"] == "cpu" and env["precision"] == "amp-bf16"
    assert env["channels_last"] is True and env["compile"] == "max-autotune"
    assert env["torch"] == torch.__version__ and env["threads"] == torch.get_num_threads()
    assert env["scan_backend"] in ("fast:compiled", "fast:blocked", "reference")
    assert env["cpu_model"] and isinstance(env["cpu_count"], int) and len(env["load_avg"]) == 3
    json.dumps(env)  # everything is JSON-serialisable


def test_fingerprint_tracks_machine_not_run_settings():
    env = collect_env("cpu")
    assert env_fingerprint(env) == env_fingerprint(dict(env, precision="amp-fp16"))  # that is the profile's job
    assert env_fingerprint(env) != env_fingerprint(dict(env, threads=env["threads"] + 1))
    assert env_fingerprint(env) != env_fingerprint(dict(env, device_name="NVIDIA H200"))
    assert env_fingerprint(env) != env_fingerprint(dict(env, scan_backend="mamba_ssm"))


# -- profile ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "change, where",
    [
        (dict(precision="fp16"), "measure.precision"),
        (dict(device="tpu"), "measure.device"),
        (dict(batch_size=0), "measure.batch_size"),
        (dict(figures=("speed",)), "measure.figures"),
        (dict(compile="fastest"), "measure.compile"),
    ],
)
def test_bad_profile_is_one_config_error(change, where):
    with pytest.raises(ConfigError) as err:
        MeasureProfile(**change).validated()
    assert err.value.where == where and "\n" not in str(err.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_gpu_is_refused():
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        MeasureProfile(device="cuda").resolved()


def test_profile_round_trips_and_orders_figures():
    prof = MeasureProfile(figures=("train", "compute"), compile=True).validated()
    assert prof.figures == ("compute", "train") and prof.compile == "default"
    assert MeasureProfile.from_dict(prof.to_dict()) == prof


# -- measure() ------------------------------------------------------------------------------------
def test_measure_pattern_takes_every_figure():
    rec = measure(TINY_PATTERN, MeasureProfile(**TINY), dim=8, in_dim=8, num_heads=2, window_size=2, num_classes=3)
    assert rec.model == "C | M A" and rec.arch_id.startswith("spec:")
    assert rec.params and rec.macs and rec.flops > 2 * rec.macs  # FLOPs add attention, scan and conv1d
    assert rec.flops_breakdown["scan"] > 0 and rec.flops_breakdown["attention"] > 0
    assert rec.throughput_img_s > 0 and len(rec.throughput_runs) == 2 and rec.throughput_cpu_img_s > 0
    assert rec.throughput_lo <= rec.throughput_img_s <= rec.throughput_hi and rec.throughput_interval == "iqr"
    assert rec.latency_ms > 0 and rec.latency_iqr_ms >= 0 and rec.latency_samples >= 2
    assert rec.train_throughput_img_s > 0 and rec.train_batch_size == 4
    assert rec.peak_mem_mb is not None and rec.peak_mem_method.startswith("peak RSS growth")
    assert rec.oom_backoff == {} and rec.inference_batch_size == 4
    assert ENV_KEYS <= set(rec.env) and rec.env["threads"] == 1
    assert set(rec.timing) == {"inference", "latency", "train"}
    assert MeasureRecord.from_dict(json.loads(json.dumps(rec.to_dict()))) == rec


def test_measure_given_module_keeps_its_weights():
    torch.manual_seed(1)
    model = ConvLinearScan()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rec = measure(model, MeasureProfile(**TINY), figures=("compute", "train"))
    assert rec.train_throughput_img_s > 0 and rec.arch_id.startswith("module:ConvLinearScan")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_compare_gives_timm_baselines_the_same_head():
    import timm

    result = compare(TINY_PATTERN, ["resnet18"], MeasureProfile(**dict(TINY, figures=("compute",))),
                     dim=8, in_dim=8, num_heads=2, window_size=2, num_classes=3)  # fmt: skip
    (base,) = result.baselines
    with torch.device("meta"):
        want = sum(p.numel() for p in timm.create_model("resnet18", num_classes=3).parameters())
    assert base.model == "resnet18" and base.params == want
    assert result.ratios["resnet18"]["params"] == pytest.approx(result.record.params / want, rel=1e-3)


def test_unknown_model_name_is_one_line():
    with pytest.raises(ConfigError, match="unknown model 'resnet_does_not_exist'"):
        resolve_model("resnet_does_not_exist")


def test_ratios_are_candidate_over_baseline():
    a = MeasureRecord(model="a", throughput_img_s=200.0, latency_ms=5.0, params=10, macs=None)
    b = MeasureRecord(model="b", throughput_img_s=100.0, latency_ms=10.0, params=20, macs=4)
    r = ratios(a, b)
    assert r["throughput_img_s"] == 2.0 and r["latency_ms"] == 0.5 and r["params"] == 0.5 and r["macs"] is None


# -- out-of-memory back-off ------------------------------------------------------------------------
def test_oom_backoff_halves_batch_and_records_it():
    model = OOMAbove(limit=2)
    rec = measure(model, MeasureProfile(**dict(TINY, batch_size=8)), figures=("throughput", "train"))
    assert rec.oom_backoff == {"inference": [8, 2], "train": [8, 2]}
    assert rec.inference_batch_size == 2 and rec.train_batch_size == 2 and rec.batch_size == 8
    assert 8 in model.seen and 4 in model.seen
    assert rec.throughput_img_s > 0


def test_oom_at_batch_one_is_a_measure_error():
    with pytest.raises(MeasureError, match="out of memory at batch size 1"):
        measure(OOMAbove(limit=0), MeasureProfile(**TINY), figures=("latency",))


def test_backoff_passes_other_errors_through():
    def run(batch):
        raise ValueError("not memory")

    with pytest.raises(ValueError):
        with_oom_backoff(run, 8, torch.device("cpu"))


# -- timing method ---------------------------------------------------------------------------------
def test_warm_up_needs_both_iterations_and_time():
    calls = []
    n, elapsed, one = warm_up(lambda: calls.append(time.sleep(0.002)), torch.device("cpu"), min_iters=3, min_s=0.05)
    assert elapsed >= 0.05 and n == len(calls) and n >= 3 + 1
    calls.clear()
    n, _, _ = warm_up(lambda: calls.append(1), torch.device("cpu"), min_iters=7, min_s=0.0)
    assert n == 8  # 7 warm-up calls + 1 synchronised calibration call


def test_windows_and_per_call_samples():
    t = time_windows(lambda: time.sleep(0.001), torch.device("cpu"), repeats=3, warmup_iters=1, warmup_s=0.0,
                     window_s=0.0, iters=4, max_iters=10, per_call=True)  # fmt: skip
    assert t.iters == 4 and len(t.window_s) == 3 and len(t.samples_s) == 12
    assert all(s >= 0.001 for s in t.samples_s) and all(w >= 0.004 for w in t.window_s)
    assert t.rates(8) == [8 * 4 / w for w in t.window_s]


def test_median_iqr():
    assert median_iqr([1.0, 2.0, 3.0, 4.0, 100.0]) == (3.0, 2.0)
    assert median_iqr([5.0]) == (5.0, 0.0) and median_iqr([]) == (None, None)


def test_cpu_peak_memory_sees_a_large_allocation():
    with PeakMemory(torch.device("cpu"), interval_s=0.001) as mem:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        time.sleep(0.02)
        del block
    assert mem.peak_mb >= 56, mem.peak_mb


# -- cache -------------------------------------------------------------------------------------------
def test_cache_hit_miss_and_key_parts(tmp_path):
    cache = MeasureCache(tmp_path / "measure-cache")
    calls = []

    def fn():
        calls.append(1)
        return MeasureRecord(model="m", params=len(calls))

    key = {"arch": "spec:abc", "profile": MeasureProfile().to_dict(), "env": "fp1"}
    first = cache.get_or_measure(key, fn)
    second = cache.get_or_measure(key, fn)
    assert len(calls) == 1 and (cache.misses, cache.hits) == (1, 1)
    assert first.cached is False and second.cached is True and second.params == first.params == 1
    other_profile = dict(key, profile=MeasureProfile(batch_size=64).to_dict())
    other_env = dict(key, env="fp2")
    assert cache.get_or_measure(other_profile, fn).params == 2
    assert cache.get_or_measure(other_env, fn).params == 3
    assert len(cache) == 3 and not [p for p in os.listdir(cache.directory) if p.endswith(".tmp")]


def test_cache_ignores_damaged_files(tmp_path):
    cache = MeasureCache(tmp_path)
    key = {"arch": "x"}
    cache.put(key, {"a": 1})
    assert cache.get(key) == {"a": 1}
    cache.path(key).write_text("{ half a file")
    assert cache.get(key) is None
    assert cache.get_or_measure(key, lambda: {"a": 2}) == {"a": 2}


def test_measure_uses_cache_by_arch_profile_and_env(tmp_path):
    prof = MeasureProfile(**dict(TINY, figures=("compute",)))
    settings = dict(dim=8, in_dim=8, num_heads=2, window_size=2)
    a = measure(TINY_PATTERN, prof, cache=str(tmp_path), **settings)
    b = measure("C | (M A)", prof, cache=str(tmp_path), **settings)  # same canonical pattern
    c = measure(TINY_PATTERN, prof.replace(img_size=16), cache=str(tmp_path), **settings)
    assert (a.cached, b.cached, c.cached) == (False, True, False)
    assert b.macs == a.macs and c.macs > a.macs
    source = resolve_model(TINY_PATTERN, settings)
    env = collect_env("cpu")
    assert cache_key_parts(source, prof, env) != cache_key_parts(source, prof, dict(env, driver="570.1"))


# -- command line ----------------------------------------------------------------------------------
BENCH_FAST = ["--device", "cpu", "--batch-size", "2", "--img-size", "8", "--repeats", "1", "--warmup-iters", "0",
              "--warmup-s", "0", "--window-s", "0", "--threads", "1"]  # fmt: skip
MODEL_ARGS = ["--dim", "8", "--in-dim", "8", "--num-heads", "2", "--window-size", "2", "--num-classes", "3"]


def test_bench_cli_writes_json_with_baselines(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = cli_main(["bench", TINY_PATTERN, *BENCH_FAST, *MODEL_ARGS, "--vs", "C | A A,C | M[d_state=4] M", "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    for key in ("params", "macs", "flops", "throughput_img_s", "latency_ms", "train_throughput_img_s", "peak_mem_mb",
                "batch_size", "img_size", "env", "baselines", "ratios"):  # fmt: skip
        assert key in data, key
    assert data["batch_size"] == 2 and data["img_size"] == 8 and data["env"]["device"] == "cpu"
    assert [b["model"] for b in data["baselines"]] == ["C | A*2", "C | M[d_state=4] M"]
    assert set(data["ratios"]) == {"C | A*2", "C | M[d_state=4] M"}
    assert data["ratios"]["C | A*2"]["params"] == pytest.approx(data["params"] / data["baselines"][0]["params"], rel=1e-3)
    # throughput was timed side by side: one window per model per round, ratio = median of per-round ratios
    assert data["timing"]["inference"]["side_by_side"] is True and data["timing"]["inference"]["rounds"] == 1
    runs = [data["throughput_runs"][0] / b["throughput_runs"][0] for b in data["baselines"]]
    assert [data["ratios"][k]["throughput_img_s"] for k in data["ratios"]] == pytest.approx(runs, rel=1e-3)
    assert data["throughput_interval"] == "iqr" and data["threads"] == 1 and isinstance(data["measurement_warnings"], list)
    printed = capsys.readouterr().out
    assert "inference (img/s)" in printed and "C | M A / C | A*2" in printed and "side by side" in printed


@pytest.mark.parametrize(
    "argv, message",
    [
        (["no_such_model_xyz"], "unknown model 'no_such_model_xyz'"),
        (["C | M A", "--precision", "fp8"], "--precision: unknown precision 'fp8' (known: fp32"),
        (["C | M A", "--batch-size", "many"], "--batch-size: expected an integer"),
        (["C | M A", "--figures", "speed"], "--figures: unknown figure 'speed'"),
        (["C | Q"], "pattern error"),
        (["C | M A", "--vs", "convnext_tiny,,x"], "--vs: empty name"),
    ]
    + ([] if torch.cuda.is_available() else [(["C | M A", "--device", "cuda"], "--device: device 'cuda' was asked for")]),
)
def test_bench_cli_bad_input_is_one_line(argv, message, capsys):
    rc = cli_main(["bench", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("hybridlab bench: ") and message in err[0], err[0]
