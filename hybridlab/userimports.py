"""Import the user's own modules (their `register_block` calls run on import).

These run the user's code: `--import` and a study file's `imports:` are as trusted as the study itself.
A module is looked up on `sys.path`, then in the folders given (the current folder, the study file's
folder), so `--import my_blocks` works from the folder that holds `my_blocks.py` without PYTHONPATH.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from hybridlab.errors import ConfigError

_MODULE_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.")


def import_modules(names: Sequence[str], where: str = "--import", search: Sequence[str | os.PathLike[str]] = ()) -> None:
    """Import each module in `names`; `search` folders (and the current one) are tried after `sys.path`."""
    folders = [str(Path(f).resolve()) for f in (*search, os.getcwd())]
    for name in names:
        if not isinstance(name, str) or not name.strip() or not set(name) <= _MODULE_CHARS or ".." in name \
                or name.startswith(".") or name.endswith("."):
            raise ConfigError(f"not a module name: {name!r} (expected e.g. my_blocks or pkg.my_blocks)", where)
        added = [f for f in dict.fromkeys(folders) if f not in sys.path]
        sys.path.extend(added)  # after sys.path: an installed module of the same name wins
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                looked = ", ".join(dict.fromkeys(folders))
                raise ConfigError(f"cannot import {name!r}: no such module on sys.path or in {looked}", where) from None
            raise ConfigError(f"cannot import {name!r}: it needs {exc.name!r}, which is not installed", where) from None
        except SyntaxError as exc:
            raise ConfigError(f"cannot import {name!r}: syntax error in {exc.filename} line {exc.lineno}", where) from None
