"""CIFAR-10 / CIFAR-100 from torchvision's python-pickle layout or from an ImageFolder (`train/<class>/`, `test/<class>/`).

The layout is detected from `root`: `cifar-10-batches-py/` (or `cifar-100-python/`) inside it, `root` being that
folder itself, or `train/` + `test/` (or `val/`) class folders of 32x32 images. Unpickling runs whatever code a
pickle names, so every batch file is read once into memory, its MD5 sum compared with the published one
(torchvision's `CIFAR10.train_list` / `test_list`), and only a match is unpickled; anything else is refused with
one line naming the file. `download: true` uses torchvision's downloader.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hybridlab.errors import HybridlabError
from studies.data.base import InMemoryDataModule, check_bool, check_path

# CIFAR-10 training-set channel statistics, used for both variants (as most recipes do).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp", ".tif", ".tiff"}


def _checked_bytes(path: Path, expected_md5: Mapping[str, str]) -> bytes:
    """The file's bytes, only when their MD5 sum is the published one for its name."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise HybridlabError(f"cannot read CIFAR batch {path}: {err.strerror or err}") from None
    expected = expected_md5.get(path.name)
    actual = hashlib.md5(data, usedforsecurity=False).hexdigest()
    if expected is None or actual != expected:
        raise HybridlabError(
            f"CIFAR batch {path} fails its checksum (md5 {actual}, published {expected or 'none for this name'}): "
            f"it is damaged or was altered, so it is not loaded; delete the folder and set data.download: true")
    return data


def _unpickle(path: Path, expected_md5: Mapping[str, str]) -> dict:
    data = _checked_bytes(path, expected_md5)
    try:
        batch = pickle.loads(data, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError) as err:
        raise HybridlabError(f"cannot read CIFAR batch {path}: {err}") from err
    if not isinstance(batch, dict):
        raise HybridlabError(f"CIFAR batch {path} is not a mapping")
    return batch


def _get(batch: dict, key: str, path: Path) -> Any:
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    raise HybridlabError(f"CIFAR batch {path} has no {key!r} entry")


