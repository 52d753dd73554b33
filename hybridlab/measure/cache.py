"""A directory of measured records, so a study never measures an identical candidate twice on one machine.

Key parts are typically (architecture id, measurement profile, environment fingerprint); the file
name is a hash of their canonical JSON. Writes go to a temporary file in the same directory and
are moved into place atomically (hybridlab.atomic), so concurrent workers never see half a
file (two workers that miss at once both measure; the last write wins and both are valid).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar, Union

from hybridlab.atomic import atomic_write
from hybridlab.errors import ConfigError
from hybridlab.measure.record import MeasureRecord

Value = TypeVar("Value", bound=Union[MeasureRecord, Mapping[str, Any]])


def cache_key(key_parts: Mapping[str, Any]) -> str:
    """Stable hex digest of the key parts' canonical JSON."""
    try:
        blob = json.dumps(key_parts, sort_keys=True, separators=(",", ":"))
    except TypeError as exc:
        raise ConfigError(f"measurement cache key is not JSON-serialisable: {exc}", "measure.cache") from None
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def is_noisy(value: Any) -> bool:
    """True for a record (or its dict) that the contention guard marked noisy."""
    if isinstance(value, MeasureRecord):
        return bool(value.noisy)
    return isinstance(value, Mapping) and bool(value.get("noisy"))


class MeasureCache:
    """JSON files under `directory` (created on first use), one per key."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.hits = 0
        self.misses = 0

    def path(self, key_parts: Mapping[str, Any]) -> Path:
        return self.directory / f"{cache_key(key_parts)}.json"

    def get(self, key_parts: Mapping[str, Any]) -> MeasureRecord | dict[str, Any] | None:
        """The stored value, or None when absent or unreadable (a damaged file counts as a miss)."""
        path = self.path(key_parts)
        try:
            with open(path, encoding="utf-8") as fh:
                entry = json.load(fh)
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or entry.get("key_parts") != json.loads(json.dumps(key_parts)):
            return None  # hash collision or foreign file: never return someone else's figures
        value = entry.get("value")
        if is_noisy(value):
            return None  # never serve a figure taken under contention
        if entry.get("kind") == "MeasureRecord" and isinstance(value, dict):
            record = MeasureRecord.from_dict(value)
            record.cached = True
            return record
        return value

    def put(self, key_parts: Mapping[str, Any], value: MeasureRecord | Mapping[str, Any]) -> Path | None:
        """Store atomically (hybridlab.atomic.atomic_write); returns the file's path, or None for a
        noisy record (one taken under contention), which is never stored."""
        if is_noisy(value):
            return None
        is_record = isinstance(value, MeasureRecord)
        data = value.to_dict() if is_record else dict(value)
        if is_record:
            data["cached"] = False
        entry = {
            "key": cache_key(key_parts),
            "key_parts": key_parts,
            "kind": "MeasureRecord" if is_record else "dict",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "value": data,
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(key_parts)
        atomic_write(path, json.dumps(entry, indent=1, sort_keys=True, default=str))
        return path

    def get_or_measure(self, key_parts: Mapping[str, Any], fn: Callable[[], Value]) -> Value:
        """The cached value for `key_parts`, or `fn()` stored and returned. Records from the cache
        have `cached=True`; a noisy result is returned but not stored, so the next call measures again."""
        if not isinstance(key_parts, Mapping):
            raise ConfigError(f"key_parts must be a mapping, got {type(key_parts).__name__}", "measure.cache")
        hit = self.get(key_parts)
        if hit is not None:
            self.hits += 1
            return hit  # type: ignore[return-value]
        self.misses += 1
        value = fn()
        self.put(key_parts, value)
        return value

    def __len__(self) -> int:
        if not self.directory.is_dir():
            return 0
        return sum(1 for p in self.directory.glob("*.json"))


__all__ = ["MeasureCache", "cache_key", "is_noisy"]
