"""Image-folder options: the image size taken from the data, the decode-once cache, and the crop range."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hybridlab.errors import ConfigError
from studies.data import make_datamodule
from studies.data.imagecache import DecodedImages


def make_folder(root: Path, size: tuple[int, int] | list[tuple[int, int]], per_class: int = 3) -> None:
    rng = np.random.default_rng(0)
    sizes = size if isinstance(size, list) else [size]
    for split in ("train", "val"):
        for cls in ("a", "b"):
            for k in range(per_class):
                w, h = sizes[k % len(sizes)]
                folder = root / split / cls
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{k}.png")


def test_img_size_comes_from_the_data(tmp_path, capsys):
    make_folder(tmp_path, (64, 64))
    dm = make_datamodule("imagefolder", root=tmp_path, batch_size=2)
    assert dm.img_size == 64 and dm.notes == [] and dm.describe()["image_sizes"] == ["64x64"]
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (2, 3, 64, 64)
    assert "note:" not in capsys.readouterr().err  # nothing resized, nothing said

    resized = make_datamodule("imagefolder", root=tmp_path, img_size=32, batch_size=2)
    resized.setup()
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"note: images in {tmp_path / 'train'} are 64x64 px; trials see them resized to 32 px (data.img_size)"]


def test_img_size_of_mixed_and_large_images(tmp_path):
    make_folder(tmp_path / "mixed", [(40, 50), (48, 48), (80, 60)])
    dm = make_datamodule("imagefolder", root=tmp_path / "mixed")
    assert dm.img_size == 48 and "from 40x50 to 80x60" in dm.notes[0]
    make_folder(tmp_path / "large", (300, 260), per_class=1)
    assert make_datamodule("imagefolder", root=tmp_path / "large").img_size == 224  # photos: the usual 224


def test_cache_decodes_once_and_matches_the_file_pipeline(tmp_path, capsys):
    make_folder(tmp_path, [(40, 40), (36, 44), (30, 33)], per_class=4)  # shrunk, shrunk, kept
    plain = make_datamodule("imagefolder", root=tmp_path, img_size=32, batch_size=4, drop_last=False)
    cached = make_datamodule("imagefolder", root=tmp_path, img_size=32, batch_size=4, drop_last=False, cache=True,
                             train_subset=6)
    plain.setup()
    cached.setup()
    assert isinstance(cached.train_set, DecodedImages) and len(cached.train_set) == 6 and len(cached.val_set) == 8
    assert "cache holds 14 decoded images" in capsys.readouterr().err
    expected = [x for x, _ in plain.val_dataloader()]
    for path in tmp_path.rglob("*.png"):  # every later epoch reads memory, not files
        path.unlink()
    for _ in range(2):
        assert [len(y) for _, y in cached.train_dataloader()] == [4, 2]
    got = [x for x, _ in cached.val_dataloader()]
    assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))  # same eval pixels as from the files


def test_cache_shrinks_large_images_to_the_eval_resize(tmp_path):
    make_folder(tmp_path, (120, 90), per_class=1)
    dm = make_datamodule("imagefolder", root=tmp_path, img_size=28, crop_pct=0.875, cache=True)
    dm.setup()
    assert {min(a.shape[:2]) for a in dm.train_set.arrays} == {32}  # floor(28 / 0.875)
    assert dm.train_set.arrays[0].shape == (32, 42, 3)  # aspect kept, long side as torchvision rounds it
    x, _ = dm.train_set[0]
    assert x.shape == (3, 28, 28)


def test_crop_scale_and_ratio_options(tmp_path):
    make_folder(tmp_path, (32, 32), per_class=1)
    dm = make_datamodule("imagefolder", root=tmp_path, scale=[0.5, 1.0], ratio=[0.9, 1.1])
    crop = dm.transforms(True).transforms[0]
    assert tuple(crop.scale) == (0.5, 1.0) and tuple(crop.ratio) == (0.9, 1.1)
    assert dm.describe()["scale"] == [0.5, 1.0]
    default = make_datamodule("imagefolder", root=tmp_path).transforms(True).transforms[0]
    assert tuple(default.scale) == (0.08, 1.0) and tuple(default.ratio) == pytest.approx((3 / 4, 4 / 3))
    for key, value, message in (("scale", [0.5], "data.scale: must be a list of 2 numbers"),
                                ("scale", [0.9, 0.1], "data.scale: must be 0 < low <= high"),
                                ("scale", [0.1, 1.5], "data.scale: must be <= 1.0"),
                                ("ratio", [0.0, 1.0], "data.ratio: must be 0 < low <= high"),
                                ("cache", "yes", "data.cache: must be true or false")):
        with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
            make_datamodule("imagefolder", root=tmp_path, **{key: value})
