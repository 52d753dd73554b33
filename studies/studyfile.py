"""Reading study files: safe YAML without anchors or aliases, `--set` overrides, built-in study names.

Anchors and aliases (`&x`, `*x`, `<<: *x`) are refused: PyYAML does not expand them when it loads, but
anything that prints the value does, so a 500-byte file could make a gigabyte error line. Nesting is
limited too, so no value can exhaust the stack of whatever walks it later.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from hybridlab.errors import ConfigError, HybridlabError
from hybridlab.validate import short

BUILTIN_DIR = Path(__file__).resolve().parent
MAX_NESTING = 32  # mappings and lists inside each other; real study files use 5
MAX_FILE_BYTES = 1_000_000


class StudyConfigError(HybridlabError):
    """All problems of a study file; `problems` holds one line each."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        self.source = source
        Exception.__init__(self, "\n".join(f"{source}: {p}" for p in self.problems))


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing anchors and aliases where they appear."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.MarkedYAMLError(
                problem="anchors and aliases (&name, *name, <<) are not allowed in study files; write the values out",
                problem_mark=event.start_mark,
            )
        return super().compose_node(parent, index)


def safe_yaml(text: str) -> Any:
    """YAML text -> plain data, anchors and aliases refused (yaml.YAMLError), nesting limited (ConfigError)."""
    try:
        data = yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise ConfigError(f"values nested too deeply (at most {MAX_NESTING} levels)") from None
    check_nesting(data)
    return data


def check_nesting(data: Any, limit: int = MAX_NESTING) -> None:
    """Refuse data nested deeper than `limit` (checked without recursion)."""
    stack = [(data, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            raise ConfigError(f"values nested too deeply (at most {limit} levels)")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def builtin_studies() -> dict[str, Path]:
    """The study files shipped in studies/ (quickstart, mambavision_table5_patterns, ...)."""
    return {p.stem: p for p in sorted(BUILTIN_DIR.glob("*.yaml"))}


def resolve_study_file(name_or_path: str | None) -> Path:
    """A path, or the name of a built-in study; None means the quickstart study."""
    if name_or_path is None:
        name_or_path = "quickstart"
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise HybridlabError(f"study file {short(str(path))} not found")
        return path
    builtins = builtin_studies()
    if name_or_path in builtins:
        return builtins[name_or_path]
    raise HybridlabError(f"no study file {short(name_or_path)} (built-in studies: {', '.join(builtins)})")


def load_raw(path: Path) -> dict[str, Any]:
    """The top-level mapping of a study file; unreadable or invalid YAML is one StudyConfigError line."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise StudyConfigError(str(path), [f"file too big for a study file ({path.stat().st_size:,} bytes)"])
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise HybridlabError(f"cannot read study file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise StudyConfigError(str(path), [f"not UTF-8 text (byte {exc.start})"]) from None
    try:
        data = safe_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, col {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise StudyConfigError(str(path), [f"{where}invalid YAML: {short(problem)}"]) from None
    except ConfigError as exc:
        raise StudyConfigError(str(path), [str(exc)]) from None
    if not isinstance(data, dict):
        raise StudyConfigError(str(path), [f"expected a mapping at the top level, got {type(data).__name__}"])
    return data


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """`train.epochs=2` style overrides; values are YAML (`seeds=[0,1]`, `storage=null`)."""
    out = copy.deepcopy(raw)
    for item in overrides:
        if not isinstance(item, str) or "=" not in item:
            raise ConfigError(f"expected key=value, got {short(item)}", "--set")
        key, _, text = item.partition("=")
        parts = key.strip().split(".")
        if not all(p.strip() for p in parts):
            raise ConfigError(f"expected a dotted key such as train.epochs, got {short(key)}", "--set")
        try:
            value = safe_yaml(text)
        except (yaml.YAMLError, ConfigError) as exc:
            reason = getattr(exc, "problem", None) or getattr(exc, "reason", None) or "invalid YAML"
            raise ConfigError(f"cannot read the value of {short(key)}: {short(reason)}", "--set") from None
        node = out
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    check_nesting(out)
    return out


__all__ = ["StudyConfigError", "apply_overrides", "builtin_studies", "load_raw", "resolve_study_file", "safe_yaml"]
