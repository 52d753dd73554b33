"""`strategy: one_shot`: its settings, a whole study (supernet, scores, stand-alone retraining), resume, and
that a scored layout's weights load into the stand-alone trial's model."""

from __future__ import annotations

import copy

import pytest
import torch
from optuna.trial import TrialState

import studies.one_shot_score as scoring
from hybridlab.errors import ConfigError
from hybridlab.fidelity import FULL, SUPERNET, SUPERNET_RANK
from hybridlab.metrics import Objective
from studies.config import StudyConfigError, load_study_config
from studies.one_shot import ROLE, OneShotSearch, supernet_trial
from studies.one_shot_config import parse_one_shot, supernet_layout
from studies.one_shot_score import front_ranks, top_of_front
from studies.one_shot_train import build_supernet, load_supernet
from tests.conftest import run

RAW = {
    "name": "oneshot",
    "data": {"name": "global_marks", "img_size": 16, "train_subset": 64, "val_subset": 32, "batch_size": 16},
    "model": {"pattern": "C | M M | M M", "dim": 8, "in_dim": 8, "num_heads": [1, 2, 2], "window_size": [4, 4, 2],
              "stem_stride": 2, "drop_path_rate": 0.0},
    "search_space": {"free": {"stages": [2, 3], "symbols": ["M", "A"]}},
    "train": {"epochs": 1, "lr": 0.01, "warmup_epochs": 0},
    "measure": {"device": "cpu", "batch_size": 4, "repeats": 1, "warmup_iters": 1, "warmup_s": 0, "iters": 2,
                "figures": ["compute", "throughput", "latency"]},
    "objectives": ["top1", "throughput_img_s"],
    "strategy": {"name": "one_shot", "epochs": 2, "calib_batches": 2, "retrain_top": 2, "retrain": ["attn_last_half"]},
    "seeds": [0],
}


def raw(**strategy) -> dict:
    out = copy.deepcopy(RAW)
    out["strategy"].update(strategy)
    return out


def fake_predictor(config, layout, patterns, folder, echo=print) -> dict[str, float]:
    """Throughput falls with each attention block: a front with a real trade-off, no timing."""
    return {p: 1000.0 - 100.0 * p.replace("*2", " A").count("A") for p in patterns}


@pytest.fixture
def predictor(monkeypatch):
    monkeypatch.setattr(scoring, "predict_throughput", fake_predictor)


# -- settings -------------------------------------------------------------------------------------------------------


def test_defaults_and_bad_values_are_one_line_errors():
    s = parse_one_shot({"name": "one_shot"})
    assert (s.sampling, s.share, s.calib_batches, s.search, s.retrain_top, s.retrain) == (
        "uniform", True, 8, "auto", 5, ())
    assert s.exhaustive(10_000) and not s.exhaustive(10_001)
    for bad, where in [({"sampling": "greedy"}, "strategy.sampling"), ({"retrain_top": -1}, "strategy.retrain_top"),
                       ({"evolution": {"population": 2}}, "strategy.evolution.population"),
                       ({"typo": 1}, "strategy.typo"), ({"epochs": 0}, "strategy.epochs")]:
        with pytest.raises(ConfigError) as err:
            parse_one_shot({"name": "one_shot", **bad})
        assert err.value.where == where and "\n" not in str(err.value)


@pytest.mark.parametrize("change, message", [
    ({"search_space": {"layout": {"stages": [3], "family": ["attn_last_half"]}}}, "needs a 'search_space.free'"),
    ({"search_space": {"free": {"stages": [2, 3], "symbols": ["M", "A"]}, "model": {"dim": [8, 16]}}},
     "block choices only, not dim"),
    ({"objectives": ["top1", "macs"]}, "not macs"),
    ({"strategy": {"name": "one_shot", "retrain": ["C | M | M"]}}, "strategy.retrain[0]: depths"),
    ({"strategy": {"name": "one_shot", "retrain": ["C | C M | M M"]}}, "is C, not one of"),
    ({"strategy": {"name": "bogus"}}, "strategy.name: unknown strategy"),
])
def test_study_file_errors_name_the_key(change, message):
    with pytest.raises(StudyConfigError) as err:
        load_study_config("oneshot.yaml", raw={**copy.deepcopy(RAW), **change}, check_data=False)
    assert any(message in p for p in err.value.problems), err.value.problems


