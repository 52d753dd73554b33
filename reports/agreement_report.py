"""The agreement section of a report: tables, sentences and figures for each lower fidelity against the top one.

Used by `reports.build` (fidelities inside one study, from `fidelity_rank`) and `reports.comparison`
(two studies of the same architectures, the first one the low fidelity). `split_fidelities` says which
rows the rest of a study's report uses: only the highest fidelity, so that a supernet score never sits in
the same table or front as a stand-alone result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hybridlab.fidelity import FULL_RANK
from hybridlab.metrics import Objective
from reports.agreement import (
    MIN_SHARED,
    RESAMPLES,
    SEED,
    TOP_KS,
    Agreement,
    Level,
    agree,
    arch_keys,
    fidelity_levels,
    fidelity_ranks,
    front_mask,
    match_rule,
    paired,
    seed_means,
)
from reports.agreement_plot import agreement_plot, point_labels, predicted_front_plot
from reports.figures import to_png, to_svg
from reports.html import Page
from reports.pareto import to_minimization
from reports.tables import DASH, PERCENT, Table, fmt_metric

AGREEMENT_FILES = ("agreement.png", "agreement.svg", "agreement.md", "agreement.csv", "predicted_front.png",
                   "predicted_front.svg")
CROWD = 3  # a lower fidelity with this many times the top's architectures (and at least MANY) gets its front drawn
MANY = 20
CROWDED = 256  # a single cheap fidelity with more architectures than this: the main report keeps its front only


@dataclass
class FidelitySplit:
    """The fidelities of a study and the rows the main report uses (all of them when there is one fidelity)."""

    levels: list[Level]
    main: pd.DataFrame
    sentence: str = ""
    files: dict[str, bytes] = field(default_factory=dict)  # predicted_front.* of a crowded single cheap fidelity
    caption: str = ""

    @property
    def several(self) -> bool:
        return len(self.levels) >= 2


def split_fidelities(frame: pd.DataFrame, objectives: Sequence[Objective] = (), title: str = "") -> FidelitySplit:
    """Keep the top fidelity's finished trials, every baseline and every unfinished trial for the main report.

    A study scored only at a cheap fidelity with more than `CROWDED` architectures (a supernet before its
    retraining) keeps the architectures of its front there, and draws all of them in predicted_front.*.
    """
    levels = fidelity_levels(frame)
    if len(levels) == 1 and levels[0].rank != FULL_RANK:
        level = levels[0]
        split = FidelitySplit(levels, frame, f"Every finished searched trial is at the {level.label} fidelity (not "
                              "stand-alone training to the full budget), and none at a higher one to check its "
                              "ranking against.")
        if level.architectures > CROWDED and len(objectives) >= 2:
            _crowded_front(split, frame, objectives, title or "study")
        return split
    if len(levels) < 2:
        return FidelitySplit(levels, frame)
    top = levels[-1]
    ranks = fidelity_ranks(frame)
    keep = (ranks == top.rank) | (frame["state"] != "COMPLETE") | frame["is_baseline"].astype(bool)
    counts = "; ".join(f"{lv.label}: {_n(lv.trials, 'finished trial')}, {_n(lv.architectures, 'architecture')}"
                       for lv in levels)
    sentence = (f"This study holds {len(levels)} fidelities ({counts}). The architecture table, Pareto front, "
                f"ablation and best values use only the {top.label} results (the highest fidelity); the agreement "
                "section checks whether each lower fidelity ranks the architectures as it does.")
    return FidelitySplit(levels, frame[keep], sentence)


def _crowded_front(split: FidelitySplit, frame: pd.DataFrame, objectives: Sequence[Objective], title: str) -> None:
    level = split.levels[0]
    low = seed_means(frame, [o.name for o in objectives])
    front = _front_of(low, objectives)
    keep = set(low["key"][front])
    rows = arch_keys(frame).isin(keep) | (frame["state"] != "COMPLETE") | frame["is_baseline"].astype(bool)
    split.main = frame[rows]
    split.sentence += (f" With {level.architectures:,} architectures, the table, Pareto front and best values show "
                       f"the {len(keep)} on its front; the predicted front figure shows them all.")
    fig = predicted_front_plot(low, front, np.zeros(len(low), dtype=bool), objectives,
                               f"{title}: front predicted by {level.label} ({len(low):,} architectures)", level.label)
    split.files["predicted_front.png"], split.files["predicted_front.svg"] = to_png(fig), to_svg(fig)
    split.caption = f"Every architecture scored at {level.label}, its front highlighted. Vector version: predicted_front.svg."


def _n(count: int, word: str) -> str:
    return f"{count:,} {word}{'s' if count != 1 else ''}"


@dataclass
class Side:
    """One fidelity's finished trials, named for people."""

    name: str
    frame: pd.DataFrame


@dataclass
class FrontCheck:
    """Which architectures of the low fidelity's front were trained at the high one, and which are on its front."""

    low: str
    high: str
    predicted: list[str]
    retrained: list[str]
    hits: list[str]
    high_front: int
    high_total: int


