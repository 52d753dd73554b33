"""The latency table on a toy model, timed by a fake clock: every leaf module call and every window partition
advances the clock by a cost that depends on the module and its input size, so a part's "time" is a fixed,
known function of what it runs, and a whole model's fake time can be compared with the table's sum exactly."""

from __future__ import annotations

import pytest
import torch

import blocks.windows as windows_module
from blocks.spec import ModelSpec
from hybridlab.errors import ConfigError
from hybridlab.measure.guard import ContentionGuard, GuardReaders
from hybridlab.measure.latency_table import LatencyTable, token_segments
from hybridlab.measure.record import MeasureProfile

BASE = "C | C M A | M A"
POSITIONS = [(1, 1), (1, 2), (2, 0), (2, 1)]
CHOICES = ["M", "A", "C", "A[window=3]"]
PROFILE = MeasureProfile(device="cpu", batch_size=2, img_size=8, in_chans=3, num_classes=3, warmup_iters=1,
                         warmup_s=0.0, window_s=0.0, iters=2, figures=("throughput",), threads=1)  # fmt: skip


class FakeClock:
    """A clock that only moves when the model works: `charge(seconds)` advances it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def charge(self, seconds: float) -> None:
        self.now += seconds


def toy_spec() -> ModelSpec:
    return ModelSpec.create(BASE, dim=8, in_dim=8, num_heads=[1, 1, 2], window_size=[4, 4, 2], stem_stride=1,
                            mlp_ratio=2.0, drop_path_rate=0.0)  # fmt: skip


def _leaf_cost(module: torch.nn.Module, x: torch.Tensor) -> float:
    return 1e-6 * x.numel() * (1 + len(type(module).__name__) % 7)


@pytest.fixture(scope="module")
def toy():
    """A table of the toy model measured under the fake clock; the clock hooks stay on for the module's tests."""
    clock = FakeClock()
    original = windows_module.window_partition

    def charged_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
        clock.charge(3e-6 * x.numel())
        return original(x, window_size)

    def hook(module: torch.nn.Module, args: tuple) -> None:
        if not any(True for _ in module.children()) and args and isinstance(args[0], torch.Tensor):
            clock.charge(_leaf_cost(module, args[0]))

    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    windows_module.window_partition = charged_partition
    try:
        spec = toy_spec()
        readers = GuardReaders(wall=clock, cpu=clock, load1=lambda: 0.0, cores=lambda: 1, sleep=lambda s: None)
        guard = ContentionGuard(readers=readers)
        table = LatencyTable.measure(spec, POSITIONS, CHOICES, PROFILE, rounds=2, seed=0, guard=guard)
        yield table, clock, guard
    finally:
        windows_module.window_partition = original
        handle.remove()


def _fake_model_seconds(table: LatencyTable, layout, clock: FakeClock) -> float:
    torch.manual_seed(0)
    model = table.base.with_settings(pattern=table.pattern(layout)).build().eval()
    x = torch.randn(PROFILE.batch_size, 3, PROFILE.img_size, PROFILE.img_size)
    with torch.inference_mode():
        start = clock()
        model(x)
        return clock() - start


def test_entries_cover_fixed_parts_every_choice_at_every_position_and_each_window(toy):
    table, *_ = toy
    keys = set(table.entries)
    assert {"stem", "level0", "downsample1", "head", "block1.0:C"} <= keys  # stage 1 has no position: one part
    assert {f"block{s}.{j}:{c}" for (s, j) in POSITIONS for c in CHOICES} <= keys
    assert {"window1:4", "window1:3", "window2:2", "window2:3"} == {k for k in keys if k.startswith("window")}
    assert table.choices == CHOICES and table.positions == POSITIONS
    assert table.choice_windows[1] == {"M": 4, "A": 4, "C": None, "A[window=3]": 3}
    assert all(len(e.wall_s) == 2 and len(e.cpu_s) == 2 for e in table.entries.values())
    assert not table.warnings


def test_prediction_is_the_sum_of_the_entries_the_layout_uses(toy):
    table, *_ = toy
    layout = ("M", "C", "A", "A")  # stage 2: C M C -> one segment of window 4; stage 3: A A -> one segment
    expected = ["stem", "level0", "downsample1", "head", "block1.0:C", "block1.1:M", "block1.2:C", "window1:4",
                "block2.0:A", "block2.1:A", "window2:2"]  # fmt: skip
    pred = table.predict(layout)
    assert sorted(pred.keys) == sorted(expected)
    total = sum(table.entries[k].median() for k in expected)
    assert pred.seconds == pytest.approx(total, rel=1e-12)
    assert pred.img_s == pytest.approx(PROFILE.batch_size / total)
    assert pred.seconds_lo <= pred.seconds <= pred.seconds_hi
    # the same layout as a pattern; segments split by a conv block are counted once each
    assert table.predict("C | C M C | A A").keys == pred.keys
    split = table.predict(("A", "A", "C", "M")).keys  # stage 3: C M -> one segment; stage 2: C A A
    assert split.count("window1:4") == 1 and split.count("window2:2") == 1
    assert table.predict(("A[window=3]", "M", "M", "A[window=3]")).keys.count("window1:3") == 1


