"""`hybridlab run [STUDY]`: run (or resume) a study; with no file, the quickstart study."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

STORAGE_ENV = "HYBRIDLAB_STORAGE"


def storage_from(args: argparse.Namespace) -> str | None:
    """`--storage`, else $HYBRIDLAB_STORAGE (kept out of the process list), else None (the study's own)."""
    return args.storage or os.environ.get(STORAGE_ENV) or None


def add_study_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage", default=None,
        help="Optuna storage URL (default: $HYBRIDLAB_STORAGE, else the study file's, else "
             "sqlite:///<results-dir>/<study>/study.db); put a URL with a password in HYBRIDLAB_STORAGE, "
             "where `ps` does not show it",
    )
    parser.add_argument("--results-dir", default="results", type=Path, help="where studies write (default ./results)")
    parser.add_argument("--n-trials", help="number of architectures to train, each once per seed, across all workers "
                             "(at most 10,000)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a study-file value, e.g. --set train.epochs=2 (repeatable)",
    )
    parser.add_argument("--device", help="device for this process, e.g. cuda:1 (default: the study's)")
    parser.add_argument(
        "--retry-failed", action="store_true",
        help="retry every failed trial, however often it failed (by default a failed trial is retried on "
             "the next runs up to max_retries times, 2 unless the study file says otherwise)",
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("run", help="run or resume a study (default: the quickstart study)")
    parser.add_argument("study", nargs="?", help="study file or built-in study name (default: quickstart)")
    add_study_args(parser)
    parser.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    parser.add_argument("--check", action="store_true", help="validate the study file and exit")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace, report: bool | None = None) -> int:
    from studies.config import load_study_config
    from studies.loop import StopRequested, stop_on_signals
    from studies.runner import RunOptions, run_study, study_folder

    args.n_trials = n_trials_from(args.n_trials)
    config = load_study_config(args.study, overrides=args.overrides)
    if getattr(args, "check", False):
        from studies import preflight
        from studies.data import make_datamodule

        device = args.device or str(config.measure.get("device", "auto"))
        preflight.check_device(device, "--device" if args.device else "measure.device")
        data = {k: v for k, v in config.data.items() if not k.startswith("_")}
        preflight.check_data(make_datamodule(**data), str(data.get("name")))
        from studies.finetune import check_note

        note = check_note(config.pretrained)
        if note:
            print(note)
        how = f"strategy {config.strategy.describe()}" if config.strategy is not None else f"sampler {config.sampler['name']}"
        print(f"{config.source}: ok (search space of {config.space.size():,} assignments, {how})")
        return 0
    options = RunOptions(results_dir=args.results_dir, storage=storage_from(args), n_trials=args.n_trials,
                         device=args.device, retry_failed=args.retry_failed)
    with stop_on_signals():
        try:
            done = run_study(config, options)
        except StopRequested as stop:
            print(f"hybridlab {args.command}: stopped by {stop.name}; finished trials are kept and the running one "
                  "resumes from its last checkpoint: run the same command again", file=sys.stderr)
            return stop.exit_code
    from studies import measure_phase

    # `measure: {phase: after}`: side by side, before the report; a `worker` leaves it to `hybridlab measure`
    if measure_phase.phase(config) == "after" and getattr(args, "command", "run") == "run":
        measure_phase.measure_study(config, measure_phase.MeasureOptions(
            results_dir=args.results_dir, storage=storage_from(args), device=args.device))
    if (not getattr(args, "no_report", False)) if report is None else report:
        from reports import build_report

        out = build_report(str(study_folder(args.results_dir, config.name)), results_dir=args.results_dir)
        print(f"report: {out}")
    # the last line: what this run did; failed trials make the exit status non-zero (a rerun retries them)
    print(f"study {config.name}: this run {done.summary()}")
    return 1 if done.failed else 0


def n_trials_from(text: str | int | None) -> int | None:
    """`--n-trials` as a whole number of at least 1, or one line saying what is wrong (not argparse's usage block)."""
    if text is None or isinstance(text, int):
        value = text
    else:
        value = int(text) if str(text).strip().isdigit() and len(str(text).strip()) <= 9 else None
        if value is None:
            from hybridlab.errors import ConfigError

            raise ConfigError(f"expected a whole number of architectures, got {str(text)[:40]!r}", "--n-trials")
    if value is not None and value < 1:
        from hybridlab.errors import ConfigError

        raise ConfigError(f"must be at least 1, got {value}", "--n-trials")
    return value

