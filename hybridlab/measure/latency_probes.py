"""The parts a latency table times: one probe per fixed part and per (position, choice), and the timing rounds.

A probe is a callable with the exact input that part of the model sees (taken from one forward pass of the
base model, so stem rounding, padding to windows and window partitioning are the model's own). The modules
come from real `HybridNet`s: for every choice, the base pattern with *every* searchable position set to that
choice is built once, and position (s, j)'s module is `levels[s].blocks[j]` of that model, so each block is
constructed exactly as in any layout that puts the choice there (same width, heads, window, options).

Probes are timed like `side_by_side`: each is warmed up once, then every round times one window per probe, in
an order shuffled per round by a seeded RNG, each window judged by its own contention guard. A round's figure
is seconds per call (window / iterations), in wall time and in CPU time of this process.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from blocks.grammar import BlockSpec, Pattern, parse
from blocks.model import HybridNet
from blocks.spec import ModelSpec
from blocks.windows import in_windows, pad_to_window, window_partition
from hybridlab.errors import ConfigError, HybridlabError
from hybridlab.measure.api import fresh_guard
from hybridlab.measure.guard import ContentionGuard
from hybridlab.measure.phases import autocast_for, synthetic_input
from hybridlab.measure.record import MeasureProfile
from hybridlab.measure.timing import iters_for, time_windows, warm_up

Position = tuple[int, int]


@dataclass
class Probe:
    """One timed part: `key` names it in the table; `run()` calls `fn(input)` once."""

    key: str
    kind: str  # stem | level | downsample | head | block | window
    fn: Callable[[torch.Tensor], Any]
    input: torch.Tensor
    stage: int | None = None
    index: int | None = None
    choice: str | None = None  # the block text (for blocks), or None
    window: int | None = None  # the window side (window probes and token blocks)

    @property
    def shape(self) -> list[int]:
        return list(self.input.shape)

    def run(self) -> None:
        self.fn(self.input)


@dataclass
class ProbeTiming:
    """Per-round seconds per call of one probe, with what its guard saw."""

    iters: int
    wall_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)
    noisy: bool = False
    noisy_reason: str | None = None
    retried: int = 0


def block_spec(text: str, where: str) -> BlockSpec:
    """One block from its text ("M", "M[d_state=16]"); a one-line error for anything else."""
    if not isinstance(text, str):
        raise ConfigError(f"expected a block text such as 'M', got {text!r}", where)
    try:
        parsed = parse(text)
    except HybridlabError as exc:  # PatternError and friends: one line with the reason
        raise ConfigError(f"{text!r} is not a block: {exc}", where) from None
    if parsed.num_stages != 1 or len(parsed.stages[0]) != 1:
        raise ConfigError(f"{text!r} is not a single block", where)
    return parsed.stages[0][0]


def check_positions(pattern: Pattern, positions: Sequence[Any] | None) -> list[Position]:
    """0-based (stage, block) pairs, as in `levels.{stage}.blocks.{block}`; None = every block of every stage
    that holds a token block (stages 3-4 of a MambaVision layout)."""
    if positions is None:
        stages = [s for s, stage in enumerate(pattern.stages) if any(b.block_type.is_token for b in stage)]
        return [(s, j) for s in stages for j in range(len(pattern.stages[s]))]
    out: list[Position] = []
    for item in positions:
        ok = isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in item)
        if not ok:
            raise ConfigError(f"expected a (stage, block) pair of integers, got {item!r}", "latency_table.positions")
        s, j = int(item[0]), int(item[1])
        if not 0 <= s < pattern.num_stages or not 0 <= j < len(pattern.stages[s]):
            raise ConfigError(f"({s}, {j}) is not a block of {pattern.canonical()!r} (0-based stage, block)",
                              "latency_table.positions")  # fmt: skip
        if (s, j) in out:
            raise ConfigError(f"({s}, {j}) is listed twice", "latency_table.positions")
        out.append((s, j))
    if not out:
        raise ConfigError("no searchable positions", "latency_table.positions")
    return out


def with_blocks(pattern: Pattern, assignment: dict[Position, BlockSpec]) -> str:
    """The canonical pattern with the blocks at the given positions replaced."""
    stages = [list(stage) for stage in pattern.stages]
    for (s, j), block in assignment.items():
        stages[s][j] = block
    return Pattern(tuple(tuple(stage) for stage in stages)).canonical()


def block_windows(level: nn.Module) -> list[int | None]:
    """Window side of every block of a built level (None for conv blocks), from its segments."""
    out: list[int | None] = []
    for window, start, end in level.segments:
        out.extend([window] * (end - start))
    return out


def _captured_inputs(model: HybridNet, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The tensors that enter the stem, each level, each downsample and the final norm in one forward pass."""
    seen: dict[str, torch.Tensor] = {}
    targets: dict[str, nn.Module] = {"stem": model.patch_embed, "head": model.norm}
    for i, level in enumerate(model.levels):
        targets[f"level{i}"] = level
        if level.downsample is not None:
            targets[f"downsample{i}"] = level.downsample
    def note(key: str) -> Callable[..., None]:
        def hook(_module: nn.Module, args: tuple) -> None:
            seen.setdefault(key, args[0])

        return hook

    handles = [m.register_forward_pre_hook(note(k)) for k, m in targets.items()]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def _materialise(t: torch.Tensor) -> torch.Tensor:
    """Stands in for a segment's blocks in the window probe: a partition is often a strided view, which the
    segment's first block reads into contiguous memory (LayerNorm copies it); block probes get contiguous input,
    so that copy is counted here, once per segment."""
    return t.contiguous()


