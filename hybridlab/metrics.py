"""The one metric vocabulary: every figure a trial can record, which way is better, and how it reads.

Studies (objectives, constraints, `trials.csv` columns), measurement (ratios) and reports (averages,
tables, plots) all look metrics up here, so a new figure is one `Metric` entry. Imports no torch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from hybridlab.errors import ConfigError

Direction = Literal["maximize", "minimize"]
DIRECTIONS: tuple[str, ...] = ("maximize", "minimize")


@dataclass(frozen=True)
class Metric:
    """One recorded figure.

    `direction` is None for figures that are not worth optimising (bookkeeping such as `epochs`).
    `display` is the table header, `scale` divides values for display (params in M: 1e6).
    `per_architecture` figures do not depend on the seed (they are measured once per architecture).
    """

    name: str
    direction: Direction | None
    dtype: Literal["int", "float"]
    display: str
    scale: float = 1.0
    per_architecture: bool = False
    objective: bool = True  # may be named in `objectives:`

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"

    @property
    def sign(self) -> float:
        """Multiply by this to turn the metric into one to minimise."""
        return -1.0 if self.maximize else 1.0


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("top1", "maximize", "float", "Top-1 (%)"),
        Metric("top5", "maximize", "float", "Top-5 (%)"),
        Metric("val_loss", "minimize", "float", "Val. loss"),
        Metric("params", "minimize", "int", "Params (M)", 1e6, per_architecture=True),
        Metric("macs", "minimize", "int", "MACs (G)", 1e9, per_architecture=True),
        Metric("flops", "minimize", "int", "FLOPs (G)", 1e9, per_architecture=True),
        Metric("throughput_img_s", "maximize", "float", "Throughput (img/s)", per_architecture=True),
        Metric("latency_ms", "minimize", "float", "Latency (ms)", per_architecture=True),
        Metric("latency_iqr_ms", "minimize", "float", "Latency IQR (ms)", per_architecture=True, objective=False),
        Metric("train_throughput_img_s", "maximize", "float", "Train throughput (img/s)", per_architecture=True),
        Metric("peak_mem_mb", "minimize", "float", "Peak memory (MB)", per_architecture=True),
        Metric("train_time_s", "minimize", "float", "Train time (s)", objective=False),
        Metric("epochs", None, "int", "Epochs", objective=False),
    )
}

# The figures a measurement record carries that compare as candidate / baseline ratios.
RATIO_METRICS: tuple[str, ...] = (
    "throughput_img_s", "train_throughput_img_s", "latency_ms", "peak_mem_mb", "params", "macs", "flops",
)
DEFAULT_OBJECTIVES: tuple[str, ...] = ("top1", "throughput_img_s")


def get_metric(name: str, where: str = "metric") -> Metric:
    """The registered metric `name`, or a ConfigError that lists the known ones."""
    try:
        return METRICS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown metric {name!r} (known: {', '.join(METRICS)})", where) from None


def display_name(name: str) -> str:
    """The table header of a metric; unknown columns keep their own name."""
    metric = METRICS.get(name)
    return metric.display if metric else name


@dataclass(frozen=True)
class Objective:
    """One objective: a metric name and whether larger or smaller is better."""

    name: str
    direction: Direction = "maximize"

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"

    @property
    def sign(self) -> float:
        """Multiply by this to turn the objective into one to minimise."""
        return -1.0 if self.maximize else 1.0

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "direction": self.direction}


def parse_objectives(raw: Any, where: str = "objectives", known_only: bool = True) -> list[Objective]:
    """Objectives from a study file or manifest: `[top1, {name: latency_ms, direction: minimize}]`.

    A bare name takes the metric's own direction. With `known_only=False` (reading old results),
    unknown names are kept and default to maximize. None or an empty value gives the default pair.
    """
    if raw is None:
        return [Objective(n, METRICS[n].direction or "maximize") for n in DEFAULT_OBJECTIVES]
    if isinstance(raw, (str, dict)):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise ConfigError("expected a non-empty list of metric names or {name, direction}", where)
    out: list[Objective] = []
    for i, item in enumerate(raw):
        at = f"{where}[{i}]"
        name, direction = (item, None) if isinstance(item, str) else (
            (item.get("name"), item.get("direction")) if isinstance(item, dict) else (None, None))
        if not isinstance(name, str) or not name:
            raise ConfigError(f"expected a metric name or {{name, direction}}, got {_short(item)}", at)
        metric = METRICS.get(name)
        if metric is None and known_only:
            known = ", ".join(m.name for m in METRICS.values() if m.objective)
            raise ConfigError(f"unknown metric {name!r} (known: {known})", at)
        if metric is not None and known_only and not metric.objective:
            raise ConfigError(f"{name!r} is recorded but cannot be an objective", at)
        if direction is None:
            direction = (metric.direction if metric else None) or "maximize"
        direction = str(direction).lower()
        if direction not in DIRECTIONS:
            raise ConfigError(f"direction must be maximize or minimize, got {_short(direction)}", at)
        out.append(Objective(name, direction))  # type: ignore[arg-type]
    names = [o.name for o in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"objectives repeat a name: {names}", where)
    return out


def objective_names(objectives: Iterable[Objective]) -> list[str]:
    return [o.name for o in objectives]


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
