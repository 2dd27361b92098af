"""The content-addressed stage cache: one folder per (stage kind, key), committed by atomic rename.

Layout under the cache root:
    stages-v<FORMAT>/<kind>/<key[:2]>/<key>/record.json   what the stage returned, plus its files' digests
                                                (`out_files`, `outputs_digest`: reserved keys)
    stages-v<FORMAT>/<kind>/<key[:2]>/<key>/out/          the files it wrote
    tmp/                                        stages in progress; removed when they fail
A stage runs in tmp/ and is renamed into place only when it finished, so a build killed at any
moment (Ctrl-C, kill -9) leaves no entry a later build could mistake for a result; leftovers in tmp/
are swept at the next start. This is DVC's run-cache habit.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from llmbuild.hashing import StatCache, file_entries, tree_digest

# bump when record.json's reserved keys or the layout change: older entries are then never looked up
FORMAT = 2
# tmp folders older than this belong to dead builds
_STALE_TMP_SECONDS = 24 * 3600


@dataclass
class Entry:
    kind: str
    key: str
    dir: Path  # the entry folder
    record: dict

    @property
    def out(self) -> Path:
        return self.dir / "out"

    @property
    def digest(self) -> str:
        """Digest of the entry's outputs: what downstream keys are made of."""
        return self.record["outputs_digest"]

    @property
    def files(self) -> dict[str, dict]:
        return self.record["out_files"]


class Cache:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.stat_cache = StatCache(self.root / "statcache.json")
        self._sweep_tmp()

    def _entry_dir(self, kind: str, key: str) -> Path:
        return self.root / f"stages-v{FORMAT}" / kind / key[:2] / key

    def lookup(self, kind: str, key: str) -> Entry | None:
        d = self._entry_dir(kind, key)
        try:
            record = json.loads((d / "record.json").read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return Entry(kind, key, d, record)

    def run(self, kind: str, key: str, fn: Callable[[Path], dict], commit: bool = True) -> Entry:
        """Run fn(out_dir) in a temporary folder and commit its outputs under (kind, key).

        commit=False runs it the same way but keeps the result out of the cache (for results that
        must not be reused, e.g. a verification skipped because its runtime is missing).
        """
        tmp = self.root / "tmp" / f"{kind}-{key[:12]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        out = tmp / "out"
        out.mkdir(parents=True)
        try:
            record = dict(fn(out) or {})
            files = file_entries(out)
            # reserved keys; a stage's own keys (e.g. acquire's input "files") stay as it wrote them
            record.update(out_files=files, outputs_digest=tree_digest(files), kind=kind, key=key,
                          created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
            (tmp / "record.json").write_text(json.dumps(record, indent=1, sort_keys=True))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if not commit:
            return Entry(kind, key, tmp, record)
        final = self._entry_dir(kind, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(tmp, final)
        except OSError:
            # another build committed the same key first: the results are equal by construction
            shutil.rmtree(tmp, ignore_errors=True)
        return Entry(kind, key, final, record)

    def _sweep_tmp(self) -> None:
        tmp = self.root / "tmp"
        if not tmp.exists():
            return
        now = time.time()
        for d in tmp.iterdir():
            pid = d.name.split("-")[-2] if d.name.count("-") >= 3 else ""
            alive = pid.isdigit() and _pid_alive(int(pid))
            if not alive or now - d.stat().st_mtime > _STALE_TMP_SECONDS:
                shutil.rmtree(d, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def link_tree(src: Path, dst: Path) -> None:
    """Put src's files under dst as hard links (copies across file systems): cheap and immutable."""
    for p in sorted(src.rglob("*")):
        target = dst / p.relative_to(src)
        if p.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(p, target)
        except OSError:
            shutil.copy2(p, target)
