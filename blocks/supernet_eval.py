"""Scoring many supernet paths at once: shared prefixes computed once, the final norm recalibrated per path.

Layouts that agree on their first k searchable positions compute the network up to position k once: the
paths form a trie, walked depth-first per batch, so scoring all 2^12 layouts of two choices over 12
positions runs about 8,190 block calls per batch instead of 49,152. Only the activations along the current
branch are held.

Batch-norm statistics in a supernet are a mixture over the paths trained, so SPOS recalibrates them per
subnet. The BatchNorm layers before the first searchable position see the same inputs on every path and
keep theirs; the final `norm` sits after every searchable position, and `calibrate_norm` recomputes its
statistics per path from training batches (same trie walk). BatchNorm layers inside choice blocks (conv
choices) keep their running statistics; results with such choices say so through `inner_batchnorm`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from blocks.supernet import MapState, Path, SuperNet


@dataclass
class PathScore:
    """One layout's validation figures with inherited weights."""

    correct: int = 0
    loss_sum: float = 0.0
    n: int = 0

    @property
    def top1(self) -> float:
        return 100.0 * self.correct / self.n if self.n else float("nan")

    @property
    def loss(self) -> float:
        return self.loss_sum / self.n if self.n else float("nan")


@dataclass
class NormStats:
    """Per-channel statistics of the final norm's input for one path."""

    mean: torch.Tensor
    var: torch.Tensor


# Images per stacked block call once a subtree is small enough, on CUDA (where thousands of small calls cost
# their launch overhead). On CPU stacking measured slower (512 layouts of attention_placement's model, one
# 64-image batch, one thread: 9.3 s CPU stacked vs 7.2 s one call per branch), so it is off there.
STACK_IMAGES = 4096


def walk(net: SuperNet, x: torch.Tensor, paths: Sequence[Path],
         leaf: Callable[[Path, torch.Tensor], None], stack_images: int | None = None) -> None:
    """Run `x` through every path, sharing prefixes; `leaf(path, pre_norm_map)` receives each path's output.

    Near the leaves, where a subtree holds few paths, its branches run stacked: the activations of every
    branch that takes the same block are concatenated along the batch and run in one call (every module
    here treats samples independently at inference), which replaces thousands of small calls by a few
    large ones. `stack_images=0` keeps one call per branch; None: `STACK_IMAGES` on CUDA, 0 elsewhere.
    """
    if stack_images is None:
        stack_images = STACK_IMAGES if x.is_cuda else 0
    ordered = sorted(set(paths))
    state = MapState(net.patch_embed(x))
    _walk(net, 0, state, ordered, leaf, stack_images)


def _walk(net: SuperNet, i: int, state: MapState, paths: list[Path], leaf: Callable[[Path, torch.Tensor], None],
          stack_images: int) -> None:
    steps = net.steps
    while i < len(steps) and steps[i].position is None:
        state = _advance(net, steps[i], paths[0], state)
        i += 1
    if i == len(steps):
        out = state.to_map()
        for path in paths:
            leaf(path, out)
        return
    if len(paths) > 1 and len(paths) * state.x.shape[0] <= stack_images * _per_image(state):
        _stacked(net, i, [(state, paths)], leaf)
        return
    step = steps[i]
    groups: dict[int, list[Path]] = {}
    for path in paths:
        groups.setdefault(path[step.position], []).append(path)
    for choice_paths in groups.values():
        _walk(net, i + 1, _advance(net, step, choice_paths[0], state), choice_paths, leaf, stack_images)


