"""Typed checks for study-file values: one ConfigError line that names the key, never a traceback.

Study files are YAML written by people, so every value can be of any type, NaN, inf, 2^63 or a
megabyte string. These helpers are the one validation path of `search_space`, `studies` and
`hybridlab.measure`: each takes the raw value and `where` (the dotted key, e.g. `train.epochs`) and
returns the checked value. Quoted values are cut to `QUOTE_LIMIT` characters, so a huge value never
makes a huge message.

The module sits in the shared layer (it needs only `hybridlab.errors`) so that every layer can use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from hybridlab.errors import ConfigError

T = TypeVar("T")
QUOTE_LIMIT = 200
# Integers beyond this are refused everywhere: no setting of a study needs more, and 2^63 would overflow
# torch, NumPy and SQLite integer columns downstream.
MAX_INT = 2**53


def short(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """`repr(value)` cut to `limit` characters, so quoting user input never floods a message."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # int too long to print, self-nesting containers
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def type_name(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def mapping(value: Any, where: str, required: bool = False) -> dict[Any, Any]:
    """A mapping (a copy); None is `{}` unless `required`."""
    if value is None and not required:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"expected a mapping of settings, got {type_name(value)} {short(value, 60)}", where)
    return dict(value)


def unknown_keys(cfg: Mapping[Any, Any], known: Iterable[str], where: str) -> None:
    """Refuse the first key not in `known`, listing the known ones."""
    known = list(known)
    for key in cfg:
        if key not in known:
            at = f"{where}.{key}" if where and isinstance(key, str) and len(key) <= QUOTE_LIMIT else where
            raise ConfigError(f"unknown key {short(key)} (known: {', '.join(known)})", at)


def integer(value: Any, where: str, minimum: int | None = None, maximum: int | None = MAX_INT) -> int:
    """An int (not a bool, not a float) in [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"expected an integer, got {short(value)}", where)
    if minimum is not None and value < minimum:
        raise ConfigError(f"must be >= {minimum}, got {short(value)}", where)
    if maximum is not None and value > maximum:
        raise ConfigError(f"must be <= {maximum:,}, got {short(value)}", where)
    return value


def optional_integer(value: Any, where: str, minimum: int | None = None, maximum: int | None = MAX_INT) -> int | None:
    return None if value is None else integer(value, where, minimum, maximum)


def number(
    value: Any, where: str, minimum: float | None = None, maximum: float | None = None, exclusive_min: bool = False,
    allow_text: bool = False,
) -> float:
    """A finite number in range. `allow_text` takes YAML's `5e6` (read as a string without a dot)."""
    if allow_text and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"expected a number, got {short(value)}", where)
    try:
        out = float(value)
    except OverflowError:
        raise ConfigError(f"expected a finite number, got {short(value)}", where) from None
    if not math.isfinite(out):
        raise ConfigError(f"expected a finite number, got {short(value)}", where)
    if minimum is not None and (out < minimum or (exclusive_min and out == minimum)):
        raise ConfigError(f"must be {'>' if exclusive_min else '>='} {minimum:g}, got {short(value)}", where)
    if maximum is not None and out > maximum:
        raise ConfigError(f"must be <= {maximum:g}, got {short(value)}", where)
    return out


def in_range(value: Any, where: str, low: float, high: float, integer: bool = False) -> Any:
    """A finite number in [low, high], an int when `integer` (an integral float such as YAML's `1.0e+3` is
    taken); the message states both bounds, for settings documented as a range."""
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"expected {kind}, got {short(value)}", where)
    if not math.isfinite(value):
        raise ConfigError(f"expected a finite number, got {value}", where)
    if integer and float(value) != int(value):
        raise ConfigError(f"expected an integer, got {value!r}", where)
    if not low <= value <= high:
        shown = f"{value:g}" if isinstance(value, float) or abs(value) >= 10**15 else str(value)
        raise ConfigError(f"must be between {low:g} and {high:g}, got {shown}", where)
    return int(value) if integer else float(value)


def boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"expected true or false, got {short(value)}", where)
    return value


def text(value: Any, where: str, max_len: int = QUOTE_LIMIT, allow_empty: bool = False) -> str:
    """A one-line string without control characters."""
    if not isinstance(value, str):
        raise ConfigError(f"expected text, got {type_name(value)} {short(value, 60)}", where)
    if not value and not allow_empty:
        raise ConfigError("must not be empty", where)
    if len(value) > max_len:
        raise ConfigError(f"must be at most {max_len} characters, got {len(value):,}", where)
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ConfigError(f"must not hold control characters or line breaks, got {short(value)}", where)
    return value


def choice(value: Any, options: Sequence[T], where: str, what: str = "value") -> T:
    """One of `options` (compared with ==; unhashable values are refused, not raised on)."""
    for option in options:
        if type(value) is type(option) and value == option:
            return option
    raise ConfigError(f"unknown {what} {short(value)} (known: {', '.join(map(str, options))})", where)


def list_of(
    value: Any, item: Callable[[Any, str], T], where: str, min_len: int = 1, max_len: int | None = None,
    unique: bool = False, wrap_scalar: bool = True,
) -> list[T]:
    """A list whose items each pass `item(value, where[i])`; a lone scalar is a list of one when `wrap_scalar`."""
    if not isinstance(value, list):
        if not wrap_scalar or isinstance(value, (Mapping, tuple, set)):
            raise ConfigError(f"expected a list, got {type_name(value)} {short(value, 60)}", where)
        value = [value]
    if len(value) < min_len:
        raise ConfigError(f"needs at least {min_len} item{'s' if min_len != 1 else ''}", where)
    if max_len is not None and len(value) > max_len:
        raise ConfigError(f"at most {max_len:,} items, got {len(value):,}", where)
    out = [item(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if unique:
        seen = set()
        for i, v in enumerate(out):
            key = short(v)
            if key in seen:
                raise ConfigError(f"{short(v)} is listed twice", where)
            seen.add(key)
    return out


def located(exc: ConfigError, prefix: str) -> ConfigError:
    """`exc` placed under `prefix` unless it already names a key there (`measure.x` stays, `x` -> `measure.x`)."""
    where = exc.where or ""
    if where == prefix or where.startswith((f"{prefix}.", f"{prefix}[")):
        return exc
    return exc.within(prefix)


__all__ = [
    "MAX_INT", "QUOTE_LIMIT", "boolean", "choice", "in_range", "integer", "list_of", "located", "mapping", "number",
    "optional_integer", "short", "text", "type_name", "unknown_keys",
]
