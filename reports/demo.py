"""A synthetic study folder (trials.csv + manifest.json + study.yaml) for trying the report without training.

Numbers are made up but shaped like a real search (accuracy rises and throughput falls with attention
depth; a few seeds per architecture; baselines; running and failed trials). Seeded, so deterministic.
Used by scripts/render_report.sh and the report tests; `python -m reports.demo DIR` writes one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from studies.table import COLUMNS, normalize_frame

FAMILIES = {  # family -> (stage 3 pattern, Mamba blocks, attention blocks)
    "attn_last_half": [("M*2 A*2", 2, 2), ("M*4 A*4", 4, 4), ("M*3 A*3", 3, 3), ("M*6 A*6", 6, 6), ("M A", 1, 1)],
    "attn_first_half": [("A*2 M*2", 2, 2), ("A*4 M*4", 4, 4), ("A*3 M*3", 3, 3)],
    "interleave_am": [("(A M)*2", 2, 2), ("(A M)*4", 4, 4), ("(A M)*3", 3, 3)],
    "mamba_only": [("M*4", 4, 0), ("M*8", 8, 0), ("M*6", 6, 0)],
    "free": [("M A M A M M", 4, 2), ("A M M M", 3, 1), ("M[d_state=16,expand=2]*3 A*3", 3, 3), ("C M*2 A*3", 2, 3)],
}
ABLATION_LABELS = ("attn_last_half", "attn_first_half", "interleave_am", "mamba_only")
STUDY_YAML = """\
# quickstart-like demo study (synthetic numbers); a valid study file (`hybridlab run FILE --check`)
name: {name}
description: Table 5 attention placements on a narrow MambaVision-T shaped model (synthetic demo numbers)
data: {{name: global_marks, train_subset: 8000, batch_size: 64}}
model: {{pattern: "C | C*3 | M*4 A*4 | M*2 A*2", dim: 16, in_dim: 16, num_heads: [1, 2, 2, 4], window_size: [8, 8, 8, 4], stem_stride: 1}}
search_space:
  layout: {{stages: [3], family: [attn_last_half, attn_first_half, interleave_am, mixer_only]}}
train: {{epochs: 10}}
objectives:
  - {{name: top1, direction: maximize}}
  - {{name: throughput_img_s, direction: maximize}}
