"""Trial checkpoints that survive kills and full disks, and a resume that survives a bad checkpoint.

Writes go through `AtomicCheckpointIO`: the checkpoint is serialised into a temporary file in the same folder,
flushed to disk and moved over the old file with `os.replace`, so `best.ckpt` and `last.ckpt` are always
either the previous complete file or the new complete file. A full disk becomes one `DiskFullError` line
naming the folder. Loads use `weights_only=True` (checkpoints hold tensors and plain values only).

`resume_candidates` + `usable_checkpoint` pick what a resumed trial starts from (a file that loads and whose
records pass their CRC-32 check): the requested checkpoint, else an older one beside it (`last.ckpt`, then
`best.ckpt`), else nothing (train from scratch), with one line naming the skipped files and why.

`retain_checkpoints` applies a recipe's `checkpoints` policy once a trial has finished: the kept files are
rewritten (atomically) with the weights only, the others deleted. A weights-only file is marked so that a
resume skips it instead of failing in Lightning's restore.
"""

from __future__ import annotations

import contextlib
import errno
import os
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from hybridlab.atomic import atomic_write
from hybridlab.errors import HybridlabError, StudyHalt

LAST_CKPT = "last.ckpt"
BEST_NAME = "best"
BEST_CKPT = f"{BEST_NAME}.ckpt"
_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_REQUIRED_KEYS = ("state_dict", "epoch", "global_step")
WEIGHTS_ONLY_KEY = "hybridlab_weights_only"
# what a weights-only file keeps from a Lightning checkpoint: the weights and what says where they came from
_WEIGHT_KEYS = ("state_dict", "epoch", "global_step", "pytorch-lightning_version", "hyper_parameters")
_KEEP = {"best": (BEST_CKPT,), "last": (LAST_CKPT,), "both": (BEST_CKPT, LAST_CKPT),
         "full": (BEST_CKPT, LAST_CKPT), "none_after_finish": ()}


class DiskFullError(StudyHalt):
    """No space left (or quota reached) where a trial writes: every later trial would fail the same way."""