def test_one_shot_needs_no_n_trials_and_names_table5_layouts():
    config = load_study_config("oneshot.yaml", raw=raw(retrain=["attn_first_half", "C | A*2 | M A"]),
                               check_data=False)
    layout = supernet_layout(config.space)
    assert layout.positions == ((1, 0), (1, 1), (2, 0), (2, 1)) and layout.num_layouts == 16
    assert layout.family_pattern("attn_first_half") == "C | A M | A M"


# -- front selection -----------------------------------------------------------------------------------------------------


def test_front_ranks_and_top_k_follow_dominance():
    rows = [{"top1": a, "throughput_img_s": t} for a, t in [(50, 10), (40, 20), (30, 5), (50, 5), (45, 15)]]
    objectives = [Objective("top1", "maximize"), Objective("throughput_img_s", "maximize")]
    ranks = front_ranks(scoring.objective_matrix(rows, objectives))
    assert ranks.tolist() == [0, 0, 2, 1, 0]
    assert set(top_of_front(rows, objectives, 3)) == {0, 1, 4}
    assert top_of_front(rows, [Objective("top1", "maximize")], 2) == [0, 3]
    nan = [{"top1": float("nan")}, {"top1": 1.0}]
    assert top_of_front(nan, [Objective("top1", "maximize")], 1) == [1]


def test_evolution_scores_only_what_it_visits():
    calls: list[int] = []

    def evaluate(paths):
        calls.append(len(paths))
        return [{"top1": float(sum(p))} for p in paths]

    seen = scoring.evolve(evaluate, [Objective("top1", "maximize")], positions=10, choices=2, population=8,
                          generations=5, seed=0)
    assert sum(calls) == len(seen) < 2**10
    assert max(r["top1"] for r in seen.values()) >= 8  # climbs towards the all-ones layout


# -- a whole study ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_one_shot_study_end_to_end_and_resume(tmp_path, predictor):
    study, lines = run(raw(), tmp_path)
    trials = study.get_trials(deepcopy=False)
    supernet = [t for t in trials if t.user_attrs.get(ROLE) == "supernet"]
    scored = [t for t in trials if t.user_attrs.get("fidelity_label") == SUPERNET]
    full = [t for t in trials if t.user_attrs.get("fidelity_label") == FULL]
    assert len(supernet) == 1 and supernet[0].state == TrialState.PRUNED and "top1" not in supernet[0].user_attrs
    assert len(scored) == 16 and len({t.user_attrs["pattern"] for t in scored}) == 16
    assert all(t.state == TrialState.COMPLETE and t.user_attrs["fidelity_rank"] == SUPERNET_RANK for t in scored)
    assert all(t.values == [t.user_attrs["top1"], t.user_attrs["throughput_img_s"]] for t in scored)
    labels = {t.user_attrs["pattern"]: t.user_attrs["label"] for t in scored}
    assert labels["C | M A | M A"] == "attn_last_half" and labels["C | A M | A M"] == "attn_first_half"
    assert labels["C | A M | M A"] == "C | A M | M A"
    # top 2 of the predicted front + attn_last_half (unless it is on the front), trained stand-alone
    assert 2 <= len(full) <= 3 and all(t.state == TrialState.COMPLETE for t in full)
    assert "attn_last_half" in {t.user_attrs["label"] for t in full}
    assert {t.user_attrs["fidelity"] for t in full}.isdisjoint({t.user_attrs["fidelity"] for t in scored})
    hashes = {t.user_attrs["pattern"]: t.user_attrs["arch_hash"] for t in scored}
    for t in full:  # the agreement report matches the two fidelities by arch_hash
        assert hashes[t.user_attrs["pattern"]] == t.user_attrs["arch_hash"]
        assert "reused_from" not in t.user_attrs
    table = (tmp_path / "oneshot" / "trials.csv").read_text()
    assert table.count(",supernet,") >= 16
    cost = [t for t in trials if t.user_attrs.get(ROLE) == "supernet_scoring"]
    assert len(cost) == 1 and cost[0].state == TrialState.PRUNED
    assert cost[0].user_attrs["layouts"] == 16 and cost[0].user_attrs["scoring_images"] > 0
    assert cost[0].user_attrs["scoring_time_s"] > 0 and "top1" not in cost[0].user_attrs
    # a rerun neither trains the supernet again nor rescores nor retrains
    before = len(trials)
    study2, lines2 = run(raw(), tmp_path)
    assert len(study2.get_trials(deepcopy=False)) == before
    assert not any("[supernet] training" in line or "scoring all" in line for line in lines2)