def build_probes(
    base: ModelSpec,
    positions: list[Position],
    choices: list[BlockSpec],
    profile: MeasureProfile,
    device: torch.device,
    whole: Sequence[str] = (),
) -> tuple[list[Probe], dict[str, Any]]:
    """Every probe of the table, and the layout facts `predict` needs: for each searched stage its slots
    (fixed block text + window, or the index of a searchable position) and each choice's window there.
    `whole`: patterns also timed as whole models (key `model:<pattern>`), to calibrate the overhead."""
    pattern = base.parsed
    torch.manual_seed(profile.seed)
    base_model = base.build().to(device).eval()
    in_chans = profile.in_chans or base.in_chans
    with torch.inference_mode():
        x = synthetic_input(profile.batch_size, in_chans, profile, device)
        seen = _captured_inputs(base_model, x)
    searched = sorted({s for s, _ in positions})
    probes = [Probe("stem", "stem", base_model.patch_embed, seen["stem"])]
    stages: dict[int, list[dict[str, Any]]] = {}
    for i, level in enumerate(base_model.levels):
        if i not in searched:
            probes.append(Probe(f"level{i}", "level", level, seen[f"level{i}"], stage=i))
            continue
        windows = block_windows(level)
        slots = []
        for j, block in enumerate(pattern.stages[i]):
            if (i, j) in positions:
                slots.append({"position": positions.index((i, j))})
            else:
                text = block.canonical()
                slots.append({"fixed": text, "window": windows[j]})
                probes.append(_block_probe(i, j, text, level.blocks[j], windows[j], seen[f"level{i}"]))
        stages[i] = slots
        if level.downsample is not None:
            probes.append(Probe(f"downsample{i}", "downsample", level.downsample, seen[f"downsample{i}"], stage=i))
    probes.append(Probe("head", "head", lambda t: base_model.forward_head(base_model.norm(t)), seen["head"]))
    choice_windows: dict[int, dict[str, int | None]] = {s: {} for s in searched}
    for choice in choices:
        text = choice.canonical()
        torch.manual_seed(profile.seed)
        spec = base.with_settings(pattern=with_blocks(pattern, {p: choice for p in positions}))
        model = spec.build().to(device).eval()
        for s in searched:
            windows = block_windows(model.levels[s])
            choice_windows[s][text] = windows[next(j for (t, j) in positions if t == s)]
            for j in (j for (t, j) in positions if t == s):
                probes.append(_block_probe(s, j, text, model.levels[s].blocks[j], windows[j], seen[f"level{s}"]))
    for s in searched:  # one partition + reverse per token segment: every window any block of the stage may use
        used = {slot["window"] for slot in stages[s] if "fixed" in slot} | set(choice_windows[s].values())
        for w in sorted(w for w in used if w is not None):
            probes.append(Probe(f"window{s}:{w}", "window", lambda t, w=w: in_windows(t, w, _materialise),
                                seen[f"level{s}"], stage=s, window=w))  # fmt: skip
    for text in whole:
        torch.manual_seed(profile.seed)
        model = base.with_settings(pattern=text).build().to(device).eval()
        probes.append(Probe(f"model:{text}", "model", model, seen["stem"]))
    if profile.channels_last:
        for probe in probes:
            if probe.input.dim() == 4:
                probe.input = probe.input.contiguous(memory_format=torch.channels_last)
        for module in {id(p.fn): p.fn for p in probes if isinstance(p.fn, nn.Module)}.values():
            module.to(memory_format=torch.channels_last)
    layout = {"stages": {str(s): slots for s, slots in stages.items()},
              "choice_windows": {str(s): w for s, w in choice_windows.items()}}  # fmt: skip
    return probes, layout


