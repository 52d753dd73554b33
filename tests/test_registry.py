"""Users add blocks from their own module, without editing hybridlab (the README's example, run for real)."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
import torch

from blocks import ModelSpec, block_types, parse, unregister_block
from hybridlab.cli import main as cli_main
from hybridlab.errors import PatternError
from studies.config import load_study_config

# The example from the README, verbatim.
MY_BLOCKS = textwrap.dedent(
    '''
    from torch import nn
    from blocks import Option, register_block


    class ConvMixer(nn.Module):
        """Depthwise conv over the window's tokens: a cheap local token mixer."""

        def __init__(self, dim, window_size, kernel=3):
            super().__init__()
            self.window = window_size
            self.conv = nn.Conv2d(dim, dim, kernel, padding=kernel // 2, groups=dim)

        def forward(self, x):  # (batch * windows, window_size**2 tokens, dim)
            b, n, c = x.shape
            y = x.transpose(1, 2).reshape(b, c, self.window, self.window)
            return self.conv(y).flatten(2).transpose(1, 2)


    register_block("D", ConvMixer, kind="mixer", options=[Option("kernel", int, 3, min=1, max=15)])
    '''
)


@pytest.fixture()
def my_blocks(tmp_path, monkeypatch):
    (tmp_path / "my_blocks.py").write_text(MY_BLOCKS)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_blocks"
    unregister_block("D")
    sys.modules.pop("my_blocks", None)


def test_user_block_from_own_module(my_blocks, capsys) -> None:
    with pytest.raises(PatternError, match="unknown block 'D'"):
        parse("C | M D")
    assert cli_main(["--import", my_blocks, "show", "C | M*2 D[kernel=5]*2", "--dim", "16", "--num-heads", "1,2",
                     "--window-size", "4", "--stem-stride", "2", "--img-size", "16", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["canonical"] == "C | M*2 D[kernel=5]*2"
    assert "D" in block_types() and block_types()["D"].kind == "mixer"
    spec = ModelSpec.create("C | M D[kernel=5]", dim=8, num_heads=[1, 2], window_size=[4, 4], stem_stride=2, num_classes=3)
    model = spec.build()
    out = model(torch.randn(2, 3, 16, 16))
    out.sum().backward()
    assert out.shape == (2, 3)
    assert "levels.1.blocks.1.mixer.conv.weight" in model.state_dict()  # wrapped in the standard block
    with pytest.raises(PatternError, match="option 'kernel' of block 'D': 99 is above the maximum 15"):
        parse("D[kernel=99]")


def test_study_files_import_user_blocks(my_blocks, tmp_path) -> None:
    raw = {
        "name": "mine", "imports": [my_blocks],
        "data": {"name": "synthetic", "num_train": 8, "num_val": 8, "num_classes": 3, "img_size": 16},
        "model": {"pattern": "C | M D", "dim": 8, "num_heads": [1, 2], "window_size": [4, 4], "stem_stride": 2},
        "sampler": "grid",
    }
    config = load_study_config("mine.yaml", raw=raw)
    assert config.model.pattern == "C | M D"


def test_missing_user_module_is_one_line(capsys) -> None:
    assert cli_main(["--import", "no_such_module_xyz", "show", "C"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        "hybridlab show: --import: cannot import 'no_such_module_xyz': no such module on sys.path or in ")


def test_registration_rules() -> None:
    from blocks import register_block

    class Ok(torch.nn.Module):
        def __init__(self, dim):
            super().__init__()

    with pytest.raises(ValueError, match="already registered"):
        register_block("M", Ok)
    with pytest.raises(ValueError, match="upper-case letter"):
        register_block("m2", Ok)
    with pytest.raises(ValueError, match="kind 'weird'"):
        register_block("Zz", Ok, kind="weird")  # type: ignore[arg-type]
