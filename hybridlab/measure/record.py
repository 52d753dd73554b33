"""What a measurement is asked to do (MeasureProfile) and what it reports (MeasureRecord).

Both are plain dataclasses that round-trip through JSON, so studies can store them in the
measurement cache and in `trials.csv`, and a reviewer can read exactly how a figure was taken.
Settings are checked through `hybridlab.validate`, the one validation path of study files.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from hybridlab import validate as check
from hybridlab.errors import ConfigError

PRECISIONS = ("fp32", "amp-fp16", "amp-bf16")
DEVICES = ("auto", "cpu", "cuda")
_DEVICE_RE = re.compile(r"auto|cpu|cuda(:\d+)?")
# compute: params, MACs, FLOPs; throughput: inference img/s + peak memory; latency: batch 1; train: fwd+bwd+AdamW
FIGURES = ("compute", "throughput", "latency", "train")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# Documented ranges of every numeric setting (inclusive). Upper bounds keep a typo from hanging a run
# (an infinite warm-up, 1e20 iterations) or exhausting memory before any figure is taken.
LIMITS: dict[str, tuple[float, float]] = {
    "batch_size": (1, 16384),
    "img_size": (1, 4096),
    "repeats": (1, 1000),
    "warmup_iters": (0, 100_000),
    "warmup_s": (0.0, 600.0),
    "window_s": (0.0, 600.0),
    "iters": (1, 100_000),
    "max_iters": (1, 100_000),
    "in_chans": (1, 1024),
    "num_classes": (0, 1_000_000),
    "threads": (1, 1024),
    "seed": (0, 2**32 - 1),
}
SECONDS = ("warmup_s", "window_s")
OPTIONAL = ("iters", "in_chans", "num_classes", "threads")


@dataclass(frozen=True)
class MeasureProfile:
    """How to measure. Every field takes part in the measurement-cache key.

    Warm-up runs until BOTH `warmup_iters` iterations and `warmup_s` seconds have passed. Each of the
    `repeats` timed windows runs `iters` iterations, or (when `iters` is None) as many as fill about
    `window_s` seconds, at most `max_iters`. `in_chans` / `num_classes` override the model's when set.
    `tf32` None leaves torch's TF32 flags as they are (they are recorded either way).

    `threads` is torch's intra-op thread count while timing (recorded in the record and its env;
    None leaves torch's own). It defaults to 1 because of a measurement on a shared 2-core machine
    (docs/benchmarks/threads.md): with 2 threads and OpenMP's default spin-waiting, a busy machine
    cut a small hybrid to 13-18 img/s against 90-340 img/s with 1 thread, a 5-20x collapse that 1
    thread never showed; OMP_WAIT_POLICY=PASSIVE also avoids it but must be set before torch starts,
    which a library cannot guarantee. Ask for more threads on a machine you have to yourself.
    """

    batch_size: int = 128
    img_size: int = 224
    device: str = "auto"
    precision: str = "fp32"
    channels_last: bool = False
    compile: str | None = None
    repeats: int = 5
    warmup_iters: int = 10
    warmup_s: float = 2.0
    window_s: float = 1.0
    iters: int | None = None
    max_iters: int = 200
    figures: tuple[str, ...] = FIGURES
    in_chans: int | None = None
    num_classes: int | None = None
    tf32: bool | None = None
    threads: int | None = 1
    cudnn_benchmark: bool = True
    seed: int = 0

    @classmethod
    def fields_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def replace(self, **changes: Any) -> MeasureProfile:
        """A validated copy with some fields changed."""
        return replace(self, **changes).validated()

    def validated(self) -> MeasureProfile:
        """Check every field (one ConfigError naming `measure.<field>`) and normalise types.

        Every number must be finite and inside LIMITS: an infinite warm-up or 1e20 iterations would
        otherwise hang the measurement, and an absurd batch would exhaust memory before any figure.
        """
        v = {f.name: getattr(self, f.name) for f in fields(self)}
        for key, (low, high) in LIMITS.items():
            if v[key] is None and key in OPTIONAL:
                continue
            v[key] = check.in_range(v[key], f"measure.{key}", low, high, integer=key not in SECONDS)
        if not isinstance(v["device"], str) or not _DEVICE_RE.fullmatch(v["device"]):
            raise ConfigError(f"must be one of {', '.join(DEVICES)} (or cuda:N), got {check.short(v['device'])}",
                              "measure.device")
        v["precision"] = check.choice(v["precision"], PRECISIONS, "measure.precision", "precision")
        v["compile"] = _compile_mode(v["compile"])
        figs = v["figures"]
        if isinstance(figs, str):
            figs = [f.strip() for f in figs.split(",") if f.strip()]
        if not isinstance(figs, (list, tuple)):
            raise ConfigError(f"expected a list of figures, got {check.short(figs)}", "measure.figures")
        for fig in figs:
            check.choice(fig, FIGURES, "measure.figures", "figure")
        if not figs:
            raise ConfigError("no figures asked for", "measure.figures")
        v["figures"] = tuple(f for f in FIGURES if f in figs)  # canonical order, no duplicates
        for key in ("channels_last", "cudnn_benchmark", "tf32"):
            if key == "tf32" and v[key] is None:
                continue
            check.boolean(v[key], f"measure.{key}")
        return MeasureProfile(**v)

    def resolved(self) -> MeasureProfile:
        """Validated, with device `auto` turned into cuda/cpu; refuses cuda without a GPU."""
        import torch

        prof = self.validated()
        device = prof.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise ConfigError(f"device {device!r} was asked for but no CUDA GPU is available here", "measure.device")
            index = int(device.partition(":")[2] or 0)
            if index >= torch.cuda.device_count():
                raise ConfigError(f"device {device!r}: only {torch.cuda.device_count()} GPU(s) visible", "measure.device")
        return replace(prof, device=device)

    @property
    def amp_dtype(self) -> Any:
        """The autocast dtype (torch.float16 / bfloat16), or None for fp32."""
        import torch

        return {"amp-fp16": torch.float16, "amp-bf16": torch.bfloat16}.get(self.precision)

    def wants(self, figure: str) -> bool:
        return figure in self.figures

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["figures"] = list(self.figures)
        return out

    @classmethod
    def from_dict(cls, data: Any) -> MeasureProfile:
        """A validated profile from a study's `measure:` mapping (one ConfigError for a non-mapping
        section or unknown keys)."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"expected a mapping of measurement settings, got {type(data).__name__}", "measure")
        known = cls.fields_names()
        unknown = [k for k in data if k not in known]
        if unknown:
            names = ", ".join(check.short(k, 80) for k in unknown)
            raise ConfigError(f"unknown measurement setting(s) {names} (known: {', '.join(sorted(known))})", "measure")
        return cls(**dict(data)).validated()


