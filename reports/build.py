"""Build a study's report folder (several studies side by side: `reports.comparison`).

`build_report` writes into `<results-dir>/<study>/report/` by default:
pareto.png/.svg (multi-objective) or ranking.png/.svg (single objective), hypervolume.png,
curves.png/.svg (when trials carry learning curves),
table.md/.csv/.tex, ablation.md/.csv/.tex (ablation studies; .tex: booktabs) and report.html (self-contained).
A study holding several fidelities (`fidelity_rank`: supernet scores, halving rungs, full training) is
reported on its highest one, plus agreement.md/.csv/.png/.svg (does each cheaper fidelity rank the
architectures the same way?) and, for a crowded cheap fidelity, predicted_front.png/.svg
(`reports.agreement_report`).
Files from an earlier run that this run does not produce are removed, so the folder never mixes runs.
"""

from __future__ import annotations

import html as html_lib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

import hybridlab
from hybridlab.atomic import atomic_write
from hybridlab.errors import HybridlabError
from hybridlab.metrics import Objective
from reports.ablation import ablation_csv, ablation_frame, ablation_table
from reports.agreement_report import AGREEMENT_FILES, add_to_page, agreement_section, split_fidelities, study_sides
from reports.curves import learning_curves
from reports.figures import to_png, to_svg
from reports.html import Page
from reports.hypervolume import history, reference_point
from reports.latex import to_latex
from reports.load import StudyData, load_study, mask_url
from reports.pareto import aggregate, finished_rows
from reports.plots import pareto_plot
from reports.ranking_plots import hypervolume_plot, ranking_plot
from reports.rung_signal import blind_rungs
from reports.search_cost import cost_sentence, search_cost
from reports.summary import findings
from reports.tables import (
    architecture_csv,
    architecture_table,
    fmt_metric,
    header,
    unfinished_table,
)
from reports.uncertainty import best_of
from studies.table import state_counts

REPORT_FILES = ("pareto.png", "pareto.svg", "ranking.png", "ranking.svg", "hypervolume.png", "curves.png",
                "curves.svg", "summary.md",
                "table.md", "table.csv", "table.tex", "ablation.md", "ablation.csv", "ablation.tex",
                "report.html", *AGREEMENT_FILES)
Echo = Callable[[str], None]


def build_report(source: Any, results_dir: str | os.PathLike[str] = "results",
                 out: str | os.PathLike[str] | None = None, study: str | None = None,
                 echo: Echo | None = None) -> Path:
    """Load a study (name, folder, storage URL or optuna.Study) and write its report; return the folder."""
    data = load_study(source, results_dir=results_dir, study=study)
    folder = Path(out) if out is not None else (data.folder or Path(results_dir) / data.name) / "report"
    write_report(data, folder, echo=echo)
    return folder


