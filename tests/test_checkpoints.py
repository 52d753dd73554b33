"""Checkpoints: atomic writes (a failed write keeps the old file and leaves no temporary), a resume that falls
back past truncated or empty files, and a full disk reported in one line naming the folder."""

from __future__ import annotations

import errno

import lightning as L
import pytest
import torch
import torch.nn as nn

from hybridlab.errors import HybridlabError
from studies.checkpoints import (
    AtomicCheckpointIO,
    DiskFullError,
    checkpoint_problem,
    remove_stale_temporaries,
    resume_candidates,
    usable_checkpoint,
)
from studies.data import make_datamodule
from studies.training import make_trainer, train_and_evaluate

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning")]

FAST = {"epochs": 1, "lr": 0.02, "warmup_epochs": 0.5, "weight_decay": 0.01, "label_smoothing": 0.0}


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.num_classes = 4
        self.conv = nn.Conv2d(3, 8, 3, 2, 1)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def tiny_model() -> Tiny:
    torch.manual_seed(0)
    return Tiny()


def tiny_data():
    return make_datamodule("synthetic", num_train=96, num_val=48, num_classes=4, img_size=8, batch_size=32)


def fake_checkpoint(epoch: int) -> dict:
    return {"state_dict": {"w": torch.full((4,), float(epoch))}, "epoch": epoch, "global_step": 3 * (epoch + 1)}


class EpochRecorder(L.Callback):
    def __init__(self) -> None:
        self.epochs: list[int] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epochs.append(trainer.current_epoch)


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# -- atomic writes -----------------------------------------------------------------------------------------------------


def test_failed_write_keeps_previous_checkpoint_and_no_temporary(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint(fake_checkpoint(0), path)
    before = path.read_bytes()

    def half_then_full(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 partial checkpoint bytes")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", half_then_full)
    with pytest.raises(DiskFullError) as err:
        io.save_checkpoint(fake_checkpoint(1), path)
    message = str(err.value)
    assert "\n" not in message and f"disk full while writing into {tmp_path}" in message
    assert path.read_bytes() == before  # the previous complete checkpoint is untouched
    assert leftovers(tmp_path) == []

    def interrupted(obj, handle, *args, **kwargs):
        handle.write(b"partial")
        raise KeyboardInterrupt  # a kill signal turned into an exception mid-write

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint(fake_checkpoint(2), path)
    assert path.read_bytes() == before and leftovers(tmp_path) == []
    monkeypatch.undo()
    assert io.load_checkpoint(path)["epoch"] == 0


def test_load_refuses_code_in_a_checkpoint(tmp_path):
    class Boom:
        def __reduce__(self):
            return (print, ("ran code from a checkpoint",))

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "epoch": 0, "global_step": 0, "x": Boom()}, path)
    with pytest.raises(Exception, match="[Ww]eights only load failed"):
        AtomicCheckpointIO().load_checkpoint(path)
    assert "cannot be read" in checkpoint_problem(path)


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / ".last.ckpt.abc123.tmp").write_bytes(b"half")
    (tmp_path / "keep.txt").write_text("x")
    removed = remove_stale_temporaries(tmp_path)
    assert [p.name for p in removed] == [".last.ckpt.abc123.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


# -- choosing what to resume from ---------------------------------------------------------------------------------------


def test_truncated_and_empty_checkpoints_fall_back(tmp_path):
    last, best = tmp_path / "last.ckpt", tmp_path / "best.ckpt"
    torch.save(fake_checkpoint(3), last)
    torch.save(fake_checkpoint(1), best)
    assert checkpoint_problem(last) is None
    assert usable_checkpoint(resume_candidates("last", tmp_path)) == (last, None)

    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])  # a kill or a full disk mid-write, before atomic writes
    lines: list[str] = []
    chosen, note = usable_checkpoint(resume_candidates("last", tmp_path), echo=lines.append)
    assert chosen == best and lines == [note] and "\n" not in note
    assert note.startswith(f"warning: checkpoint {last} is unusable (it cannot be read")
    assert note.endswith(f"resuming from {best} instead")

    best.write_bytes(b"")
    chosen, note = usable_checkpoint(resume_candidates("last", tmp_path))
    assert chosen is None and f"{best} is unusable (it is empty)" in note and note.endswith("training from scratch")

    torch.save(fake_checkpoint(1), best)
    data = bytearray(best.read_bytes())
    offset = data.index(torch.full((4,), 1.0).numpy().tobytes())  # inside the stored tensor
    data[offset] ^= 0xFF
    best.write_bytes(bytes(data))
    assert torch.load(best, weights_only=True)["epoch"] == 1  # torch alone loads the damaged weights silently
    assert checkpoint_problem(best).startswith("it is corrupt (checksum mismatch in")

    torch.save({"weights": torch.zeros(2)}, best)  # loads, but is not a training checkpoint
    assert checkpoint_problem(best) == "it is not a training checkpoint"
    assert usable_checkpoint(resume_candidates(None, tmp_path)) == (None, None)
    with pytest.raises(HybridlabError, match="does not exist"):
        usable_checkpoint(resume_candidates(tmp_path / "nope.ckpt", tmp_path), explicit=True)


