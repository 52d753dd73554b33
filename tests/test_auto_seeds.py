"""`seeds: auto`: seeds go only to rows whose intervals still overlap the default row or the front,
within the per-row maximum and the trial budget; why each seed was added is kept. Fake objective
values throughout: nothing is trained."""

from __future__ import annotations

import math

import optuna
import pytest
from conftest import tiny_raw
from scipy import stats

from hybridlab.errors import HybridlabError
from hybridlab.metrics import Objective
from studies import planning
from studies.auto_seeds import front, next_seeds, t_interval, unresolved
from studies.config import load_study_config
from studies.objective import TrialObjective
from studies.runner import RunOptions, run_study

TOP1 = [Objective("top1", "maximize")]
BOTH = [Objective("top1", "maximize"), Objective("throughput_img_s", "maximize")]


def test_t_interval_matches_scipy() -> None:
    values = [61.0, 63.5, 62.2, 60.9]
    iv = t_interval(values, 0.9)
    lo, hi = stats.t.interval(0.9, len(values) - 1, loc=sum(values) / 4, scale=stats.sem(values))
    assert iv.lo == pytest.approx(lo) and iv.hi == pytest.approx(hi) and iv.n == 4
    one = t_interval([50.0], 0.95)
    assert one.lo == -math.inf and one.hi == math.inf


def test_only_rows_overlapping_the_default_get_a_seed_and_the_default_comes_along() -> None:
    values = {"default": [60.0, 61.0], "close": [60.5, 61.5], "far_above": [72.0, 72.5], "far_below": [50.0, 50.4]}
    planned = {k: [0, 1] for k in values}
    decision = next_seeds(planned, values, "default", TOP1, max_seeds=5)
    assert set(decision.added) == {"close", "default"}
    assert decision.added["close"][0] == 2 and decision.added["default"][0] == 2
    assert decision.added["close"][1].startswith("interval [")
    assert "overlaps default row default [" in decision.added["close"][1]
    assert decision.added["default"][1] == "paired reference for close"
    assert decision.stopped is None


def test_a_row_overlapping_the_front_gets_a_seed_and_so_does_the_front_row() -> None:
    values = {"best": [70.0, 71.0], "second": [70.2, 70.6], "slow": [40.0, 40.2]}
    reasons = unresolved(values, None, TOP1)
    assert set(reasons) == {"best", "second"}
    assert "overlaps front row best" in reasons["second"]
    assert reasons["best"].startswith("front row;")


def test_rows_whose_top1_order_decides_the_front_get_seeds() -> None:
    # "slow" is dominated by "accurate" unless its top-1 turns out higher; "accurate" stays on the front
    # only while "fast" (faster) is not also more accurate; "sprinter" is on the front whatever happens
    values = {"accurate": [70.0, 71.0], "fast": [70.2, 70.6], "slow": [70.1, 70.8], "sprinter": [40.0, 40.2]}
    speed = {"accurate": 100.0, "fast": 300.0, "slow": 50.0, "sprinter": 1000.0}
    others = {k: {"throughput_img_s": v} for k, v in speed.items()}
    means = {k: {"top1": sum(v) / 2, **others[k]} for k, v in values.items()}
    assert front(means, BOTH) == {"accurate", "fast", "sprinter"}
    reasons = unresolved(values, None, BOTH, others=others)
    assert set(reasons) == {"accurate", "fast", "slow"}
    assert "overlaps front row accurate" in reasons["slow"]
    assert reasons["fast"].startswith("front row;") and "overlaps accurate" in reasons["fast"]


def test_resolved_rows_stop_the_study() -> None:
    values = {"default": [60.0, 60.2], "other": [65.0, 65.3]}
    decision = next_seeds({k: [0, 1] for k in values}, values, "default", TOP1, max_seeds=5)
    assert decision.added == {} and decision.stopped.startswith("resolved")


