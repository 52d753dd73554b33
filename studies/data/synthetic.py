"""Random but learnable tensors for tests and smoke runs: class prototype + Gaussian noise, fully seeded.

Each class has a smooth random prototype (a 4x4 random map upsampled to `img_size`); an image is its class
prototype times `signal` plus unit Gaussian noise, so small models learn it within an epoch or two.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from studies.data.base import InMemoryDataModule, check_float, check_int


def make_synthetic(n: int, num_classes: int, in_chans: int, img_size: int, signal: float,
                   generator: torch.Generator, prototypes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` float images (N, C, H, W) and balanced labels (shuffled) from the given prototypes."""
    labels = torch.arange(n) % num_classes
    labels = labels[torch.randperm(n, generator=generator)]
    noise = torch.randn((n, in_chans, img_size, img_size), generator=generator)
    return prototypes[labels] * signal + noise, labels


class SyntheticDataModule(InMemoryDataModule):
    """Options: `num_train` (512), `num_val` (256), `num_classes` (10), `in_chans` (3), `img_size` (32),
    `signal` (prototype amplitude vs unit noise, 1.0), `data_seed` (0: fixes the images; `seed` fixes order/subsets)."""

    name = "synthetic"

    def __init__(self, num_train: int = 512, num_val: int = 256, num_classes: int = 10, in_chans: int = 3,
                 img_size: int | None = 32, signal: float = 1.0, data_seed: int = 0, **options: Any) -> None:
        num_classes = check_int(num_classes, "num_classes", minimum=2)
        in_chans = check_int(in_chans, "in_chans", minimum=1, maximum=64)
        self.native_size = check_int(img_size, "img_size", minimum=4, maximum=1024, optional=True) or 32
        super().__init__(num_classes=num_classes, in_chans=in_chans, img_size=self.native_size, **options)
        self.num_train = check_int(num_train, "num_train", minimum=1)
        self.num_val = check_int(num_val, "num_val", minimum=1)
        self.signal = check_float(signal, "signal", minimum=0.0)
        self.data_seed = check_int(data_seed, "data_seed", minimum=0)

    def _load(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(self.data_seed)
        coarse = torch.randn((self.num_classes, self.in_chans, 4, 4), generator=gen)
        prototypes = F.interpolate(coarse, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False)
        args = (self.num_classes, self.in_chans, self.img_size, self.signal, gen, prototypes)
        xtr, ytr = make_synthetic(self.num_train, *args)
        xva, yva = make_synthetic(self.num_val, *args)
        return xtr, ytr, xva, yva

    def _extra_description(self) -> dict[str, Any]:
        return {"signal": self.signal, "data_seed": self.data_seed}
