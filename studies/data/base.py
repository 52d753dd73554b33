"""Shared pieces of the data modules: option checks, seeded sampling and the in-memory tensor pipeline.

Small datasets (Fashion-MNIST, CIFAR, the generated ones) live in memory as one uint8 (or float) tensor per
split. A DataLoader then fetches a whole batch with one indexing op (`__getitems__`) and normalises and augments
it vectorised, which is several times faster on CPU than a per-image transform pipeline.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from hybridlab.errors import ConfigError

# -- option checks (one ConfigError line naming `data.<key>`) --------------------------------------------------------


def check_int(value: Any, key: str, minimum: int | None = None, maximum: int | None = None, optional: bool = False) -> int | None:
    """An integer option; bools and floats with a fraction are rejected."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ConfigError(f"must be an integer, got {value!r}", f"data.{key}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"must be >= {minimum}, got {value}", f"data.{key}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"must be <= {maximum}, got {value}", f"data.{key}")
    return value


def check_float(value: Any, key: str, minimum: float | None = None, maximum: float | None = None, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"must be a finite number, got {value!r}", f"data.{key}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"must be >= {minimum}, got {value}", f"data.{key}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"must be <= {maximum}, got {value}", f"data.{key}")
    return float(value)


def check_bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"must be true or false, got {value!r}", f"data.{key}")
    return value


def check_path(value: Any, key: str) -> Path:
    if not isinstance(value, (str, Path)) or not str(value):
        raise ConfigError(f"must be a folder path, got {value!r}", f"data.{key}")
    return Path(value).expanduser()


# -- sampling ----------------------------------------------------------------------------------------------------------


def seeded_subset(n: int, size: int | None, seed: int) -> torch.Tensor | None:
    """Indices of a seeded random subset of `size` out of `n`, sorted; None when the subset is the whole set."""
    if size is None or size >= n:
        return None
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=gen)[:size].sort().values


class EpochShuffleSampler(Sampler[int]):
    """A shuffle whose order depends only on (seed, epoch), so a resumed run sees the same order per epoch.

    Lightning calls `set_epoch` before each epoch; used on its own the epoch advances after each pass.
    """

    def __init__(self, num_samples: int, seed: int) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        self.epoch += 1
        return iter(torch.randperm(self.num_samples, generator=gen).tolist())

    def __len__(self) -> int:
        return self.num_samples


# -- in-memory tensors ---------------------------------------------------------------------------------------------------


def resize_images(images: torch.Tensor, size: int, mode: str = "bilinear", chunk: int = 4096) -> torch.Tensor:
    """Resize an (N, C, H, W) uint8 or float tensor to size x size, keeping its dtype; done in chunks to bound memory."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = []
    for start in range(0, len(images), chunk):
        x = images[start:start + chunk].float()
        if mode == "nearest":
            y = F.interpolate(x, size=(size, size), mode="nearest-exact")
        else:
            y = F.interpolate(x, size=(size, size), mode=mode, align_corners=False, antialias=size < x.shape[-1])
        if images.dtype == torch.uint8:
            y = y.round_().clamp_(0, 255).to(torch.uint8)
        out.append(y)
    return torch.cat(out) if out else images.new_empty((0, images.shape[1], size, size))


def random_crop_flip(x: torch.Tensor, pad: int, hflip: bool) -> torch.Tensor:
    """Per-image random crop after zero padding and random horizontal flip, for a whole (B, C, H, W) batch at once."""
    b, c, h, w = x.shape
    if pad > 0:
        xp = F.pad(x, (pad, pad, pad, pad))
        oy = torch.randint(0, 2 * pad + 1, (b,))
        ox = torch.randint(0, 2 * pad + 1, (b,))
        rows = (oy[:, None] + torch.arange(h)[None, :])[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w)[None, :])[:, None, None, :]
        x = xp[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
    if hflip:
        flip = torch.rand(b) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x


class TensorImageDataset(Dataset):
    """A split held as one tensor; `__getitems__` returns a ready (images, labels) batch.

    uint8 images are scaled to [0, 1] and normalised with `mean`/`std`; float images are used as they are.
    Augmentation draws from torch's global RNG, which `L.seed_everything(..., workers=True)` seeds.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, crop_pad: int = 0, hflip: bool = False) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels.long()
        c = images.shape[1]
        self.mean = torch.tensor(mean if mean is not None else [0.0] * c, dtype=torch.float32).view(1, c, 1, 1)
        self.std = torch.tensor(std if std is not None else [1.0] * c, dtype=torch.float32).view(1, c, 1, 1)
        self.crop_pad = crop_pad
        self.hflip = hflip

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        x = self.images[idx]
        if x.dtype == torch.uint8:
            x = (x.float().div_(255.0) - self.mean) / self.std
        else:
            x = x.float()
        if self.crop_pad or self.hflip:
            x = random_crop_flip(x, self.crop_pad, self.hflip)
        return x, self.labels[idx]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.__getitems__([index])
        return x[0], y[0]


def collate_batch(batch: Any) -> Any:
    """The dataset already returns a collated batch (see `TensorImageDataset.__getitems__`)."""
    return batch


