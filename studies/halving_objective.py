"""The trial of a halving rung: trained to its rung's budget, continuing (or warm-starting from) its parent.

- `resource: epochs`: every rung trains under the full budget's schedule (`train.epochs` sets Lightning's
  `max_epochs`, hence the warm-up and cosine length), and `StopAfterEpochs` ends rung k after `rungs[k]` epochs.
  A promoted trial resumes its parent's `last.ckpt` (weights, optimizer, schedule and loop state), so rung k+1
  continues the very run rung k stopped: no retraining, and the last rung's figures are those of a full run.
- `resource: train_subset` or `img_size`: each rung trains all `train.epochs` on its subset or image size; a
  promoted trial starts from its parent's weights (a warm start: not the run a full budget would give; tensors
  whose shape changed with the image size start fresh and are counted in `warm_start_skipped`).

User attributes besides the usual ones: `rung`, `rung_budget` (in resource units), `promoted_from` and
`promotion_reason` (set by studies.halving when the slot is resolved), `resumed_from` (epochs) or
`warm_start_from` (the others); `fidelity_label` is `rung_label(k, budget, resource)` below the last rung
(`fidelity_rank` k) and "full" at the last (FULL_RANK).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import optuna
from lightning.pytorch.callbacks import Callback
from optuna.trial import TrialState

from hybridlab.fidelity import FULL, FULL_RANK, rung_label
from studies.halving import PROMOTED_FROM, rung_of, settings_of
from studies.objective import TrialObjective


class StopAfterEpochs(Callback):
    """Ends training after `epochs` epochs whatever `max_epochs` (and so the LR schedule) says."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


class HalvingObjective(TrialObjective):
    """`TrialObjective` with each trial trained to its rung's budget."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = settings_of(self.config)
        self._rung_data: dict[int, Any] = {}

    def budget(self, trial: optuna.Trial) -> int:
        assert self.settings.rungs is not None
        return self.settings.rungs[rung_of(trial)]

    def fidelity_marks(self, trial: optuna.Trial) -> dict[str, Any]:
        rung, budget = rung_of(trial), self.budget(trial)
        last = rung == self.settings.last
        return {"fidelity_label": FULL if last else rung_label(rung, budget, self.settings.resource),
                "fidelity_rank": FULL_RANK if last else rung, "rung": rung, "rung_budget": budget}

    def trial_fidelity(self, trial: optuna.Trial) -> str:
        """A rung's own hash (so no trial reuses another rung's figures); the last rung over epochs is a full run."""
        rung, budget, resource = rung_of(trial), self.budget(trial), self.settings.resource
        if resource == "epochs":
            return self.fidelity() if rung == self.settings.last else self.fidelity(stop_after_epochs=budget)
        return self.fidelity({resource: budget}, warm_start=rung > 0)

    def trial_datamodule(self, trial: optuna.Trial) -> Any:
        if self.settings.resource == "epochs":
            return self.datamodule()
        budget = self.budget(trial)
        if budget not in self._rung_data:
            from studies.data import make_datamodule

            cfg = {k: v for k, v in self.config.data.items() if not k.startswith("_")}
            cfg[self.settings.resource] = budget
            self._rung_data[budget] = make_datamodule(**cfg)
        return self._rung_data[budget]

    def trial_callbacks(self, trial: optuna.Trial) -> list[Any]:
        if self.settings.resource == "epochs" and rung_of(trial) < self.settings.last:
            return [StopAfterEpochs(self.budget(trial))]
        return []

    def parent_folder(self, trial: optuna.Trial) -> Path | None:
        """The folder of the trial this one was promoted from (the trained one, when that reused a twin)."""
        number = trial.user_attrs.get(PROMOTED_FROM)
        if number is None:
            return None
        parent = next((t for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                       if t.number == number), None)
        source = parent.user_attrs.get("reused_from", number) if parent is not None else number
        return self.folder / "trials" / str(source)

    def _resume_checkpoint(self, trial: optuna.Trial) -> Path | None:
        """A retry's own checkpoints first; else, over epochs, the parent's last checkpoint (its optimizer and
        schedule state included). When that is gone the rung retrains from scratch to its budget (same result)."""
        own = super()._resume_checkpoint(trial)
        if own is not None or self.settings.resource != "epochs":
            return own
        folder = self.parent_folder(trial)
        if folder is None:
            return None
        last = folder / "last.ckpt"
        if last.is_file():
            return last
        self.echo(f"[trial {trial.number}] warning: {last} is gone; training rung {rung_of(trial)} from scratch")
        return None

    def warm_start(self, trial: optuna.Trial, model: Any) -> Any:
        folder = self.parent_folder(trial)
        if folder is None or self.settings.resource == "epochs" or super()._resume_checkpoint(trial) is not None:
            return model
        path = next((folder / name for name in ("best.ckpt", "last.ckpt") if (folder / name).is_file()), None)
        if path is None:
            self.echo(f"[trial {trial.number}] warning: trial folder {folder} keeps no weights; training from scratch")
            return model
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        weights = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
        own = model.state_dict()
        fitting = {k: v for k, v in weights.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
        model.load_state_dict(fitting, strict=False)
        trial.set_user_attr("warm_start_from", str(path))
        trial.set_user_attr("warm_start_skipped", len(own) - len(fitting))
        return model

    def _train(self, trial: optuna.Trial, arch: Any, seed: int) -> dict[str, Any]:
        with warnings.catch_warnings():  # resuming a parent's checkpoint in another folder is the point here
            warnings.filterwarnings("ignore", message=".*dirpath has changed.*")
            return super()._train(trial, arch, seed)
