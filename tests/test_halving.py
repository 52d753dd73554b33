"""Successive halving (`strategy: halving`): the section's checks, rung planning, promotion with several
workers on fake trials, a killed study resumed, and one tiny real run continuing a promoted trial."""

from __future__ import annotations

import sys
import time

import optuna
import pytest
from conftest import tiny_raw
from optuna.trial import TrialState

from hybridlab.fidelity import FULL_RANK
from studies.config import StudyConfigError, load_study_config
from studies.storage import open_storage, retry_trial
from studies.strategy import HalvingSettings, budget_fraction, derive_rungs, parse_strategy
from studies.table import read_trials

# -- the strategy section -------------------------------------------------------------------------------------------


def _config(strategy, **changes):
    return load_study_config("tiny.yaml", raw=tiny_raw(strategy=strategy, **changes))


def _problem(strategy, **changes) -> str:
    with pytest.raises(StudyConfigError) as info:
        _config(strategy, **changes)
    return str(info.value)


def test_no_strategy_section_is_none() -> None:
    assert load_study_config("tiny.yaml", raw=tiny_raw()).strategy is None
    assert parse_strategy(None) is None


def test_halving_defaults_derive_rungs_from_the_full_budget() -> None:
    config = _config("halving", train__epochs=9)
    assert config.strategy == HalvingSettings("halving", eta=3, resource="epochs", rungs=(1, 3, 9))
    assert config.strategy.describe() == "halving (eta 3, epochs rungs 1/3/9)"
    assert _config({"name": "halving", "eta": 2, "min_budget": 2}, train__epochs=8).strategy.rungs == (2, 4, 8)


def test_derived_rungs() -> None:
    assert derive_rungs(9, 3) == (1, 3, 9)
    assert derive_rungs(27, 3, 1) == (1, 3, 9, 27)
    assert derive_rungs(10, 3) == (1, 3, 10)
    assert derive_rungs(20_000, 3, 2_000) == (2_222, 6_667, 20_000)


def test_budget_fraction_counts_continued_epochs_once() -> None:
    # 7 architectures, rungs 1/3/9: 7x1 + 3x2 + 1x6 = 19 of 63 epochs
    assert budget_fraction(HalvingSettings("halving", rungs=(1, 3, 9)), 7) == pytest.approx(19 / 63)
    subset = HalvingSettings("halving", resource="train_subset", rungs=(100, 300, 900))
    assert budget_fraction(subset, 7) == pytest.approx((700 + 900 + 900) / 6300)


@pytest.mark.parametrize(("strategy", "changes", "message"), [
    ({"name": "halving", "eta": 1}, {}, "strategy.eta: must be >= 2, got 1"),
    ({"name": "halving", "rungs": [3, 1]}, {}, "strategy.rungs[1]: rungs must increase, got 1 after 3"),
    ({"name": "halving", "rungs": [1, 3]}, {"train__epochs": 9},
     "strategy.rungs: the last rung must be the full budget train.epochs = 9, got 3"),
    ("halving", {"train__epochs": 1}, "strategy: train.epochs = 1 leaves no lower rung at eta 3"),
    ({"name": "one_way"}, {}, "strategy.name: unknown strategy 'one_way' (known: halving"),
    ({"eta": 3}, {}, "strategy.name: missing 'name'"),
    ({"name": "halving", "rungs": [1, 3], "min_budget": 1}, {}, "strategy: give rungs or min_budget, not both"),
    ({"name": "halving", "speed": 1}, {}, "strategy.speed: unknown key 'speed'"),
    ({"name": "halving", "resource": "train_subset"}, {}, "strategy.resource: resource train_subset needs data.train_subset"),
    ({"name": "halving", "resource": "img_size", "rungs": [8, 16]}, {}, "strategy.rungs[0]: stage 2 window 4 is larger"),
    ({"name": "halving", "rungs": [1, 3]}, {"train__epochs": 3, "sampler": "tpe", "n_trials": 3},
     "strategy: halving promotes within a planned grid: needs sampler grid, got tpe"),
    ({"name": "halving", "rungs": [1, 3]}, {"train__epochs": 3, "seeds": "auto"}, "not seeds: auto"),
])
def test_bad_sections_are_one_line_naming_the_key(strategy, changes, message) -> None:
    text = _problem(strategy, **changes)
    assert message in text
    assert len([line for line in text.splitlines() if "strategy" in line]) == 1


