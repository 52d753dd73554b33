"""The `hybridlab` command line: one sub-command per module in `hybridlab.commands`.

User mistakes (HybridlabError) print one line and exit 2; they never show a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from hybridlab.errors import HybridlabError

# Each module defines `add_parser(subparsers)`, which registers its sub-command and sets `func`.
COMMANDS = ("show", "bench", "run", "worker", "report", "compare")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybridlab",
        description="Hybrid Mamba/Transformer/CNN vision backbones: patterns, measurements, studies, reports.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"hybridlab.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"hybridlab.commands.{name}":
                raise
            continue  # command not built yet
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except HybridlabError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:  # a study file may have several problems
            print(f"hybridlab {args.command}: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hybridlab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
