"""`global_marks`: the offline default task, generated from a seed, that rewards global context.

Generative rule (one 32x32 RGB image, all draws independent per image, from `numpy.random.default_rng`):

1. Background: a random dark base colour (each channel uniform in [0.05, 0.35]) plus uniform pixel noise in
   [-noise, +noise] (default 0.06); then clutter: each pixel independently, with probability `clutter`
   (default 0.08), is replaced by a uniformly random RGB colour.
2. The image is split into a 3x3 grid of 10x10 cells (origins 0, 11, 22). Three *marks* are drawn in three
   different cells, each a 7x7 black tile holding a 5x5 glyph at a random jitter of 0..3 pixels in its cell.
   Glyphs come from a fixed alphabet of K = `num_classes` random 5x5 binary patterns (9..16 pixels on,
   pairwise Hamming distance >= 7, made from the fixed seed `ALPHABET_SEED`), each mark painted in its own
   random bright colour (each channel uniform in [0.55, 1]); colour carries no information.
3. Two marks show the same glyph g (the *pair*) and sit in cells that are two cells apart (Chebyshev
   distance 2 in the grid: opposite sides or corners, so their centres are 19..25 pixels apart along at
   least one axis). The third mark shows a
   different glyph h != g, in any of the 7 remaining cells. g is uniform; h is uniform over the others.
4. Label = h, the odd glyph out (K classes, balanced in expectation). With `label_noise` p > 0 a fraction p
   of labels is replaced by a uniformly random class (default 0: the rule is exact).

Why it needs global context: one mark alone never tells whether it is the odd one; that takes comparing it with
the two others, and the pair is always far apart. If features see one mark at a time and are then averaged
(local receptive fields + global average pooling + linear head), class c gets an additive score
2 s_c(g) + s_c(h); no score table ranks h first for every pair (g, h) (a linear-programming check finds none
for K = 3 and K = 10), and the cross-entropy-optimal table even ranks the pair glyph g first. Attention or an SSM
across the map compares the marks directly; a CNN has to grow receptive fields that span the pair.

Train and validation images come from independent streams of `data_seed` (`[data_seed, 0]` and
`[data_seed, 1]`), so the validation split is fixed whatever `num_train`, `train_subset` or `seed` are.
20 000 images take about 1-2 s on one CPU core (see tests/test_data.py, which prints the time).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from hybridlab.errors import ConfigError
from studies.data.base import InMemoryDataModule, check_float, check_int

CANVAS = 32
TILE = 7
GLYPH = 5
CELL_ORIGINS = np.array([0, 11, 22])
MAX_JITTER = 3
ALPHABET_SEED = 20240
MAX_CLASSES = 16


@functools.cache
def alphabet(num_glyphs: int) -> np.ndarray:
    """The fixed glyph alphabet: (K, 5, 5) float32 0/1 patterns; the first K of one fixed sequence."""
    if not 3 <= num_glyphs <= MAX_CLASSES:
        raise ConfigError(f"must be between 3 and {MAX_CLASSES}, got {num_glyphs}", "data.num_classes")
    rng = np.random.default_rng(ALPHABET_SEED)
    glyphs: list[np.ndarray] = []
    while len(glyphs) < MAX_CLASSES:
        g = rng.random((GLYPH, GLYPH)) < 0.5
        if 9 <= g.sum() <= 16 and all((g != h).sum() >= 7 for h in glyphs):
            glyphs.append(g)
    out = np.stack(glyphs[:num_glyphs]).astype(np.float32)
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=1)
def cell_triples() -> np.ndarray:
    """All (pair cell, pair cell, odd cell) choices in the 3x3 grid with the pair two cells apart: (112, 3)."""
    rows, cols = np.divmod(np.arange(9), 3)
    triples = []
    for a in range(9):
        for b in range(a + 1, 9):
            if max(abs(rows[a] - rows[b]), abs(cols[a] - cols[b])) == 2:
                triples.extend((a, b, c) for c in range(9) if c not in (a, b))
    out = np.array(triples, dtype=np.int64)
    out.flags.writeable = False
    return out


def generate(n: int, seed: int | tuple[int, ...], num_classes: int = 10, noise: float = 0.06, clutter: float = 0.08,
             label_noise: float = 0.0, return_meta: bool = False) -> tuple[np.ndarray, ...]:
    """`n` images (N, 3, 32, 32) uint8 and labels (N,) int64 following the rule in the module docstring.

    With `return_meta`, also a dict of what was drawn: `cells` (N, 3) grid cells (pair, pair, odd), `glyphs`
    (N, 3) glyph index per mark, `top_left` (N, 3, 2) tile corner (y, x) per mark.
    """
    rng = np.random.default_rng(seed)
    glyphs = alphabet(num_classes)
    s = CANVAS
    # 1. background + clutter (NHWC while drawing)
    img = rng.random((n, s, s, 3), dtype=np.float32)
    img *= 2 * noise
    img += rng.uniform(0.05, 0.35, (n, 1, 1, 3)).astype(np.float32) - noise
    speck = rng.random((n, s, s), dtype=np.float32) < clutter
    img[speck] = rng.random((int(speck.sum()), 3), dtype=np.float32)
    # 2-3. marks: cells, glyphs, jitter, colours
    triples = cell_triples()
    cells = triples[rng.integers(0, len(triples), n)]                       # (n, 3): pair, pair, odd
    pair = rng.integers(0, num_classes, n)
    odd = (pair + rng.integers(1, num_classes, n)) % num_classes
    mark_glyph = np.stack([pair, pair, odd], axis=1)                         # (n, 3)
    jitter = rng.integers(0, MAX_JITTER + 1, (n, 3, 2))
    y0 = CELL_ORIGINS[cells // 3] + jitter[..., 0]
    x0 = CELL_ORIGINS[cells % 3] + jitter[..., 1]
    colour = rng.uniform(0.55, 1.0, (n, 3, 3)).astype(np.float32)
    tiles = np.zeros((num_classes, TILE, TILE), dtype=np.float32)
    m = (TILE - GLYPH) // 2
    tiles[:, m:m + GLYPH, m:m + GLYPH] = glyphs
    painted = tiles[mark_glyph][..., None] * colour[:, :, None, None, :]    # (n, 3, 7, 7, 3)
    ar = np.arange(TILE)
    rows = y0[:, :, None, None] + ar[None, None, :, None]
    cols = x0[:, :, None, None] + ar[None, None, None, :]
    img[np.arange(n)[:, None, None, None], rows, cols] = painted
    # 4. label (+ optional noise)
    labels = odd.astype(np.int64)
    if label_noise > 0:
        flip = rng.random(n) < label_noise
        labels[flip] = rng.integers(0, num_classes, int(flip.sum()))
    np.clip(img, 0.0, 1.0, out=img)
    img *= 255.0
    img += 0.5
    images = img.astype(np.uint8).transpose(0, 3, 1, 2).copy()
    if return_meta:
        return images, labels, {"cells": cells, "glyphs": mark_glyph, "top_left": np.stack([y0, x0], axis=-1)}
    return images, labels


@functools.lru_cache(maxsize=4)
def _cached(n: int, seed: tuple[int, int], num_classes: int, noise: float, clutter: float,
            label_noise: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generated splits are reused across trials of one process (a study trains many models on the same data)."""
    x, y = generate(n, seed, num_classes, noise, clutter, label_noise)
    return torch.from_numpy(x), torch.from_numpy(y)