def test_max_seeds_per_row_is_respected() -> None:
    values = {"default": [60.0, 61.0, 60.5], "close": [60.5, 61.5, 61.0]}
    planned = {"default": [0, 1, 2], "close": [0, 1, 2]}
    decision = next_seeds(planned, values, "default", TOP1, max_seeds=3)
    assert decision.added == {} and "max seeds (3)" in decision.stopped


def test_budget_goes_to_the_widest_interval_with_the_default_first() -> None:
    values = {"default": [60.0, 61.0], "narrow": [60.4, 60.6], "wide": [58.0, 63.0], "far": [95.0, 95.1]}
    planned = {k: [0, 1] for k in values}
    assert set(next_seeds(planned, values, "default", TOP1, max_seeds=5, budget=10).added) == {"default", "wide"}
    assert set(next_seeds(planned, values, "default", TOP1, max_seeds=5, budget=20).added) == {
        "default", "wide", "narrow"}
    spent = next_seeds(planned, values, "default", TOP1, max_seeds=5, budget=9)  # the reference alone: no
    assert spent.added == {} and spent.stopped.startswith("budget spent (9 trials)")


# -- the study side: fake trials through the real runner ------------------------------------------------------------

TOP1_BY_LABEL = {  # label -> top-1 per seed
    "attn_last_half": [60.0, 62.0, 61.0, 63.0],
    "attn_first_half": [61.0, 63.0, 60.0, 62.0],  # overlaps the default at every count
    "mixer_only": [40.0, 40.5, 40.2, 40.3],  # clear of everything after the first round
}


@pytest.fixture
def fake_trials(monkeypatch):
    """Trials that neither measure nor train: top-1 from TOP1_BY_LABEL, a throughput per label."""
    speed = {"attn_last_half": 100.0, "attn_first_half": 100.0, "mixer_only": 100.0}
    monkeypatch.setattr(TrialObjective, "_measure", lambda self, trial, arch: {"throughput_img_s": speed[arch.label]})
    monkeypatch.setattr(TrialObjective, "_train", lambda self, trial, arch, seed: {"top1": TOP1_BY_LABEL[arch.label][seed]})


def _config(**auto):
    raw = tiny_raw(seeds={"auto": {"initial": 2, "max": 4, **auto}}, ablation={"default_label": "attn_last_half"})
    return load_study_config("tiny.yaml", raw=raw)


def _run(config, tmp_path) -> tuple[optuna.Study, list[str]]:
    lines: list[str] = []
    study = run_study(config, RunOptions(results_dir=tmp_path, echo=lines.append, progress=False)).study
    return optuna.load_study(study_name=study.study_name, storage=f"sqlite:///{tmp_path / 'tiny' / 'study.db'}"), lines


def _seeds(study) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for t in study.trials:
        if t.state == optuna.trial.TrialState.COMPLETE:
            out.setdefault(t.user_attrs["label"], []).append(t.user_attrs["seed"])
    return {k: sorted(v) for k, v in out.items()}


@pytest.mark.slow
def test_a_study_adds_seeds_until_max_and_records_why(tmp_path, fake_trials) -> None:
    study, lines = _run(_config(), tmp_path)
    assert _seeds(study) == {"attn_last_half": [0, 1, 2, 3], "attn_first_half": [0, 1, 2, 3], "mixer_only": [0, 1]}
    order = [(t.user_attrs["label"], t.user_attrs["seed"]) for t in study.trials]
    assert {s for _, s in order[:6]} == {0, 1}  # the first round before any added seed
    added = [t for t in study.trials if t.user_attrs["seed"] >= 2]
    assert all(t.user_attrs["seed_reason"] for t in added)
    first_half = next(t for t in added if t.user_attrs["label"] == "attn_first_half")
    assert "overlaps default row attn_last_half [" in first_half.user_attrs["seed_reason"]
    assert "max seeds (4)" in study.user_attrs[planning.AUTO_STATUS]
    assert any(line.startswith("seeds: auto: seed 2 for attn_first_half: interval [") for line in lines)


@pytest.mark.slow
def test_the_budget_caps_the_trials(tmp_path, fake_trials) -> None:
    study, _ = _run(_config(budget=8), tmp_path)
    assert len(study.trials) == 8
    assert study.user_attrs[planning.AUTO_STATUS].startswith("budget spent (8 trials)")