def test_explicit_checkpoint_falls_back_to_its_neighbours(tmp_path):
    old = tmp_path / "trials" / "0"
    old.mkdir(parents=True)
    torch.save(fake_checkpoint(2), old / "best.ckpt")
    (old / "last.ckpt").write_bytes(b"PK\x03\x04")
    assert resume_candidates(old / "last.ckpt", tmp_path) == [old / "last.ckpt", old / "best.ckpt"]
    chosen, note = usable_checkpoint(resume_candidates(old / "last.ckpt", tmp_path), explicit=True)
    assert chosen == old / "best.ckpt" and "resuming from" in note


# -- in training ----------------------------------------------------------------------------------------------------------


def test_trainer_writes_through_the_atomic_io(tmp_path):
    from studies.training import TrainRecipe

    trainer = make_trainer(TrainRecipe(epochs=1), tmp_path, accelerator="cpu")
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


@pytest.mark.slow
def test_resume_with_truncated_last_uses_best_then_scratch(tmp_path):
    root = tmp_path / "trial"
    # "full": the finished first run keeps both checkpoints with their optimizer state, so it can be extended
    first = train_and_evaluate(tiny_model(), tiny_data(), dict(FAST, checkpoints="full"), root, seed=0, logger=False)
    last = root / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    lines: list[str] = []
    recorder = EpochRecorder()
    second = train_and_evaluate(tiny_model(), tiny_data(), dict(FAST, epochs=2, checkpoints="full"), root, seed=0,
                                resume_from="last", callbacks=[recorder], logger=False, echo=lines.append)
    assert first["best_ckpt"] == second["resumed_from"] == str(root / "best.ckpt")
    assert recorder.epochs == [1] and second["epochs"] == 2  # epoch 0 came from best.ckpt
    assert lines == [second["resume_note"]] and "resuming from" in lines[0]
    assert checkpoint_problem(last) is None  # rewritten whole by the resumed run

    for name in ("last.ckpt", "best.ckpt"):
        (root / name).write_bytes(b"")
    recorder = EpochRecorder()
    third = train_and_evaluate(tiny_model(), tiny_data(), dict(FAST, epochs=2, checkpoints="full"), root, seed=0,
                               resume_from="last", callbacks=[recorder], logger=False, echo=lines.append)
    assert recorder.epochs == [0, 1] and third["resumed_from"] is None
    assert third["resume_note"].endswith("training from scratch")


@pytest.mark.slow
def test_disk_full_during_training_is_one_line_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    root = tmp_path / "trial"
    real_save = torch.save
    calls = {"n": 0}

    def fills_up(obj, handle, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:  # epoch 0 wrote best and last; the disk is full from epoch 1 on
            handle.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, handle, *args, **kwargs)

    monkeypatch.setattr(torch, "save", fills_up)
    with pytest.raises(DiskFullError) as err:
        train_and_evaluate(tiny_model(), tiny_data(), dict(FAST, epochs=3), root, seed=0, logger=False)
    assert "\n" not in str(err.value) and str(root) in str(err.value)
    monkeypatch.undo()
    assert torch.load(root / "last.ckpt", map_location="cpu", weights_only=True)["epoch"] == 0
    assert leftovers(root) == []


def test_disk_full_outside_checkpoints_is_the_same_one_line(tmp_path):
    class FullLogger(L.Callback):  # e.g. the CSV metrics file hitting a full disk
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

    root = tmp_path / "trial"
    with pytest.raises(DiskFullError, match=f"disk full while writing into {root}"):
        train_and_evaluate(tiny_model(), tiny_data(), FAST, root, seed=0, logger=False, callbacks=[FullLogger()])
    other = tmp_path / "other"

    class Denied(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            raise PermissionError(errno.EACCES, "Permission denied")

    with pytest.raises(PermissionError):  # other OS errors are not called a full disk
        train_and_evaluate(tiny_model(), tiny_data(), FAST, other, seed=0, logger=False, callbacks=[Denied()])
