"""Progress lines for log files, the learning curve a trial returns and reports, and when Lightning's bar shows."""

from __future__ import annotations

import io
import math
import re
from types import SimpleNamespace

import pytest
import torch
from test_training import FAST, tiny_data, tiny_model

from studies.progress import LearningCurve, ProgressLines, format_duration, trial_start_line
from studies.training import show_progress_bar, train_and_evaluate

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.filterwarnings("ignore:.*LeafSpec")]

EPOCH_LINE = re.compile(r"^\[trial 7\] epoch (\d)/2 · loss (\d+\.\d+) · top-1 (\d+\.\d)% · ([\d,]+) img/s"
                        r" · ETA trial (\d+:\d\d) · study (\d+:\d\d)$")


class Ticks:
    """A clock that advances one second per reading: deterministic, and never zero time between lines."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_epoch_lines_and_curve_from_a_two_epoch_run(tmp_path):
    printed: list[str] = []
    reported: list[tuple[int, dict]] = []
    lines = ProgressLines("trial 7", echo=printed.append, trials_left=3, mean_trial_s=100.0, clock=Ticks())
    result = train_and_evaluate(tiny_model(), tiny_data(), FAST, tmp_path, seed=0, logger=False, callbacks=[lines],
                                report=lambda epoch, point: reported.append((epoch, point)))
    assert printed == lines.lines and len(printed) == 2, printed
    matches = [EPOCH_LINE.match(line) for line in printed]
    assert all(matches), printed
    curve = result["learning_curve"]
    assert [p["epoch"] for p in curve] == [1, 2]
    assert all(math.isfinite(p[k]) for p in curve for k in ("train_loss", "val_loss", "top1"))
    for match, point in zip(matches, curve):
        epoch, loss, top1 = int(match[1]), float(match[2]), float(match[3])
        assert epoch == point["epoch"] and top1 == pytest.approx(point["top1"], abs=0.05)
        assert loss == pytest.approx(point["train_loss"], rel=1e-3)  # the epoch mean that Lightning logged
    assert int(matches[0][4].replace(",", "")) > 0
    assert matches[1][5] == "0:00" and matches[1][6] == "5:00"  # trial done; 3 trials left x 100 s
    assert matches[0][5] != "0:00"  # one epoch left after the first
    assert reported == [(p["epoch"], p) for p in curve]  # once per epoch, the same points
    assert curve[-1]["top1"] == pytest.approx(result["top1"]) and curve[-1]["val_loss"] == pytest.approx(result["val_loss"])


def test_lines_within_epochs_every_few_seconds(tmp_path):
    printed: list[str] = []
    lines = ProgressLines("trial 7", echo=printed.append, every_s=0.0, clock=Ticks())  # every batch
    train_and_evaluate(tiny_model(), tiny_data(), dict(FAST, epochs=1), tmp_path, seed=0, logger=False,
                       callbacks=[lines])
    steps = [line for line in printed if " step " in line]
    assert len(steps) == 6 and len(printed) == 7  # 6 batches, then the epoch line
    assert steps[0].startswith("[trial 7] epoch 1/1 step 1/6 · loss ") and "top-1 -" in steps[0]
    assert "study" not in printed[-1]  # no study ETA without the number of trials left
    assert re.search(r"top-1 \d+\.\d%", printed[-1]) and "ETA trial 0:00" in printed[-1]


@pytest.mark.slow
def test_curve_adds_the_final_validation_and_survives_a_resume(tmp_path):
    recipe = dict(FAST, epochs=3, val_every_n_epochs=2, checkpoints="full")
    alone = train_and_evaluate(tiny_model(), tiny_data(), dict(recipe, epochs=1), tmp_path / "a", seed=0, logger=False)
    assert [p["epoch"] for p in alone["learning_curve"]] == [1]  # no validation due: the final one adds the point
    first = train_and_evaluate(tiny_model(), tiny_data(), dict(recipe, epochs=1, val_every_n_epochs=1), tmp_path / "b",
                               seed=0, logger=False)
    reported: list[int] = []
    second = train_and_evaluate(tiny_model(), tiny_data(), recipe, tmp_path / "b", seed=0, logger=False,
                                resume_from="last", report=lambda epoch, point: reported.append(epoch))
    # epoch 1 comes back from the checkpoint (and is reported again for the new run), epoch 2 is validated in the
    # loop, epoch 3 (no validation due) by the final validation, which also gives the returned top-1
    assert [p["epoch"] for p in second["learning_curve"]] == [1, 2, 3] and reported == [1, 2, 3]
    assert second["learning_curve"][0] == first["learning_curve"][0]
    assert math.isfinite(second["learning_curve"][2]["train_loss"])
    assert second["top1"] == pytest.approx(second["learning_curve"][2]["top1"])


def test_a_report_that_raises_stops_the_trial(tmp_path):
    class Pruned(Exception):  # what optuna.TrialPruned does when the runner's report asks the pruner
        pass

    calls: list[int] = []

    def report(epoch: int, point: dict) -> None:
        calls.append(epoch)
        raise Pruned(f"pruned at epoch {epoch}")

    with pytest.raises(Pruned, match="pruned at epoch 1"):
        train_and_evaluate(tiny_model(), tiny_data(), FAST, tmp_path, seed=0, logger=False, report=report)
    assert calls == [1]  # the second epoch never ran


def test_line_figures_with_a_fake_trainer_and_clock():
    now = [0.0]
    printed: list[str] = []
    trainer = SimpleNamespace(current_epoch=0, max_epochs=2, num_training_batches=4, accumulate_grad_batches=2,
                              callback_metrics={}, is_global_zero=True, sanity_checking=False)
    lines = ProgressLines("trial 1", echo=printed.append, every_s=10, trials_left=1, mean_trial_s=100,
                          clock=lambda: now[0])
    batch = (torch.zeros(100, 1), torch.zeros(100))

    def step(at: float, index: int, loss: float) -> None:
        now[0] = at
        lines.on_train_batch_end(trainer, None, {"loss": torch.tensor(loss)}, batch, index)

    lines.on_train_start(trainer, None)
    lines.on_train_epoch_start(trainer, None)
    step(5, 0, 0.5)  # Lightning's loss is divided by the 2 accumulated batches: 1.0
    step(10, 1, 1.5)  # 3.0; 10 s since the start: a line
    now[0] = 12
    lines.on_validation_start(trainer, None)
    trainer.callback_metrics = {"val/top1": torch.tensor(50.0)}
    now[0] = 14
    lines.on_validation_end(trainer, None)  # 2 s of validation, left out of img/s
    step(15, 2, 1.0)
    step(16, 3, 1.0)
    trainer.callback_metrics["train/loss"] = torch.tensor(1.25)
    now[0] = 20
    lines.on_train_epoch_end(trainer, None)
    assert printed == [
        # 200 images in 10 s; 2 of 8 batches in 10 s: 30 s left; the study: + 1 trial x 100 s
        "[trial 1] epoch 1/2 step 2/4 · loss 2 · top-1 - · 20 img/s · ETA trial 0:30 · study 2:10",
        # 400 images in 20 - 2 s; 4 of 8 batches in 20 s
        "[trial 1] epoch 1/2 · loss 1.25 · top-1 50.0% · 22 img/s · ETA trial 0:20 · study 2:00",
    ]
    trainer.is_global_zero = False  # other ranks stay quiet
    lines.on_train_epoch_end(trainer, None)
    assert len(printed) == 2


def test_curve_state_round_trips():
    curve = LearningCurve()
    curve.curve = [{"epoch": 1, "train_loss": 1.0, "val_loss": 2.0, "top1": 50.0}]
    other = LearningCurve()
    other.load_state_dict(curve.state_dict())
    assert other.curve == curve.curve and other.curve[0] is not curve.curve[0]


def test_durations_and_the_trial_start_line():
    assert [format_duration(s) for s in (0, 59.4, 61, 3600, 3725, None, float("nan"), -1)] == [
        "0:00", "0:59", "1:01", "1:00:00", "1:02:05", "?", "?", "?"]
    assert trial_start_line(3, 12, "T T C", 0, "full") == "trial 3 of 12 · pattern 'T T C' · seed 0 · fidelity full"
    assert trial_start_line(3, None, "C", None, None) == "trial 3 · pattern 'C'"


class Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        return self.tty


def test_lightning_bar_only_on_a_terminal():
    assert show_progress_bar(True, Stream(tty=True)) is True
    assert show_progress_bar(True, Stream(tty=False)) is False  # a log file gets lines, not a redrawn bar
    assert show_progress_bar(False, Stream(tty=True)) is False
    closed = Stream(tty=True)
    closed.close()
    assert show_progress_bar(True, closed) is False