def read_pickle_batches(paths: list[Path], label_key: str,
                        expected_md5: Mapping[str, str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, 32, 32) uint8 and labels from torchvision-format CIFAR pickles with the published MD5 sums."""
    xs, ys = [], []
    for path in paths:
        batch = _unpickle(path, expected_md5)
        data = np.asarray(_get(batch, "data", path), dtype=np.uint8)
        labels = np.asarray(_get(batch, label_key, path), dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
            raise HybridlabError(f"CIFAR batch {path}: expected (N, 3072) data and N labels, got {data.shape} and {labels.shape}")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(labels)
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


def _class_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def read_image_folder(folder: Path, classes: list[str], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image under `folder/<class>/` as RGB uint8 (N, 3, size, size) (resized when needed) and labels."""
    from PIL import Image

    xs, ys = [], []
    for label, cls in enumerate(classes):
        cdir = folder / cls
        if not cdir.is_dir():
            continue
        for path in sorted(cdir.rglob("*")):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(path) as im:
                    im = im.convert("RGB")
                    if im.size != (size, size):
                        im = im.resize((size, size), Image.BILINEAR)
                    xs.append(np.asarray(im, dtype=np.uint8).transpose(2, 0, 1))
            except OSError as err:
                raise HybridlabError(f"cannot read image {path}: {err}") from err
            ys.append(label)
    if not xs:
        raise HybridlabError(f"no images found under {folder}/<class>/")
    return torch.from_numpy(np.stack(xs)), torch.tensor(ys, dtype=torch.int64)


class CIFARDataModule(InMemoryDataModule):
    """Base for CIFAR-10/100; options `root` (default ./data), `download`, `augment` (crop 4 + flip, default on)."""

    pickle_dir = ""
    train_files: tuple[str, ...] = ()
    test_files: tuple[str, ...] = ()
    label_key = "labels"
    expected_classes = 10

    def __init__(self, root: str | Path | None = None, download: bool = False, augment: bool = True,
                 **options: Any) -> None:
        super().__init__(num_classes=self.expected_classes, in_chans=3, augment=augment, **options)
        self.root = check_path(root, "root") if root is not None else Path("data")
        self.download = check_bool(download, "download")
        self.mean, self.std = CIFAR_MEAN, CIFAR_STD
        self.layout, self.source = self._detect()
        if self.layout is None and not self.download:
            raise HybridlabError(
                f"{self.name}: no dataset at {self.root.resolve()} (looked for {self.pickle_dir}/ pickles "
                f"and for train/<class>/ + test/<class>/ image folders); set data.root to one of those "
                f"or set data.download: true")

    def expected_md5(self) -> dict[str, str]:
        """The published MD5 sum of each batch file, as torchvision lists them."""
        import torchvision.datasets as tvd

        dataset_cls = tvd.CIFAR10 if self.expected_classes == 10 else tvd.CIFAR100
        return {name: md5 for name, md5 in (*dataset_cls.train_list, *dataset_cls.test_list)}

    def check(self) -> None:
        """Pre-flight: the pickles match their published sums, or every image of the folders decodes."""
        if self.layout == "pickle":
            sums = self.expected_md5()
            for name in (*self.train_files, *self.test_files):
                _checked_bytes(self.source / name, sums)
        elif self.layout == "imagefolder":
            from studies.data.scan import scan_image_folder

            test = next(self.source / d for d in ("test", "val") if (self.source / d).is_dir())
            scan_image_folder(self.source / "train")
            scan_image_folder(test)

    def _detect(self) -> tuple[str | None, Path | None]:
        for folder in (self.root / self.pickle_dir, self.root):
            if all((folder / f).is_file() for f in (*self.train_files, *self.test_files)):
                return "pickle", folder
        train = self.root / "train"
        test = next((self.root / d for d in ("test", "val") if (self.root / d).is_dir()), None)
        if train.is_dir() and test is not None and _class_dirs(train):
            return "imagefolder", self.root
        return None, None

    def prepare_data(self) -> None:
        if self.layout is not None:
            return
        import torchvision.datasets as tvd

        dataset_cls = tvd.CIFAR10 if self.expected_classes == 10 else tvd.CIFAR100
        try:
            dataset_cls(str(self.root), train=True, download=True)
        except Exception as err:  # network or disk problems: one line for the user
            raise HybridlabError(f"{self.name}: download into {self.root} failed: {err}") from err
        self.layout, self.source = self._detect()
        if self.layout is None:
            raise HybridlabError(f"{self.name}: download finished but no dataset was found in {self.root}")

    def _load(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.layout is None:
            self.prepare_data()
        if self.layout == "pickle":
            sums = self.expected_md5()
            xtr, ytr = read_pickle_batches([self.source / f for f in self.train_files], self.label_key, sums)
            xva, yva = read_pickle_batches([self.source / f for f in self.test_files], self.label_key, sums)
        else:
            train = self.source / "train"
            test = next(self.source / d for d in ("test", "val") if (self.source / d).is_dir())
            classes = _class_dirs(train)
            if len(classes) != self.expected_classes:
                raise HybridlabError(f"{self.name}: expected {self.expected_classes} class folders in {train}, "
                                     f"found {len(classes)}")
            extra = sorted(set(_class_dirs(test)) - set(classes))
            if extra:
                raise HybridlabError(f"{self.name}: class folder {extra[0]!r} in {test} is not in {train}")
            xtr, ytr = read_image_folder(train, classes, self.native_size)
            xva, yva = read_image_folder(test, classes, self.native_size)
            self.classes = classes
        for y, what in ((ytr, "train"), (yva, "test")):
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise HybridlabError(f"{self.name}: {what} labels outside 0..{self.num_classes - 1} in {self.source}")
        return xtr, ytr, xva, yva

    def _augment_args(self) -> dict[str, Any]:
        return {"crop_pad": max(1, self.img_size // 8), "hflip": True}

    def _extra_description(self) -> dict[str, Any]:
        return {"root": str(self.root), "layout": self.layout}


class CIFAR10DataModule(CIFARDataModule):
    """CIFAR-10: 50 000 train + 10 000 test 32x32 RGB images, 10 classes."""

    name = "cifar10"
    pickle_dir = "cifar-10-batches-py"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_files = ("test_batch",)
    label_key = "labels"
    expected_classes = 10


class CIFAR100DataModule(CIFARDataModule):
    """CIFAR-100 (fine labels): 50 000 train + 10 000 test 32x32 RGB images, 100 classes."""

    name = "cifar100"
    pickle_dir = "cifar-100-python"
    train_files = ("train",)
    test_files = ("test",)
    label_key = "fine_labels"
    expected_classes = 100
