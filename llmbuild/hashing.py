"""Content digests: files, folders and JSON keys, with a stat cache so unchanged files are not re-read.

The stat cache (DVC's habit) maps (path, size, mtime, inode) to the file's sha256, so a rebuild over a
1 GB local checkpoint costs a few stat calls instead of a second of hashing. All digests are full
sha256 hex strings.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import uuid
from pathlib import Path

_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_json(obj) -> str:
    """Digest of a JSON-able object, stable across runs (sorted keys, no whitespace)."""
    return sha256_bytes(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode())


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


class StatCache:
    """sha256 of files, remembered by (size, mtime_ns, inode) in a JSON file."""

    def __init__(self, path: Path | None, readonly: bool = False):
        self.path = path
        self.readonly = readonly  # a dry run's: digests are computed, nothing is saved beside the cache
        self._lock = threading.Lock()
        self._data: dict[str, list] = {}
        self._dirty = False
        if path and path.exists():
            try:
                self._data = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                self._data = {}  # a damaged stat cache only costs re-hashing

    def digest(self, path: Path) -> str:
        path = Path(path).resolve()
        st = path.stat()
        sig = [st.st_size, st.st_mtime_ns, st.st_ino]
        with self._lock:
            hit = self._data.get(str(path))
        if hit and hit[:3] == sig:
            return hit[3]
        d = sha256_file(path)
        with self._lock:
            self._data[str(path)] = [*sig, d]
            self._dirty = True
        return d

    def save(self) -> None:
        if not (self.path and self._dirty) or self.readonly:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # unique per process and machine: builds sharing a cache save at the same time (the last one wins,
        # which only costs the others a re-hash)
        tmp = self.path.with_suffix(f".{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            tmp.write_text(json.dumps(self._data))
            os.replace(tmp, self.path)
        except OSError:
            tmp.unlink(missing_ok=True)
            return
        self._dirty = False


def file_entries(root: Path, stat_cache: StatCache | None = None) -> dict[str, dict]:
    """relative path -> {"sha256", "size"} for every file under root (symlinks followed)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            d = stat_cache.digest(p) if stat_cache else sha256_file(p)
            out[p.relative_to(root).as_posix()] = {"sha256": d, "size": p.stat().st_size}
    return out


def tree_digest(entries: dict[str, dict]) -> str:
    """One digest for a set of files, from their relative paths and digests."""
    return sha256_json({k: v["sha256"] for k, v in entries.items()})