class GlobalMarksDataModule(InMemoryDataModule):
    """The odd-mark-out task (see module docstring). Options: `num_train` (20000), `num_val` (4000),
    `num_classes` (alphabet size K, 3..16, default 10), `noise` (0.06), `clutter` (0.08), `label_noise` (0),
    `data_seed` (0: fixes the images; `seed` fixes shuffle order and subsets), `img_size` (default 32; other sizes
    are resized, nearest-neighbour for multiples of 32), plus the common options."""

    name = "global_marks"
    native_size = CANVAS

    def __init__(self, num_train: int = 20000, num_val: int = 4000, num_classes: int = 10, noise: float = 0.06,
                 clutter: float = 0.08, label_noise: float = 0.0, data_seed: int = 0, **options: Any) -> None:
        num_classes = check_int(num_classes, "num_classes", minimum=3, maximum=MAX_CLASSES)
        super().__init__(num_classes=num_classes, in_chans=3, **options)
        if self.augment:
            raise ConfigError("global_marks takes no augmentation (flips and crops change glyphs and cells)", "data.augment")
        self.num_train = check_int(num_train, "num_train", minimum=1)
        self.num_val = check_int(num_val, "num_val", minimum=1)
        self.noise = check_float(noise, "noise", minimum=0.0, maximum=0.5)
        self.clutter = check_float(clutter, "clutter", minimum=0.0, maximum=1.0)
        self.label_noise = check_float(label_noise, "label_noise", minimum=0.0, maximum=1.0)
        self.data_seed = check_int(data_seed, "data_seed", minimum=0)
        self.resize_mode = "nearest" if self.img_size % CANVAS == 0 else "bilinear"

    def _load(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        knobs = (self.num_classes, self.noise, self.clutter, self.label_noise)
        xtr, ytr = _cached(self.num_train, (self.data_seed, 0), *knobs)
        xva, yva = _cached(self.num_val, (self.data_seed, 1), *knobs)
        return xtr, ytr, xva, yva

    def _extra_description(self) -> dict[str, Any]:
        return {"rule": "odd glyph out of three marks; the matching pair is two grid cells apart",
                "num_total_train": self.num_train, "noise": self.noise, "clutter": self.clutter,
                "label_noise": self.label_noise, "data_seed": self.data_seed, "alphabet_seed": ALPHABET_SEED}