@pytest.mark.parametrize("layout", [("M", "A", "M", "A"), ("C", "C", "C", "C"), ("A[window=3]", "M", "C", "A[window=3]"),
                                    ("M", "A[window=3]", "A", "C"), ("C", "M", "A[window=3]", "M")])  # fmt: skip
def test_prediction_equals_the_whole_models_fake_time(toy, layout):
    """Every part the model runs is in the sum exactly once, at the shape the model runs it."""
    table, clock, _ = toy
    assert table.predict(layout).seconds == pytest.approx(_fake_model_seconds(table, layout, clock), rel=1e-9)


def test_every_probe_input_has_the_shape_the_model_feeds_that_part(toy):
    table, *_ = toy
    for layout in [("M", "A", "M", "A"), ("C", "A[window=3]", "A[window=3]", "C"), ("A[window=3]", "C", "M", "A")]:
        model = table.base.with_settings(pattern=table.pattern(layout)).build().eval()
        seen: dict[str, list[int]] = {}
        targets = {"stem": model.patch_embed, "level0": model.levels[0], "downsample1": model.levels[1].downsample,
                   "head": model.norm}  # fmt: skip
        chosen = dict(zip(POSITIONS, layout))
        for s, j in [(1, 0), *POSITIONS]:
            targets[f"block{s}.{j}:{chosen.get((s, j), 'C')}"] = model.levels[s].blocks[j]
        def note(key: str):
            def hook(_module: torch.nn.Module, args: tuple) -> None:
                seen.setdefault(key, list(args[0].shape))

            return hook

        handles = [m.register_forward_pre_hook(note(k)) for k, m in targets.items()]
        with torch.inference_mode():
            model(torch.randn(PROFILE.batch_size, 3, PROFILE.img_size, PROFILE.img_size))
        for h in handles:
            h.remove()
        assert seen == {k: table.entries[k].input_shape for k in targets}, layout
    assert table.entries["block2.0:A[window=3]"].input_shape == [2, 9, 32]  # 2x2 map padded to one 3x3 window


def test_json_round_trip_keeps_every_entry_and_prediction(toy, tmp_path):
    table, *_ = toy
    table.calibrate({("M", "A", "M", "A"): table.predict(("M", "A", "M", "A")).seconds + 0.5})
    path = table.save(tmp_path / "latency_table.json")
    loaded = LatencyTable.load(path)
    assert loaded.to_dict() == table.to_dict()
    assert loaded.env["threads"] == 1 and "torch" in loaded.env and loaded.env["cpu_model"]
    for layout in [("M", "C", "A", "A"), ("A[window=3]", "M", "C", "A[window=3]")]:
        assert loaded.predict(layout) == table.predict(layout)
        assert loaded.predict(layout, "cpu") == table.predict(layout, "cpu")
    table.overhead_s = {"wall": 0.0, "cpu": 0.0}
    table.calibrated_on = []


def test_calibrate_fits_the_median_gap_as_a_constant(toy):
    table, *_ = toy
    layouts = [("M", "A", "M", "A"), ("C", "C", "C", "C"), ("M", "M", "M", "M")]
    raw = {lay: table.predict(lay).seconds for lay in layouts}
    overhead = table.calibrate({lay: raw[lay] + gap for lay, gap in zip(layouts, (0.1, 0.3, 0.2))})
    try:
        assert overhead == pytest.approx(0.2)
        assert table.predict(("A", "A", "A", "A")).seconds == pytest.approx(
            sum(table.entries[k].median() for k in table.keys_for(("A", "A", "A", "A"))) + 0.2)
        assert table.predict(("A", "A", "A", "A"), "cpu").seconds == pytest.approx(
            sum(table.entries[k].median("cpu") for k in table.keys_for(("A", "A", "A", "A"))))
        assert len(table.calibrated_on) == 3
    finally:
        table.overhead_s = {"wall": 0.0, "cpu": 0.0}
        table.calibrated_on = []


