"""Constraints checked before any training, in Optuna's convention (value <= 0 means feasible)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from hybridlab.errors import ConfigError

# constraint name -> (measured field, sense): "max" is violated above the limit, "min" below it.
_FIELDS = {
    "max_params": ("params", "max"),
    "max_macs": ("macs", "max"),
    "max_flops": ("flops", "max"),
    "max_latency_ms": ("latency_ms", "max"),
    "max_peak_mem_mb": ("peak_mem_mb", "max"),
    "min_throughput": ("throughput_img_s", "min"),
}


@dataclass(frozen=True)
class Constraints:
    """Limits on the measured figures of a candidate; None = no limit."""

    max_params: float | None = None
    max_macs: float | None = None
    max_flops: float | None = None
    max_latency_ms: float | None = None
    max_peak_mem_mb: float | None = None
    min_throughput: float | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> Constraints:
        config = dict(config or {})
        values = {}
        for key, value in config.items():
            if key not in _FIELDS:
                raise ConfigError(f"unknown constraint {key!r} (known: {', '.join(_FIELDS)})", f"constraints.{key}")
            if value is None:
                continue
            if isinstance(value, str):
                try:
                    value = float(value)  # YAML reads 5e6 without a dot as a string
                except ValueError:
                    pass
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"expected a non-negative number, got {value!r}", f"constraints.{key}")
            values[key] = float(value)
        return cls(**values)

    @property
    def active(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def values(self, figures: Mapping[str, Any]) -> dict[str, float]:
        """Constraint values for `trial.set_constraint`: positive = violated by that much."""
        out = {}
        for name, limit in self.active.items():
            key, sense = _FIELDS[name]
            measured = figures.get(key)
            if measured is None:
                raise ConfigError(f"constraint {name} needs the figure {key!r}, which was not measured", "constraints")
            out[name] = float(measured) - limit if sense == "max" else limit - float(measured)
        return out

    def violated(self, figures: Mapping[str, Any]) -> list[str]:
        """One phrase per violated constraint, e.g. 'params 5.2M > max_params 5.0M'."""
        out = []
        for name, value in self.values(figures).items():
            if value > 0:
                key, sense = _FIELDS[name]
                op = ">" if sense == "max" else "<"
                out.append(f"{key} {_fmt(figures[key])} {op} {name} {_fmt(getattr(self, name))}")
        return out


def _fmt(x: float) -> str:
    x = float(x)
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}"