def _per_image(state: MapState) -> int:
    """Rows of `state.x` per image: 1 for a map, the number of windows for windowed tokens."""
    if state.window is None:
        return 1
    _, _, hp, wp = state.size
    return (hp // state.window) * (wp // state.window)


def _stacked(net: SuperNet, i: int, groups: list[tuple[MapState, list[Path]]],
             leaf: Callable[[Path, torch.Tensor], None]) -> None:
    """Breadth-first from step `i`: one call per (block, activation form) over all branches of the subtree."""
    steps = net.steps
    for step in steps[i:]:
        split: list[tuple[MapState, list[Path]]] = []
        for state, paths in groups:
            if step.position is None:
                split.append((state, paths))
                continue
            by_choice: dict[int, list[Path]] = {}
            for path in paths:
                by_choice.setdefault(path[step.position], []).append(path)
            split.extend((state, ps) for ps in by_choice.values())
        batches: dict[tuple, list[tuple[MapState, list[Path]]]] = {}
        for state, paths in split:
            key = (id(net.block(step, paths[0])), state.window, state.size)
            batches.setdefault(key, []).append((state, paths))
        groups = []
        for members in batches.values():
            first = members[0][0]
            images = [m[0].x.shape[0] // _per_image(first) for m in members]
            joined = MapState(torch.cat([m[0].x for m in members]), first.window, first.size)
            out = _advance(net, step, members[0][1][0], joined)
            rows = [n * _per_image(out) for n in images]
            for part, (_, paths) in zip(out.x.split(rows), members, strict=True):
                groups.append((MapState(part, out.window, out.size), paths))
    for state, paths in groups:
        out = state.to_map()
        for path in paths:
            leaf(path, out)


def _advance(net: SuperNet, step, path: Path, state: MapState) -> MapState:
    state = state.apply(net.block(step, path), net.window(step, path))
    if step.last_in_stage:
        state = MapState(net.downsamples[step.stage](state.to_map()))
    return state


@torch.inference_mode()
def calibrate_norm(net: SuperNet, batches: Iterable[torch.Tensor], paths: Sequence[Path]) -> dict[Path, NormStats]:
    """Each path's mean and (unbiased) variance of the final norm's input over `batches` (images only)."""
    net.eval()
    sums: dict[Path, list] = {}

    def leaf(path: Path, out: torch.Tensor) -> None:
        flat = out.double().transpose(0, 1).reshape(out.shape[1], -1)
        acc = sums.setdefault(path, [0, 0.0, 0.0])
        acc[0] += flat.shape[1]
        acc[1] = acc[1] + flat.sum(1)
        acc[2] = acc[2] + (flat * flat).sum(1)

    for x in batches:
        walk(net, x, paths, leaf)
    stats = {}
    for path, (n, s, sq) in sums.items():
        mean = s / n
        var = (sq / n - mean * mean).clamp_min(0) * (n / max(n - 1, 1))
        stats[path] = NormStats(mean.float(), var.float())
    return stats


@torch.inference_mode()
def score_paths(net: SuperNet, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], paths: Sequence[Path],
                norm_stats: dict[Path, NormStats] | None = None) -> dict[Path, PathScore]:
    """Top-1 and cross-entropy of every path on `batches` of (images, labels), inherited weights."""
    net.eval()
    scores = {p: PathScore() for p in paths}
    norm: nn.BatchNorm2d = net.norm

    for x, y in batches:
        def leaf(path: Path, out: torch.Tensor, y: torch.Tensor = y) -> None:
            stats = norm_stats.get(path) if norm_stats else None
            if stats is None:
                feats = norm(out)
            else:
                feats = F.batch_norm(out, stats.mean, stats.var, norm.weight, norm.bias, False, 0.0, norm.eps)
            logits = net.forward_head(feats)
            score = scores[path]
            score.correct += int((logits.argmax(1) == y).sum())
            score.loss_sum += float(F.cross_entropy(logits.float(), y, reduction="sum"))
            score.n += int(y.numel())

        walk(net, x, paths, leaf)
    return scores


def inner_batchnorm(net: SuperNet) -> bool:
    """Whether any choice module holds a BatchNorm (whose statistics are not recalibrated per path)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.options.modules())


def load_norm_stats(subnet: nn.Module, stats: NormStats) -> None:
    """Give an extracted subnet the recalibrated final-norm statistics its score was computed with."""
    subnet.norm.running_mean.copy_(stats.mean)
    subnet.norm.running_var.copy_(stats.var)


__all__ = ["NormStats", "PathScore", "calibrate_norm", "inner_batchnorm", "load_norm_stats", "score_paths", "walk"]
