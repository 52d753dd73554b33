"""Study-file validation: imports, one-line errors, the metric vocabulary and the feature-map rule."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from hybridlab.errors import HybridlabError
from studies.config import StudyConfigError, load_study_config

MY_BLOCKS = textwrap.dedent(
    """
    from torch import nn
    from blocks import register_block


    class {cls}(nn.Module):
        def __init__(self, dim, window_size):
            super().__init__()
            self.proj = nn.Linear(dim, dim)

        def forward(self, x):
            return self.proj(x)


    register_block("{symbol}", {cls}, kind="mixer")
    """
)


def tiny_raw(**changes) -> dict:
    """A small valid study on synthetic data (nothing is trained here)."""
    raw = {
        "name": "tiny",
        "data": {"name": "synthetic", "num_train": 64, "num_val": 32, "num_classes": 4, "img_size": 16, "batch_size": 16},
        "model": {"pattern": "C | M A", "dim": 8, "in_dim": 8, "num_heads": [1, 2], "window_size": [4, 4],
                  "stem_stride": 2},
        "search_space": {"layout": {"stages": [2], "family": ["attn_last_half", "attn_first_half"]}},
        "train": {"epochs": 1, "lr": 0.01},
        "measure": {"device": "cpu", "batch_size": 4},
        "sampler": "grid",
        "seeds": [0],
    }
    for key, value in changes.items():
        node = raw
        *path, last = key.split("__")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return raw


def problems_of(raw: dict) -> list[str]:
    with pytest.raises(StudyConfigError) as info:
        load_study_config("bad.yaml", raw=raw, check_data=False)
    problems = info.value.problems
    assert all("\n" not in p for p in problems)
    return problems


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """Run from a folder that is neither the study's nor the repository's; restore sys.path and modules after."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("cfgtest_blocks")]:
        del sys.modules[name]
    from blocks import unregister_block

    for symbol in ("Qa", "Qb"):  # the blocks those modules registered: later tests see the built-in set only
        unregister_block(symbol)


# --- imports -----------------------------------------------------------------------------------------

def test_imports_resolve_next_to_the_study_file(elsewhere) -> None:
    folder = elsewhere / "study"
    folder.mkdir()
    (folder / "cfgtest_blocks_a.py").write_text(MY_BLOCKS.format(cls="NextToStudy", symbol="Qa"))
    study = folder / "mine.yaml"
    study.write_text(yaml.safe_dump(tiny_raw(imports=["cfgtest_blocks_a"], model__pattern="C | Qa A")))
    config = load_study_config(str(study), check_data=False)
    assert "Qa" in config.model.pattern


def test_imports_resolve_from_the_current_folder(elsewhere) -> None:
    (Path(os.getcwd()) / "cfgtest_blocks_b.py").write_text(MY_BLOCKS.format(cls="InCwd", symbol="Qb"))
    config = load_study_config("x.yaml", raw=tiny_raw(imports="cfgtest_blocks_b", model__pattern="C | Qb A"),
                               check_data=False)
    assert "Qb" in config.model.pattern


def test_missing_import_is_one_line(elsewhere) -> None:
    problems = problems_of(tiny_raw(imports=["cfgtest_blocks_nowhere"]))
    assert any(p.startswith("imports: cannot import 'cfgtest_blocks_nowhere'") for p in problems), problems


# --- one validation path: errors located under their section, never re-prefixed twice ------------------

@pytest.mark.parametrize(
    "changes,start",
    [
        ({"train__epochs": "many"}, "train.epochs: "),
        ({"measure__repeats": 0}, "measure.repeats: "),
        ({"model__num_heads": [1, 3]}, "model.num_heads: "),
        ({"data__batch_size": 0}, "data.batch_size: "),
        ({"sampler": {"name": "tpe", "population_size": 1}}, "sampler.population_size: "),
        ({"constraints": {"max_macs": "lots"}}, "constraints.max_macs: expected a number"),
    ],
)
def test_errors_name_their_key_once(changes, start) -> None:
    problems = problems_of(tiny_raw(**changes))
    assert any(p.startswith(start) for p in problems), problems
    assert not any(p.startswith(("train.train", "measure.measure", "model.model", "data.data")) for p in problems)


# --- one vocabulary ---------------------------------------------------------------------------------------

def test_objectives_come_from_the_metric_registry() -> None:
    import hybridlab.metrics

    config = load_study_config("x.yaml", raw=tiny_raw(objectives=["top1", {"name": "latency_ms"}]), check_data=False)
    assert all(isinstance(o, hybridlab.metrics.Objective) for o in config.objectives)
    assert config.directions == ["maximize", "minimize"]
    assert any("objectives[0]: 'epochs' is recorded but cannot be an objective" in p
               for p in problems_of(tiny_raw(objectives=["epochs"])))


