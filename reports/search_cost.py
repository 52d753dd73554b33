"""What a one-shot ranking cost, set against one stand-alone training of the same study.

A one-shot study records its supernet training (`role: supernet`, `train_time_s`) and its scoring
(`role: supernet_scoring`, `scoring_time_s`) as PRUNED trials beside the rows. The ranking of every layout
costs their sum; the yardstick is the median `train_time_s` of the study's stand-alone (full-fidelity,
non-baseline) trainings. Both are wall-clock times on the machine that ran them, so the sentence also gives
the load average the scoring ended under: a ratio taken on a busy machine says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from hybridlab.fidelity import FULL_RANK
from reports.agreement import fidelity_ranks


@dataclass(frozen=True)
class SearchCost:
    """Wall seconds of the supernet training and scoring, and of one stand-alone training (median)."""

    train_s: float
    scoring_s: float | None
    layouts: int | None
    images: int | None
    standalone_s: float | None
    standalone_n: int
    scoring_load: float | None = None

    @property
    def ranking_s(self) -> float | None:
        return None if self.scoring_s is None else self.train_s + self.scoring_s

    @property
    def ratio(self) -> float | None:
        """Ranking time in stand-alone trainings (None when either side is missing)."""
        if self.ranking_s is None or not self.standalone_s:
            return None
        return self.ranking_s / self.standalone_s


def _number(value: object) -> float | None:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if out != out else out


def _role(frame: pd.DataFrame, role: str) -> pd.Series | None:
    if "role" in frame.columns:
        rows = frame[frame["role"] == role]
    else:  # tables written before the role column: the supernet row is labelled "supernet"
        rows = frame[(frame["label"] == role) & (frame["state"] == "PRUNED")] if role == "supernet" else frame[:0]
    return rows.iloc[-1] if len(rows) else None


def search_cost(frame: pd.DataFrame) -> SearchCost | None:
    """The one-shot cost of a study's trials table, or None when it holds no supernet training."""
    if frame.empty or "label" not in frame.columns:
        return None
    trained = _role(frame, "supernet")
    if trained is None or _number(trained.get("train_time_s")) is None:
        return None
    scored = _role(frame, "supernet_scoring")
    full = frame[(fidelity_ranks(frame) == FULL_RANK) & (frame["state"] == "COMPLETE")
                 & ~frame["is_baseline"].astype(bool)]
    times = pd.to_numeric(full.get("train_time_s", pd.Series(dtype=float)), errors="coerce").dropna()
    get = (lambda key: _number(scored.get(key))) if scored is not None else (lambda key: None)
    layouts, images = get("layouts"), get("scoring_images")
    return SearchCost(train_s=float(trained["train_time_s"]), scoring_s=get("scoring_time_s"),
                      layouts=None if layouts is None else int(layouts), images=None if images is None else int(images),
                      standalone_s=float(times.median()) if len(times) else None, standalone_n=len(times),
                      scoring_load=get("load_avg_end"))


def cost_sentence(cost: SearchCost) -> str:
    """One plain sentence: what the ranking cost, and how many stand-alone trainings that is."""
    if cost.scoring_s is None:
        return (f"Search cost: the supernet trained in {cost.train_s:,.0f} s; the scoring time was not recorded "
                "(a run from before it was), so the ranking's cost against a stand-alone training is unknown.")
    what = (f"scoring {cost.layouts:,} layouts on {cost.images:,} images" if cost.layouts and cost.images
            else "scoring")
    text = (f"Search cost: ranking took {cost.ranking_s:,.0f} s of wall time (supernet training "
            f"{cost.train_s:,.0f} s, {what} {cost.scoring_s:,.0f} s")
    text += f", load average {cost.scoring_load:.1f} at its end)" if cost.scoring_load is not None else ")"
    if cost.ratio is None:
        return text + "; no stand-alone training finished to compare it with."
    return (text + f", {cost.ratio:.1f}x the median stand-alone training of this study ({cost.standalone_s:,.0f} s "
            f"over {cost.standalone_n} training{'s' if cost.standalone_n != 1 else ''}). Both are wall-clock times "
            "of this run: compare them only if the machine's load was alike.")
