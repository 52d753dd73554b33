"""`hybridlab measure STUDY`: time every finished architecture of a study side by side, after training.

Interleaved rounds in one process, so a busy machine slows every candidate alike and the ratios to the
reference row hold (studies.measure_phase). Re-run it at any time: it trains nothing and replaces the
last measurement; trials.csv and the report then use its figures.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("measure", help="measure a study's finished architectures side by side (no training)")
    parser.add_argument("study", help="study file or built-in study name")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--storage", default=None,
                        help="Optuna storage URL (default: $HYBRIDLAB_STORAGE, else the study file's, else "
                             "sqlite:///<results-dir>/<study>/study.db)")
    parser.add_argument("--results-dir", default="results", type=Path, help="where studies write (default ./results)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads while measuring (default: the study's measure.threads)")
    parser.add_argument("--device", help="device to measure on (default: the study's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a study-file value, as for `hybridlab run`")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from hybridlab.commands.run import storage_from
    from hybridlab.errors import ConfigError
    from studies.config import load_study_config
    from studies.measure_phase import MeasureOptions, measure_study

    if not 1 <= args.rounds <= 1000:
        raise ConfigError(f"must be between 1 and 1000, got {args.rounds}", "--rounds")
    if args.threads is not None and not 1 <= args.threads <= 1024:
        raise ConfigError(f"must be between 1 and 1024, got {args.threads}", "--threads")
    config = load_study_config(args.study, overrides=args.overrides, check_data=False)
    options = MeasureOptions(results_dir=args.results_dir, storage=storage_from(args), rounds=args.rounds,
                             threads=args.threads, device=args.device)
    measure_study(config, options)
    return 0
