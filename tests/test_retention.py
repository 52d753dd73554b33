"""Checkpoint retention: what a finished trial keeps per `checkpoints` policy, weights-only files, and a trial that
is still running (or resumed) keeping what its resume needs."""

from __future__ import annotations

import pytest
import torch
from test_checkpoints import EpochRecorder, tiny_data, tiny_model

from hybridlab.errors import ConfigError
from studies.checkpoints import WEIGHTS_ONLY_KEY, checkpoint_problem, retain_checkpoints, strip_to_weights
from studies.recipe import CHECKPOINT_POLICIES, TrainRecipe
from studies.training import train_and_evaluate

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning")]

FAST = {"epochs": 1, "lr": 0.02, "warmup_epochs": 0.5, "weight_decay": 0.01, "label_smoothing": 0.0}
KEPT = {"best": {"best.ckpt"}, "last": {"last.ckpt"}, "both": {"best.ckpt", "last.ckpt"},
        "full": {"best.ckpt", "last.ckpt"}, "none_after_finish": set()}


def ckpt_files(folder) -> set[str]:
    return {p.name for p in folder.iterdir() if p.name.endswith(".ckpt")}


def fake_lightning_checkpoint(epoch: int) -> dict:
    return {"state_dict": {"model.w": torch.full((4,), float(epoch))}, "epoch": epoch, "global_step": 3 * (epoch + 1),
            "optimizer_states": [{"state": {0: {"exp_avg": torch.ones(4)}}}], "lr_schedulers": [{"last_epoch": 3}],
            "loops": {"fit_loop": {}}, "callbacks": {"x": 1}, "hyper_parameters": {"num_classes": 4},
            "pytorch-lightning_version": "2.6.6"}


def write_pair(folder) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(fake_lightning_checkpoint(0), folder / "best.ckpt")
    torch.save(fake_lightning_checkpoint(1), folder / "last.ckpt")


def test_recipe_default_and_validation():
    assert TrainRecipe().checkpoints == "best" and set(KEPT) == set(CHECKPOINT_POLICIES)
    with pytest.raises(ConfigError, match="train.checkpoints: must be one of best, last, both, full"):
        TrainRecipe.from_dict({"checkpoints": "everything"})


@pytest.mark.parametrize("policy", CHECKPOINT_POLICIES)
def test_policy_file_sets_and_weights_only_contents(tmp_path, policy):
    write_pair(tmp_path)
    kept = retain_checkpoints(tmp_path, policy)
    assert ckpt_files(tmp_path) == KEPT[policy]
    assert {name for name, path in kept.items() if path is not None} == {n[:-5] for n in KEPT[policy]}
    for name in KEPT[policy]:
        data = torch.load(tmp_path / name, map_location="cpu", weights_only=True)
        if policy == "full":
            assert "optimizer_states" in data and checkpoint_problem(tmp_path / name) is None
            continue
        assert set(data) == {"state_dict", "epoch", "global_step", "hyper_parameters", "pytorch-lightning_version",
                             WEIGHTS_ONLY_KEY}
        expected = fake_lightning_checkpoint(0 if name == "best.ckpt" else 1)
        assert torch.equal(data["state_dict"]["model.w"], expected["state_dict"]["model.w"])
        assert data["epoch"] == expected["epoch"]
        assert "weights only" in checkpoint_problem(tmp_path / name)  # a resume skips it rather than failing
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_stripping_is_idempotent_and_keeps_last_when_there_is_no_best(tmp_path):
    write_pair(tmp_path)
    strip_to_weights(tmp_path / "best.ckpt")
    before = (tmp_path / "best.ckpt").read_bytes()
    strip_to_weights(tmp_path / "best.ckpt")
    assert (tmp_path / "best.ckpt").read_bytes() == before
    (tmp_path / "best.ckpt").unlink()  # e.g. no validation ever ran, so no best checkpoint was written
    assert retain_checkpoints(tmp_path, "best")["last"] == tmp_path / "last.ckpt"
    assert ckpt_files(tmp_path) == {"last.ckpt"}
    with pytest.raises(ValueError):
        retain_checkpoints(tmp_path, "some")


@pytest.mark.slow
def test_finished_runs_keep_what_the_policy_says(tmp_path):
    sizes = {}
    for policy in ("best", "none_after_finish", "full"):
        root = tmp_path / policy
        result = train_and_evaluate(tiny_model(), tiny_data(), dict(FAST, checkpoints=policy), root, seed=0,
                                    logger=False)
        assert ckpt_files(root) == KEPT[policy], policy
        assert result["best_ckpt"] == (str(root / "best.ckpt") if "best.ckpt" in KEPT[policy] else None)
        assert result["last_ckpt"] == (str(root / "last.ckpt") if policy == "full" else None)
        if "best.ckpt" in KEPT[policy]:
            sizes[policy] = (root / "best.ckpt").stat().st_size
    assert sizes["best"] < sizes["full"]  # the optimizer's moments are gone
    # the weights load back into the model
    state = torch.load(tmp_path / "best" / "best.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    model = tiny_model()
    model.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})


@pytest.mark.slow
def test_an_interrupted_run_keeps_last_and_its_resume_then_finishes(tmp_path):
    class Stop(EpochRecorder):
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            trainer.should_stop = True  # stops after epoch 0, as a time limit would: an unfinished trial

    root = tmp_path / "trial"
    stopped = train_and_evaluate(tiny_model(), tiny_data(), dict(FAST, epochs=2), root, seed=0, logger=False,
                                 callbacks=[Stop()])
    assert stopped["epochs"] == 1 and ckpt_files(root) == {"best.ckpt", "last.ckpt"}  # not finished: all kept
    assert checkpoint_problem(root / "last.ckpt") is None  # with its optimizer state, so resumable
    recorder = EpochRecorder()
    resumed = train_and_evaluate(tiny_model(), tiny_data(), dict(FAST, epochs=2), root, seed=0, logger=False,
                                 resume_from="last", callbacks=[recorder])
    assert resumed["resumed_from"] == str(root / "last.ckpt") and recorder.epochs == [1]
    assert ckpt_files(root) == {"best.ckpt"} and resumed["last_ckpt"] is None  # finished now: the default applies
    # a later resume of the finished trial skips the weights-only file and says so
    notes: list[str] = []
    again = train_and_evaluate(tiny_model(), tiny_data(), dict(FAST, epochs=2), root, seed=0, logger=False,
                               resume_from="last", echo=notes.append)
    assert again["resumed_from"] is None and "holds weights only" in notes[0]
