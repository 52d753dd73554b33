#!/usr/bin/env python3
"""One unattended run on a GPU machine: MambaVision-T against ConvNeXt-T and Swin-T, same process.

    python benchmarks/gpu_measure.py                       # H200: bs 128, 224 px, AMP fp16, channels_last
    python benchmarks/gpu_measure.py --device cpu --batch-size 2 --img-size 64 --quick   # smoke test

Measures mambavision_t with the CUDA selective-scan kernel when mamba_ssm is importable (and, time
permitting, with the pure-PyTorch scan as well), else with the pure-PyTorch scan; then convnext_tiny
and swin_tiny_patch4_window7_224. Writes gpu-results.md and gpu-results.json to --out (default
$OUT, else benchmarks/results/) after EVERY model, so a run cut short by its time limit still leaves what it
measured. A soft budget (--budget-s) skips models that would not fit; a hard alarm at the budget
plus --grace-s stops a model that overruns and records it as such.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a plain checkout, no install needed
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from hybridlab.measure import MeasureProfile, MeasureRecord, measure, ratios  # noqa: E402
from hybridlab.measure.env import collect_env  # noqa: E402
from hybridlab.measure.table import env_line, format_table  # noqa: E402

CANDIDATE = "mambavision_t"
BASELINES = ("convnext_tiny", "swin_tiny_patch4_window7_224")
SMI_FIELDS = "name,driver_version,pstate,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw,power.limit,memory.used,memory.total,utilization.gpu"


class Overrun(BaseException):
    """The hard time limit fired while a model was being measured (a BaseException, so no generic
    `except Exception` inside the measurement swallows it)."""


def _alarm(_signum: int, _frame: Any) -> None:
    raise Overrun("hard time limit reached")


def nvidia_smi() -> dict[str, str] | None:
    """A read-only snapshot of clocks, temperature and power (nothing is changed on the card)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, f"--query-gpu={SMI_FIELDS}", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0 or not out.stdout.strip():
        return None
    values = [v.strip() for v in out.stdout.strip().splitlines()[0].split(",")]
    return dict(zip(SMI_FIELDS.split(","), values))


def scan_variants(device: str) -> list[str]:
    """Scan backends to run the candidate with, preferred first: the CUDA kernel when it imports."""
    from blocks.scan import available_backends

    names = available_backends(device)
    pure = "fast" if "fast" in names else "reference"
    return ["mamba_ssm", pure] if "mamba_ssm" in names else [pure]


def plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    variants = scan_variants(args.device)
    runs = [{"model": CANDIDATE, "scan": variants[0], "label": f"{CANDIDATE} (scan {variants[0]})"}]
    runs += [{"model": name, "scan": None, "label": name} for name in BASELINES]
    # the second scan variant is the least important figure: it goes last and is the first to be skipped
    runs += [{"model": CANDIDATE, "scan": v, "label": f"{CANDIDATE} (scan {v})"} for v in variants[1:]]
    return runs


def profile_for(args: argparse.Namespace) -> MeasureProfile:
    quick = dict(repeats=2, warmup_iters=1, warmup_s=0.0, window_s=0.2, max_iters=20) if args.quick else {}
    return MeasureProfile(
        batch_size=args.batch_size,
        img_size=args.img_size,
        device=args.device,
        precision=args.precision,
        channels_last=not args.no_channels_last,
        compile=args.compile,
        repeats=quick.get("repeats", args.repeats),
        warmup_iters=quick.get("warmup_iters", 10),
        warmup_s=quick.get("warmup_s", 2.0),
        window_s=quick.get("window_s", 1.0),
        max_iters=quick.get("max_iters", 200),
        tf32=args.tf32,
    ).resolved()


def measure_one(run: dict[str, Any], profile: MeasureProfile) -> MeasureRecord:
    from blocks.scan import scan_backend

    if run["scan"] is None:
        return measure(run["model"], profile, label=run["label"])
    with scan_backend(run["scan"]):
        return measure(run["model"], profile, label=run["label"])


def render_markdown(result: dict[str, Any], records: list[MeasureRecord]) -> str:
    prof = result["profile"]
    lines = [
        "# GPU measurements: MambaVision-T vs ConvNeXt-T and Swin-T",
        "",
        f"Produced by `benchmarks/gpu_measure.py` ({result['status']}) on {result['started']}, "
        f"{result['elapsed_s']:.0f} s. Command: `{result['command']}`.",
        "",
        f"Profile: batch {prof['batch_size']}, {prof['img_size']} px, {prof['precision']}, "
        f"channels_last {'on' if prof['channels_last'] else 'off'}, compile {prof['compile'] or 'off'}, "
        f"{prof['repeats']} timed windows (median [IQR]), warm-up >= {prof['warmup_iters']} iterations and >= {prof['warmup_s']} s, "
        "CUDA synchronised around every window, synthetic input already on the device.",
        "",
    ]
    if records:
        lines.append(format_table(records, _ratio_sets(records), markdown=True))
        lines.append("")
        lines.append(f"Environment: {env_line(records[0].env)}.")
        lines.append("")
        lines.append(f"Memory: {records[0].peak_mem_method}. MACs: nn.Conv2d + nn.Linear only (the paper's 'FLOPs'); "
                     "FLOPs: FlopCounterMode matmul/conv + attention + analytic selective scan.")
        backoffs = {r.model: r.oom_backoff for r in records if r.oom_backoff}
        if backoffs:
            lines.append(f"Out-of-memory back-off: {json.dumps(backoffs)}")
    for problem in result["problems"]:
        lines.append(f"- {problem['label']}: {problem['status']}: {problem['error']}")
    if result.get("smi_before"):
        lines += ["", f"nvidia-smi before: `{json.dumps(result['smi_before'])}`", f"nvidia-smi after: `{json.dumps(result.get('smi_after'))}`"]
    lines += ["", "Full figures, per-window timings and the exact environment: gpu-results.json.", ""]
    return "\n".join(lines)


