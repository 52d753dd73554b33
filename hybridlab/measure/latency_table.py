"""A latency table: predict the inference throughput of thousands of layouts from one set of per-part timings.

A one-shot search scores every layout of a space (4,096 M/A placements of 12 blocks) but cannot time 4,096
models. The table times each part once instead: the fixed parts (stem, every stage without searchable
positions as a whole, the downsamples of searched stages, their non-searched blocks, norm + pool + head),
every choice at every searchable position at the input that position sees, and one window partition +
reverse (pad, partition, reverse, crop) per stage and window side. A layout's time per batch is then

    sum(fixed parts) + sum(its choice at each position) + (partition + reverse) x (its token segments per stage)
    + overhead

where each block's figure pools the rounds of every position of its stage that runs the same choice at the same
input (the same module at the same shape: their differences are noise), and a token segment is a run of
consecutive token blocks with the same window (the model partitions once per segment, so "M M C A" has two
segments and "M A A A" one). `overhead` is 0 until `calibrate()` fits it as the median gap between measured and
summed times of a few layouts measured whole (per-module timing misses the model's own Python glue and cache
effects between parts); `measure(calibrate_on=...)` times those layouts in the table's own rounds.

    table = LatencyTable.measure(spec, positions=None, choices=["M", "A"], profile=profile, rounds=5)
    table.predict("C | C*3 | M*4 A*4 | M*2 A*2").img_s      # or a tuple of block texts, one per position
    table.save(run_dir / "latency_table.json"); LatencyTable.load(...)

Positions are 0-based (stage, block) pairs, as in the module names `levels.{stage}.blocks.{block}`.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hybridlab.atomic import atomic_write
from hybridlab.errors import ConfigError, HybridlabError
from hybridlab.measure.latency_probes import Position, block_spec, check_positions
from hybridlab.measure.record import MeasureProfile

FORMAT = "hybridlab-latency-table"
VERSION = 1
BASES = ("wall", "cpu")
FIXED_KINDS = ("stem", "level", "downsample", "head")


@dataclass
class LatencyEntry:
    """One timed part: per-round seconds per call (wall clock and CPU time of this process)."""

    key: str
    kind: str  # stem | level | downsample | head | block | window
    input_shape: list[int]
    iters: int
    wall_s: list[float]
    cpu_s: list[float]
    stage: int | None = None
    index: int | None = None
    choice: str | None = None
    window: int | None = None
    noisy: bool = False
    noisy_reason: str | None = None

    def runs(self, basis: str = "wall") -> list[float]:
        return self.wall_s if basis == "wall" else self.cpu_s

    def median(self, basis: str = "wall") -> float:
        runs = self.runs(basis)
        return float(statistics.median(runs)) if runs else 0.0

    def quartiles(self, basis: str = "wall") -> tuple[float, float]:
        runs = self.runs(basis)
        if len(runs) < 2:
            return (runs[0], runs[0]) if runs else (0.0, 0.0)
        q1, _, q3 = statistics.quantiles(runs, n=4, method="inclusive")
        return float(q1), float(q3)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["median_s"], out["cpu_median_s"] = self.median("wall"), self.median("cpu")
        out["q25_s"], out["q75_s"] = self.quartiles("wall")
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyEntry:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class LatencyPrediction:
    """A layout's predicted time per batch and throughput. `seconds_lo/hi` sum the parts' quartiles: a
    pessimistic range of the sum's spread, not a confidence interval."""

    seconds: float
    img_s: float
    seconds_lo: float
    seconds_hi: float
    basis: str
    keys: tuple[str, ...]