@dataclass
class AgreementSection:
    """Everything the agreement section shows; `files` holds the agreement.* and predicted_front.* files."""

    by: list[str] = field(default_factory=list)  # the matching key of each result
    results: list[tuple[str, str, Objective, pd.DataFrame, Agreement]] = field(default_factory=list)
    fronts: list[FrontCheck] = field(default_factory=list)
    sentences: list[str] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    table: Table | None = None
    front_caption: str = ""


def study_sides(frame: pd.DataFrame, levels: Sequence[Level]) -> list[tuple[Side, Side]]:
    """(lower fidelity, top fidelity) for each lower fidelity of one study."""
    ranks = fidelity_ranks(frame)
    top = levels[-1]
    high = Side(top.label, frame[ranks == top.rank])
    return [(Side(lv.label, frame[ranks == lv.rank]), high) for lv in levels[:-1]]


def agreement_section(pairs: Sequence[tuple[Side, Side]], objectives: Sequence[Objective], title: str,
                      by: str | None = None) -> AgreementSection:
    """Agreement of every objective for each (low, high) pair; matched by `by` (arch_hash, pattern or label),
    else by the key of `reports.agreement.match_rule` (arch_hash unless a setting that enters the hash, such
    as a halving rung's image size, differs between the fidelities)."""
    names = [o.name for o in objectives]
    out = AgreementSection()
    crowded: tuple[str, str, pd.DataFrame, pd.DataFrame] | None = None
    for low_side, high_side in pairs:
        key = by or match_rule([low_side.frame, high_side.frame])[0] or "arch_hash"
        low, high = seed_means(low_side.frame, names, key), seed_means(high_side.frame, names, key)
        for o in objectives:
            pairs_o = paired(low, high, o.name)
            result = agree(pairs_o["low"], pairs_o["high"], pairs_o["key"], o.name, o.maximize)
            out.results.append((low_side.name, high_side.name, o, pairs_o, result))
            out.by.append(key)
            out.sentences.append(_sentence(low_side.name, high_side.name, o, pairs_o, result))
        if len(objectives) >= 2:
            check = _front_check(low, high, objectives, low_side.name, high_side.name)
            out.fronts.append(check)
            out.sentences.append(_front_sentence(check))
        if crowded is None and len(objectives) >= 2 and len(low) >= max(MANY, CROWD * max(1, len(high))):
            crowded = (low_side.name, high_side.name, low, high)
    out.table, raw = _table(out)
    out.files["agreement.md"] = f"# {title}: fidelity agreement\n\n{out.table.to_markdown()}".encode()
    out.files["agreement.csv"] = raw.to_csv(index=False).encode()
    fig = agreement_plot(out.results, f"{title}: low against high fidelity")
    out.files["agreement.png"], out.files["agreement.svg"] = to_png(fig), to_svg(fig)
    if crowded is not None:
        low_name, high_name, low, high = crowded
        front = _front_of(low, objectives)
        retrained = low["key"].isin(set(high["key"])).to_numpy()
        fig = predicted_front_plot(low, front, retrained, objectives,
                                   f"{title}: front predicted by {low_name} ({len(low):,} architectures)",
                                   low_name, high_name)
        out.files["predicted_front.png"], out.files["predicted_front.svg"] = to_png(fig), to_svg(fig)
        out.front_caption = (f"Every architecture scored at {low_name}, its front highlighted; rings mark the "
                             f"{int(retrained.sum())} also trained at {high_name}. Vector version: predicted_front.svg.")
    return out


def add_to_page(page: Page, section: AgreementSection, matched: str = "") -> None:
    """The section's heading, sentences, table and figures on a report page."""
    intro = ("Whether a cheap fidelity ranks the architectures as the expensive one does. Kendall τ (tau-b) and "
             "Spearman ρ over the architectures trained at both (means over seeds), with bootstrap 95% intervals "
             f"({RESAMPLES:,} resamples of the architectures, seed {SEED}); top-k overlap = share of the k best at the high "
             "fidelity that are also among the k best at the low one; regret = high-fidelity score lost by taking "
             "the low fidelity's winner. " + matched)
    page.bullets("Fidelity agreement", [intro.strip(), *section.sentences])
    if section.table is not None:
        page.table("Fidelity agreement: numbers", section.table)
    page.figure("Fidelity agreement: low against high", section.files["agreement.png"],
                "One panel per lower fidelity and objective; labelled points, the low-fidelity winner ringed. "
                "Vector version: agreement.svg.")
    if "predicted_front.png" in section.files:
        page.figure("Predicted front", section.files["predicted_front.png"], section.front_caption)


# -- pieces ----------------------------------------------------------------------------------------
def _front_of(table: pd.DataFrame, objectives: Sequence[Objective]) -> np.ndarray:
    values = np.column_stack([table[o.name].astype(float).to_numpy() for o in objectives])
    ok = np.all(np.isfinite(values), axis=1)
    out = np.zeros(len(table), dtype=bool)
    if ok.any():
        out[ok] = front_mask(to_minimization(values[ok], objectives))
    return out


