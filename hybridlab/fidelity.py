"""The fidelity vocabulary shared by studies (which write it) and reports (which compare across it).

A trial's `fidelity` user attribute is a hash of everything besides the architecture and seed that decides
its result (data, recipe); it de-duplicates trials. Two more attributes say how faithful the result is,
so a report can ask whether a cheap ranking predicts the expensive one:

- `fidelity_label`: text for people: "full" (stand-alone training to the study's whole budget),
  "supernet" (scored with weights inherited from a weight-sharing supernet), or a rung such as
  "rung 1 (3 epochs)" for multi-fidelity promotion;
- `fidelity_rank`: an int that orders them; higher is closer to the answer a full training gives.
  `FULL_RANK` for full training, `SUPERNET_RANK` for supernet scores, the rung index for rungs below the last.
"""

from __future__ import annotations

FULL = "full"
SUPERNET = "supernet"
FULL_RANK = 1_000
SUPERNET_RANK = -1


def rung_label(rung: int, value: float | int, resource: str = "epochs") -> str:
    """`rung 1 (3 epochs)`: rung numbers count from 0; `value` is the rung's budget in `resource` units."""
    shown = int(value) if float(value).is_integer() else value
    return f"rung {rung} ({shown:,} {resource})" if isinstance(shown, int) else f"rung {rung} ({shown:g} {resource})"


def rank_of(label: str | None, rank: int | float | None) -> int:
    """The rank of a trial: its stored rank, else the label's (trials written before ranks existed are full)."""
    if rank is not None and rank == rank:  # not NaN
        return int(rank)
    if label == SUPERNET:
        return SUPERNET_RANK
    return FULL_RANK