@dataclass
class LatencyTable:
    """Per-part timings of one base model under one profile, and the layout facts needed to sum them."""

    base: Any  # blocks.spec.ModelSpec
    positions: list[Position]
    choices: list[str]
    entries: dict[str, LatencyEntry]
    stages: dict[int, list[dict[str, Any]]]  # searched stage -> slots: {"fixed": text, "window": w} or {"position": k}
    choice_windows: dict[int, dict[str, int | None]]  # searched stage -> choice -> window (None: conv block)
    batch_size: int
    profile: dict[str, Any]
    env: dict[str, Any]
    rounds: int
    seed: int
    overhead_s: dict[str, float] = field(default_factory=lambda: {b: 0.0 for b in BASES})
    calibrated_on: list[str] = field(default_factory=list)
    created: str = ""
    pool: bool = True  # a block's figure pools the rounds of every position with the same stage, choice and input

    def cost(self, key: str, basis: str = "wall") -> tuple[float, float, float]:
        """(median, q25, q75) seconds per call of one entry. With `pool`, a block entry uses the rounds of every
        position of its stage with the same choice and input shape: those are the same module at the same input,
        so their differences are timing noise, and pooling divides it (8 positions: about 2.8x less)."""
        entry = self.entries[key]
        if not self.pool or entry.kind != "block":
            return (entry.median(basis), *entry.quartiles(basis))
        cached = self._pooled.get((key, basis))
        if cached is None:
            runs = [r for e in self.entries.values() if e.kind == "block" and e.stage == entry.stage
                    and e.choice == entry.choice and e.input_shape == entry.input_shape for r in e.runs(basis)]  # fmt: skip
            pooled = LatencyEntry(key, "block", entry.input_shape, entry.iters, runs, runs)
            cached = self._pooled[(key, basis)] = (pooled.median(), *pooled.quartiles())
        return cached

    def __post_init__(self) -> None:
        self._pooled: dict[tuple[str, str], tuple[float, float, float]] = {}

    # -- building ---------------------------------------------------------------------------------
    @classmethod
    def measure(
        cls,
        base: Any,
        positions: Sequence[Position] | None = None,
        choices: Sequence[str] = ("M", "A"),
        profile: MeasureProfile | Mapping[str, Any] | None = None,
        *,
        rounds: int = 5,
        seed: int = 0,
        guard: Any = None,
        progress: Callable[[int, str], None] | None = None,
        calibrate_on: Sequence[str | Sequence[str]] = (),
        check_on: Sequence[str | Sequence[str]] = (),
    ) -> LatencyTable:
        """Time every part of `base` (a ModelSpec or a pattern) and every choice at every position.

        `positions`: 0-based (stage, block) pairs (None: every block of the stages holding token blocks);
        `choices`: block texts. Timing is inference (torch.inference_mode) at the profile's batch, image
        size, device, precision and threads, in `rounds` interleaved rounds (seeded order), each window
        judged by a fresh copy of `guard` (default: the standard ContentionGuard). `calibrate_on`: layouts
        also timed whole in the same rounds (entries `model:<pattern>`); the overhead is fitted on them.
        `check_on`: layouts timed whole in the same rounds but not fitted on (to check predictions against).
        """
        import torch

        from blocks.spec import ModelSpec
        from hybridlab.measure.api import numeric_settings
        from hybridlab.measure.env import collect_env, load_average
        from hybridlab.measure.latency_probes import build_probes, time_probes
        from hybridlab.measure.timing import free_memory

        if isinstance(base, str):
            base = ModelSpec.create(base)
        if not isinstance(base, ModelSpec):
            raise ConfigError(f"expected a ModelSpec or a pattern, got {type(base).__name__}", "latency_table.base")
        if isinstance(profile, Mapping):
            profile = MeasureProfile.from_dict(profile)
        profile = (profile or MeasureProfile()).resolved()
        if profile.compile:
            raise ConfigError("a latency table times modules one by one and cannot compile them", "measure.compile")
        if isinstance(rounds, bool) or not isinstance(rounds, int) or not 1 <= rounds <= 1000:
            raise ConfigError(f"must be an integer between 1 and 1000, got {rounds!r}", "latency_table.rounds")
        settings = {k: getattr(profile, k) for k in ("in_chans", "num_classes") if getattr(profile, k) is not None}
        base = base.with_settings(**settings) if settings else base
        specs = [block_spec(c, f"latency_table.choices[{i}]") for i, c in enumerate(choices)]
        texts = [b.canonical() for b in specs]
        if not texts or len(set(texts)) != len(texts):
            raise ConfigError(f"expected distinct block texts, got {list(choices)!r}", "latency_table.choices")
        pos = check_positions(base.parsed, positions)
        draft = cls(base, pos, texts, {}, {}, {}, profile.batch_size, profile.to_dict(), {}, rounds, seed)
        fitted, whole = [], []
        for name, given in (("calibrate_on", calibrate_on), ("check_on", check_on)):
            try:
                texts_of = [draft.pattern(layout) for layout in given]  # checks the layouts too
            except ConfigError as exc:
                raise exc.within(f"latency_table.{name}") from None
            fitted += texts_of if name == "calibrate_on" else []
            whole += texts_of
        fitted, whole = list(dict.fromkeys(fitted)), list(dict.fromkeys(whole))
        device = torch.device(profile.device)
        with numeric_settings(profile):
            env = collect_env(device, profile.precision, profile.channels_last, profile.compile)
            probes, layout = build_probes(base, pos, specs, profile, device, whole)
            timings = time_probes(probes, profile, device, rounds=rounds, seed=seed, guard=guard, progress=progress)
            free_memory(device)
        env["load_avg_end"] = load_average()
        entries = {}
        for p in probes:
            t = timings[p.key]
            entries[p.key] = LatencyEntry(p.key, p.kind, p.shape, t.iters, t.wall_s, t.cpu_s, p.stage, p.index,
                                          p.choice, p.window, t.noisy, t.noisy_reason)  # fmt: skip
        table = cls(
            base=base,
            positions=pos,
            choices=texts,
            entries=entries,
            stages={int(s): v for s, v in layout["stages"].items()},
            choice_windows={int(s): v for s, v in layout["choice_windows"].items()},
            batch_size=profile.batch_size,
            profile=profile.to_dict(),
            env=env,
            rounds=rounds,
            seed=seed,
            created=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        )
        if fitted:
            for basis in BASES:
                table.calibrate({text: entries[f"model:{text}"].median(basis) for text in fitted}, basis)
        return table

    # -- layouts ------------------------------------------------------------------------------------
    def layout_choices(self, layout: str | Sequence[str]) -> tuple[str, ...]:
        """The canonical choice at each position, from a pattern or a per-position tuple of block texts."""
        if isinstance(layout, str):
            return self._from_pattern(layout)
        if not isinstance(layout, Sequence):
            raise ConfigError(f"expected a pattern or a sequence of block texts, got {type(layout).__name__}", "layout")
        items = list(layout)
        if len(items) != len(self.positions):
            raise ConfigError(f"has {len(items)} choices but the table has {len(self.positions)} positions", "layout")
        out = []
        for k, text in enumerate(items):
            if text not in self.choices:
                text = block_spec(text, f"layout[{k}]").canonical()
            if text not in self.choices:
                raise ConfigError(f"{text!r} is not a choice of this table ({', '.join(self.choices)})", f"layout[{k}]")
            out.append(text)
        return tuple(out)

    def _from_pattern(self, text: str) -> tuple[str, ...]:
        from blocks.grammar import first_fixed_mismatch, parse

        try:
            parsed = parse(text)
        except HybridlabError as exc:
            raise ConfigError(str(exc), "layout") from None
        base = self.base.parsed
        if parsed.depths != base.depths:
            raise ConfigError(f"depths {list(parsed.depths)} differ from the table's {list(base.depths)}", "layout")
        fixed = first_fixed_mismatch(parsed, base, self.positions)
        if fixed is not None:
            s, j = fixed
            raise ConfigError(f"stage {s + 1} block {j + 1} is fixed to {base.stages[s][j].canonical()!r} in this table, "
                              f"got {parsed.stages[s][j].canonical()!r}", "layout")
        return self.layout_choices([parsed.stages[s][j].canonical() for s, j in self.positions])

    def pattern(self, layout: str | Sequence[str]) -> str:
        """The canonical pattern of a layout (to build or measure the model it stands for)."""
        from blocks.grammar import with_blocks

        blocks = [block_spec(text, "layout") for text in self.layout_choices(layout)]
        return with_blocks(self.base.parsed, self.positions, blocks).canonical()

    def keys_for(self, layout: str | Sequence[str]) -> list[str]:
        """The entries a layout's time sums: fixed parts, its block at each position, one window per segment."""
        chosen = self.layout_choices(layout)
        keys = [e.key for e in self.entries.values() if e.kind in FIXED_KINDS]
        for s, slots in sorted(self.stages.items()):
            windows: list[int | None] = []
            for j, slot in enumerate(slots):
                if "fixed" in slot:
                    keys.append(f"block{s}.{j}:{slot['fixed']}")
                    windows.append(slot["window"])
                else:
                    choice = chosen[slot["position"]]
                    keys.append(f"block{s}.{j}:{choice}")
                    windows.append(self.choice_windows[s][choice])
            keys.extend(f"window{s}:{w}" for w in token_segments(windows))
        return keys

    def predict(self, layout: str | Sequence[str], basis: str = "wall") -> LatencyPrediction:
        """Predicted seconds per batch (and img/s) of a layout: the sum of its entries' medians (`cost`) + overhead."""
        if basis not in BASES:
            raise ConfigError(f"must be one of {', '.join(BASES)}, got {basis!r}", "basis")
        keys = self.keys_for(layout)
        extra = self.overhead_s.get(basis, 0.0)
        costs = [self.cost(k, basis) for k in keys]
        seconds = sum(c[0] for c in costs) + extra
        lo = sum(c[1] for c in costs) + extra
        hi = sum(c[2] for c in costs) + extra
        img_s = self.batch_size / seconds if seconds > 0 else float("inf")
        return LatencyPrediction(seconds, img_s, lo, hi, basis, tuple(keys))

    def calibrate(self, measured: Mapping[Any, float], basis: str = "wall") -> float:
        """Fit the per-layout constant overhead: the median of measured minus summed seconds per batch over
        the layouts given ({layout: measured seconds per batch}, layouts as patterns or tuples)."""
        if not measured:
            raise ConfigError("expected at least one measured layout", "calibrate")
        self.overhead_s[basis] = 0.0
        gaps = [float(sec) - self.predict(layout, basis).seconds for layout, sec in measured.items()]
        self.overhead_s[basis] = float(statistics.median(gaps))
        self.calibrated_on = sorted({self.pattern(layout) for layout in measured} | set(self.calibrated_on))
        return self.overhead_s[basis]

    def whole(self, layout: str | Sequence[str]) -> LatencyEntry | None:
        """The layout's own timing when it was timed whole in the table's rounds (calibrate_on / check_on)."""
        return self.entries.get(f"model:{self.pattern(layout)}")

    @property
    def warnings(self) -> list[str]:
        """`key: reason` for every entry with a window that stayed contended."""
        return [f"{e.key}: {e.noisy_reason}" for e in self.entries.values() if e.noisy]

    # -- storage --------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "created": self.created,
            "base": self.base.to_dict(),
            "positions": [list(p) for p in self.positions],
            "choices": list(self.choices),
            "batch_size": self.batch_size,
            "rounds": self.rounds,
            "seed": self.seed,
            "overhead_s": dict(self.overhead_s),
            "calibrated_on": list(self.calibrated_on),
            "pool": self.pool,
            "stages": {str(s): v for s, v in self.stages.items()},
            "choice_windows": {str(s): v for s, v in self.choice_windows.items()},
            "entries": [e.to_dict() for e in self.entries.values()],
            "measurement_warnings": self.warnings,
            "profile": self.profile,
            "env": self.env,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyTable:
        from blocks.spec import ModelSpec

        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise ConfigError("not a latency table (no 'format': 'hybridlab-latency-table')", "latency_table")
        if data.get("version") != VERSION:
            raise ConfigError(f"version {data.get('version')!r} is not supported (expected {VERSION})", "latency_table")
        try:
            entries = [LatencyEntry.from_dict(e) for e in data["entries"]]
            return cls(
                base=ModelSpec.from_dict(data["base"]),
                positions=[(int(s), int(j)) for s, j in data["positions"]],
                choices=[str(c) for c in data["choices"]],
                entries={e.key: e for e in entries},
                stages={int(s): list(v) for s, v in data["stages"].items()},
                choice_windows={int(s): dict(v) for s, v in data["choice_windows"].items()},
                batch_size=int(data["batch_size"]),
                profile=dict(data.get("profile") or {}),
                env=dict(data.get("env") or {}),
                rounds=int(data.get("rounds", 0)),
                seed=int(data.get("seed", 0)),
                overhead_s={b: float(data.get("overhead_s", {}).get(b, 0.0)) for b in BASES},
                calibrated_on=list(data.get("calibrated_on") or []),
                pool=bool(data.get("pool", True)),
                created=str(data.get("created", "")),
            )
        except ConfigError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"malformed latency table ({type(exc).__name__}: {exc})", "latency_table") from None

    def save(self, path: str | Path) -> Path:
        """Write the table as JSON, atomically (a reader never sees half a file)."""
        return atomic_write(path, json.dumps(self.to_dict(), indent=1, default=str) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read: {exc.strerror or exc}", str(path)) from None
        except ValueError as exc:
            raise ConfigError(f"not JSON ({exc})", str(path)) from None
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(exc.reason, str(path)) from None


def token_segments(windows: Sequence[int | None]) -> list[int]:
    """The window of each token segment of a stage (runs of equal windows; None, a conv block, breaks a run),
    by the rule `HybridLevel` partitions with."""
    out: list[int] = []
    prev: int | None = None
    for w in windows:
        if w is not None and w != prev:
            out.append(w)
        prev = w
    return out


__all__ = ["LatencyEntry", "LatencyPrediction", "LatencyTable", "token_segments"]
