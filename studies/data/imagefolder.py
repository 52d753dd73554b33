"""ImageNet-layout folders (`root/train/<class>/*.jpg`, `root/val/<class>/` or `root/test/<class>/`), e.g. Imagenette.

Images go through timm's train/eval transforms (`timm.data.create_transform`) at `img_size`, which defaults to
the images' own size (median shorter side, at most 224; one note line when they get resized). They are decoded
per sample, so `num_workers` > 0 is the usual setting, or, with `cache: true`, decoded once per run into memory.
Class indices follow the sorted train class folders.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
from torch.utils.data import Subset
from torchvision import transforms as T
from torchvision.datasets import ImageFolder

from hybridlab.errors import ConfigError, HybridlabError
from studies.data.base import SeededDataModule, check_bool, check_float, check_int, check_path
from studies.data.imagecache import DecodedImages, native_size, probe_sizes, size_note
from studies.data.scan import DEFAULT_DECODE_LIMIT, scan_image_folder

AUGMENTS = ("timm", "pad_crop")


def _class_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _pair(value: Any, key: str, upper: float | None = None) -> tuple[float, float]:
    """A (low, high) range of positive numbers, low <= high (<= upper when given)."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ConfigError(f"must be a list of 2 numbers [low, high], got {value!r}", f"data.{key}")
    low, high = (check_float(v, key, maximum=upper) for v in value)
    if not 0 < low <= high:
        raise ConfigError(f"must be 0 < low <= high, got {list(value)!r}", f"data.{key}")
    return low, high