def test_constraints_take_their_names_from_the_registry() -> None:
    raw = tiny_raw(constraints={"min_throughput_img_s": 10, "max_latency_ms": 5, "max_params": "1e6"})
    config = load_study_config("x.yaml", raw=raw, check_data=False)
    assert config.constraints.active == {"min_throughput_img_s": 10.0, "max_latency_ms": 5.0, "max_params": 1e6}
    assert config.constraints.max_params == 1e6 and config.constraints.min_throughput is None
    problems = problems_of(tiny_raw(constraints={"max_top1": 5}))
    assert any(p.startswith("constraints.max_top1: unknown constraint") for p in problems), problems


# --- the feature-map side rounds up, as the stem does -------------------------------------------------------

def test_window_that_fits_a_rounded_up_feature_map_is_accepted() -> None:
    # 30 px through a stride-4 stem: 15 then 8 (the convs round up), so a window of 8 fits stage 1.
    raw = tiny_raw(data__img_size=30, model__pattern="M A | C", model__window_size=[8, 4], model__stem_stride=4,
                   search_space={"layout": {"stages": [1], "family": ["attn_last_half", "attn_first_half"]}})
    config = load_study_config("x.yaml", raw=raw, check_data=False)
    assert config.model.feature_map_sides(30)[0] == 8
    raw["model"]["window_size"] = [9, 4]
    problems = problems_of(raw)
    assert any(p.startswith("model.window_size: stage 1 window 9 is larger than its 8x8 feature map") for p in problems)


# --- hostile values: one line naming the key, for every numeric setting ---------------------------------------

@pytest.mark.parametrize(
    "changes,start",
    [
        ({"train__epochs": float("nan")}, "train.epochs: expected a finite number"),
        ({"measure__warmup_s": float("inf")}, "measure.warmup_s: expected a finite number"),
        ({"train__lr": -float("inf")}, "train.lr: expected a finite number"),
        ({"train__epochs": 2**63}, "train.epochs: integer too large"),
        ({"seeds": [0, 2**63]}, "seeds[1]: integer too large"),
        ({"seeds": [-1]}, "seeds: must be >= 0"),
        ({"seeds": [2**40]}, "seeds: must be <= "),
        ({"train__epochs": -3}, "train.epochs: "),
        ({"train__epochs": 10**7}, "train.epochs: must be <= 100,000"),
        ({"train__lr": 0}, "train.lr: "),
        ({"data__batch_size": 10**9}, "data.batch_size: must be <= 65,536"),
        ({"measure__iters": 10**12}, "measure.iters: must be <= "),
        ({"model__dim": 2**30}, "model.dim: must be <= "),
        ({"sampler": {"name": "tpe", "seed": -1}}, "sampler.seed: must be >= 0"),
        ({"devices": 0}, "devices: must be >= 1"),
        ({"n_trials": 10_001, "sampler": "tpe"}, "n_trials: must be <= 10,000"),
        ({"n_trials": True, "sampler": "tpe"}, "n_trials: expected an integer"),
        ({"max_retries": -1}, "max_retries: must be >= 0"),
        ({"max_retries": "twice"}, "max_retries: expected an integer"),
        ({"train__threads": 0}, "train.threads: must be >= 1"),
        ({"measure__threads": "many"}, "measure.threads: expected an integer"),
    ],
)
def test_numbers_are_finite_and_in_range(changes, start) -> None:
    problems = problems_of(tiny_raw(**changes))
    assert any(p.startswith(start) for p in problems), problems


@pytest.mark.parametrize("section,value", [("train", 5), ("data", [1]), ("measure", "fast"), ("model", 3),
                                           ("search_space", [1]), ("sampler", 5), ("constraints", [1]),
                                           ("baselines", 1), ("ablation", "x"), ("seeds", {"x": 1})])
def test_non_mapping_sections_are_one_line(section, value) -> None:
    problems = problems_of(tiny_raw(**{section: value}))
    assert any(p.startswith(section) for p in problems), problems


@pytest.mark.parametrize("name", ["tiny\n", "a/b", "..", "a\\b", "a\x00b", "", " tiny", "x" * 101, 5, None])
def test_study_names_are_folder_names(name) -> None:
    assert any(p.startswith("name: ") for p in problems_of(tiny_raw(name=name)))


