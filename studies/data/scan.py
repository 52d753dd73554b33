"""Pre-flight scan of an image folder (`folder/<class>/*.jpg`): a broken file fails here, not in every trial.

Every class folder must hold at least one image (torchvision's ImageFolder refuses empty ones). Every file is
opened and `verify()`-ed by PIL (header and, for PNG, the chunk checksums) and its ending checked (a JPEG ends
with the EOI marker, a PNG with IEND), which finds most truncated files without decoding them. A full decode
(`load()`) confirms a suspicious ending and is also run on an evenly spread sample of `decode_limit` files
(None = all), so the scan stays fast on ImageNet-sized folders. The error names the first bad file and the count.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from hybridlab.errors import HybridlabError

# torchvision's ImageFolder extensions: the files a trial would load.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
DEFAULT_DECODE_LIMIT = 1000


@dataclass
class ScanReport:
    """What a scan saw: class folders, image files, how many were fully decoded, and the problems found."""

    folder: Path
    classes: list[str] = field(default_factory=list)
    images: int = 0
    decoded: int = 0
    problems: list[tuple[Path, str]] = field(default_factory=list)


def class_folders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def image_files(folder: Path) -> list[Path]:
    """The files under `folder` (recursively) that ImageFolder would load, sorted."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _tail_ok(path: Path) -> bool:
    """Whether the file ends as a complete JPEG / PNG does (other formats: assumed fine)."""
    suffix = path.suffix.lower()
    if suffix not in (".jpg", ".jpeg", ".png"):
        return True
    with open(path, "rb") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        handle.seek(max(0, size - 64))
        tail = handle.read()
    if suffix == ".png":
        return b"IEND" in tail[-12:]
    return tail.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9")


def _problem(path: Path, decode: bool) -> str | None:
    from PIL import Image

    try:
        if path.stat().st_size == 0:
            return "empty file"
        with Image.open(path) as im:
            im.verify()
        if decode or not _tail_ok(path):
            with Image.open(path) as im:
                im.load()
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError... for broken files
        return " ".join(str(err).split())[:120] or type(err).__name__
    return None


_PASSED: dict[str, ScanReport] = {}


def _fingerprint(root: Path, classes: list[str], files: list[Path], decode_limit: int | None) -> str:
    """What a clean scan depends on: the class folders and every file's name, size and modification time."""
    digest = hashlib.sha256(f"{root.resolve()}|{decode_limit}|{classes}".encode())
    for path in files:
        stat = path.stat()
        digest.update(f"|{path}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def scan_image_folder(folder: str | Path, decode_limit: int | None = DEFAULT_DECODE_LIMIT,
                      raise_on_problem: bool = True) -> ScanReport:
    """Check every class folder and image file under `folder`; raise one HybridlabError line naming the first
    problem and the count (or, with `raise_on_problem=False`, return them in the report).

    A clean result is remembered for the process while no file changes (name, size, modification time), so the
    study check and the run's pre-flight do not open every image of a large folder twice.
    """
    root = Path(folder)
    report = ScanReport(root)
    if not root.is_dir():
        raise HybridlabError(f"image folder {root} does not exist")
    report.classes = class_folders(root)
    if not report.classes:
        raise HybridlabError(f"image folder {root} has no class folders (expected {root}/<class>/<image>)")
    files: list[Path] = []
    for cls in report.classes:
        found = image_files(root / cls)
        if not found:
            report.problems.append((root / cls, f"class folder has no images ({', '.join(IMAGE_SUFFIXES)})"))
        files.extend(found)
    report.images = len(files)
    key = _fingerprint(root, report.classes, files, decode_limit)
    if key in _PASSED:
        return _PASSED[key]
    if decode_limit is None or decode_limit >= len(files):
        sample = set(range(len(files)))
    else:
        step = len(files) / max(1, decode_limit)
        sample = {int(i * step) for i in range(decode_limit)}
    for index, path in enumerate(files):
        decode = index in sample
        report.decoded += decode
        problem = _problem(path, decode)
        if problem is not None:
            report.problems.append((path, problem))
    report.problems.sort(key=lambda item: item[0].parts)
    if report.problems and raise_on_problem:
        first, why = report.problems[0]
        more = len(report.problems) - 1
        raise HybridlabError(f"image folder {root}: {len(report.problems)} bad entr{'y' if not more else 'ies'}; "
                             f"first: {first}: {why}")
    if not report.problems:
        _PASSED[key] = report
    return report
