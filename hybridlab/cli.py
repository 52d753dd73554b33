"""The `hybridlab` command line: one sub-command per module in `hybridlab.commands`.

User mistakes (HybridlabError) print one line and exit 2; they never show a traceback, and never a
password that a storage URL on the command line or in HYBRIDLAB_STORAGE carries. Building the parser
imports no torch: command modules import heavy things inside their functions.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from hybridlab.errors import HybridlabError
from hybridlab.urls import scrub, url_secrets
from hybridlab.userimports import import_modules

# Each module defines `add_parser(subparsers)`, which registers its sub-command and sets `func`.
COMMANDS = ("show", "bench", "run", "worker", "measure", "status", "list_studies", "report", "compare",
            "rebuild_storage")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybridlab",
        description="Hybrid Mamba/Transformer/CNN vision backbones: patterns, measurements, studies, reports.",
    )
    parser.add_argument(
        "--import", dest="imports", action="append", default=[], metavar="MODULE",
        help="import a Python module first (from sys.path or the current folder), e.g. one that registers "
             "your own blocks; this runs its code (repeatable)",
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


def known_secrets(argv: Sequence[str]) -> tuple[str, ...]:
    """Passwords of the storage URLs this process was given (arguments, `--set storage=`, environment)."""
    urls = [a.split("=", 1)[1] if a.startswith(("storage=", "--storage=")) else a for a in argv if "://" in a]
    urls.append(os.environ.get("HYBRIDLAB_STORAGE", ""))
    return tuple(s for url in urls for s in url_secrets(url))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        import_modules(args.imports)
        return int(args.func(args) or 0)
    except HybridlabError as exc:
        secrets = known_secrets(argv)
        for line in str(exc).splitlines() or [type(exc).__name__]:  # a study file may have several problems
            print(f"hybridlab {args.command}: {scrub(line, secrets)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hybridlab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
