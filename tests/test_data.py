"""Data modules on tiny files written in tmp_path, and the global_marks generator (rule, determinism, balance, reuse)."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from hybridlab.errors import ConfigError, HybridlabError
from studies.data import DATASETS, DEFAULT_DATASET, dataset_options, make_datamodule
from studies.data.base import EpochShuffleSampler, SeededDataModule, random_crop_flip, seeded_subset
from studies.data.cifar import CIFAR10DataModule, CIFAR100DataModule
from studies.data.fashion_mnist import DEFAULT_ROOT, read_idx
from studies.data.global_marks import CANVAS, TILE, alphabet, generate

# -- helpers -------------------------------------------------------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX format: 0 0 0x08 ndim, big-endian int32 dims, uint8 data; gzipped when the name ends in .gz."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def write_fashion(root: Path, n_train: int = 24, n_val: int = 10, gz: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_val, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_val) * 3 % 10).astype(np.uint8),
    }
    root.mkdir(parents=True, exist_ok=True)
    for name, a in arrays.items():
        write_idx(root / (name + (".gz" if gz else "")), a)
    return arrays


def write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def first_batch(dm):
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


# -- registry ------------------------------------------------------------------------------------------------------------


def test_registry_names_and_default():
    assert DEFAULT_DATASET == "global_marks"
    assert set(DATASETS) == {"global_marks", "fashion_mnist", "cifar10", "cifar100", "imagefolder", "synthetic"}
    for name in DATASETS:
        opts = dataset_options(name)
        assert {"batch_size", "num_workers", "seed", "train_subset", "img_size"} <= set(opts), name


def test_registry_rejects_unknown_dataset_and_option():
    with pytest.raises(ConfigError, match="data.name: unknown dataset 'mnist'"):
        make_datamodule("mnist")
    with pytest.raises(ConfigError, match="data.colour: unknown option 'colour' for dataset 'synthetic'"):
        make_datamodule("synthetic", colour=True)
    with pytest.raises(ConfigError, match="data.batch_size: must be >= 1"):
        make_datamodule("synthetic", batch_size=0)
    with pytest.raises(ConfigError, match="data.train_subset: must be an integer"):
        make_datamodule("synthetic", train_subset="ten")


# -- fashion_mnist ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_reads_idx_files(tmp_path, gz):
    arrays = write_fashion(tmp_path, gz=gz)
    dm = make_datamodule("fashion_mnist", root=str(tmp_path), batch_size=8, augment=False)
    assert (dm.num_classes, dm.in_chans, dm.img_size) == (10, 1, 28)
    dm.setup("fit")
    assert torch.equal(dm.train_set.images[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    assert torch.equal(dm.val_set.labels, torch.from_numpy(arrays["t10k-labels-idx1-ubyte"]).long())
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (8, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    expected = (torch.from_numpy(arrays["t10k-images-idx3-ubyte"][:8]).float() / 255 - 0.2860) / 0.3530
    torch.testing.assert_close(x[:, 0], expected)
    info = dm.describe()
    assert info["num_train"] == 24 and info["num_val"] == 10 and info["root"] == str(tmp_path)


def test_fashion_mnist_resize_rgb_subset_and_augment(tmp_path):
    write_fashion(tmp_path)
    dm = make_datamodule("fashion_mnist", root=tmp_path, batch_size=4, img_size=32, rgb=True, train_subset=10, seed=3)
    assert (dm.in_chans, dm.img_size) == (3, 32)
    x, y = first_batch(dm)
    assert x.shape == (4, 3, 32, 32)
    assert len(dm.train_set) == 10 and len(dm.val_set) == 10
    again = make_datamodule("fashion_mnist", root=tmp_path, train_subset=10, seed=3)
    again.setup()
    assert torch.equal(again.train_set.labels, dm.train_set.labels)
    other = make_datamodule("fashion_mnist", root=tmp_path, train_subset=10, seed=4)
    other.setup()
    assert not torch.equal(other.train_set.images, dm.train_set.images)


def test_fashion_mnist_missing_files_is_one_clear_line(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(HybridlabError) as err:
        make_datamodule("fashion_mnist", root=str(missing))
    msg = str(err.value)
    assert "\n" not in msg
    assert str(missing) in msg and "apt-get install -y dataset-fashion-mnist" in msg and "download" in msg


def test_read_idx_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad-idx1-ubyte"
    bad.write_bytes(b"\x12\x34\x56\x78rest")
    with pytest.raises(HybridlabError, match="not an IDX file"):
        read_idx(bad)
    short = tmp_path / "short-idx1-ubyte"
    short.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">i", 10) + bytes(4))
    with pytest.raises(HybridlabError, match="truncated"):
        read_idx(short)


@pytest.mark.skipif(not DEFAULT_ROOT.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_fashion_mnist_system_package():
    dm = make_datamodule("fashion_mnist", val_subset=100)
    dm.setup()
    assert len(dm.train_set) == 60000 and len(dm.val_set) == 100
    assert torch.bincount(dm.train_set.labels).tolist() == [6000] * 10


# -- cifar -------------------------------------------------------------------------------------------------------------------


def _cifar_batch(n: int, label_key: bytes, num_classes: int, offset: int) -> dict:
    rng = np.random.default_rng(offset)
    return {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            label_key: [int(v) for v in (np.arange(n) + offset) % num_classes]}


def _trust(monkeypatch, module, folder: Path) -> None:
    """Make the small test pickles in `folder` the published ones (their MD5 sums become the expected sums)."""
    sums = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}
    monkeypatch.setattr(module, "expected_md5", lambda self: sums)


def test_cifar10_pickles(tmp_path, monkeypatch):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = {f"data_batch_{i}": _cifar_batch(4, b"labels", 10, i) for i in range(1, 6)}
    batches["test_batch"] = _cifar_batch(6, b"labels", 10, 9)
    for name, batch in batches.items():
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    _trust(monkeypatch, CIFAR10DataModule, folder)
    dm = make_datamodule("cifar10", root=tmp_path, batch_size=4)
    assert (dm.num_classes, dm.in_chans, dm.img_size) == (10, 3, 32)
    x, y = first_batch(dm)
    assert x.shape == (4, 3, 32, 32)
    assert len(dm.train_set) == 20 and len(dm.val_set) == 6
    assert torch.equal(dm.train_set.images[:4].reshape(4, -1), torch.from_numpy(batches["data_batch_1"][b"data"]))
    assert dm.train_set.labels[:4].tolist() == batches["data_batch_1"][b"labels"]
    assert dm.describe()["layout"] == "pickle"
    # root may also be the batches folder itself
    assert make_datamodule("cifar10", root=folder).layout == "pickle"


def test_cifar100_pickles_use_fine_labels(tmp_path, monkeypatch):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name, n in (("train", 8), ("test", 4)):
        batch = _cifar_batch(n, b"fine_labels", 100, 37)
        batch[b"coarse_labels"] = [0] * n
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    _trust(monkeypatch, CIFAR100DataModule, folder)
    dm = make_datamodule("cifar100", root=tmp_path)
    dm.setup()
    assert dm.num_classes == 100
    assert dm.train_set.labels.tolist() == [(37 + i) % 100 for i in range(8)]


class _RunsCode:
    """Unpickling this creates the file `marker`: what a tampered dataset file could do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_cifar_tampered_pickle_is_refused_before_unpickling(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "code-ran"
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = _cifar_batch(2, b"labels", 10, 0)
        batch[b"extra"] = _RunsCode(marker)
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    dm = make_datamodule("cifar10", root=tmp_path)  # finding the files reads nothing
    with pytest.raises(HybridlabError) as err:
        dm.setup()
    message = str(err.value)
    assert not marker.exists()  # the pickle never ran
    assert "\n" not in message and str(folder / "data_batch_1") in message and "checksum" in message
    with pytest.raises(HybridlabError, match="checksum"):
        dm.check()  # --check and the pre-flight find it too
    assert not marker.exists()
    assert CIFAR10DataModule(root=tmp_path).expected_md5()["test_batch"] == "40351d587109b95175f43aff81a1287e"


def test_cifar10_imagefolder_layout(tmp_path):
    rng = np.random.default_rng(0)
    classes = [f"c{i}" for i in range(10)]
    for split, per_class in (("train", 2), ("test", 1)):
        for cls in classes:
            for k in range(per_class):
                write_png(tmp_path / split / cls / f"{k}.png", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    dm = make_datamodule("cifar10", root=tmp_path, batch_size=5, augment=False)
    assert dm.layout == "imagefolder"
    dm.setup()
    assert len(dm.train_set) == 20 and len(dm.val_set) == 10
    assert dm.val_set.labels.tolist() == list(range(10))  # sorted class folders -> 0..9
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (5, 3, 32, 32)


def test_cifar_missing_is_one_clear_line(tmp_path):
    with pytest.raises(HybridlabError) as err:
        make_datamodule("cifar10", root=tmp_path / "void")
    msg = str(err.value)
    assert "\n" not in msg and str((tmp_path / "void").resolve()) in msg and "download" in msg


# -- imagefolder -------------------------------------------------------------------------------------------------------------


def test_imagefolder_with_timm_transforms(tmp_path):
    rng = np.random.default_rng(1)
    for split, per_class in (("train", 4), ("val", 2)):
        for cls in ("cat", "dog", "fish"):
            for k in range(per_class):
                write_png(tmp_path / split / cls / f"{k}.png", rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    dm = make_datamodule("imagefolder", root=tmp_path, img_size=32, batch_size=4, train_subset=8)
    assert (dm.num_classes, dm.in_chans, dm.img_size) == (3, 3, 32)
    x, y = first_batch(dm)
    assert x.shape == (4, 3, 32, 32) and y.dtype == torch.int64
    assert len(dm.train_set) == 8 and len(dm.val_set) == 6
    xv, yv = next(iter(dm.val_dataloader()))
    assert xv.shape == (4, 3, 32, 32) and yv.tolist() == [0, 0, 1, 1]
    assert dm.describe()["val_dir"] == "val"


def test_imagefolder_errors(tmp_path):
    with pytest.raises(ConfigError, match="data.root"):
        make_datamodule("imagefolder")
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(HybridlabError, match="needs train/<class>/ and val/<class>/"):
        make_datamodule("imagefolder", root=tmp_path)


# -- synthetic and shared pieces ----------------------------------------------------------------------------------------------


def test_synthetic_is_seeded_and_configurable():
    a = make_datamodule("synthetic", num_train=64, num_val=32, num_classes=4, img_size=8, in_chans=2, batch_size=16)
    b = make_datamodule("synthetic", num_train=64, num_val=32, num_classes=4, img_size=8, in_chans=2, batch_size=16)
    xa, ya = first_batch(a)
    xb, yb = first_batch(b)
    assert xa.shape == (16, 2, 8, 8) and torch.equal(xa, xb) and torch.equal(ya, yb)
    assert torch.bincount(a.train_set.labels).tolist() == [16] * 4
    c = make_datamodule("synthetic", num_train=64, num_val=32, num_classes=4, img_size=8, in_chans=2, data_seed=1)
    c.setup()
    assert not torch.equal(c.train_set.images, a.train_set.images)


def test_epoch_shuffle_sampler_depends_on_seed_and_epoch():
    s = EpochShuffleSampler(50, seed=1)
    first, second = list(s), list(s)  # epoch advances by itself
    assert sorted(first) == list(range(50)) and first != second
    s.set_epoch(0)
    assert list(s) == first
    assert list(EpochShuffleSampler(50, seed=2)) != first
    assert seeded_subset(10, None, 0) is None and seeded_subset(10, 20, 0) is None
    assert torch.equal(seeded_subset(100, 7, 5), seeded_subset(100, 7, 5))


def test_random_crop_flip_keeps_content():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    torch.manual_seed(0)
    y = random_crop_flip(x, pad=0, hflip=True)
    for i in range(2):
        assert torch.equal(y[i], x[i]) or torch.equal(y[i], x[i].flip(-1))
    z = random_crop_flip(x, pad=2, hflip=False)
    assert z.shape == x.shape
    for i in range(2):  # every crop is a shifted window of the zero-padded image
        padded = torch.nn.functional.pad(x[i], (2, 2, 2, 2))
        assert any(torch.equal(z[i], padded[:, r:r + 4, c:c + 4]) for r in range(5) for c in range(5))


# -- global_marks --------------------------------------------------------------------------------------------------------------


def test_global_marks_follows_its_rule():
    n, k = 300, 10
    images, labels, meta = generate(n, 7, num_classes=k, return_meta=True)
    assert images.shape == (n, 3, CANVAS, CANVAS) and images.dtype == np.uint8
    glyphs, cells, corners = meta["glyphs"], meta["cells"], meta["top_left"]
    assert (glyphs[:, 0] == glyphs[:, 1]).all() and (glyphs[:, 2] != glyphs[:, 0]).all()
    assert (labels == glyphs[:, 2]).all()  # label = the odd glyph
    rows, cols = cells // 3, cells % 3
    assert (np.maximum(abs(rows[:, 0] - rows[:, 1]), abs(cols[:, 0] - cols[:, 1])) == 2).all()  # pair far apart
    assert all(len(set(c)) == 3 for c in cells.tolist())
    table = alphabet(k)
    for i in range(20):  # the pixels show the glyphs: lit where the glyph is on, black elsewhere in the tile
        for m in range(3):
            y0, x0 = corners[i, m]
            tile = images[i, :, y0:y0 + TILE, x0:x0 + TILE].max(axis=0)
            assert (tile[1:6, 1:6] > 0) .tolist() == table[glyphs[i, m]].astype(bool).tolist()
            assert tile[0].max() == 0 and tile[-1].max() == 0 and tile[:, 0].max() == 0 and tile[:, -1].max() == 0
    assert np.unique(alphabet(16).reshape(16, -1), axis=0).shape[0] == 16


def test_global_marks_determinism_balance_and_fixed_val():
    a = make_datamodule("global_marks", num_train=3000, num_val=500, batch_size=64)
    b = make_datamodule("global_marks", num_train=3000, num_val=500, batch_size=64, seed=5, train_subset=1000)
    c = make_datamodule("global_marks", num_train=3000, num_val=500, data_seed=1)
    for dm in (a, b, c):
        dm.setup()
    assert torch.equal(a.val_set.images, b.val_set.images)  # validation fixed whatever seed / subset
    assert not torch.equal(a.val_set.images, c.val_set.images)
    assert len(b.train_set) == 1000
    x1, y1 = generate(400, (3, 0))
    x2, y2 = generate(400, (3, 0))
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    counts = torch.bincount(a.train_set.labels, minlength=10)
    assert counts.min() >= 0.8 * 300 and counts.max() <= 1.2 * 300, counts.tolist()
    noisy = generate(2000, 0, label_noise=0.5, return_meta=True)
    agree = (noisy[1] == noisy[2]["glyphs"][:, 2]).mean()
    assert 0.45 < agree < 0.65  # half replaced by a uniform class (1/10 of those land on the right one)


def test_global_marks_options_and_resize():
    dm = make_datamodule("global_marks", num_train=64, num_val=32, img_size=64, num_classes=5, batch_size=16)
    assert (dm.num_classes, dm.in_chans, dm.img_size) == (5, 3, 64)
    x, y = first_batch(dm)
    assert x.shape == (16, 3, 64, 64) and int(y.max()) < 5
    raw, _ = generate(64, (0, 0), num_classes=5)
    assert torch.equal(dm.train_set.images[:, :, ::2, ::2], torch.from_numpy(raw))  # nearest x2 keeps pixels
    with pytest.raises(ConfigError, match="data.num_classes"):
        make_datamodule("global_marks", num_classes=40)
    with pytest.raises(ConfigError, match="data.augment"):
        make_datamodule("global_marks", augment=True)
    info = dm.describe()
    assert info["name"] == "global_marks" and info["num_val"] == 32 and "rule" in info


@pytest.mark.slow
def test_global_marks_default_split_is_generated_once_per_process():
    """A study trains many models on one split: later data modules reuse the generated tensors, not a copy."""
    a = make_datamodule("global_marks")
    b = make_datamodule("global_marks", seed=3)  # another shuffle seed, the same images
    a.setup()
    b.setup()
    assert a.train_set.images.shape == (20000, 3, 32, 32) and a.train_set.images.dtype == torch.uint8
    assert b.train_set.images.data_ptr() == a.train_set.images.data_ptr()  # shared, not regenerated
    assert set(a.train_set.labels.unique().tolist()) == set(range(10))


def test_every_data_module_shares_the_seeded_loaders(tmp_path):
    """The in-memory and the image-folder modules take the same loader options and draw the same order."""
    for split, per_class in (("train", 5), ("val", 2)):
        for cls in ("a", "b"):
            for k in range(per_class):
                write_png(tmp_path / split / cls / f"{k}.png", np.full((8, 8, 3), 10 * k, dtype=np.uint8))
    options = dict(batch_size=4, seed=7, train_subset=6, val_subset=3, drop_last=False)
    folder = make_datamodule("imagefolder", root=tmp_path, img_size=8, **options)
    memory = make_datamodule("synthetic", num_train=10, num_val=4, num_classes=2, img_size=8, **options)
    for dm in (folder, memory):
        assert isinstance(dm, SeededDataModule)
        dm.setup()
    assert len(folder.train_set) == len(memory.train_set) == 6 and len(folder.val_set) == len(memory.val_set) == 3
    assert folder.train_set.indices == seeded_subset(10, 6, 7).tolist()  # the same seeded subset rule
    orders = [list(dm.train_dataloader().sampler) for dm in (folder, memory)]
    assert orders[0] == orders[1] == list(EpochShuffleSampler(6, 7))
    for dm in (folder, memory):
        dm.shuffle_seed = 11  # what train_and_evaluate sets: the trial seed drives the order, not the subset
        assert list(dm.train_dataloader().sampler) == list(EpochShuffleSampler(6, 11))
        assert [len(y) for _, y in dm.train_dataloader()] == [4, 2] and dm.describe()["shuffle_seed"] == 11
    with pytest.raises(ConfigError, match="data.val_batch_size: must be >= 1"):
        make_datamodule("imagefolder", root=tmp_path, val_batch_size=0)