def test_other_resources_take_their_full_budget_from_the_data() -> None:
    subset = _config({"name": "halving", "resource": "train_subset", "eta": 2}, data__train_subset=64)
    assert subset.strategy.rungs == (16, 32, 64)
    size = _config({"name": "halving", "resource": "img_size", "rungs": [16, 32]}, data__img_size=32)
    assert size.strategy.rungs == (16, 32)


# -- the study side: fake trials through the real runner ------------------------------------------------------------

TOP1 = {  # label -> top-1 at rung 0, 1, 2 (seed s adds s)
    "attn_last_half": [50.0, 60.0, 70.0],
    "attn_first_half": [55.0, 58.0, 80.0],
    "mixer_only": [40.0, 45.0, 50.0],
}
SPEED = {"attn_last_half": 100.0, "attn_first_half": 90.0, "mixer_only": 300.0}
HALVING = {"name": "halving", "eta": 2, "rungs": [1, 2, 4]}


@pytest.fixture
def fake_trials(monkeypatch):
    """Trials that neither measure nor train: top-1 from TOP1 by rung (+ seed), a throughput per label; each
    records the thread that ran it."""
    import threading

    from studies.objective import TrialObjective

    def train(self, trial, arch, seed):
        trial.set_user_attr("thread", threading.current_thread().name)
        time.sleep(0.02)
        return {"top1": TOP1.get(arch.label, [30.0] * 3)[trial.user_attrs["rung"]] + seed}

    monkeypatch.setattr(TrialObjective, "_measure", lambda self, trial, arch: {"throughput_img_s": SPEED.get(arch.label, 500.0)})
    monkeypatch.setattr(TrialObjective, "_train", train)


def _raw(**changes):
    base = {"strategy": HALVING, "train__epochs": 4, "seeds": [0, 1], "baselines": {"conv": {"pattern": "C | C C"}},
            "objectives": ["top1"]}
    return tiny_raw(**{**base, **changes})


def _run(raw, tmp_path, **options):
    from studies.runner import RunOptions, run_study

    lines: list[str] = []
    config = load_study_config("tiny.yaml", raw=raw)
    run_study(config, RunOptions(results_dir=tmp_path, echo=lines.append, progress=False, **options))
    return _load(tmp_path), lines


def _load(tmp_path):
    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'tiny' / 'study.db'}")


def _complete(study, rung: int) -> list[tuple[str, int]]:
    return sorted((t.user_attrs["label"], t.user_attrs["seed"]) for t in study.trials
                  if t.state == TrialState.COMPLETE and t.user_attrs.get("rung") == rung)


EXPECTED = [  # rung -> the (label, seed) pairs it trains: 3 architectures -> 2 -> 1, the baseline at every rung
    sorted([(label, s) for label in [*TOP1, "conv"] for s in (0, 1)]),
    sorted([(label, s) for label in ("attn_first_half", "attn_last_half", "conv") for s in (0, 1)]),
    sorted([(label, s) for label in ("attn_last_half", "conv") for s in (0, 1)]),
]


