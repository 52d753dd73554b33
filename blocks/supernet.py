"""A weight-sharing supernet over per-block choices, built from the same grammar as every model.

Single-path one-shot search (Guo et al., SPOS, ECCV 2020) and once-for-all style supernets train one network
that holds every choice at every searchable position, running one sampled path per step, and then score each
layout with the weights it inherits. Here a searchable position is a block `(stage, index)` of a base
pattern (0-based), and every position offers the same `choices` (block texts such as `M`,
`M[d_state=16]`, `A`). Everything else (stem, fixed blocks, downsamples, norm, head) is built once.

Construction builds one ordinary `HybridNet` per choice, with that choice at every position, and keeps
its blocks at the searchable positions, so each choice module is exactly what `HybridNet` builds there
(same class, options, context, drop path and init). With `share=True` (the default, as in Jet-Nemotron's
PostNAS) the choices of a position that are standard token blocks of equal width share their `norm1`,
`norm2`, `mlp` and layer scales; only the mixers differ. `subnet(path)` returns a plain `HybridNet` whose
state_dict has exactly the keys a model built from that pattern has, filled with the inherited weights.

The forward runs windows the way `HybridLevel` does (consecutive token blocks with equal windows share
one partition), so a path's output equals its extracted subnet's output.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from blocks.grammar import BlockSpec, Pattern, PatternError, first_fixed_mismatch, parse, with_blocks
from blocks.model import HybridNet
from blocks.spec import ModelSpec
from blocks.token_block import TokenBlock
from blocks.windows import pad_to_window, window_partition, window_reverse
from hybridlab.errors import ConfigError

Path = tuple[int, ...]
SHARED_PARTS = ("norm1", "norm2", "mlp")
SHARED_SCALES = ("gamma_1", "gamma_2")


@dataclass(frozen=True)
class Step:
    """One block of the network in order: fixed (`choice_modules` None) or a searchable position."""

    stage: int
    index: int
    position: int | None  # index into SuperNet.positions, None for a fixed block
    last_in_stage: bool


class SuperNet(nn.Module):
    """Every choice at every searchable position of `base`; see the module docstring.

    `positions`: (stage, block index) pairs, 0-based, in any order (kept sorted in network order).
    `choices`: block texts or BlockSpecs, the same list at every position. `share`: share norms, MLP and
    layer scales between the token-block choices of a position.
    """

    def __init__(self, base: ModelSpec, positions: Sequence[tuple[int, int]], choices: Sequence[str | BlockSpec],
                 share: bool = True) -> None:
        super().__init__()
        self.base = base
        self.positions: tuple[tuple[int, int], ...] = _check_positions(base, positions)
        self.choices: tuple[BlockSpec, ...] = _check_choices(choices)
        self.share = bool(share)
        nets = [HybridNet(spec=base.with_settings(pattern=self.pattern_of((c,) * len(self.positions))))
                for c in range(len(self.choices))]
        first = nets[0]
        self.patch_embed = first.patch_embed
        self.norm = first.norm
        self.avgpool = first.avgpool
        self.head = first.head
        self.downsamples = nn.ModuleList([lvl.downsample if lvl.downsample is not None else nn.Identity()
                                          for lvl in first.levels])
        searched = set(self.positions)
        self.fixed = nn.ModuleDict({f"{s}_{j}": blk for s, lvl in enumerate(first.levels)
                                    for j, blk in enumerate(lvl.blocks) if (s, j) not in searched})
        self.options = nn.ModuleList(
            nn.ModuleList(net.levels[s].blocks[j] for net in nets) for s, j in self.positions)
        if self.share:
            for candidates in self.options:
                _share_parts(candidates)
        self.steps = self._steps()
        self.windows = [[_window(c, base, s) for c in self.choices] for s, _ in self.positions]
        self.active_path: Path = (0,) * len(self.positions)
        self.num_classes = first.num_classes
        self.num_features = first.num_features

    # -- paths and patterns ------------------------------------------------------------------------
    @property
    def num_paths(self) -> int:
        return len(self.choices) ** len(self.positions)

    def paths(self) -> Iterator[Path]:
        """Every path in lexicographic order (shared prefixes come together, for `supernet_eval`)."""
        n, k = len(self.positions), len(self.choices)
        for flat in range(k ** n):
            yield tuple((flat // k ** (n - 1 - i)) % k for i in range(n))

    def check_path(self, path: Sequence[int]) -> Path:
        path = tuple(int(c) for c in path)
        if len(path) != len(self.positions) or any(not 0 <= c < len(self.choices) for c in path):
            raise ConfigError(f"a path has one choice (0..{len(self.choices) - 1}) per position "
                              f"({len(self.positions)}), got {list(path)[:20]}", "supernet")
        return path

    def pattern_of(self, path: Sequence[int]) -> str:
        """The canonical pattern text of a path."""
        return with_blocks(self.base.parsed, self.positions, [self.choices[c] for c in path]).canonical()

    def path_of(self, pattern: str | Pattern) -> Path:
        """The path that builds `pattern`; a one-line error when it differs outside the searched positions."""
        try:
            parsed = parse(pattern)
        except PatternError as exc:
            raise ConfigError(str(exc), "supernet pattern") from None
        base = self.base.parsed
        if parsed.depths != base.depths:
            raise ConfigError(f"depths {list(parsed.depths)} differ from the supernet's {list(base.depths)}",
                              "supernet pattern")
        fixed = first_fixed_mismatch(parsed, base, set(self.positions))
        if fixed is not None:
            s, j = fixed
            raise ConfigError(f"stage {s + 1} block {j + 1} is {parsed.stages[s][j].canonical()}, but the supernet fixes "
                              f"it to {base.stages[s][j].canonical()}", "supernet pattern")
        path = []
        for s, j in self.positions:
            block = parsed.stages[s][j]
            if block not in self.choices:
                raise ConfigError(f"stage {s + 1} block {j + 1} is {block.canonical()}, not one of the choices "
                                  f"{[c.canonical() for c in self.choices]}", "supernet pattern")
            path.append(self.choices.index(block))
        return tuple(path)

    # -- forward -----------------------------------------------------------------------------------
    def set_path(self, path: Sequence[int]) -> None:
        """The path `forward(x)` runs when it is given none (for training loops that call `model(x)`)."""
        self.active_path = self.check_path(path)

    def block(self, step: Step, path: Path) -> nn.Module:
        if step.position is None:
            return self.fixed[f"{step.stage}_{step.index}"]
        return self.options[step.position][path[step.position]]

    def window(self, step: Step, path: Path) -> int | None:
        if step.position is None:
            return self._fixed_windows[(step.stage, step.index)]
        return self.windows[step.position][path[step.position]]

    def forward_features(self, x: torch.Tensor, path: Sequence[int] | None = None) -> torch.Tensor:
        path = self.active_path if path is None else self.check_path(path)
        state = MapState(self.patch_embed(x))
        for step in self.steps:
            state = state.apply(self.block(step, path), self.window(step, path))
            if step.last_in_stage:
                state = MapState(self.downsamples[step.stage](state.to_map()))
        return self.norm(state.to_map())

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.avgpool(x), 1))

    def forward(self, x: torch.Tensor, path: Sequence[int] | None = None) -> torch.Tensor:
        return self.forward_head(self.forward_features(x, path))

    # -- extraction --------------------------------------------------------------------------------
    def subnet_state_dict(self, path: Sequence[int]) -> dict[str, torch.Tensor]:
        """The inherited weights of a path under the keys of `HybridNet(pattern_of(path))`."""
        path = self.check_path(path)
        out: dict[str, torch.Tensor] = {}

        def put(prefix: str, module: nn.Module) -> None:
            for key, value in module.state_dict().items():
                out[f"{prefix}.{key}"] = value

        put("patch_embed", self.patch_embed)
        for step in self.steps:
            put(f"levels.{step.stage}.blocks.{step.index}", self.block(step, path))
        for s, down in enumerate(self.downsamples):
            if not isinstance(down, nn.Identity):
                put(f"levels.{s}.downsample", down)
        put("norm", self.norm)
        put("head", self.head)
        return out

    def subnet(self, path_or_pattern: Sequence[int] | str | Pattern) -> HybridNet:
        """An ordinary HybridNet of the path (or pattern) with the weights it inherits here."""
        path = (self.path_of(path_or_pattern) if isinstance(path_or_pattern, (str, Pattern))
                else self.check_path(path_or_pattern))
        net = HybridNet(spec=self.base.with_settings(pattern=self.pattern_of(path)))
        net.load_state_dict(self.subnet_state_dict(path), strict=True)
        net.train(self.training)
        return net

    def path_params(self, path: Sequence[int]) -> int:
        """Parameters of the path's subnet, counted without building it (shared tensors once)."""
        path = self.check_path(path)
        seen: dict[int, int] = {}
        modules = [self.patch_embed, self.norm, self.head, *self.downsamples]
        modules += [self.block(step, path) for step in self.steps]
        for module in modules:
            for p in module.parameters():
                seen[id(p)] = p.numel()
        return sum(seen.values())

    # -- internals ---------------------------------------------------------------------------------
    def _steps(self) -> tuple[Step, ...]:
        index = {pos: i for i, pos in enumerate(self.positions)}
        steps, windows = [], {}
        for s, stage in enumerate(self.base.parsed.stages):
            for j, block in enumerate(stage):
                steps.append(Step(s, j, index.get((s, j)), j == len(stage) - 1))
                if (s, j) not in index:
                    windows[(s, j)] = _window(block, self.base, s)
        self._fixed_windows = windows
        return tuple(steps)