def channel_stats(images: torch.Tensor, max_images: int = 10000) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std of uint8 images in [0, 1] units (over at most `max_images`, for speed)."""
    x = images[:max_images].float().div_(255.0)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-6)
    return tuple(round(v, 6) for v in mean.tolist()), tuple(round(v, 6) for v in std.tolist())


class SeededDataModule(L.LightningDataModule):
    """Base of every data module: the loader options, seeded subsets and a shuffle that a resume repeats.

    Options: `batch_size`, `val_batch_size` (default `batch_size`), `num_workers` (0 = load in the main process),
    `seed` (fixes the subsets, and the shuffle order unless the attribute `shuffle_seed` is set, as
    `train_and_evaluate` does with the trial seed), `train_subset` / `val_subset` (a seeded random N images),
    `drop_last` (drop the last short training batch). Subclasses fill `train_set` / `val_set` in `setup`.
    """

    def __init__(self, *, batch_size: Any = 128, num_workers: Any = 0, seed: Any = 0, train_subset: Any = None,
                 val_subset: Any = None, drop_last: Any = True, val_batch_size: Any = None) -> None:
        super().__init__()
        self.batch_size: int = check_int(batch_size, "batch_size", minimum=1)
        self.val_batch_size = check_int(val_batch_size, "val_batch_size", minimum=1, optional=True)
        self.num_workers: int = check_int(num_workers, "num_workers", minimum=0)
        self.seed: int = check_int(seed, "seed", minimum=0)
        self.train_subset = check_int(train_subset, "train_subset", minimum=1, optional=True)
        self.val_subset = check_int(val_subset, "val_subset", minimum=1, optional=True)
        self.drop_last = check_bool(drop_last, "drop_last")
        self.shuffle_seed: int | None = None
        self.train_set: Any = None
        self.val_set: Any = None

    @property
    def order_seed(self) -> int:
        """The seed of the training order: the trial's `shuffle_seed` when set, else the data `seed`."""
        return self.seed if self.shuffle_seed is None else self.shuffle_seed

    def subset_indices(self, num_train: int, num_val: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The seeded train / val subsets (None = keep the whole split); val draws with `seed + 1`."""
        return seeded_subset(num_train, self.train_subset, self.seed), seeded_subset(num_val, self.val_subset,
                                                                                      self.seed + 1)

    def _collate(self) -> Any:
        """The DataLoader's collate_fn (None = PyTorch's default)."""
        return None

    def _loader(self, dataset: Dataset, batch_size: int, sampler: Sampler | None, drop_last: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last,
                          num_workers=self.num_workers, collate_fn=self._collate(),
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        n = len(self.train_set)
        return self._loader(self.train_set, self.batch_size, EpochShuffleSampler(n, self.order_seed),
                            drop_last=self.drop_last and n >= self.batch_size)

    def val_dataloader(self) -> DataLoader:
        self.setup("validate")
        return self._loader(self.val_set, self.val_batch_size or self.batch_size, None, drop_last=False)

    def loader_description(self) -> dict[str, Any]:
        """The loader part of `describe()` (sizes are None before `setup`)."""
        return {
            "num_train": len(self.train_set) if self.train_set is not None else None,
            "num_val": len(self.val_set) if self.val_set is not None else None,
            "train_subset": self.train_subset, "val_subset": self.val_subset, "seed": self.seed,
            "shuffle_seed": self.shuffle_seed, "batch_size": self.batch_size,
        }


class InMemoryDataModule(SeededDataModule):
    """Base for datasets that fit in memory: subclasses set the class attributes and implement `_load`.

    Options: the loader options of `SeededDataModule`, `img_size` (resize), `augment`.
    """

    name = ""
    native_size = 32
    resize_mode = "bilinear"

    def __init__(self, *, num_classes: int, in_chans: int, batch_size: int = 128, num_workers: int = 0, seed: int = 0,
                 train_subset: int | None = None, val_subset: int | None = None, img_size: int | None = None,
                 drop_last: bool = True, val_batch_size: int | None = None, augment: bool = False) -> None:
        super().__init__(batch_size=batch_size, val_batch_size=val_batch_size, num_workers=num_workers, seed=seed,
                         train_subset=train_subset, val_subset=val_subset, drop_last=drop_last)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.img_size = check_int(img_size, "img_size", minimum=4, maximum=4096, optional=True) or self.native_size
        self.augment = check_bool(augment, "augment")
        self.mean: tuple[float, ...] | None = None
        self.std: tuple[float, ...] | None = None
        self.train_set: TensorImageDataset | None = None
        self.val_set: TensorImageDataset | None = None

    # subclasses -------------------------------------------------------------------------------------------------
    def _load(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (train_images, train_labels, val_images, val_labels), images (N, C, H, W) uint8 or float."""
        raise NotImplementedError

    def _augment_args(self) -> dict[str, Any]:
        """Crop padding and flip used when `augment` is on (CIFAR-style by default)."""
        return {"crop_pad": max(1, self.img_size // 8), "hflip": True}

    def _extra_description(self) -> dict[str, Any]:
        return {}

    # LightningDataModule ----------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        xtr, ytr, xva, yva = self._load()
        keep_train, keep_val = self.subset_indices(len(ytr), len(yva))
        if keep_train is not None:
            xtr, ytr = xtr[keep_train], ytr[keep_train]
        if keep_val is not None:
            xva, yva = xva[keep_val], yva[keep_val]
        xtr = resize_images(xtr, self.img_size, self.resize_mode)
        xva = resize_images(xva, self.img_size, self.resize_mode)
        if self.mean is None and xtr.dtype == torch.uint8:
            self.mean, self.std = channel_stats(xtr)
        aug = self._augment_args() if self.augment else {}
        self.train_set = TensorImageDataset(xtr, ytr, self.mean, self.std, **aug)
        self.val_set = TensorImageDataset(xva, yva, self.mean, self.std)

    def _collate(self) -> Any:
        return collate_batch

    def describe(self) -> dict[str, Any]:
        """Everything that fixes the data, for the study manifest (sizes are None before `setup`)."""
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "in_chans": self.in_chans,
            "img_size": self.img_size,
            **self.loader_description(),
            "augment": self.augment,
            "mean": list(self.mean) if self.mean is not None else None,
            "std": list(self.std) if self.std is not None else None,
            **self._extra_description(),
        }