@pytest.mark.slow
def test_halving_promotes_the_top_half_and_plans_exact_counts(tmp_path, fake_trials) -> None:
    study, lines = _run(_raw(), tmp_path)
    assert len(study.trials) == 8 + 6 + 4 and {t.state for t in study.trials} == {TrialState.COMPLETE}
    assert [_complete(study, k) for k in range(3)] == EXPECTED
    by_number = {t.number: t for t in study.trials}
    for t in study.trials:
        rung = t.user_attrs["rung"]
        assert t.user_attrs["fidelity_rank"] == (FULL_RANK if rung == 2 else rung)
        assert t.user_attrs["fidelity_label"] == ("full" if rung == 2 else f"rung {rung} ({[1, 2][rung]:,} epochs)")
        assert t.user_attrs["rung_budget"] == [1, 2, 4][rung]
        if rung:  # the same architecture and seed as the trial it continues, one rung below
            parent = by_number[t.user_attrs["promoted_from"]]
            assert parent.user_attrs["rung"] == rung - 1
            assert (parent.user_attrs["arch_hash"], parent.user_attrs["seed"]) == (t.user_attrs["arch_hash"], t.user_attrs["seed"])
            assert t.user_attrs["promotion_reason"].startswith(f"rung {rung - 1}: ")
    final = [t for t in study.trials if t.user_attrs["rung"] == 2 and not t.user_attrs["is_baseline"]]
    assert {t.user_attrs["promotion_reason"] for t in final} == {"rung 1: top 1 of 2 by maximize (place 1)"}
    assert study.user_attrs["halving_rung_0"][0][1] == "rung 0: top 2 of 3 by maximize (place 1)"
    assert any("rung 1: continues trial" in line for line in lines)
    table = read_trials(tmp_path / "tiny")
    assert list(table["rung"]) == [t.user_attrs["rung"] for t in study.trials]
    assert table["promoted_from"].notna().sum() == 10 and (table["promotion_reason"] != "").sum() == 10


@pytest.mark.slow
def test_two_objectives_promote_by_pareto_rank(tmp_path, fake_trials) -> None:
    # rung 0 (seed-averaged): first_half (55.5, 90), last_half (50.5, 100), mixer (40.5, 300): all on the front,
    # quota 2: crowding keeps the extremes, first_half (best top-1) and mixer_only (fastest)
    study, _ = _run(_raw(objectives=["top1", "throughput_img_s"], seeds=[0, 1]), tmp_path)
    assert _complete(study, 1) == sorted([(label, s) for label in ("attn_first_half", "mixer_only", "conv")
                                          for s in (0, 1)])
    reasons = {t.user_attrs["promotion_reason"] for t in study.trials if t.user_attrs["rung"] == 1
               and not t.user_attrs["is_baseline"]}
    assert reasons == {"rung 0: front 0 of 3 rows, crowding distance inf (top 2)"}


