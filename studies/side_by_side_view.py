"""A study's trials as the tables should show them: with the last side-by-side measurement's figures.

`hybridlab measure` (studies.measure_phase) keeps its figures in the study's user attribute
`side_by_side` ({"by_arch": {arch_hash: fields}, ...}), because Optuna refuses to change a finished
trial. `overlaid(study)` gives every COMPLETE trial of a measured architecture those fields as user
attributes (its own figure moves to `throughput_trial_img_s`). Light on purpose (no torch): the
trials table, which reports read, can use it.
"""

from __future__ import annotations

import copy
from typing import Any

from optuna.trial import FrozenTrial, TrialState

SIDE_BY_SIDE = "side_by_side"


class Overlaid:
    """A study whose trials carry the side-by-side figures of their architecture as user attributes."""

    def __init__(self, study: Any, by_arch: dict[str, dict[str, Any]]) -> None:
        self._study = study
        self._by_arch = by_arch

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[FrozenTrial]:
        return [self._overlay(t) for t in self._study.get_trials(deepcopy=False, states=states)]

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()

    def _overlay(self, trial: FrozenTrial) -> FrozenTrial:
        fields = self._by_arch.get(str(trial.user_attrs.get("arch_hash")))
        if not fields or trial.state != TrialState.COMPLETE or trial.user_attrs.get("throughput_predicted"):
            return trial  # a supernet row keeps its predicted throughput: the agreement section compares the two

        out = copy.copy(trial)
        attrs = dict(trial.user_attrs)
        if "throughput_img_s" in attrs:
            attrs["throughput_trial_img_s"] = attrs["throughput_img_s"]
        attrs.update(fields)
        out.user_attrs = attrs
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)


def overlaid(study: Any) -> Any:
    """The study with its last side-by-side figures on its trials; the study itself when it has none."""
    if isinstance(study, Overlaid):
        return study
    record = getattr(study, "user_attrs", {}).get(SIDE_BY_SIDE)
    if not isinstance(record, dict) or not isinstance(record.get("by_arch"), dict) or not record["by_arch"]:
        return study
    return Overlaid(study, record["by_arch"])


__all__ = ["SIDE_BY_SIDE", "Overlaid", "overlaid"]
