"""Option schemas for blocks: what `M[d_state=16]` may say, its type, range and default."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_TYPES = (int, float, str, bool)
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


@dataclass(frozen=True)
class Option:
    """One named, typed block option. `coerce` turns pattern text into a checked value."""

    name: str
    type: type
    default: Any
    choices: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    help: str = ""

    def __post_init__(self) -> None:
        if self.type not in _TYPES:
            raise TypeError(f"option {self.name!r}: type must be one of int, float, str, bool")
        if not self.name.isidentifier():
            raise ValueError(f"option name {self.name!r} is not an identifier")
        if self.choices is not None:
            object.__setattr__(self, "choices", tuple(self.choices))
        if self.default is not None:
            self.check(self.default)

    def coerce(self, raw: Any) -> Any:
        """Convert `raw` (pattern text or a Python value) to this option's type and check it.

        Raises ValueError with a short reason (no option name; the caller adds context).
        """
        value = self._convert(raw)
        self.check(value)
        return value

    def _convert(self, raw: Any) -> Any:
        if self.type is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError(f"expected true or false, got {raw!r}")
        if self.type is int:
            if isinstance(raw, bool):
                raise ValueError(f"expected an integer, got {raw!r}")
            if isinstance(raw, int):
                return raw
            if isinstance(raw, float) and raw.is_integer():
                return int(raw)
            try:
                return int(str(raw).strip())
            except ValueError:
                raise ValueError(f"expected an integer, got {raw!r}") from None
        if self.type is float:
            if isinstance(raw, bool):
                raise ValueError(f"expected a number, got {raw!r}")
            try:
                value = float(raw)
            except (TypeError, ValueError):
                raise ValueError(f"expected a number, got {raw!r}") from None
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError(f"expected a finite number, got {raw!r}")
            return value
        return str(raw).strip()

    def check(self, value: Any) -> None:
        """Range and choice checks on an already-typed value."""
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(str(c) for c in self.choices)
            raise ValueError(f"{value!r} is not one of {allowed}")
        if self.min is not None and value < self.min:
            raise ValueError(f"{value} is below the minimum {self.min:g}")
        if self.max is not None and value > self.max:
            raise ValueError(f"{value} is above the maximum {self.max:g}")

    def format(self, value: Any) -> str:
        """Pattern text for a value (inverse of `coerce` for canonical forms)."""
        if self.type is bool:
            return "true" if value else "false"
        if self.type is float:
            return repr(float(value)) if not float(value).is_integer() else f"{float(value):.1f}"
        return str(value)
