"""Constraints checked before any training, in Optuna's convention (value <= 0 means feasible).

The constraint names come from the metric registry (`hybridlab.metrics`): every figure measured once
per architecture (so before training) that can be an objective gets a limit on its worse side,
`max_<name>` for figures to minimise (`max_params`, `max_latency_ms`) and `min_<name>` for figures to
maximise (`min_throughput_img_s`). `min_throughput` is kept as the short name of `min_throughput_img_s`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hybridlab import validate as v
from hybridlab.errors import ConfigError
from hybridlab.metrics import METRICS


def _constraint_fields() -> dict[str, tuple[str, str]]:
    """Constraint name -> (measured figure, sense); "max" is violated above the limit, "min" below it."""
    out: dict[str, tuple[str, str]] = {}
    for metric in METRICS.values():
        if metric.per_architecture and metric.objective and metric.direction is not None:
            sense = "max" if metric.direction == "minimize" else "min"
            out[f"{sense}_{metric.name}"] = (metric.name, sense)
    out["min_throughput"] = ("throughput_img_s", "min")  # the short name study files have always used
    return out


FIELDS: dict[str, tuple[str, str]] = _constraint_fields()


@dataclass(frozen=True)
class Constraints:
    """Limits on the measured figures of a candidate, by constraint name (only the ones set)."""

    limits: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> Constraints:
        """Validate the `constraints:` section; a ConfigError names `constraints.<name>`."""
        config = v.mapping(config, "constraints")
        limits = {}
        for key, value in config.items():
            where = f"constraints.{key}" if isinstance(key, str) and len(key) <= v.QUOTE_LIMIT else "constraints"
            if key not in FIELDS:
                raise ConfigError(f"unknown constraint {v.short(key)} (known: {', '.join(FIELDS)})", where)
            if value is not None:  # YAML reads 5e6 without a dot as a string: allow_text
                limits[key] = v.number(value, where, minimum=0.0, allow_text=True)
        figures = [FIELDS[k][0] for k in limits]
        if len(set(figures)) != len(figures):
            raise ConfigError("min_throughput and min_throughput_img_s limit the same figure: give one", "constraints")
        return cls(limits)

    def __getattr__(self, name: str) -> float | None:
        """`constraints.max_params`: the limit, or None when unset (any registered constraint name)."""
        if name in FIELDS:
            return self.limits.get(name)
        raise AttributeError(name)

    @property
    def active(self) -> dict[str, float]:
        return dict(self.limits)

    def values(self, figures: Mapping[str, Any]) -> dict[str, float]:
        """Constraint values for `trial.set_constraint`: positive = violated by that much."""
        out = {}
        for name, limit in self.limits.items():
            key, sense = FIELDS[name]
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
                key, sense = FIELDS[name]
                op = ">" if sense == "max" else "<"
                out.append(f"{key} {_fmt(figures[key])} {op} {name} {_fmt(self.limits[name])}")
        return out


def _fmt(x: float) -> str:
    x = float(x)
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}"
