"""The measurement phase: every finished architecture of a study timed side by side, after training.

Each trial measures its own architecture when it runs, so on a shared machine two trials timed minutes
apart see different loads, and two seeds of one layout share one (possibly bad) figure. This phase
builds every finished architecture once (candidates and baselines, timm ones included), times them in
interleaved rounds in one process (`hybridlab.measure.measure_side_by_side`), and takes the ratios to
the study's reference row: the ablation default, else the first baseline, else the first candidate.
It can be re-run at any time without retraining; each run replaces the last.

Where the figures live: Optuna refuses to change a finished trial (its user attributes and values
alike), so the phase keeps its figures in the study's user attribute `side_by_side` ({arch_hash:
fields}, the reference, the time, the rounds), and `studies.side_by_side_view.overlaid(study)` shows
every trial of a measured architecture with those fields as its user attributes (the per-trial figure
moves to `throughput_trial_img_s`). `trials.csv` is written from that view. The trials' objective values keep
the per-trial throughput.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hybridlab.atomic import atomic_write
from hybridlab.errors import HybridlabError
from hybridlab.fidelity import SUPERNET_RANK, rank_of
from hybridlab.urls import mask_password
from studies.config import StudyConfig
from studies.side_by_side_view import SIDE_BY_SIDE, overlaid

JSON_NAME = "side_by_side.json"
FIELDS = (
    "throughput_img_s", "throughput_lo", "throughput_hi", "throughput_interval", "throughput_rel",
    "throughput_rel_lo", "throughput_rel_hi", "noisy", "noisy_reason", "threads", "throughput_cpu_img_s",
)
PHASES = ("trial", "after")  # `measure: {phase: after}` runs this phase at the end of `hybridlab run`


@dataclass
class MeasureOptions:
    results_dir: Path = Path("results")
    storage: str | None = None
    rounds: int = 5
    threads: int | None = None  # default: the study's `measure.threads`
    device: str | None = None
    echo: Callable[[str], None] = print


def phase(config: StudyConfig) -> str:
    """The study's `measure.phase` ("trial" unless it asks for "after")."""
    value = config.measure.get("phase", "trial")
    return value if value in PHASES else "trial"


def write_table(study: Any, folder: Path) -> Path:
    """`trials.csv` from the overlaid study (studies.table)."""
    from studies.table import write_trials

    return write_trials(overlaid(study), folder)


# -- the phase ----------------------------------------------------------------------------------------------------------

def finished_architectures(study: optuna.Study) -> dict[str, list[FrozenTrial]]:
    """arch_hash -> its COMPLETE trials of the study's highest fidelity, in the order of their first trial.

    The report's tables and front show only the highest fidelity (4,096 supernet scores are not 4,096 models
    to time), so those are the architectures measured.
    """
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    ranks = {t.number: rank_of(t.user_attrs.get("fidelity_label"), t.user_attrs.get("fidelity_rank")) for t in finished}
    top = max(ranks.values(), default=None)
    out: dict[str, list[FrozenTrial]] = {}
    if top == SUPERNET_RANK:  # only supernet scores so far: their throughput is predicted, no model was trained
        return out
    for trial in sorted((t for t in finished if ranks[t.number] == top), key=lambda t: t.number):
        key = trial.user_attrs.get("arch_hash")
        if key:
            out.setdefault(str(key), []).append(trial)
    return out


def build_source(config: StudyConfig, trial: FrozenTrial) -> Any:
    """What `measure_side_by_side` takes for a trial's architecture: its ModelSpec, or a built timm baseline."""
    from blocks.spec import ModelSpec

    attrs = trial.user_attrs
    if attrs.get("is_baseline"):
        for baseline in config.baselines:
            if baseline.label == attrs.get("label") and baseline.arch_hash == attrs.get("arch_hash"):
                return baseline.spec if baseline.spec is not None else baseline.build()
    settings = dict(attrs.get("model") or {})
    if "timm" in settings:
        import timm

        name = settings.pop("timm")
        return timm.create_model(name, pretrained=False, **settings)
    return ModelSpec.from_dict(settings)


def reference_label(config: StudyConfig, rows: dict[str, FrozenTrial]) -> str:
    """The ablation default row, else the first baseline (study-file order), else the first candidate."""
    default = (config.ablation or {}).get("default_label")
    for label, trial in rows.items():
        if default and label == default and not trial.user_attrs.get("is_baseline"):
            return label
    for baseline in config.baselines:
        if baseline.label in rows and rows[baseline.label].user_attrs.get("is_baseline"):
            return baseline.label
    return next((label for label, t in rows.items() if not t.user_attrs.get("is_baseline")), next(iter(rows)))