class MapState:
    """The activation between blocks: an NCHW map, or the windows of an open token segment."""

    def __init__(self, x: torch.Tensor, window: int | None = None, size: tuple[int, int, int, int] | None = None):
        self.x = x
        self.window = window  # None: `x` is a map; else `x` holds windows of this side
        self.size = size  # (h, w, padded h, padded w) of the open segment

    def to_map(self) -> torch.Tensor:
        if self.window is None:
            return self.x
        h, w, hp, wp = self.size
        out = window_reverse(self.x, self.window, hp, wp)
        return out[:, :, :h, :w].contiguous() if (hp, wp) != (h, w) else out

    def apply(self, block: nn.Module, window: int | None) -> MapState:
        """Run one block; a token block joins the open segment when its window is the same."""
        if window is None:
            return MapState(block(self.to_map()))
        if self.window == window:
            return MapState(block(self.x), window, self.size)
        padded, h, w = pad_to_window(self.to_map(), window)
        hp, wp = padded.shape[-2:]
        return MapState(block(window_partition(padded, window)), window, (h, w, hp, wp))


def _window(block: BlockSpec, base: ModelSpec, stage: int) -> int | None:
    if not block.block_type.is_token:
        return None
    return int(block.resolved_options().get("window", 0)) or base.window_size[stage]


