"""Study-file validation: imports, one-line errors, the metric vocabulary and the feature-map rule."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

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