def write_report(data: StudyData, folder: Path, echo: Echo | None = None) -> list[str]:
    """Write every report file for already loaded study data; return the file names written."""
    say = echo or (lambda _msg: None)
    everything, objectives = data.frame, data.objectives
    check_objectives(data)
    split = split_fidelities(everything, objectives, data.name)
    frame = split.main  # several fidelities: only the highest one's results go into tables, fronts and best values
    arch = aggregate(frame, objectives)
    counts = state_counts(everything)
    files: dict[str, bytes] = {}
    page = Page(title=f"Study report: {data.name}", subtitle=_subtitle(data))
    page.cards = _cards(everything, arch, objectives, counts)
    name = data.name

    if everything.empty:
        message = f"study {name!r} has no trials yet"
    elif arch.empty:
        pending = ", ".join(f"{n} {s.lower()}" for s, n in counts.items())
        message = f"study {name!r} has no finished trial yet ({pending})"
    else:
        message = ""
    if message:
        page.alerts.append(message[0].upper() + message[1:] + ".")
    unfinished = sum(n for s, n in counts.items() if s != "COMPLETE")
    if unfinished and not arch.empty:
        page.alerts.append(f"{unfinished} of {len(everything)} trials are not finished (running, waiting, failed or "
                           "pruned): they are listed below and not plotted.")
    page.alerts += [data.scrub(note) for note in data.notes]

    ranked = arch[arch["rank"].notna()] if len(arch) else arch
    title = f"{name}: {len(arch)} architecture{'s' if len(arch) != 1 else ''}"
    if len(objectives) >= 2 and len(ranked):
        n_front = int((arch["rank"] == 1).sum())
        n_base = int(((arch["rank"] == 1) & arch["is_baseline"].astype(bool)).sum())
        fig = pareto_plot(arch, objectives, f"{title}, {n_front} on the Pareto front"
                          + (f" ({n_base} baseline{'s' if n_base > 1 else ''})" if n_base else ""))
        files["pareto.png"], files["pareto.svg"] = to_png(fig), to_svg(fig)
        page.figure("Pareto front", files["pareto.png"],
                    f"{header(objectives[0].name)} against {header(objectives[1].name)}; the vector version is pareto.svg.")
    elif len(objectives) == 1 and len(arch):
        fig = ranking_plot(arch, objectives[0], f"{title}, ranked by {objectives[0].name}")
        files["ranking.png"], files["ranking.svg"] = to_png(fig), to_svg(fig)
        page.figure("Ranking", files["ranking.png"], "Single-objective study: architectures ranked by the objective.")

    if len(arch):
        candidates = frame[~frame["is_baseline"].astype(bool)] if (~frame["is_baseline"].astype(bool)).any() else frame
        reference, rule = reference_point(finished_rows(candidates), objectives, data.manifest)
        hist = history(frame, objectives, reference)
        label = "best value so far" if len(objectives) == 1 else "hypervolume"
        fig = hypervolume_plot(hist, objectives, reference, rule, f"{name}: {label} by trial")
        files["hypervolume.png"] = to_png(fig)
        caption = ("Best architecture mean after each finished trial." if len(objectives) == 1 else
                   "Hypervolume of the front after each finished trial; the reference point is written on the plot.")
        page.figure("Hypervolume" if len(objectives) > 1 else "Best value so far", files["hypervolume.png"], caption)

    fig, caption = learning_curves(frame, f"{name}: learning curves")
    if fig is not None:
        files["curves.png"], files["curves.svg"] = to_png(fig), to_svg(fig)
        page.figure("Learning curves", files["curves.png"], caption)

    abl, default = None, None
    if data.ablation is not None:
        default = data.ablation.get("default_label")
        default = str(default) if default else None
        abl = ablation_frame(frame, objectives, default, data.ablation.get("names"))
    said = ([split.sentence] if split.sentence else []) + findings(frame, arch, objectives, abl, default)
    section = agreement_section(study_sides(everything, split.levels), objectives, name) if split.several else None
    if section is not None:
        said += section.sentences
    cost = search_cost(everything)
    if cost is not None:
        said.append(cost_sentence(cost))
    said += blind_rungs(everything, data.manifest)
    if said:
        files["summary.md"] = (f"# {name}: what the data can tell\n\n" + "".join(f"- {s}\n" for s in said)).encode()
        page.bullets("What the data can tell", [s for s in said if section is None or s not in section.sentences],
                     first=True)
    if section is not None:
        files.update(section.files)
        add_to_page(page, section)
    if split.files:
        files.update(split.files)
        page.figure("Predicted front", split.files["predicted_front.png"], split.caption)

    table = architecture_table(arch, objectives, frame)
    files["table.md"] = f"# {name}: architectures\n\n{table.to_markdown()}".encode()
    files["table.csv"] = architecture_csv(arch).to_csv(index=False).encode()
    files["table.tex"] = to_latex(table, f"{name}: architectures", f"{name}-architectures").encode()
    page.table("Architectures", table, "One row per architecture (trials grouped by arch_hash), sorted by Pareto "
               "rank, then by the first objective.")

    if abl is not None:
        atable = ablation_table(abl, objectives, default)
        files["ablation.md"] = f"# {name}: ablation\n\n{atable.to_markdown()}".encode()
        files["ablation.csv"] = ablation_csv(abl).to_csv(index=False).encode()
        files["ablation.tex"] = to_latex(atable, f"{name}: ablation", f"{name}-ablation").encode()
        page.table("Ablation", atable, "One row per variant (label): mean [95% interval] over seeds, and the paired "
                   "difference to the default row.")

    pending_table = unfinished_table(frame)
    if pending_table.rows:
        page.table("Unfinished trials", pending_table, "Running, waiting, failed and pruned trials (not plotted).")
    page.mapping("Measurement profile", data.manifest.get("measure") or {})
    page.mapping("Environment", data.manifest.get("env") or {})
    page.mapping("Study", _study_info(data))
    page.preformatted("Study file (study.yaml)", data.study_yaml, "no study.yaml next to the trials")
    names = sorted(files) + ["report.html"]
    page.files(names)
    files["report.html"] = page.render(scrub=html_scrub(data)).encode("utf-8")

    write_files(folder, files, REPORT_FILES, data.scrub)
    if message:
        say(data.scrub(f"{message}; wrote a {'minimal' if everything.empty else 'partial'} report to {folder}"))
    else:
        say(f"wrote the report of study {name!r} ({counts.get('COMPLETE', 0)} finished trials, {len(arch)} "
            f"architectures) to {folder}")
    return names