def _ratio_sets(records: list[MeasureRecord]) -> dict[str, dict[str, float | None]]:
    first = records[0]
    return {r.model: ratios(first, r) for r in records[1:] if not r.model.startswith(CANDIDATE)}


def write(out: Path, result: dict[str, Any], records: list[MeasureRecord]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    result["records"] = [r.to_dict() for r in records]
    result["ratios"] = _ratio_sets(records) if records else {}
    for name, text in (("gpu-results.json", json.dumps(result, indent=2, default=str)), ("gpu-results.md", render_markdown(result, records))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out / name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--precision", default="amp-fp16", choices=("fp32", "amp-fp16", "amp-bf16"))
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--compile", default=None, help="torch.compile mode (default off)")
    parser.add_argument("--tf32", default=None, type=lambda s: {"on": True, "off": False}[s], help="on|off (default: leave)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 short windows, minimal warm-up (smoke test)")
    parser.add_argument("--budget-s", type=float, default=270.0, help="soft time budget for the whole run")
    parser.add_argument("--per-model-s", type=float, default=45.0, help="time a model is assumed to need")
    parser.add_argument("--grace-s", type=float, default=20.0, help="hard stop this long after the budget")
    parser.add_argument(
        "--out", default=os.environ.get("OUT") or str(ROOT / "benchmarks" / "results"), help="default $OUT, else benchmarks/results"
    )
    args = parser.parse_args(argv)

    start = time.monotonic()
    out = Path(args.out)
    result: dict[str, Any] = {
        "status": "running",
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "elapsed_s": 0.0,
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "problems": [],
    }
    try:
        profile = profile_for(args)
    except Exception as exc:  # e.g. --device cuda on a machine without a GPU
        result.update(status="failed", error=f"{type(exc).__name__}: {exc}", profile=vars(args))
        write(out, result, [])
        print(f"gpu_measure: {exc}", file=sys.stderr)
        return 2
    result["profile"] = profile.to_dict()
    result["env"] = collect_env(profile.device, profile.precision, profile.channels_last, profile.compile)
    result["smi_before"] = nvidia_smi()
    records: list[MeasureRecord] = []
    hard_limit = int(args.budget_s + args.grace_s)
    if hasattr(signal, "SIGALRM"):
        signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(hard_limit)
    try:
        runs = plan(args)
        for i, run in enumerate(runs):
            left = args.budget_s - (time.monotonic() - start)
            if left < (5.0 if args.quick else args.per_model_s):
                result["problems"].append({"label": run["label"], "status": "skipped", "error": f"{left:.0f} s of budget left"})
                continue
            print(f"gpu_measure: {run['label']} ({left:.0f} s of budget left)", file=sys.stderr, flush=True)
            try:
                records.append(measure_one(run, profile))
            except Overrun:
                result["problems"].append({"label": run["label"], "status": "overran", "error": f"hard limit {hard_limit} s"})
                result["problems"] += [{"label": r["label"], "status": "skipped", "error": "after an overrun"} for r in runs[i + 1 :]]
                break
            except Exception as exc:  # record and go on: one broken model must not lose the others
                result["problems"].append({"label": run["label"], "status": "failed", "error": f"{type(exc).__name__}: {exc}"})
                traceback.print_exc()
            finally:
                torch.cuda.empty_cache() if torch.cuda.is_available() else None
            result["elapsed_s"] = time.monotonic() - start
            write(out, result, records)
    finally:
        if hasattr(signal, "SIGALRM"):
            signal.alarm(0)
        result["smi_after"] = nvidia_smi()
        result["elapsed_s"] = time.monotonic() - start
        result["status"] = "complete" if not result["problems"] else "partial"
        write(out, result, records)
    if records:
        print(format_table(records, _ratio_sets(records)))
    for problem in result["problems"]:
        print(f"gpu_measure: {problem['label']}: {problem['status']}: {problem['error']}", file=sys.stderr)
    print(f"gpu_measure: wrote {out / 'gpu-results.md'} and {out / 'gpu-results.json'} ({result['status']})", file=sys.stderr)
    return 0 if records else 1


if __name__ == "__main__":
    sys.exit(main())
