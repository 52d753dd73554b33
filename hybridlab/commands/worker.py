"""`hybridlab worker STUDY --storage URL`: one of many processes working on one shared study.

The URL may come from HYBRIDLAB_STORAGE instead of `--storage`, which keeps its password out of `ps`.

Start as many as you have devices (one per GPU: `--device cuda:N`); the total number of trials is capped
across all of them, dead workers' trials are retried from their checkpoints, and `hybridlab report`
reads the shared storage at any time.
"""

from __future__ import annotations

import argparse
import os

from hybridlab.commands.run import add_study_args, storage_from
from hybridlab.commands.run import main as run_main
from hybridlab.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("worker", help="work on a shared study (one process per device)")
    parser.add_argument("study", help="study file or built-in study name")
    add_study_args(parser)
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if not storage_from(args):
        raise ConfigError("workers need a shared storage URL (PostgreSQL or journal:///path)", "--storage")
    if args.device and args.device.startswith("cuda:") and "CUDA_VISIBLE_DEVICES" not in os.environ:
        # Pin the process to its GPU so every library in it (Lightning, measurement) sees only that one.
        os.environ["CUDA_VISIBLE_DEVICES"] = args.device.split(":", 1)[1]
        args.device = "cuda:0"
    return run_main(args, report=False)