def check_objectives(data: StudyData) -> None:
    """Every objective must be a column with a value in some finished trial (else the report means nothing)."""
    done = finished_rows(data.frame)
    if done.empty:
        return
    for o in data.objectives:
        if o.name not in done.columns or pd.to_numeric(done[o.name], errors="coerce").notna().sum() == 0:
            where = "manifest.json" if data.manifest.get("objectives") else "the default objectives"
            raise HybridlabError(f"objective {o.name!r} (from {where}) has no value in any finished trial of "
                                 f"study {data.name!r}")


def write_files(folder: Path, files: dict[str, bytes], managed: Sequence[str], scrub: Callable[[str], str]) -> None:
    """Write atomically; text files are scrubbed of secrets; managed files not written now are removed."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HybridlabError(f"cannot create report folder {folder}: {exc.strerror or exc}") from None
    for fname, blob in sorted(files.items()):
        if fname.endswith((".md", ".csv", ".tex")):
            blob = scrub(blob.decode("utf-8")).encode("utf-8")
        atomic_write(folder / fname, blob)
    for fname in managed:
        if fname not in files and (folder / fname).exists():
            (folder / fname).unlink()


def html_scrub(data: StudyData) -> Callable[[str], str]:
    escaped = tuple(html_lib.escape(s) for s in data.secrets)

    def scrub(text: str) -> str:
        from reports.load import scrub as base

        return base(text, tuple(data.secrets) + escaped)

    return scrub


def goals(objectives: Sequence[Objective]) -> str:
    return ", ".join(f"{o.direction} {o.name}" for o in objectives)


def _subtitle(data: StudyData) -> str:
    goals_text = goals(data.objectives)
    return f"Source: {data.scrub(data.source)} · objectives: {goals_text} · hybridlab {hybridlab.__version__}"


def _cards(frame: pd.DataFrame, arch: pd.DataFrame, objectives: Sequence[Objective],
           counts: dict[str, int]) -> list[tuple[str, str]]:
    cards = [("trials", str(len(frame)))] + [(state.lower(), str(n)) for state, n in counts.items()]
    cards.append(("architectures", str(len(arch))))
    if len(arch) and len(objectives) > 1:
        cards.append(("on the front", str(int((arch["rank"] == 1).sum()))))
    best, tied = best_of(arch, objectives[0]) if len(arch) else (None, 0)
    if best is not None:
        o = objectives[0]
        value = fmt_metric(o.name, best[f"{o.name}_mean"])
        cards.append((f"best {o.name}", f"{value} (tied with {tied})" if tied else value))
    return cards


def _study_info(data: StudyData) -> dict[str, Any]:
    info: dict[str, Any] = {"study": data.name, "source": data.scrub(data.source)}
    for key in ("storage", "hybridlab", "ablation", "reference_point"):
        if key in data.manifest:
            value = data.manifest[key]
            info[key] = mask_url(value) if key == "storage" and isinstance(value, str) else value
    info["objectives"] = goals(data.objectives)
    return info