def is_disk_full(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in _FULL


def disk_full_error(folder: str | os.PathLike[str], err: OSError) -> DiskFullError:
    """The one line a user sees for a full disk: which folder, and what to do."""
    return DiskFullError(f"disk full while writing into {folder} ({err.strerror or err}); "
                         f"free some space there or set --results-dir elsewhere, then rerun to resume")


def _save(checkpoint: dict[str, Any], path: Path) -> None:
    with open(path, "wb") as handle:
        torch.save(checkpoint, handle)
        handle.flush()
        os.fsync(handle.fileno())


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO, but a write never leaves a partial file and a load never runs code."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        target = Path(path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(target, lambda tmp: _save(checkpoint, tmp))
        except OSError as err:
            if is_disk_full(err):
                raise disk_full_error(target.parent, err) from None
            raise

    def load_checkpoint(self, path: Any, map_location: Any = lambda storage, loc: storage,
                        weights_only: bool | None = None) -> dict[str, Any]:
        return super().load_checkpoint(path, map_location=map_location,
                                       weights_only=True if weights_only is None else weights_only)


def checkpoint_problem(path: Path) -> str | None:
    """Why `path` cannot be resumed from (missing, empty, truncated, corrupt, not a Lightning checkpoint), or None.

    The file is opened memory-mapped, then every record's CRC-32 is checked (one read of the file).
    """
    if not path.is_file():
        return "it does not exist"
    size = path.stat().st_size
    if size == 0:
        return "it is empty"
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # truncated zip, garbage, unpickling refused: all mean "cannot resume from it"
        reason = " ".join(str(err).split())[:160] or type(err).__name__
        return f"it cannot be read ({size:,} bytes; {reason})"
    if not isinstance(data, dict) or any(key not in data for key in _REQUIRED_KEYS):
        return "it is not a training checkpoint"
    if data.get(WEIGHTS_ONLY_KEY):
        return "it holds weights only (its trial had finished)"
    return _crc_problem(path)


def _crc_problem(path: Path) -> str | None:
    """torch's zip format stores a CRC-32 per record but `torch.load` never checks it: flipped bytes inside
    a tensor load silently. Reading the records back through `zipfile` does check them."""
    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        return f"it cannot be read ({' '.join(str(err).split())[:160]})"
    return f"it is corrupt (checksum mismatch in {bad})" if bad is not None else None


def resume_candidates(resume_from: str | os.PathLike[str] | None, root: Path) -> list[Path]:
    """The files a resume may start from, best first.

    "last" (or "auto"): root/last.ckpt then root/best.ckpt. An explicit path: that file, then last.ckpt and
    best.ckpt beside it. None: nothing.
    """
    if resume_from is None:
        return []
    if str(resume_from) in ("last", "auto"):
        folder, first = root, root / LAST_CKPT
    else:
        first = Path(resume_from)
        folder = first.parent
    out: list[Path] = []
    for path in (first, folder / LAST_CKPT, folder / BEST_CKPT):
        if path not in out:
            out.append(path)
    return out


def usable_checkpoint(candidates: Iterable[Path], echo: Callable[[str], None] | None = None,
                      explicit: bool = False) -> tuple[Path | None, str | None]:
    """The first candidate that loads, and one line naming the unusable files skipped on the way (or None).

    Missing files are skipped silently, except when `explicit` names a first file that does not exist (a
    mistyped path is an error, not a fallback).
    """
    candidates = list(candidates)
    if explicit and candidates and not candidates[0].exists():
        raise HybridlabError(f"cannot resume: checkpoint {candidates[0]} does not exist")
    skipped: list[str] = []
    chosen: Path | None = None
    for path in candidates:
        if not path.exists():
            continue
        problem = checkpoint_problem(path)
        if problem is None:
            chosen = path
            break
        skipped.append(f"{path} is unusable ({problem})")
    if not skipped:
        return chosen, None
    then = f"resuming from {chosen} instead" if chosen is not None else "training from scratch"
    note = f"warning: checkpoint {'; '.join(skipped)}; {then}"
    if echo is not None:
        echo(note)
    return chosen, note


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete temporary checkpoint files a killed write left in `folder` (`.last.ckpt.*.tmp` and the like)."""
    removed = []
    if not folder.is_dir():
        return removed
    for path in folder.glob(".*.ckpt.*.tmp"):
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path)
    return removed


def strip_to_weights(path: Path) -> Path:
    """Rewrite checkpoint `path` in place (atomically) without optimizer, scheduler, loop or callback state."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    if data.get(WEIGHTS_ONLY_KEY):
        return path
    kept = {key: data[key] for key in _WEIGHT_KEYS if key in data}
    kept[WEIGHTS_ONLY_KEY] = True
    try:
        atomic_write(path, lambda tmp: _save(kept, tmp))
    except OSError as err:
        if is_disk_full(err):
            raise disk_full_error(path.parent, err) from None
        raise
    return path


def retain_checkpoints(root: Path, policy: str) -> dict[str, Path | None]:
    """Apply `policy` (a `TrainRecipe.checkpoints` value) to a finished trial's folder `root`.

    Returns {"best": path or None, "last": path or None}: the checkpoint files that remain.
    """
    if policy not in _KEEP:
        raise ValueError(f"unknown checkpoint policy {policy!r}")
    keep = _KEEP[policy]
    if keep and not any((root / name).is_file() for name in keep):  # e.g. no best: no validation ever ran
        keep = (LAST_CKPT,)
    out: dict[str, Path | None] = {}
    for key, name in (("best", BEST_CKPT), ("last", LAST_CKPT)):
        path = root / name
        if not path.is_file():
            out[key] = None
        elif name not in keep:
            path.unlink()
            out[key] = None
        else:
            if policy != "full":
                strip_to_weights(path)
            out[key] = path
    return out