@dataclass
class MeasureRecord:
    """The figures of one model under one profile, with the environment they were taken in.

    Sizes are per image at `img_size`: `macs` counts multiply-accumulates of nn.Conv2d and nn.Linear
    modules only (the MambaVision paper's "FLOPs"); `flops` is everything torch's FlopCounterMode
    counts (2 x matmul/conv MACs, F.conv1d included) plus attention matmuls and the analytic
    selective-scan term. Throughputs are medians over `repeats` timed windows; latency is the median
    over single synchronised batch-1 calls. `peak_mem_mb` is the inference run's; see `peak_mem_method`.
    `noisy` says a timed window stayed contended (other processes took the CPU); see `noisy_reason`.
    `env` names the scan backend and the SSD path that ran (`scan_backend`, `ssd_path`) and lists any slow
    fallback among them (`slow_paths`, also `record.slow_paths`).
    """

    model: str
    arch_id: str = ""
    batch_size: int = 0
    img_size: int = 0
    in_chans: int = 0
    params: int | None = None
    macs: int | None = None
    flops: int | None = None
    flops_breakdown: dict[str, int] = field(default_factory=dict)
    compute_counted_on: str | None = None
    throughput_img_s: float | None = None
    throughput_iqr_img_s: float | None = None
    throughput_runs: list[float] = field(default_factory=list)
    throughput_lo: float | None = None  # interval of throughput_img_s: quartiles of the windows (or rounds)
    throughput_hi: float | None = None
    throughput_interval: str | None = None  # "iqr"
    throughput_cpu_img_s: float | None = None  # images per CPU-second of this process (median over windows)
    inference_batch_size: int | None = None
    latency_ms: float | None = None
    latency_iqr_ms: float | None = None
    latency_samples: int = 0
    train_throughput_img_s: float | None = None
    train_throughput_iqr_img_s: float | None = None
    train_throughput_runs: list[float] = field(default_factory=list)
    train_batch_size: int | None = None
    peak_mem_mb: float | None = None
    train_peak_mem_mb: float | None = None
    peak_mem_method: str | None = None
    weights_mb: float | None = None
    oom_backoff: dict[str, list[int]] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    wall_s: float | None = None
    cached: bool = False
    threads: int | None = None  # torch intra-op threads the figures were timed with (CPU)
    noisy: bool = False  # a timed window stayed contended after its retries: do not trust, never cache
    noisy_reason: str | None = None
    contention: dict[str, Any] = field(default_factory=dict)  # the contention guard's summary

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def slow_paths(self) -> list[str]:
        """The slow paths (scan or SSD fallbacks) the model took when measured, from its env; [] when none."""
        return list(self.env.get("slow_paths") or [])

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MeasureRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _compile_mode(value: Any) -> str | None:
    if value is None or value is False or value in ("", "none", "off"):
        return None
    if value is True:
        return "default"
    if not isinstance(value, str) or value not in COMPILE_MODES:
        raise ConfigError(f"must be off or one of {', '.join(COMPILE_MODES)}, got {check.short(value)}", "measure.compile")
    return str(value)


__all__ = ["COMPILE_MODES", "DEVICES", "FIGURES", "LIMITS", "PRECISIONS", "MeasureProfile", "MeasureRecord"]
