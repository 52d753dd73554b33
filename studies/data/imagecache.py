"""Image-folder helpers: the size the images really have, and a decode-once in-memory cache.

`native_size` reads the headers of a few images per class (no decoding) so a folder of 64 px images trains at
64 px unless `img_size` says otherwise. `DecodedImages` decodes every image of an ImageFolder once, shrinks it so
its shorter side is at most `max_side` (the eval resize, computed as torchvision's Resize does, so evaluation sees
the same pixels as from the file), and keeps the RGB bytes; each epoch's timm transforms then start from those bytes instead of the JPEG.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from hybridlab.errors import HybridlabError
from studies.data.scan import class_folders, image_files

SIZE_PROBES_PER_CLASS = 4
SIZE_PROBES = 64


def probe_sizes(folder: Path, per_class: int = SIZE_PROBES_PER_CLASS, limit: int = SIZE_PROBES) -> list[tuple[int, int]]:
    """(width, height) of the first `per_class` images of each class folder, at most `limit`, from headers only."""
    from PIL import Image

    sizes: list[tuple[int, int]] = []
    for cls in class_folders(folder):
        for path in image_files(folder / cls)[:per_class]:
            try:
                with Image.open(path) as im:
                    sizes.append(im.size)
            except Exception:  # unreadable files are the pre-flight scan's business
                continue
            if len(sizes) >= limit:
                return sizes
    return sizes


def native_size(sizes: list[tuple[int, int]], cap: int = 224) -> int:
    """The training size the images suggest: the median shorter side, at most `cap` (224 for large photos)."""
    if not sizes:
        return cap
    return int(min(cap, statistics.median_low(min(w, h) for w, h in sizes)))


def size_note(folder: Path, sizes: list[tuple[int, int]], img_size: int) -> str | None:
    """One line when the images are not already img_size x img_size (they will be resized), else None."""
    if not sizes or all(size == (img_size, img_size) for size in sizes):
        return None
    unique = sorted(set(sizes))
    shown = f"{unique[0][0]}x{unique[0][1]}" if len(unique) == 1 else \
        f"from {unique[0][0]}x{unique[0][1]} to {unique[-1][0]}x{unique[-1][1]}"
    return f"note: images in {folder} are {shown} px; trials see them resized to {img_size} px (data.img_size)"


def _shrunk(image: Any, max_side: int) -> Any:
    from PIL import Image

    w, h = image.size
    short = min(w, h)
    if short <= max_side:
        return image
    long = int(max_side * max(w, h) / short)  # torchvision's Resize(int) rule, so the eval resize is a no-op
    size = (max_side, long) if w <= h else (long, max_side)
    return image.resize(size, Image.BILINEAR)


class DecodedImages(Dataset):
    """A torchvision ImageFolder's samples decoded once into RGB uint8 arrays; items are (transform(PIL), target)."""

    def __init__(self, folder_dataset: Any, max_side: int, transform: Any = None) -> None:
        from PIL import Image

        self.transform = transform
        self.targets = [t for _, t in folder_dataset.samples]
        self.arrays: list[np.ndarray] = []
        for path, _ in folder_dataset.samples:
            try:
                with Image.open(path) as im:
                    self.arrays.append(np.asarray(_shrunk(im.convert("RGB"), max_side), dtype=np.uint8))
            except OSError as err:
                raise HybridlabError(f"cannot read image {path}: {' '.join(str(err).split())}") from None

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays)

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        image = Image.fromarray(self.arrays[index])
        return (self.transform(image) if self.transform is not None else image), self.targets[index]