def _share_parts(candidates: nn.ModuleList) -> None:
    """Point the token-block choices of one position at the first one's norms, MLP and layer scales."""
    blocks = [b for b in candidates if isinstance(b, TokenBlock)]
    if len(blocks) < 2:
        return
    owner = blocks[0]
    for other in blocks[1:]:
        if other.has_mlp != owner.has_mlp or other.norm1.normalized_shape != owner.norm1.normalized_shape:
            continue
        if owner.has_mlp and other.mlp.fc1.weight.shape != owner.mlp.fc1.weight.shape:
            continue
        for name in SHARED_PARTS:
            if hasattr(owner, name):
                setattr(other, name, getattr(owner, name))
        for name in SHARED_SCALES:
            if isinstance(getattr(owner, name, None), nn.Parameter):
                setattr(other, name, getattr(owner, name))


def _check_positions(base: ModelSpec, positions: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    depths = base.parsed.depths
    out = []
    for pos in positions:
        s, j = (int(v) for v in pos)
        if not (0 <= s < len(depths) and 0 <= j < depths[s]):
            raise ConfigError(f"position (stage {s}, block {j}) is outside the base pattern (depths {list(depths)},"
                              " 0-based)", "supernet")
        out.append((s, j))
    if not out or len(set(out)) != len(out):
        raise ConfigError("positions must be distinct and at least one", "supernet")
    return tuple(sorted(out))


def _check_choices(choices: Sequence[str | BlockSpec]) -> tuple[BlockSpec, ...]:
    out = []
    for c in choices:
        if isinstance(c, BlockSpec):
            out.append(c)
            continue
        try:
            stages = parse(str(c)).stages
        except PatternError as exc:
            raise ConfigError(str(exc), "supernet choices") from None
        if len(stages) != 1 or len(stages[0]) != 1:
            raise ConfigError(f"a choice is one block, got {c!r}", "supernet choices")
        out.append(stages[0][0])
    if len(out) < 2 or len(set(out)) != len(out):
        raise ConfigError(f"at least two distinct choices are needed, got {[b.canonical() for b in out]}",
                          "supernet choices")
    return tuple(out)


def log2_paths(net: SuperNet) -> float:
    """log2 of the number of layouts (for messages about spaces too large to enumerate)."""
    return len(net.positions) * math.log2(len(net.choices))


__all__ = ["MapState", "Path", "Step", "SuperNet", "log2_paths"]