def _front_check(low: pd.DataFrame, high: pd.DataFrame, objectives: Sequence[Objective], low_name: str,
                 high_name: str) -> FrontCheck:
    low_front = low["key"][_front_of(low, objectives)].tolist()
    high_keys = set(high["key"])
    high_front = set(high["key"][_front_of(high, objectives)])
    retrained = [k for k in low_front if k in high_keys]
    labels = dict(zip(low["key"], point_labels(low)[0])) if len(low) else {}
    named = {k: labels.get(k, k) for k in low_front}
    return FrontCheck(low_name, high_name, [named[k] for k in low_front], [named[k] for k in retrained],
                      [named[k] for k in retrained if k in high_front], len(high_front), len(high))


def _front_sentence(c: FrontCheck) -> str:
    text = (f"Front predicted by {c.low}: {_n(len(c.predicted), 'architecture')}; {len(c.retrained)} of them "
            f"{'was' if len(c.retrained) == 1 else 'were'} also trained at {c.high}")
    if not c.retrained:
        return text + ", so the prediction cannot be checked."
    hits = ", ".join(c.hits[:8]) + (" …" if len(c.hits) > 8 else "")
    return (text + f", and {len(c.hits)} of those are on the {c.high} front ({c.high_front} of {c.high_total} "
            f"architectures)" + (f": {hits}." if c.hits else "."))


def _sentence(low: str, high: str, o: Objective, pairs: pd.DataFrame, r: Agreement) -> str:
    if not r.enough:
        return (f"{low} against {high} on {o.name}: {_n(r.n, 'architecture')} scored at both, fewer than "
                f"{MIN_SHARED}, so there is no rank correlation to report.")
    text = (f"{low} against {high} on {o.name} ({r.n} architectures): Kendall τ = {r.tau:.2f} [{r.tau_lo:.2f}, "
            f"{r.tau_hi:.2f}], Spearman ρ = {r.rho:.2f} [{r.rho_lo:.2f}, {r.rho_hi:.2f}].")
    if np.isfinite(r.tau_lo) and r.tau_lo <= 0 <= r.tau_hi:
        text += " The τ interval includes 0: the data cannot tell this ranking from chance."
    label = dict(zip(pairs["key"], point_labels(pairs)[0])).get(r.winner, r.winner)
    if r.winner_rank == 1:
        text += f" The {low} winner ({label}) is also the best at {high}."
    else:
        text += (f" The {low} winner ({label}) is #{r.winner_rank} of {r.n} at {high}, "
                 f"{_regret(o, r.regret)} below the best.")
    return text


def _regret(o: Objective, value: float) -> str:
    return f"{value:.2f} pp" if o.name in PERCENT else fmt_metric(o.name, value)


def _interval(v: float, lo: float, hi: float) -> str:
    if not np.isfinite(v):
        return DASH
    return f"{v:.2f} [{lo:.2f}, {hi:.2f}]" if np.isfinite(lo) else f"{v:.2f}"


def _table(section: AgreementSection) -> tuple[Table, pd.DataFrame]:
    columns = ["Low fidelity", "High fidelity", "Objective", "Shared", "Kendall τ [95%]", "Spearman ρ [95%]"]
    columns += [f"Top-{k}" for k in TOP_KS] + ["Low winner at high", "Regret"]
    rows, records = [], []
    for (low, high, o, pairs, r), by in zip(section.results, section.by):
        overlap = [f"{round(r.top_k[k] * k)}/{k}" if k in r.top_k else DASH for k in TOP_KS]
        where = f"#{r.winner_rank} of {r.n}" if r.enough else DASH
        rows.append([low, high, o.name, str(r.n), _interval(r.tau, r.tau_lo, r.tau_hi),
                     _interval(r.rho, r.rho_lo, r.rho_hi), *overlap, where,
                     _regret(o, r.regret) if r.enough else DASH])
        record = {"low": low, "high": high, "objective": o.name, "direction": o.direction, "shared": r.n,
                  "kendall_tau": r.tau, "kendall_lo": r.tau_lo, "kendall_hi": r.tau_hi, "spearman_rho": r.rho,
                  "spearman_lo": r.rho_lo, "spearman_hi": r.rho_hi}
        record.update({f"top{k}_overlap": r.top_k.get(k, np.nan) for k in TOP_KS})
        record.update({"low_winner": r.winner, "low_winner_rank_at_high": r.winner_rank if r.enough else np.nan,
                       "regret": r.regret, "matched_by": by})
        records.append(record)
    table = Table(columns, rows, ["l", "l", "l"] + ["r"] * (len(columns) - 3))
    keys = ", ".join(dict.fromkeys(section.by)) or "arch_hash"
    table.notes.append(f"Architectures matched by {keys}; each side is the mean over its seeds. Intervals: "
                       f"percentile bootstrap over architectures ({RESAMPLES:,} resamples, seed {SEED}). Top-k: "
                       "how many of the k best at the high fidelity are among the k best at the low one, over the "
                       "architectures scored at both.")
    for c in section.fronts:
        table.notes.append(_front_sentence(c))
    return table, pd.DataFrame.from_records(records)