sampler: grid
seeds: [0, 1, 2]
storage: postgresql://hybrid:s3cret-pw@db.example:5432/studies   # masked in the report
"""


def demo_frame(seed: int = 0, n_running: int = 2, n_failed: int = 2, single_objective: bool = False,
               ablation: bool = False) -> pd.DataFrame:
    """The trials table of a synthetic study."""
    rng = np.random.default_rng(seed)
    rows = []
    number = 0
    families = {k: FAMILIES[k][:1] for k in ABLATION_LABELS} if ablation else FAMILIES
    for family in sorted(families):
        for stage3, mamba, attn in families[family]:
            pattern = f"C | C*3 | {stage3} | M*2 A*2"
            depth = mamba + attn
            base_acc = 70 + 1.1 * attn + 0.5 * depth - 0.04 * attn * attn + rng.normal(0, 0.6)
            base_thr = 5200 / (1 + 0.18 * depth + 0.22 * attn) * rng.uniform(0.9, 1.1)
            params = int((4 + 1.9 * depth + 0.6 * attn) * 1e6)
            arch_hash = _hash(pattern)
            for s in range(3):
                rows.append(dict(
                    number=number, state="COMPLETE", pattern=pattern, arch_hash=arch_hash, family=family,
                    label=family, seed=s, top1=base_acc + rng.normal(0, 0.35), top5=min(99.9, base_acc + 18),
                    val_loss=2.5 - base_acc / 40, params=params, macs=int(params * 38.5), flops=int(params * 79),
                    throughput_img_s=base_thr * rng.normal(1, 0.03), latency_ms=1000 / base_thr * 9 * rng.normal(1, 0.02),
                    latency_iqr_ms=0.05, train_throughput_img_s=base_thr / 3.1, peak_mem_mb=120 + params / 1e6,
                    train_time_s=60 + depth * 7.0, epochs=10, is_baseline=False,
                    datetime_start=f"2026-11-28T10:{number // 60:02d}:{number % 60:02d}",
                    datetime_complete=f"2026-11-28T11:{number // 60:02d}:{number % 60:02d}",
                ))
                number += 1
    for name, acc, thr, params in (("resnet18", 77.0, 3900.0, 11_700_000), ("deit_tiny_patch16_224", 74.5, 2600.0, 5_700_000)):
        rows.append(dict(number=number, state="COMPLETE", pattern=f"timm:{name}", arch_hash=f"timm:{name}",
                         family="baseline", label=name, seed=0, top1=acc, throughput_img_s=thr, params=params,
                         macs=params * 150, flops=params * 300, latency_ms=4.2, epochs=10, is_baseline=True))
        number += 1
    for i in range(n_failed):
        rows.append(dict(number=number, state="FAIL", pattern="C | C*3 | A*8 | A*4", family="free", seed=i,
                         fail_reason="CUDA out of memory at batch 64" if i == 0 else "loss is NaN after epoch 2"))
        number += 1
    for i in range(n_running):
        rows.append(dict(number=number, state="RUNNING", pattern="C | C*3 | M*5 A*5 | M*2 A*2", family="attn_last_half",
                         seed=i, datetime_start="2026-11-28T12:00:00"))
        number += 1
    frame = pd.DataFrame.from_records(rows, columns=list(COLUMNS))
    return normalize_frame(frame)


def make_frame(rows: list[dict]) -> pd.DataFrame:
    """A trials table from a few fields per row (number, COMPLETE and seed 0 by default; arch_hash from the
    pattern); the other documented columns are left empty, as the study runner leaves them."""
    full = []
    for i, row in enumerate(rows):
        row = {"number": i, "state": "COMPLETE", "seed": 0, **row}
        if "arch_hash" not in row and "pattern" in row:
            row["arch_hash"] = "h-" + row["pattern"]
        full.append(row)
    return normalize_frame(pd.DataFrame.from_records(full))


def write_study_folder(root: str | Path, name: str, frame: pd.DataFrame, objectives: list | None = None,
                       study_yaml: str | None = None, **manifest) -> Path:
    """A study folder `root/name` holding `frame` as trials.csv, a manifest and a study file."""
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / "trials.csv", index=False)
    data = {"study": name, "objectives": objectives or [{"name": "top1", "direction": "maximize"},
                                                        {"name": "throughput_img_s", "direction": "maximize"}],
            "ablation": None, **manifest}
    (folder / "manifest.json").write_text(json.dumps(data), encoding="utf-8")
    (folder / "study.yaml").write_text(study_yaml if study_yaml is not None else f"name: {name}\n", encoding="utf-8")
    return folder


def _hash(pattern: str) -> str:
    import hashlib

    return hashlib.sha256(pattern.encode()).hexdigest()[:12]


def write_demo_study(folder: str | Path, name: str = "demo", seed: int = 0, single_objective: bool = False,
                     ablation: bool = False, **kwargs) -> Path:
    """Write trials.csv, manifest.json and study.yaml of a synthetic study into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    frame = demo_frame(seed=seed, ablation=ablation, **kwargs)
    frame.to_csv(folder / "trials.csv", index=False)
    objectives = [{"name": "top1", "direction": "maximize"}]
    if not single_objective:
        objectives.append({"name": "throughput_img_s", "direction": "maximize"})
    manifest = {
        "study": name,
        "objectives": objectives,
        "storage": f"sqlite:///results/{name}/study.db",
        "ablation": {"default_label": "attn_last_half"} if ablation else None,
        "measure": {"device": "cpu", "batch_size": 64, "img_size": 32, "precision": "fp32", "warmup": 5, "iters": 20},
        "env": {"device_name": "demo CPU", "torch": "2.14.1", "threads": 2, "python": "3.11.7"},
        "hybridlab": "0.1.0",
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    (folder / "study.yaml").write_text(STUDY_YAML.format(name=name), encoding="utf-8")
    return folder


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "results/demo")
    print(write_demo_study(target, name=target.name))