def _labels(archs: dict[str, list[FrozenTrial]]) -> dict[str, str]:
    """arch_hash -> a unique row label (the trial's label, suffixed where two architectures share one)."""
    out: dict[str, str] = {}
    for arch, trials in archs.items():
        base = str(trials[0].user_attrs.get("label") or arch)
        label, i = base, 2
        while label in out.values():
            label, i = f"{base}#{i}", i + 1
        out[arch] = label
    return out


def measure_study(config: StudyConfig, options: MeasureOptions) -> dict[str, Any] | None:
    """Time the study's finished architectures side by side and keep the figures; None when none finished."""
    from studies.objective import device_lock, profile_dict
    from studies.runner import study_folder
    from studies.storage import close_storage, default_storage_url, open_storage, storage_error

    echo = options.echo
    url = options.storage or config.storage or default_storage_url(options.results_dir, config.name)
    shown = mask_password(url)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():  # heartbeats are marked experimental in Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = open_storage(url, create=False)
        study = optuna.load_study(study_name=config.name, storage=storage)
    except KeyError:
        raise HybridlabError(f"storage {shown} holds no study {config.name!r}: run it first") from None
    except HybridlabError:
        raise
    except Exception as exc:
        raise storage_error(exc, url) from None
    try:
        archs = finished_architectures(study)
        if not archs:
            echo(f"study {config.name}: no finished trials to measure")
            return None
        labels = _labels(archs)
        rows = {labels[a]: trials[0] for a, trials in archs.items()}
        reference = reference_label(config, rows)
        models = {labels[a]: build_source(config, trials[0]) for a, trials in archs.items()}
        profile = {k: v for k, v in profile_dict(config, options.device).items() if k != "phase"}
        if options.threads is not None:
            profile["threads"] = options.threads
        echo(f"study {config.name}: measuring {len(models)} architecture{'' if len(models) == 1 else 's'} side by side, {options.rounds} rounds, "
             f"reference {reference}")
        result = _measure(models, profile, options.rounds, reference, config.name, echo, device_lock)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        by_label = {row["label"]: row for row in result.rows()}
        by_arch = {a: {**{k: by_label[labels[a]].get(k) for k in FIELDS}, "measured_side_by_side_at": stamp}
                   for a in archs}
        record = {"measured_side_by_side_at": stamp, "reference": reference, "rounds": options.rounds,
                  "warnings": result.warnings, "labels": {labels[a]: a for a in archs}, "by_arch": by_arch}
        study.set_user_attr(SIDE_BY_SIDE, record)
        folder = study_folder(options.results_dir, config.name)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / JSON_NAME, json.dumps(result.to_dict(), indent=2, default=str))
        write_table(study, folder)
        for line in summary(result.rows(), reference, [o.name for o in config.objectives]):
            echo(line)
        return record
    finally:
        close_storage(storage)


def _measure(models: dict[str, Any], profile: dict[str, Any], rounds: int, reference: str, study: str,
             echo: Callable[[str], None], lock: Callable[..., Any]) -> Any:
    from hybridlab.measure import MeasureProfile
    from hybridlab.measure.side_by_side import measure_side_by_side

    prof = MeasureProfile.from_dict(profile)
    with lock(prof.device, True, study, echo):
        return measure_side_by_side(models, prof, rounds=rounds, reference=reference)


def summary(rows: list[dict[str, Any]], reference: str, objectives: list[str]) -> list[str]:
    """One line per architecture, then what changed where."""
    lines = []
    for row in rows:
        rel = row.get("throughput_rel")
        flag = f"  NOISY: {row.get('noisy_reason')}" if row.get("noisy") else ""
        lines.append(f"  {row['label']}: {_num(row.get('throughput_img_s'))} img/s "
                     f"[{_num(row.get('throughput_lo'))}, {_num(row.get('throughput_hi'))}] IQR, "
                     f"x{rel:.3f} of {reference}{flag}" if rel is not None else
                     f"  {row['label']}: {_num(row.get('throughput_img_s'))} img/s{flag}")
    if "throughput_img_s" in objectives:
        lines.append("note: the trials' objective values (Optuna's, which its samplers use) keep each trial's own "
                     "throughput, since Optuna cannot change a finished trial; trials.csv and the report use the "
                     "side-by-side figures (the per-trial one is in throughput_trial_img_s)")
    return lines


def _num(value: Any) -> str:
    return f"{value:,.0f}" if isinstance(value, (int, float)) else "?"


__all__ = ["FIELDS", "SIDE_BY_SIDE", "MeasureOptions", "measure_study", "phase", "write_table"]
