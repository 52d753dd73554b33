"""The `hybridlab` command line: one sub-command per module in `hybridlab.commands`.

User mistakes (HybridlabError) print one line and exit 2; they never show a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from hybridlab.errors import HybridlabError

# Each module defines `add_parser(subparsers)`, which registers its sub-command and sets `func`.
COMMANDS = ("show", "bench", "run", "worker", "report", "compare")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybridlab",
        description="Hybrid Mamba/Transformer/CNN vision backbones: patterns, measurements, studies, reports.",
    )
    parser.add_argument(
        "--import", dest="imports", action="append", default=[], metavar="MODULE",
        help="import a Python module first, e.g. one that registers your own blocks (repeatable)",
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


def import_modules(names: Sequence[str], where: str = "--import") -> None:
    """Import user modules (their `register_block` calls run on import); one line if one is missing."""
    for name in names:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            raise HybridlabError(f"{where}: cannot import {name!r}: {exc} (is it on PYTHONPATH?)") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        import_modules(args.imports)
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
