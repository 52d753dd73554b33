"""The image-folder pre-flight scan: corrupt, truncated and empty inputs are named before any trial starts."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hybridlab.errors import ConfigError, HybridlabError
from studies.data import check_data, make_datamodule
from studies.data.scan import scan_image_folder


def jpeg_bytes(seed: int, size: int = 24) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def make_folder(root: Path, classes=("cat", "dog"), per_class: int = 3) -> None:
    for split in ("train", "val"):
        for c, cls in enumerate(classes):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                (folder / f"{k}.jpg").write_bytes(jpeg_bytes(100 * c + k))


def test_clean_folder_passes_and_reports_counts(tmp_path):
    make_folder(tmp_path)
    report = scan_image_folder(tmp_path / "train")
    assert report.classes == ["cat", "dog"] and report.images == 6 and report.decoded == 6 and not report.problems
    make_datamodule("imagefolder", root=tmp_path).check()
    check_data({"name": "imagefolder", "root": str(tmp_path), "_num_classes": 2})


def test_truncated_jpeg_is_named(tmp_path):
    make_folder(tmp_path)
    bad = tmp_path / "train" / "dog" / "1.jpg"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) * 2 // 3])
    Image.open(bad).verify()  # PIL's verify alone does not notice the missing end
    with pytest.raises(HybridlabError) as err:
        make_datamodule("imagefolder", root=tmp_path, check_decode=0).check()  # found by its ending, no sampling
    message = str(err.value)
    assert "\n" not in message and f"first: {bad}:" in message and "1 bad entry" in message and "truncated" in message


def test_corrupt_jpeg_and_empty_class_are_counted(tmp_path):
    make_folder(tmp_path, classes=("cat", "dog", "fish"))
    corrupt = tmp_path / "val" / "cat" / "0.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0" + b"this is not image data" * 20)
    for path in (tmp_path / "val" / "fish").iterdir():
        path.unlink()
    (tmp_path / "val" / "fish" / "notes.txt").write_text("not an image")
    report = scan_image_folder(tmp_path / "val", raise_on_problem=False)
    assert [p for p, _ in report.problems] == [corrupt, tmp_path / "val" / "fish"]
    assert "no images" in report.problems[1][1]
    with pytest.raises(ConfigError) as err:
        check_data({"name": "imagefolder", "root": str(tmp_path)})
    message = str(err.value)
    assert message.startswith("data: image folder ") and "2 bad entries" in message and str(corrupt) in message
    assert "\n" not in message


def test_empty_file_and_sampled_decoding(tmp_path):
    make_folder(tmp_path, per_class=5)
    (tmp_path / "train" / "cat" / "3.jpg").write_bytes(b"")
    report = scan_image_folder(tmp_path / "train", decode_limit=4, raise_on_problem=False)
    assert report.images == 10 and report.decoded == 4
    assert report.problems == [(tmp_path / "train" / "cat" / "3.jpg", "empty file")]


def test_empty_class_folder_in_setup_is_one_line(tmp_path):
    make_folder(tmp_path)
    for path in (tmp_path / "train" / "dog").iterdir():
        path.unlink()
    dm = make_datamodule("imagefolder", root=tmp_path, img_size=16)
    with pytest.raises(HybridlabError) as err:
        dm.setup()
    assert "\n" not in str(err.value) and "dog" in str(err.value)


def test_cifar_image_folder_layout_is_scanned(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in range(10):
            folder = tmp_path / split / f"c{c}"
            folder.mkdir(parents=True)
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / "0.png")
    make_datamodule("cifar10", root=tmp_path).check()
    bad = tmp_path / "test" / "c4" / "0.png"
    bad.write_bytes(bad.read_bytes()[:-30])
    with pytest.raises(HybridlabError, match=f"first: {bad}"):
        make_datamodule("cifar10", root=tmp_path).check()


def test_clean_scan_is_remembered_until_a_file_changes(tmp_path):
    import studies.data.scan as scan

    make_folder(tmp_path)
    first = scan_image_folder(tmp_path / "train")
    assert scan_image_folder(tmp_path / "train") is first  # the same process does not scan twice
    bad = tmp_path / "train" / "cat" / "9.jpg"
    bad.write_bytes(b"junk")  # a new file: scanned again, and found
    with pytest.raises(HybridlabError, match="9.jpg"):
        scan_image_folder(tmp_path / "train")
    bad.unlink()
    assert scan_image_folder(tmp_path / "train") is first
    cut = tmp_path / "train" / "dog" / "0.jpg"
    cut.write_bytes(cut.read_bytes()[:200])  # changed in place (same name): scanned again, and found
    with pytest.raises(HybridlabError, match="0.jpg"):
        scan_image_folder(tmp_path / "train")
    assert all(report.problems == [] for report in scan._PASSED.values())  # only clean scans are kept