@pytest.mark.parametrize(
    "layout, message",
    [
        (("M", "A", "M"), "layout: has 3 choices but the table has 4 positions"),
        (("M", "A", "M", "Q"), "layout[3]: 'Q' is not a block"),
        (("M", "A", "M", "M[d_state=16]"), "layout[3]: 'M[d_state=16]' is not a choice of this table"),
        ("C | C M A | M A A", "layout: depths [1, 3, 3] differ from the table's [1, 3, 2]"),
        ("C | M M A | M A", "layout: stage 2 block 1 is fixed to 'C' in this table, got 'M'"),
        ("C | C M A |", "layout:"),
        (42, "layout: expected a pattern or a sequence of block texts, got int"),
    ],
)
def test_bad_layouts_give_one_line_errors(toy, layout, message):
    table, *_ = toy
    with pytest.raises(ConfigError) as info:
        table.predict(layout)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"positions": [(1, 5)]}, "latency_table.positions: (1, 5) is not a block"),
        ({"positions": [(1, 1), (1, 1)]}, "latency_table.positions: (1, 1) is listed twice"),
        ({"choices": ["M", "M"]}, "latency_table.choices: expected distinct block texts"),
        ({"choices": ["M", "M A"]}, "latency_table.choices[1]: 'M A' is not a single block"),
        ({"rounds": 0}, "latency_table.rounds: must be an integer between 1 and 1000"),
    ],
)
def test_bad_table_settings_give_one_line_errors(kwargs, message):
    args = {"positions": POSITIONS, "choices": ["M", "A"], "rounds": 1, **kwargs}
    with pytest.raises(ConfigError) as info:
        LatencyTable.measure(toy_spec(), args["positions"], args["choices"], PROFILE, rounds=args["rounds"])
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_load_refuses_a_file_that_is_not_a_table(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something else"}')
    with pytest.raises(ConfigError, match="not a latency table"):
        LatencyTable.load(bad)
    bad.write_text("{")
    with pytest.raises(ConfigError, match="not JSON"):
        LatencyTable.load(bad)


def test_token_segments_follow_the_models_partition_rule():
    assert token_segments([4, 4, None, 4, 3, 3]) == [4, 4, 3]
    assert token_segments([None, None]) == []
    assert token_segments([7]) == [7]


def test_layouts_timed_whole_in_the_same_rounds_calibrate_the_overhead(toy):
    """Under the fake clock a whole model costs exactly its parts, so the fitted overhead is zero; a layout
    timed whole is stored as an entry but is never part of a sum."""
    _, _, guard = toy
    layouts = [("M", "C", "A", "A"), "C | C A[window=3] M | C A"]
    table = LatencyTable.measure(toy_spec(), POSITIONS, CHOICES, PROFILE, rounds=1, guard=guard, calibrate_on=layouts,
                                 check_on=[("M", "M", "M", "M")])  # fmt: skip
    assert table.whole(("M", "M", "M", "M")).median() == pytest.approx(table.predict(("M", "M", "M", "M")).seconds)
    assert table.whole(("A", "M", "M", "M")) is None
    assert {k for k in table.entries if k.startswith("model:")} == {"model:C | C M C | A*2", "model:C | C A[window=3] M | C A",
                                                                   "model:C | C M*2 | M*2"}
    assert table.overhead_s["wall"] == pytest.approx(0.0, abs=1e-12)
    assert table.overhead_s["cpu"] == pytest.approx(0.0, abs=1e-12)
    assert table.calibrated_on == sorted(["C | C M C | A*2", "C | C A[window=3] M | C A"])
    assert not any(k.startswith("model:") for k in table.predict(layouts[0]).keys)
    with pytest.raises(ConfigError, match=r"^latency_table\.calibrate_on\.layout: has 1 choices"):
        LatencyTable.measure(toy_spec(), POSITIONS, CHOICES, PROFILE, rounds=1, calibrate_on=[("M",)])


def test_pooling_shares_one_figure_between_positions_that_run_the_same_module_at_the_same_input(toy):
    table, *_ = toy
    copy = LatencyTable.from_dict(table.to_dict())
    copy.entries["block1.1:M"].wall_s = [1.0, 1.0, 1.0]
    copy.entries["block1.2:M"].wall_s = [3.0, 3.0, 3.0]
    both, first = ("M", "M", "C", "C"), ("M", "C", "C", "C")
    copy.pool = False
    assert copy.predict(both).seconds - copy.predict(first).seconds == pytest.approx(3.0 - table.entries["block1.2:C"].median())
    pooled = LatencyTable.from_dict(copy.to_dict())  # `pool` is stored
    assert pooled.pool is False
    pooled.pool = True
    assert pooled.cost("block1.1:M")[0] == pooled.cost("block1.2:M")[0] == 2.0
    assert pooled.cost("block2.0:M")[0] == table.entries["block2.0:M"].median()  # another stage: its own rounds
    assert pooled.predict(both).seconds - pooled.predict(first).seconds == pytest.approx(2.0 - table.entries["block1.2:C"].median())
