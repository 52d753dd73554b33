"""`hybridlab report STUDY_NAME_OR_STORAGE`: write a study's plots, tables and HTML page."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "report", help="Pareto plot, hypervolume, tables and an HTML page for a study",
        description="Write <results-dir>/<study>/report/: pareto.png/.svg (or ranking.png/.svg for one "
                    "objective), hypervolume.png, summary.md (what the data can and cannot tell), table.md/.csv/.tex, "
                    "ablation.md/.csv/.tex, curves.png/.svg (learning curves, when trials recorded them) and report.html. A study name or folder is read from its live storage when "
                    "that can be opened, else from its trials.csv.")
    parser.add_argument("source", metavar="STUDY_NAME_OR_STORAGE",
                        help="a study name under --results-dir, a study folder, or a storage URL "
                             "(sqlite:///..., postgresql://..., journal:///path/file.log)")
    parser.add_argument("--results-dir", default="results", help="where studies live (default ./results)")
    parser.add_argument("--out", default=None, help="report folder (default <results-dir>/<study>/report)")
    parser.add_argument("--study", default=None, help="study name inside a storage URL holding several studies")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from reports.build import build_report

    build_report(args.source, results_dir=args.results_dir, out=args.out, study=args.study, echo=print)
    return 0