@pytest.mark.slow
def test_killed_after_training_resumes_at_scoring(tmp_path, predictor, monkeypatch):
    """The supernet is recorded, then the run dies while scoring: the rerun scores without training again."""
    def die(self, study):
        raise KeyboardInterrupt

    monkeypatch.setattr(OneShotSearch, "score", die)
    with pytest.raises(KeyboardInterrupt):
        run(raw(retrain_top=0, retrain=[]), tmp_path)
    monkeypatch.undo()
    monkeypatch.setattr(scoring, "predict_throughput", fake_predictor)
    trained = torch.load(tmp_path / "oneshot" / "supernet" / "supernet.pt", weights_only=True)
    study, lines = run(raw(retrain_top=0, retrain=[]), tmp_path)
    assert not any("[supernet] training" in line for line in lines)
    assert any("scoring all 16 layouts" in line for line in lines)
    again = torch.load(tmp_path / "oneshot" / "supernet" / "supernet.pt", weights_only=True)
    assert all(torch.equal(trained[k], again[k]) for k in trained)
    assert supernet_trial(study) is not None
    assert sum(t.user_attrs.get("fidelity_label") == SUPERNET for t in study.get_trials(deepcopy=False)) == 16
    # the sampler's state went into the checkpoint: a resumed fit continues its sequence
    ckpt = torch.load(tmp_path / "oneshot" / "supernet" / "last.ckpt", weights_only=True)
    assert ckpt["path_sampler"]["steps"] == ckpt["global_step"] > 0


def test_scored_layout_loads_into_the_stand_alone_model(tmp_path):
    config = load_study_config("oneshot.yaml", raw=raw(), check_data=False)
    layout = supernet_layout(config.space)
    net = build_supernet(layout, share=True, seed=0)
    torch.save(net.state_dict(), tmp_path / "supernet.pt")
    net = load_supernet(build_supernet(layout, share=True, seed=1), tmp_path)
    path = (0, 1, 1, 0)
    params = layout.params_of(path)
    cand = config.space.candidate(params)
    assert cand.pattern == net.pattern_of(path)
    assert cand.arch_hash == layout.base.with_settings(pattern=net.pattern_of(path)).arch_hash()
    model = cand.build()
    state = net.subnet_state_dict(path)
    assert set(state) == set(model.state_dict())
    model.load_state_dict(state, strict=True)
    assert net.path_params(path) == sum(p.numel() for p in model.parameters())
    x = torch.randn(2, 3, 16, 16)
    model.eval()
    assert torch.allclose(model(x), net(x, path), atol=1e-5)



@pytest.mark.slow
def test_retrained_layouts_train_with_every_seed_under_their_name(tmp_path, predictor):
    """The supernet trains once (first seed); each retrained layout trains with every seed, keeping its label."""
    config = raw(retrain_top=0, retrain=["attn_last_half"])
    config["seeds"] = [0, 1]
    study, _ = run(config, tmp_path)
    trials = study.get_trials(deepcopy=False)
    assert sum(t.user_attrs.get(ROLE) == "supernet" for t in trials) == 1
    full = [t for t in trials if t.user_attrs.get("fidelity_label") == FULL]
    assert sorted(t.user_attrs["seed"] for t in full) == [0, 1]
    assert {t.user_attrs["label"] for t in full} == {"attn_last_half"}
    assert {t.user_attrs["one_shot"] for t in full} == {"named"}
    assert len({t.user_attrs["arch_hash"] for t in full}) == 1
