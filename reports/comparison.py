"""Several studies side by side: their Pareto fronts on one plot, a table, and a check that they compare.

`compare` writes compare.png/.svg, compare.md/.csv and compare.html. When the studies hold the same
architectures (a low-resolution proxy and the full study, say) it adds the agreement section of
`reports.agreement_report` (agreement.md/.csv/.png/.svg): each study against the high-fidelity one (the last
given, or `high`), architectures matched by the rule of `reports.agreement.match_rule`. A study holding
several fidelities takes part with its highest one. The studies must share their objectives; the hypervolume uses one reference point for all of them (given, or from the rule of
`reports.hypervolume.reference_point`), checked to be worse than every point. Studies trained on
different datasets or image sizes are compared all the same, with a one-line warning each.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hybridlab.errors import HybridlabError
from hybridlab.metrics import Objective
from reports.agreement import MATCH_KEYS, MIN_SHARED, match_rule
from reports.agreement_report import (
    AGREEMENT_FILES,
    AgreementSection,
    Side,
    add_to_page,
    agreement_section,
    split_fidelities,
)
from reports.build import Echo, check_objectives, goals, html_scrub, write_files
from reports.figures import to_png, to_svg
from reports.html import Page
from reports.hypervolume import check_reference, given_reference, hypervolume, reference_point
from reports.load import StudyData, load_study, study_setup
from reports.pareto import aggregate, finished_rows, to_minimization
from reports.plots import compare_plot
from reports.tables import Table, fmt_metric, header

COMPARE_FILES = ("compare.png", "compare.svg", "compare.md", "compare.csv", "compare.html", *AGREEMENT_FILES)


def compare(sources: Sequence[Any], results_dir: str | os.PathLike[str] = "results",
            out: str | os.PathLike[str] | None = None, echo: Echo | None = None,
            reference: Sequence[float] | dict[str, float] | None = None, high: str | None = None,
            match: str | None = None) -> Path:
    """Fronts of several studies on one plot plus a small table; return the output folder.

    The studies must share their objectives. `reference` (objective order, or by name) overrides the
    reference point, which is otherwise the first study's manifest one or the rule's. `high` names the
    high-fidelity study of the agreement section (default: the last one); `match` forces its matching key
    (arch_hash, pattern or label; default: the one sharing the most architectures).
    """
    say = echo or (lambda _msg: None)
    if len(sources) < 2:
        raise HybridlabError("compare needs at least two studies")
    loaded = [load_study(s, results_dir=results_dir) for s in sources]
    names = [d.name for d in loaded]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise HybridlabError(f"study {dup[0]!r} is given twice")
    objectives = loaded[0].objectives
    for d in loaded[1:]:
        if d.objectives != objectives:
            raise HybridlabError(
                f"studies {loaded[0].name!r} and {d.name!r} have different objectives "
                f"({goals(objectives)} vs {goals(d.objectives)}); compare needs the same ones")
    if len(objectives) < 2:
        raise HybridlabError("compare plots Pareto fronts and needs at least two objectives")
    for d in loaded:
        check_objectives(d)
    if high is not None and high not in names:
        given = [str(s) for s in sources]
        if high not in given:
            raise HybridlabError(f"--high {high}: not one of the compared studies ({', '.join(names)})")
        high = names[given.index(high)]
    if match is not None and match not in MATCH_KEYS:
        raise HybridlabError(f"--match {match}: expected one of {', '.join(MATCH_KEYS)}")
    tops = [split_fidelities(d.frame).main for d in loaded]  # a study with several fidelities: its highest one
    archs = [(d.name, aggregate(top, objectives)) for d, top in zip(loaded, tops)]
    empty = [n for n, a in archs if a.empty]
    if len(empty) == len(archs):
        raise HybridlabError(f"no finished trial in any of the studies {', '.join(names)}")
    folder = Path(out) if out is not None else Path(results_dir) / ("compare-" + "-vs-".join(names))
    pooled = pd.concat([finished_rows(d.frame) for d in loaded], ignore_index=True)
    pooled_candidates = pooled[~pooled["is_baseline"].astype(bool)] if (~pooled["is_baseline"].astype(bool)).any() else pooled
    if reference is not None:
        reference_values = given_reference(reference, objectives, "--reference-point")
        rule, where = "given with --reference-point", "--reference-point"
    else:
        reference_values, rule = reference_point(pooled_candidates, objectives, loaded[0].manifest)
        where = f"{loaded[0].name}: manifest.json: reference_point"
    check_reference(reference_values, [(d.name, d.frame) for d in loaded], objectives, where)
    reference = reference_values
    warnings = setup_warnings(loaded)
    for line in warnings:
        say(f"warning: {line}")

    table, raw = _compare_table(loaded, archs, objectives, reference)
    fig = compare_plot(archs, objectives, "Pareto fronts: " + ", ".join(names))
    files = {"compare.png": to_png(fig), "compare.svg": to_svg(fig)}
    ref_text = ", ".join(f"{o.name} = {v:.4g}" for o, v in zip(objectives, reference))
    note = f"Hypervolume reference point: {ref_text} ({rule}), the same for every study."
    table.notes.append(note)
    table.notes.append("Baselines take part in each study's front and best values as reference points; the "
                       "hypervolume counts searched candidates only.")
    section, matched = fidelity_section(loaded, tops, objectives, high or names[-1], match)
    if section is None and matched:
        table.notes.append(matched)
    files["compare.md"] = f"# Comparison: {', '.join(names)}\n\n{table.to_markdown()}".encode()
    files["compare.csv"] = raw.to_csv(index=False).encode()
    page = Page(title=f"Comparison: {', '.join(names)}", subtitle=f"objectives: {goals(objectives)}")
    page.alerts += [f"Warning: {line}." for line in warnings]
    table.notes += [f"Warning: {line}." for line in warnings]
    if empty:
        page.alerts.append(f"No finished trial yet in: {', '.join(empty)}.")
    page.figure("Pareto fronts", files["compare.png"], "Each study's front; faint points are dominated architectures.")
    page.table("Studies", table)
    if section is not None:
        files.update(section.files)
        add_to_page(page, section, matched)
        say(matched)
    page.files(sorted(files) + ["compare.html"])
    secrets = tuple(s for d in loaded for s in d.secrets)
    scrubber = html_scrub(StudyData(name="", frame=pd.DataFrame(), objectives=[], secrets=secrets))
    files["compare.html"] = page.render(scrub=scrubber).encode("utf-8")
    write_files(folder, files, COMPARE_FILES, scrubber)
    say(f"wrote the comparison of {', '.join(repr(n) for n in names)} to {folder}")
    return folder


def fidelity_section(loaded: Sequence[StudyData], tops: Sequence[pd.DataFrame], objectives: Sequence[Objective],
                     high: str, match: str | None) -> tuple[AgreementSection | None, str]:
    """The agreement section of each study against the `high` one, and a sentence on how they were matched."""
    names = [d.name for d in loaded]
    target = names.index(high)
    by, shared = match_rule(tops, match)
    if match and not by:
        raise HybridlabError(f"--match {match}: some {match} names several architectures inside one study, so it "
                             "cannot pair architectures across studies")
    if shared == 0:
        return None, ""  # unrelated search spaces: a plain comparison, as without this section
    if shared < MIN_SHARED:
        return None, (f"The studies share {shared} architecture{'s' if shared > 1 else ''} (by {by}): too few "
                      f"(under {MIN_SHARED}) for a fidelity agreement section.")
    why = {"arch_hash": "the same arch_hash (identical networks and settings)",
           "pattern": "pattern (their arch_hash differ, as settings such as the image size enter it)",
           "label": "label (neither arch_hash nor pattern match)"}[by]
    rule = "given with --match" if match else "the key that pairs the most architectures"
    matched = (f"Fidelity agreement: {names[target]} is the high fidelity; architectures matched by {why}, "
               f"{shared} shared ({rule}).")
    pairs = [(Side(names[i], tops[i]), Side(names[target], tops[target])) for i in range(len(loaded)) if i != target]
    title = " vs ".join(names)
    return agreement_section(pairs, objectives, title, by=by), matched


def setup_warnings(loaded: Sequence[StudyData]) -> list[str]:
    """One line per setting (dataset, image size) the studies recorded differently; unknown ones are skipped."""
    setups = [(d.name, study_setup(d)) for d in loaded]
    lines = []
    for key, what in (("dataset", "datasets"), ("img_size", "image sizes")):
        known = [(name, setup[key]) for name, setup in setups if setup.get(key) is not None]
        if len({str(v) for _, v in known}) > 1:
            lines.append(f"the studies used different {what} ({', '.join(f'{n}: {v}' for n, v in known)})")
    return lines


def _compare_table(loaded: Sequence[StudyData], archs: Sequence[tuple[str, pd.DataFrame]],
                   objectives: Sequence[Objective], reference: np.ndarray) -> tuple[Table, pd.DataFrame]:
    """Per study: finished trials, architectures, front size, best value of each objective, hypervolume."""
    records = []
    ref_min = to_minimization(reference, objectives)[0]
    for d, (name, arch) in zip(loaded, archs):
        ranked = arch[arch["rank"].notna()] if len(arch) else arch
        base = arch["is_baseline"].astype(bool) if len(arch) else pd.Series([], dtype=bool)
        record: dict[str, Any] = {"study": name, "finished_trials": len(finished_rows(d.frame)),
                                  "architectures": len(arch), "baselines": int(base.sum()),
                                  "on_front": int((ranked["rank"] == 1).sum()),
                                  "baselines_on_front": int(((arch["rank"] == 1) & base).sum()) if len(arch) else 0}
        for o in objectives:
            col = ranked[f"{o.name}_mean"].astype(float).dropna() if len(ranked) else pd.Series([], dtype=float)
            record[f"best_{o.name}"] = float(col.max() if o.maximize else col.min()) if len(col) else np.nan
        volume = np.nan
        searched = ranked[~ranked["is_baseline"].astype(bool)] if len(ranked) else ranked
        if len(searched) and np.all(np.isfinite(ref_min)):
            points = np.column_stack([searched[f"{o.name}_mean"].astype(float) for o in objectives])
            volume = hypervolume(to_minimization(points, objectives), ref_min)
        record["hypervolume"] = volume
        records.append(record)
    raw = pd.DataFrame.from_records(records)
    columns = ["Study", "Finished trials", "Architectures", "Baselines", "On front"]
    columns += [f"Best {header(o.name)}" for o in objectives] + ["Hypervolume"]
    rows = [[r["study"], str(r["finished_trials"]), str(r["architectures"]), str(r["baselines"]),
             f"{r['on_front']} ({r['baselines_on_front']} baseline)" if r["baselines_on_front"] else str(r["on_front"])]
            + [fmt_metric(o.name, r[f"best_{o.name}"]) for o in objectives]
            + ["–" if np.isnan(r["hypervolume"]) else f"{r['hypervolume']:.4g}"] for r in records]
    return Table(columns, rows, ["l"] + ["r"] * (len(columns) - 1)), raw