def _block_probe(stage: int, index: int, text: str, module: nn.Module, window: int | None, level_input: torch.Tensor) -> Probe:
    """A block at its position: conv blocks see the stage's map, token blocks its windows (padded, partitioned)."""
    if window is None:
        x = level_input
    else:
        with torch.inference_mode():
            padded, _, _ = pad_to_window(level_input, window)
            x = window_partition(padded, window).contiguous()  # what a block after the segment's first sees
    return Probe(f"block{stage}.{index}:{text}", "block", module, x, stage=stage, index=index, choice=text, window=window)


def time_probes(
    probes: Sequence[Probe],
    profile: MeasureProfile,
    device: torch.device,
    *,
    rounds: int,
    seed: int,
    guard: ContentionGuard | None,
    progress: Callable[[int, str], None] | None = None,
) -> dict[str, ProbeTiming]:
    """Warm every probe up, then time one window per probe per round in a seeded shuffled order."""
    autocast = autocast_for(profile, device)
    rng = random.Random(seed)
    steps: dict[str, Callable[[], None]] = {}
    guards: dict[str, ContentionGuard] = {}
    out: dict[str, ProbeTiming] = {}
    with torch.inference_mode():
        for probe in probes:
            def step(p: Probe = probe) -> None:
                with autocast():
                    p.run()

            guards[probe.key] = g = fresh_guard(guard, device)
            _, _, one = warm_up(step, device, profile.warmup_iters, profile.warmup_s, g.readers.wall)
            steps[probe.key] = step
            out[probe.key] = ProbeTiming(iters=iters_for(one, profile.window_s, profile.iters, profile.max_iters))
        keys = list(steps)
        for r in range(rounds):
            for key in rng.sample(keys, len(keys)):
                if progress is not None:
                    progress(r, key)
                res = out[key]
                timing = time_windows(steps[key], device, repeats=1, warmup_iters=0, warmup_s=0.0, window_s=0.0,
                                      iters=res.iters, max_iters=res.iters, guard=guards[key])  # fmt: skip
                res.wall_s.append(timing.window_s[0] / res.iters)
                cpu = timing.checks[0].cpu_s if timing.checks else None
                res.cpu_s.append((cpu or 0.0) / res.iters)
    for key, res in out.items():
        g = guards[key]
        res.noisy, res.noisy_reason, res.retried = g.noisy, g.reason, g.retried
    return out


__all__ = ["Position", "Probe", "ProbeTiming", "block_spec", "build_probes", "check_positions", "time_probes", "with_blocks"]