@pytest.mark.slow
def test_several_workers_decide_each_promotion_once(tmp_path, fake_trials) -> None:
    import threading

    from studies.runner import RunOptions, run_study

    # a journal file: its claims are atomic between threads (SQLite's are not; PostgreSQL's are, see test_workers)
    raw = _raw(storage=f"journal://{tmp_path / 'shared.log'}")
    config = load_study_config("tiny.yaml", raw=raw)
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def worker() -> None:
        try:
            start.wait(timeout=60)  # all three open the study together, so their claims interleave
            run_study(config, RunOptions(results_dir=tmp_path, echo=lambda line: None, progress=False))
        except BaseException as exc:  # noqa: BLE001  (reported by the assertion below)
            errors.append(exc)

    threads = [threading.Thread(target=worker, name=f"w{i}") for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors
    study = optuna.load_study(study_name="tiny", storage=open_storage(raw["storage"]))
    assert len(study.trials) == 18 and {t.state for t in study.trials} == {TrialState.COMPLETE}
    assert [_complete(study, k) for k in range(3)] == EXPECTED
    # (which thread ran which trial depends on the scheduler: a loaded machine may let one thread take them all,
    # so the checks below hold whatever the split)
    for t in study.trials:  # no trial of a rung started before every trial of the rung below had finished
        below = [o for o in study.trials if o.user_attrs["rung"] == t.user_attrs["rung"] - 1]
        assert all(o.datetime_complete <= t.datetime_start for o in below)
    parents = [t.user_attrs["promoted_from"] for t in study.trials if "promoted_from" in t.user_attrs]
    assert len(parents) == len(set(parents)) == 10  # each trial continued at most once


@pytest.mark.slow
def test_the_decision_is_the_same_from_any_worker_and_recorded_once(tmp_path, fake_trials, monkeypatch) -> None:
    from studies import halving

    config = load_study_config("tiny.yaml", raw=_raw())
    with monkeypatch.context() as m:  # stopped once rung 0 has finished: as if killed there
        m.setattr(halving, "claim_ready", _rung_zero_only(halving.claim_ready))
        with pytest.raises(KeyboardInterrupt):
            _run(_raw(), tmp_path)
    study = _load(tmp_path)
    assert len(_complete(study, 0)) == 8 and not _complete(study, 1)
    assert "halving_rung_0" not in study.user_attrs
    claimed = [halving.claim_ready(study) for _ in range(6)]  # six workers claim rung 1's six trials
    assert len({t.number for t in claimed}) == 6 and {t.user_attrs["rung"] for t in claimed} == {1}
    assert halving.claim_ready(study) is None  # rung 2 waits for them
    assert halving.decide(study, config, 0) == halving.decide(_load(tmp_path), config, 0)
    resolved = [halving.resolve(study, config, t) for t in claimed]
    recorded = study._storage.get_study_user_attrs(study._study_id)["halving_rung_0"]
    assert [tuple(x) for x in recorded] == halving.decide(study, config, 0)
    parents = {t.number: t.user_attrs["promoted_from"] for t in resolved}
    assert len(set(parents.values())) == 6
    for trial in resolved:  # claimed and resolved, never run: as if every worker died here
        study.tell(trial, state=TrialState.FAIL)
        retry_trial(study, study._storage.get_trial(trial._trial_id))
    study, _ = _run(_raw(), tmp_path)
    assert [_complete(study, k) for k in range(3)] == EXPECTED
    assert len(study.trials) == 18 + 6 and len([t for t in study.trials if t.state == TrialState.FAIL]) == 6
    for t in study.trials:  # each retry continues the parent its first attempt was given
        if t.user_attrs.get("retry_of") in parents:
            assert t.state == TrialState.COMPLETE and t.user_attrs["promoted_from"] == parents[t.user_attrs["retry_of"]]


def _rung_zero_only(claim):
    def claim_rung_zero(study):
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if not any(t.user_attrs.get("rung", 0) == 0 for t in waiting):
            raise KeyboardInterrupt
        return claim(study)

    return claim_rung_zero


@pytest.mark.slow
def test_a_halving_study_interrupted_in_rung_one_resumes(tmp_path, fake_trials, monkeypatch) -> None:
    from studies import halving

    resolve = halving.resolve
    calls = []

    def interrupted(study, config, trial):
        calls.append(trial.number)
        if len(calls) == 3:  # Ctrl+C while the third rung-1 slot is being resolved
            raise KeyboardInterrupt
        return resolve(study, config, trial)

    with monkeypatch.context() as m:
        m.setattr(halving, "resolve", interrupted)
        with pytest.raises(KeyboardInterrupt):
            _run(_raw(), tmp_path)
    study = _load(tmp_path)
    stopped = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(stopped) == 1 and stopped[0].user_attrs["fail_reason"] == "interrupted (KeyboardInterrupt)"
    study, _ = _run(_raw(), tmp_path)  # rerunning the command resumes
    assert [_complete(study, k) for k in range(3)] == EXPECTED
    assert len(study.trials) == 18 + 1


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The value nan is not acceptable")
def test_a_slot_without_a_parent_is_pruned_with_the_reason(tmp_path, fake_trials, monkeypatch) -> None:
    failing = dict(TOP1, mixer_only=[float("nan")] * 3, attn_last_half=[float("nan")] * 3)
    monkeypatch.setattr(sys.modules[__name__], "TOP1", failing)
    study, _ = _run(_raw(seeds=[0]), tmp_path)
    slots = [t for t in study.trials if t.user_attrs.get("rung") == 1 and "rung_slot" in t.user_attrs]
    assert [t.state for t in slots] == [TrialState.COMPLETE, TrialState.PRUNED]  # quota 2, one finite row
    assert slots[1].user_attrs["fail_reason"] == "nothing left to promote: rung 0 promoted 1 trials for this slot's 2"


# -- one tiny real run ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_promoted_trial_continues_its_parents_checkpoint(tmp_path) -> None:
    import torch

    raw = tiny_raw(data={"name": "global_marks", "num_train": 64, "num_val": 32, "batch_size": 16},
                   strategy={"name": "halving", "eta": 3, "rungs": [1, 2]}, train__epochs=2)
    study, lines = _run(raw, tmp_path)
    assert [t.user_attrs["rung"] for t in study.trials] == [0, 0, 0, 1]
    assert {t.state for t in study.trials} == {TrialState.COMPLETE}
    child = study.trials[3]
    parent = study.trials[child.user_attrs["promoted_from"]]
    folder = tmp_path / "tiny" / "trials" / str(parent.number)
    assert child.user_attrs["resumed_from"] == str(folder / "last.ckpt")
    assert parent.user_attrs["epochs"] == 1 and child.user_attrs["epochs"] == 2  # the epoch count continues
    steps = parent.user_attrs["global_step"]
    assert child.user_attrs["global_step"] == 2 * steps  # one more epoch, not two
    curve = child.user_attrs["learning_curve"]
    assert [p["epoch"] for p in curve] == [1, 2] and curve[0] == parent.user_attrs["learning_curve"][0]
    saved = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["epoch"] == 0 and "optimizer_states" in saved  # a full checkpoint stays for the promotion
    schedule = saved["lr_schedulers"][0]["lr_lambdas"][0]
    assert schedule["total"] == 2 * steps  # rung 0 ran under the full budget's schedule
    assert child.user_attrs["fidelity_label"] == "full" and parent.user_attrs["fidelity_label"] == "rung 0 (1 epochs)"


@pytest.mark.slow
@pytest.mark.parametrize(("resource", "rungs", "data", "steps"), [
    ("train_subset", [32, 64], {"train_subset": 64}, (2, 4)),  # 32 then 64 images in batches of 16
    ("img_size", [16, 32], {"img_size": 32}, (4, 4)),  # 64 images at 16 then 32 px
])
def test_other_resources_warm_start_from_the_parents_weights(tmp_path, resource, rungs, data, steps) -> None:
    raw = tiny_raw(strategy={"name": "halving", "eta": 3, "resource": resource, "rungs": rungs})
    raw["data"].update(data)
    study, _ = _run(raw, tmp_path)
    assert [t.user_attrs["rung"] for t in study.trials] == [0, 0, 0, 1]
    child = study.trials[3]
    parent = study.trials[child.user_attrs["promoted_from"]]
    assert child.user_attrs["warm_start_from"] == str(tmp_path / "tiny" / "trials" / str(parent.number) / "best.ckpt")
    assert child.user_attrs["warm_start_skipped"] == 0 and child.user_attrs.get("resumed_from") is None
    # each rung trains every epoch (one here) on its own share of the data
    assert (parent.user_attrs["global_step"], child.user_attrs["global_step"]) == steps
    assert parent.user_attrs["fidelity_label"] == f"rung 0 ({rungs[0]} {resource})"
    assert child.user_attrs["fidelity_label"] == "full" and parent.user_attrs["fidelity"] != child.user_attrs["fidelity"]
