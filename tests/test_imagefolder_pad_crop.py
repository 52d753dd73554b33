"""CIFAR-style pad-and-crop augmentation for image folders: shifted copies of the image with zero borders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hybridlab.errors import ConfigError
from studies.data import make_datamodule


def make_folder(root, side: int = 16) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("a", "b"):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(2):
                Image.fromarray(rng.integers(1, 256, (side, side, 3), dtype=np.uint8)).save(folder / f"{k}.png")


def test_pad_crop_shifts_the_image_inside_a_zero_border(tmp_path):
    make_folder(tmp_path)
    dm = make_datamodule("imagefolder", root=tmp_path, augment="pad_crop", hflip=0.0, mean=[0, 0, 0], std=[1, 1, 1])
    assert (dm.img_size, dm.padding, dm.crop_pct) == (16, 4, 1.0)  # eval sees the image as it is
    assert dm.describe()["augment"] == "pad_crop"
    dm.setup()
    assert dm.val_set[0][0].shape == (3, 16, 16)
    original = torch.from_numpy(np.array(Image.open(tmp_path / "train" / "a" / "0.png"))).permute(2, 0, 1) / 255.0
    assert bool((original > 0).all())
    torch.manual_seed(0)
    views = [dm.train_set[0][0] for _ in range(30)]
    shifts = set()
    for view in views:
        assert view.shape == (3, 16, 16)
        inside = (view > 0).all(dim=0)  # the padding is zero, every source pixel is > 0
        rows, cols = inside.any(dim=1).nonzero().squeeze(1), inside.any(dim=0).nonzero().squeeze(1)
        top, left = int(rows[0]), int(cols[0])
        bottom, right = int(rows[-1]), int(cols[-1])
        dy = top if top > 0 else bottom - 15  # where the image moved to: at most 4 px either way
        dx = left if left > 0 else right - 15
        assert abs(dy) <= 4 and abs(dx) <= 4
        # the visible part is the original, shifted
        src = original[:, max(0, -dy):16 - max(0, dy), max(0, -dx):16 - max(0, dx)]
        dst = view[:, max(0, dy):16 - max(0, -dy), max(0, dx):16 - max(0, -dx)]
        assert torch.allclose(src, dst)
        shifts.add((dy, dx))
    assert len(shifts) > 5  # random, not one fixed crop


def test_pad_crop_options_are_checked(tmp_path):
    make_folder(tmp_path)
    timm = make_datamodule("imagefolder", root=tmp_path)
    assert timm.augment == "timm" and timm.crop_pct == 0.875  # the default pipeline is unchanged
    with pytest.raises(ConfigError, match="data.augment: must be one of timm, pad_crop"):
        make_datamodule("imagefolder", root=tmp_path, augment="cutout")
    with pytest.raises(ConfigError, match="data.auto_augment: auto_augment needs augment: timm"):
        make_datamodule("imagefolder", root=tmp_path, augment="pad_crop", auto_augment="rand-m9")
    with pytest.raises(ConfigError, match="data.padding"):
        make_datamodule("imagefolder", root=tmp_path, augment="pad_crop", padding=-1)