@pytest.mark.parametrize("imports", [[""], ["  "], [None], "a b", [["x"]]])
def test_empty_or_odd_imports_are_refused(imports) -> None:
    assert any(p.startswith("imports") for p in problems_of(tiny_raw(imports=imports)))


def test_quoted_values_are_cut_to_200_characters() -> None:
    for changes in ({"sampler": {"name": "x" * 100_000}}, {"objectives": ["y" * 100_000]},
                    {"model__init": "z" * 100_000}, {"colour": {"k" * 100_000: 1}}):
        problems = problems_of(tiny_raw(**changes))
        assert all(len(p) < 1_000 for p in problems), [len(p) for p in problems]


def test_yaml_aliases_are_refused_in_one_line(tmp_path) -> None:
    laugh = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    path = tmp_path / "lol.yaml"
    path.write_text(yaml.safe_dump(tiny_raw()) + laugh)
    with pytest.raises(StudyConfigError) as info:
        load_study_config(str(path), check_data=False)
    assert len(str(info.value)) < 500 and "\n" not in str(info.value)
    assert "anchors and aliases" in str(info.value)
    with pytest.raises(HybridlabError, match="--set: cannot read the value"):
        load_study_config("x.yaml", raw=tiny_raw(), overrides=["train=&a {epochs: 1}"], check_data=False)


def test_deep_nesting_is_one_line(tmp_path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(yaml.safe_dump(tiny_raw()) + "description: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(StudyConfigError, match="nested too deeply"):
        load_study_config(str(path), check_data=False)


# --- new settings ------------------------------------------------------------------------------------------

def test_max_retries_and_threads_are_exposed() -> None:
    config = load_study_config("x.yaml", raw=tiny_raw(), check_data=False)
    assert config.max_retries == 2 and config.train_threads is None and config.auto_seeds is None
    config = load_study_config("x.yaml", raw=tiny_raw(max_retries=0, train__threads=2, measure__threads="auto"),
                               check_data=False)
    assert config.max_retries == 0 and config.train_threads == 2 and config.measure["threads"] is None
    assert config.recipe.epochs == 1  # threads is not a TrainRecipe field: it is taken out before


def test_seeds_auto_is_parsed_validated_and_round_trips(tmp_path) -> None:
    config = load_study_config("x.yaml", raw=tiny_raw(seeds="auto"), check_data=False)
    assert config.seeds == [0, 1] and config.auto_seeds.to_dict() == {
        "initial": 2, "max": 6, "budget": None, "confidence": 0.95}
    raw = tiny_raw(seeds={"auto": {"initial": 3, "max": 8, "budget": 40}})
    config = load_study_config("x.yaml", raw=raw, check_data=False)
    assert config.seeds == [0, 1, 2] and (config.auto_seeds.max, config.auto_seeds.budget) == (8, 40)
    path = tmp_path / "again.yaml"
    path.write_text(config.to_yaml())
    again = load_study_config(str(path), check_data=False)
    assert again.auto_seeds == config.auto_seeds and again.seeds == config.seeds
    for auto, start in [({"initial": 1}, "seeds.auto.initial: must be >= 2"),
                        ({"initial": 4, "max": 3}, "seeds.auto.max: must be >= 4"),
                        ({"budget": 3}, "seeds.auto.budget: budget 3 does not cover the first round (2 candidates"),
                        ({"confidence": 1.5}, "seeds.auto.confidence: must be <= 0.999"),
                        ({"rounds": 2}, "seeds.auto.rounds: unknown key")]:
        problems = problems_of(tiny_raw(seeds={"auto": auto}))
        assert any(p.startswith(start) for p in problems), problems


def test_to_yaml_is_a_valid_study_file_without_the_password(tmp_path) -> None:
    raw = tiny_raw(storage="postgresql://bob:s3cret@db.example/studies", train__threads=1)
    config = load_study_config("x.yaml", raw=raw, check_data=False)
    text = config.to_yaml()
    assert "s3cret" not in text and "bob:***@db.example" in text
    assert config.storage.endswith("s3cret@db.example/studies")  # the run itself still connects
    path = tmp_path / "study.yaml"
    path.write_text(text)
    assert load_study_config(str(path), check_data=False).train_threads == 1


def test_n_trials_limit_is_the_planner_s() -> None:
    """A study file cannot ask for more architectures than the planner will queue (one limit, stated once each)."""
    from studies.config_sections import MAX_ARCHITECTURES
    from studies.planning import MAX_ARCHITECTURES as PLANNED

    assert MAX_ARCHITECTURES == PLANNED == 10_000
