"""Fashion-MNIST from its original IDX files (Debian `dataset-fashion-mnist`), parsed with numpy.

60 000 train + 10 000 test grayscale 28x28 images, 10 balanced classes. The default root is where the Debian
package installs them; `download: true` falls back to torchvision's downloader (needs network).
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hybridlab.errors import HybridlabError
from studies.data.base import InMemoryDataModule, check_bool, check_path

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "val_images": "t10k-images-idx3-ubyte",
    "val_labels": "t10k-labels-idx1-ubyte",
}
# Fashion-MNIST pixel statistics of the training set, in [0, 1] units.
MEAN = (0.2860,)
STD = (0.3530,)
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): magic `0 0 <dtype> <ndim>`, big-endian int32 sizes, then the data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise HybridlabError(f"cannot read IDX file {path}: {err}") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise HybridlabError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4).astype(np.int64)
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - offset != expected:
        raise HybridlabError(f"{path} is truncated or corrupt: {len(raw) - offset} data bytes, header says {expected}")
    return np.frombuffer(raw, dtype=dtype, offset=offset).reshape(tuple(dims))


def find_idx_files(root: Path) -> dict[str, Path] | None:
    """The four IDX files under `root` (gzipped or not; also torchvision's `FashionMNIST/raw/`), or None."""
    for folder in (root, root / "FashionMNIST" / "raw"):
        found = {}
        for key, stem in FILES.items():
            for candidate in (folder / f"{stem}.gz", folder / stem):
                if candidate.is_file():
                    found[key] = candidate
                    break
        if len(found) == len(FILES):
            return found
    return None


class FashionMNISTDataModule(InMemoryDataModule):
    """Fashion-MNIST, 10 classes, 1 channel (3 with `rgb: true`), native 28x28; `augment` = crop + flip.

    Options: `root` (default /usr/share/datasets/fashion-mnist), `download` (torchvision, default false),
    `rgb`, plus the common ones (see `InMemoryDataModule`).
    """

    name = "fashion_mnist"
    native_size = 28

    def __init__(self, root: str | Path | None = None, download: bool = False, rgb: bool = False,
                 augment: bool = True, **options: Any) -> None:
        self.rgb = check_bool(rgb, "rgb")
        super().__init__(num_classes=10, in_chans=3 if self.rgb else 1, augment=augment, **options)
        self.root = check_path(root, "root") if root is not None else DEFAULT_ROOT
        self.download = check_bool(download, "download")
        self.mean, self.std = MEAN * self.in_chans, STD * self.in_chans
        self.files = find_idx_files(self.root)
        if self.files is None and not self.download:
            raise HybridlabError(
                f"fashion_mnist: IDX files not found in {self.root} (need "
                f"{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte.gz); install them with "
                f"`apt-get install -y dataset-fashion-mnist`, set data.root to a folder holding them, "
                f"or set data.download: true")

    def prepare_data(self) -> None:
        if self.files is not None:
            return
        from torchvision.datasets import FashionMNIST  # only needed for the download fallback

        try:
            for train in (True, False):
                FashionMNIST(str(self.root), train=train, download=True)
        except Exception as err:  # network or disk problems: one line for the user
            raise HybridlabError(f"fashion_mnist: download into {self.root} failed: {err}") from err
        self.files = find_idx_files(self.root)
        if self.files is None:
            raise HybridlabError(f"fashion_mnist: download finished but no IDX files were found in {self.root}")

    def _load(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.files is None:
            self.prepare_data()
        arrays = {key: read_idx(path) for key, path in self.files.items()}
        for split in ("train", "val"):
            images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
            if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
                raise HybridlabError(
                    f"fashion_mnist: {self.files[f'{split}_images']} holds {images.shape} images but "
                    f"{self.files[f'{split}_labels']} holds {labels.shape} labels")
            if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise HybridlabError(f"fashion_mnist: labels outside 0..9 in {self.files[f'{split}_labels']}")

        def images(a: np.ndarray) -> torch.Tensor:
            x = torch.from_numpy(a.astype(np.uint8, copy=True)).unsqueeze(1)
            return x.expand(-1, 3, -1, -1).contiguous() if self.rgb else x

        def labels(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(a.astype(np.int64))

        return (images(arrays["train_images"]), labels(arrays["train_labels"]),
                images(arrays["val_images"]), labels(arrays["val_labels"]))

    def _augment_args(self) -> dict[str, Any]:
        return {"crop_pad": max(1, self.img_size // 14), "hflip": True}

    def _extra_description(self) -> dict[str, Any]:
        return {"root": str(self.root), "rgb": self.rgb}