def _triple(value: Any, key: str) -> tuple[float, float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise ConfigError(f"must be a list of 3 numbers, got {value!r}", f"data.{key}")
    return tuple(check_float(v, key) for v in value)  # type: ignore[return-value]


class ImageFolderDataModule(SeededDataModule):
    """An ImageNet-style folder dataset with timm augmentation.

    Options: `root` (required), `img_size` (default: the images' median shorter side, at most 224), `batch_size`,
    `num_workers`, `seed`, `train_subset`, `val_subset`, `augment` ("timm": timm's RandomResizedCrop pipeline, the
    default; "pad_crop": CIFAR-style, the image resized and center-cropped to img_size, then a random img_size crop
    of it padded by `padding` zero pixels (default 4) and the flip; `scale`, `ratio`, `color_jitter` and
    `auto_augment` belong to "timm" only), `crop_pct` (eval resize = img_size / crop_pct, default 0.875; 1.0
    with pad_crop), `scale` / `ratio` (RandomResizedCrop area fraction and aspect range, default [0.08, 1] and
    [3/4, 4/3]), `cache` (decode every image once into memory, shrunk to the eval resize; default false),
    `auto_augment` (timm string, e.g.
    "rand-m9-mstd0.5-inc1"), `color_jitter` (0.4), `hflip` (0.5), `re_prob` (random erasing, 0), `interpolation`
    ("bilinear"; "random" picks one per training image), `eval_interpolation` (the eval resize's; default
    `interpolation`, bilinear for "random"), `mean` / `std` (ImageNet), `drop_last` (true), `val_batch_size`, `check_decode` (images fully
    decoded by the pre-flight `check()`, evenly spread; null = all; every file's header and ending are checked).
    """

    name = "imagefolder"

    def __init__(self, root: str | Path | None = None, img_size: int | None = None, batch_size: int = 128,
                 num_workers: int = 0, seed: int = 0, train_subset: int | None = None, val_subset: int | None = None,
                 crop_pct: float | None = None, auto_augment: str | None = None, color_jitter: float = 0.4,
                 hflip: float = 0.5, re_prob: float = 0.0, interpolation: str = "bilinear",
                 mean: Sequence[float] = IMAGENET_DEFAULT_MEAN, std: Sequence[float] = IMAGENET_DEFAULT_STD,
                 drop_last: bool = True, val_batch_size: int | None = None,
                 check_decode: int | None = DEFAULT_DECODE_LIMIT, scale: Sequence[float] = (0.08, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3), cache: bool = False, augment: str = "timm",
                 padding: int = 4, eval_interpolation: str | None = None) -> None:
        super().__init__(batch_size=batch_size, val_batch_size=val_batch_size, num_workers=num_workers, seed=seed,
                         train_subset=train_subset, val_subset=val_subset, drop_last=drop_last)
        if root is None:
            raise ConfigError("the imagefolder dataset needs a root folder with train/ and val/ (or test/)", "data.root")
        self.root = check_path(root, "root")
        self.img_size = check_int(img_size, "img_size", minimum=4, maximum=4096, optional=True)
        self.scale = _pair(scale, "scale", upper=1.0)
        self.ratio = _pair(ratio, "ratio")
        self.cache = check_bool(cache, "cache")
        self.check_decode = check_int(check_decode, "check_decode", minimum=0, optional=True)
        if augment not in AUGMENTS:
            raise ConfigError(f"must be one of {', '.join(AUGMENTS)}, got {augment!r}", "data.augment")
        self.augment = augment
        self.padding = check_int(padding, "padding", minimum=0, maximum=1024)
        if crop_pct is None:
            crop_pct = 1.0 if augment == "pad_crop" else 0.875
        self.crop_pct = check_float(crop_pct, "crop_pct", minimum=0.05, maximum=1.0)
        if auto_augment is not None and not isinstance(auto_augment, str):
            raise ConfigError(f"must be a timm auto-augment string or null, got {auto_augment!r}", "data.auto_augment")
        if auto_augment is not None and augment != "timm":
            raise ConfigError("auto_augment needs augment: timm (pad_crop is crop and flip only)", "data.auto_augment")
        self.auto_augment = auto_augment
        self.color_jitter = check_float(color_jitter, "color_jitter", minimum=0.0)
        self.hflip = check_float(hflip, "hflip", minimum=0.0, maximum=1.0)
        self.re_prob = check_float(re_prob, "re_prob", minimum=0.0, maximum=1.0)
        if interpolation not in ("bilinear", "bicubic", "nearest", "random"):
            raise ConfigError(f"must be bilinear, bicubic, nearest or random, got {interpolation!r}", "data.interpolation")
        self.interpolation = interpolation
        if eval_interpolation is None:
            eval_interpolation = "bilinear" if interpolation == "random" else interpolation
        if eval_interpolation not in ("bilinear", "bicubic", "nearest"):
            raise ConfigError(f"must be bilinear, bicubic or nearest, got {eval_interpolation!r}",
                              "data.eval_interpolation")
        self.eval_interpolation = eval_interpolation
        self.mean, self.std = _triple(mean, "mean"), _triple(std, "std")
        self.in_chans = 3

        self.train_dir = self.root / "train"
        self.val_dir = next((self.root / d for d in ("val", "test") if (self.root / d).is_dir()), None)
        if not self.train_dir.is_dir() or self.val_dir is None:
            raise HybridlabError(f"imagefolder: {self.root.resolve()} needs train/<class>/ and val/<class>/ "
                                 f"(or test/<class>/) folders; set data.root to such a folder")
        self.classes = _class_dirs(self.train_dir)
        if not self.classes:
            raise HybridlabError(f"imagefolder: no class folders in {self.train_dir}")
        extra = sorted(set(_class_dirs(self.val_dir)) - set(self.classes))
        if extra:
            raise HybridlabError(f"imagefolder: class folder {extra[0]!r} in {self.val_dir} is not in {self.train_dir}")
        self.num_classes = len(self.classes)
        self.image_sizes = probe_sizes(self.train_dir)
        if self.img_size is None:
            self.img_size = native_size(self.image_sizes)
        self.notes = [n for n in (size_note(self.train_dir, self.image_sizes, self.img_size),) if n]

    def transforms(self, training: bool) -> Any:
        """timm's transform pipeline (RandomResizedCrop + flip + jitter [+ auto-augment, erasing] / resize + center crop)."""
        if training and self.augment == "pad_crop":
            steps = [T.Resize(self.img_size, interpolation=_interpolation(self.interpolation)),
                     T.CenterCrop(self.img_size), T.RandomCrop(self.img_size, padding=self.padding),
                     T.RandomHorizontalFlip(self.hflip), T.ToTensor(), T.Normalize(self.mean, self.std)]
            if self.re_prob > 0:
                steps.append(T.RandomErasing(self.re_prob))
            return T.Compose(steps)
        if training:
            return create_transform(self.img_size, is_training=True, scale=self.scale, ratio=self.ratio,
                                    hflip=self.hflip, color_jitter=self.color_jitter,
                                    auto_augment=self.auto_augment, re_prob=self.re_prob,
                                    interpolation=self.interpolation, mean=self.mean, std=self.std)
        return create_transform(self.img_size, is_training=False, crop_pct=self.crop_pct,
                                interpolation=self.eval_interpolation,
                                mean=self.mean, std=self.std)

    def check(self) -> None:
        """Pre-flight scan of train and val: empty class folders and unreadable images, named in one line."""
        for folder in (self.train_dir, self.val_dir):
            scan_image_folder(folder, decode_limit=self.check_decode)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        index = {c: i for i, c in enumerate(self.classes)}
        try:
            train = ImageFolder(str(self.train_dir), transform=self.transforms(True))
            val = ImageFolder(str(self.val_dir), transform=self.transforms(False))
        except FileNotFoundError as err:  # an empty class folder
            raise HybridlabError(f"imagefolder: {' '.join(str(err).split())}") from None
        if len(train) == 0 or len(val) == 0:
            raise HybridlabError(f"imagefolder: no images in {self.train_dir if len(train) == 0 else self.val_dir}")
        # val may miss some classes: map its indices onto the train classes.
        val.samples = [(p, index[val.classes[t]]) for p, t in val.samples]
        val.targets = [t for _, t in val.samples]
        val.class_to_idx, val.classes = dict(index), list(self.classes)
        keep_train, keep_val = self.subset_indices(len(train), len(val))
        for note in self.notes:
            print(note, file=sys.stderr, flush=True)
        if self.cache:
            max_side = math.floor(self.img_size / self.crop_pct)  # timm's eval resize
            self.train_set = _decoded(train, keep_train, max_side)
            self.val_set = _decoded(val, keep_val, max_side)
            megabytes = (self.train_set.nbytes + self.val_set.nbytes) / 2**20
            print(f"note: imagefolder cache holds {len(self.train_set) + len(self.val_set):,} decoded images "
                  f"({megabytes:,.0f} MB, shorter side <= {max_side} px)", file=sys.stderr, flush=True)
            return
        self.train_set = Subset(train, keep_train.tolist()) if keep_train is not None else train
        self.val_set = Subset(val, keep_val.tolist()) if keep_val is not None else val

    def describe(self) -> dict[str, Any]:
        """Everything that fixes the data, for the study manifest (sizes are None before `setup`)."""
        return {
            "name": self.name, "root": str(self.root), "num_classes": self.num_classes, "in_chans": self.in_chans,
            "img_size": self.img_size, "image_sizes": _size_range(self.image_sizes),
            **self.loader_description(), "scale": list(self.scale), "ratio": list(self.ratio), "cache": self.cache,
            "augment": self.augment, "padding": self.padding, "crop_pct": self.crop_pct,
            "auto_augment": self.auto_augment,
            "color_jitter": self.color_jitter, "hflip": self.hflip, "re_prob": self.re_prob,
            "interpolation": self.interpolation, "eval_interpolation": self.eval_interpolation, "mean": list(self.mean), "std": list(self.std),
            "val_dir": self.val_dir.name,
        }


def _interpolation(name: str) -> T.InterpolationMode:
    """torchvision's mode for a timm interpolation name ("random" resizes bilinearly here)."""
    return {"bicubic": T.InterpolationMode.BICUBIC, "nearest": T.InterpolationMode.NEAREST}.get(
        name, T.InterpolationMode.BILINEAR)


def _decoded(folder: ImageFolder, keep: Any, max_side: int) -> DecodedImages:
    """The kept samples of `folder`, decoded once (its transform is applied per item, as before)."""
    samples = folder.samples if keep is None else [folder.samples[i] for i in keep.tolist()]
    return DecodedImages(SimpleNamespace(samples=samples), max_side, transform=folder.transform)


def _size_range(sizes: list[tuple[int, int]]) -> list[str]:
    """The smallest and largest probed image (by area) as "WxH" strings; one entry when all agree."""
    if not sizes:
        return []
    ordered = sorted(set(sizes), key=lambda wh: (wh[0] * wh[1], wh))
    return [f"{w}x{h}" for w, h in dict.fromkeys((ordered[0], ordered[-1]))]