@pytest.mark.slow
def test_a_study_stopped_after_its_first_round_adds_seeds_when_resumed(tmp_path, fake_trials, monkeypatch) -> None:
    config = _config()
    with monkeypatch.context() as m:  # as if killed once the first round had finished
        m.setattr(planning, "plan_more_seeds", lambda *a, **k: 0)
        study, _ = _run(config, tmp_path)
    assert len(study.trials) == 6
    study, _ = _run(config, tmp_path)
    assert _seeds(study)["attn_first_half"] == [0, 1, 2, 3]
    assert len(study.trials) == 10


@pytest.mark.slow
def test_a_seed_queued_twice_by_two_workers_is_trained_once(tmp_path, fake_trials, monkeypatch) -> None:
    config = _config(max=3)
    with monkeypatch.context() as m:
        m.setattr(planning, "plan_more_seeds", lambda *a, **k: 0)
        study, _ = _run(config, tmp_path)
    assert planning.plan_more_seeds(study, config, echo=lambda line: None) == 2
    for t in study.get_trials(states=(optuna.trial.TrialState.WAITING,)):  # the second worker's copy
        study.enqueue_trial(t.system_attrs["fixed_params"], user_attrs=t.user_attrs)
    study, _ = _run(config, tmp_path)
    duplicates = [t for t in study.trials if "duplicate_of" in t.user_attrs]
    assert len(duplicates) == 2 and all(t.state.name == "PRUNED" for t in duplicates)
    assert _seeds(study) == {"attn_last_half": [0, 1, 2], "attn_first_half": [0, 1, 2], "mixer_only": [0, 1]}


@pytest.mark.slow
def test_a_sampled_study_adds_seeds_to_its_sampled_architectures(tmp_path, fake_trials) -> None:
    raw = tiny_raw(seeds={"auto": {"initial": 2, "max": 3}}, ablation={"default_label": "attn_last_half"},
                   sampler={"name": "random", "seed": 3}, n_trials=3)
    study, _ = _run(load_study_config("tiny.yaml", raw=raw), tmp_path)
    added = [t for t in study.trials if "seed_reason" in t.user_attrs]
    assert added and all(t.user_attrs["seed"] == 2 for t in added)
    for t in added:  # the same architecture as the slot's first seed
        first = study.trials[t.user_attrs["seed_of"]]
        assert t.params == first.params and t.user_attrs["arch_hash"] == first.user_attrs["arch_hash"]
    assert "max seeds (3)" in study.user_attrs[planning.AUTO_STATUS] or "resolved" in study.user_attrs[planning.AUTO_STATUS]


@pytest.mark.slow
def test_a_rerun_with_another_seed_maximum_is_refused_in_one_line(tmp_path, fake_trials) -> None:
    _run(_config(max=3), tmp_path)
    with pytest.raises(HybridlabError) as info:
        _run(_config(max=5), tmp_path)
    message = str(info.value)  # the settings check names the changed key before the seed choices are compared
    assert "\n" not in message and "auto_seeds.max: 3 -> 5" in message and "nothing was changed" in message


def test_the_cifar10_study_file_loads_on_a_tiny_image_folder(tmp_path) -> None:
    from PIL import Image

    from studies.config import builtin_studies

    for split in ("train", "test"):
        for i in range(10):
            folder = tmp_path / split / f"class{i}"
            folder.mkdir(parents=True)
            Image.new("RGB", (32, 32), (i * 20, 0, 0)).save(folder / "0.png")
    config = load_study_config(str(builtin_studies()["cifar10_table5"]), overrides=[f"data.root={tmp_path}"])
    patterns = [c.pattern for c in config.space.candidates()]
    assert len(set(patterns)) == 6  # the random placement is none of the other five
    assert [b.label for b in config.baselines] == ["conv_only"]
    assert config.auto_seeds is not None and config.seeds == [0, 1]
    assert config.ablation["default_label"] == "attn_last_half"
