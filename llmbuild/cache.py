"""The content-addressed stage cache: one folder per (stage kind, key), committed by atomic rename,
shared safely by many builds at once (one machine, or NFS/Lustre).

Layout under the cache root:
    stages-v<FORMAT>/<kind>/<key[:2]>/<key>/record.json   what the stage returned, plus its files' digests
                                                (`out_files`, `outputs_digest`: reserved keys)
    stages-v<FORMAT>/<kind>/<key[:2]>/<key>/stat.json     size and mtime of each file when last checked
    stages-v<FORMAT>/<kind>/<key[:2]>/<key>/out/          the files it wrote
    locks/<kind>/<key>.lock                     one advisory lock per stage key
    tmp/                                        stages in progress (each with owner.json); removed when they fail
A stage runs in tmp/ and is renamed into place only when it finished, so a build killed at any
moment (Ctrl-C, kill -9) leaves no entry a later build could mistake for a result (DVC's run-cache
habit). A build computes a stage while holding that key's lock (filelock, i.e. flock(2)), so two
builds needing one stage compute it once: the second waits and reuses the entry. The kernel (or the
NFS server, when the client dies) drops the lock of a dead holder, so the next build takes over and
sweeps the dead build's tmp folder. On reuse every file is checked against the record: size and
mtime first, the full sha256 only when they changed; a damaged entry is removed and the stage runs
again, and the caller is told why.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from llmbuild.errors import InvalidInput
from llmbuild.hashing import StatCache, file_entries, sha256_file, tree_digest

# bump when record.json's reserved keys or the layout change: older entries are then never looked up
FORMAT = 2
# tmp folders without an owner record (older builds) are judged by pid; older than this they belong to dead builds
_STALE_TMP_SECONDS = 24 * 3600
# errors that mean "this filesystem has no advisory locks" (flock on NFS mounted without a lock manager,
# Lustre without -o flock, some FUSE and SMB mounts)
_NO_LOCK_ERRNOS = {errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL}


@dataclass
class Entry:
    kind: str
    key: str
    dir: Path  # the entry folder
    record: dict
    reused: bool = False  # cache.run found it committed by another build while waiting for the lock
    waited: float = 0.0  # seconds spent waiting for another build's lock
    damaged: str | None = None  # why an earlier entry under this key was refused and recomputed

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
    def __init__(self, root: Path, config_key: str = "build.cache_dir", readonly: bool = False):
        """Open (and create) the cache at root. Unless readonly (a dry run), check that it is writable and
        has advisory locks, naming `config_key` when it is not: before any build work starts."""
        self.root = Path(root)
        self.config_key = config_key
        self.readonly = readonly
        self.stat_cache = StatCache(self.root / "statcache.json", readonly=readonly)
        if readonly:
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".probe-{uuid.uuid4().hex[:8]}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise InvalidInput(f"{config_key}: the cache folder {self.root} is not writable ({e.strerror}); "
                               f"point {config_key} (or LLMBUILD_CACHE) at a writable folder") from None
        self._check_locks()
        self._sweep_tmp()

    # -- locks ------------------------------------------------------------------------------------
    def _check_locks(self) -> None:
        import fcntl

        path = self.root / "locks" / "probe.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError as e:
            if e.errno not in _NO_LOCK_ERRNOS:
                return  # EWOULDBLOCK: another build holds the probe, so locks work
            raise InvalidInput(
                f"{self.config_key}: the cache folder {self.root} is on a filesystem without advisory locks "
                f"(flock: {e.strerror}); builds sharing it could compute a stage twice. Use a local folder, or "
                f"mount NFS with a lock manager (not -o nolock) or Lustre with -o flock") from None
        finally:
            os.close(fd)

    def lock_path(self, kind: str, key: str) -> Path:
        return self.root / "locks" / kind / f"{key}.lock"

    @contextmanager
    def locked(self, kind: str, key: str, on_wait: Callable[[], None] | None = None):
        """Hold the stage key's lock; yields the seconds spent waiting for another holder."""
        from filelock import FileLock, Timeout

        path = self.lock_path(kind, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path))
        t0 = time.monotonic()
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if on_wait:
                on_wait()
            lock.acquire()  # blocks until the holder commits, fails or dies
        try:
            yield time.monotonic() - t0
        finally:
            lock.release()

    # -- lookup with integrity --------------------------------------------------------------------
    def _entry_dir(self, kind: str, key: str) -> Path:
        return self.root / f"stages-v{FORMAT}" / kind / key[:2] / key

    def lookup(self, kind: str, key: str) -> Entry | None:
        """The committed entry, if one is there and its files are as committed."""
        return self.get(kind, key)[0]

    def get(self, kind: str, key: str) -> tuple[Entry | None, str | None]:
        """(entry, None) when a sound entry is committed; (None, reason) when one is there but damaged;
        (None, None) when there is none."""
        d = self._entry_dir(kind, key)
        try:
            record = json.loads((d / "record.json").read_text())
        except FileNotFoundError:
            return None, None
        except (OSError, json.JSONDecodeError) as e:
            return None, f"record.json is unreadable ({e})"
        entry = Entry(kind, key, d, record)
        damage = self._damage(entry)
        return (None, damage) if damage else (entry, None)

    def _damage(self, entry: Entry) -> str | None:
        """Why the entry's files are not what was committed, or None. Cheap when nothing changed:
        one stat per file; a file whose size is right but whose mtime moved is hashed again."""
        stat_file = entry.dir / "stat.json"
        try:
            seen = json.loads(stat_file.read_text())
        except (OSError, json.JSONDecodeError):
            seen = {}
        files = entry.record.get("out_files")
        if not isinstance(files, dict) or "outputs_digest" not in entry.record:
            return "record.json lacks its files' digests"
        refreshed = {}
        for rel, meta in files.items():
            p = entry.out / rel
            try:
                st = p.stat()
            except OSError:
                return f"out/{rel} is missing"
            if st.st_size != meta["size"]:
                return f"out/{rel} is {st.st_size} bytes, {meta['size']} when committed (truncated or modified)"
            sig = [st.st_size, st.st_mtime_ns]
            if seen.get(rel) == sig:
                continue
            digest = sha256_file(p)
            if digest != meta["sha256"]:
                return f"out/{rel} was modified after it was committed (sha256 {digest[:12]}, recorded {meta['sha256'][:12]})"
            refreshed[rel] = sig
        if refreshed and not self.readonly:
            # the content is intact (e.g. a file was touched): remember the new mtime so the next
            # check is a stat again
            write_json_atomic(stat_file, {**seen, **refreshed})
        return None

    # -- running a stage ----------------------------------------------------------------------------
    def run(self, kind: str, key: str, fn: Callable[[Path], dict], commit: bool = True,
            on_wait: Callable[[], None] | None = None) -> Entry:
        """Run fn(out_dir) in a temporary folder and commit its outputs under (kind, key), holding the
        key's lock. If another build committed the key while this one waited, its entry is returned
        (reused=True) and fn does not run.

        commit=False runs it the same way but keeps the result out of the cache (for results that
        must not be reused, e.g. a verification skipped because its runtime is missing).
        """
        with self.locked(kind, key, on_wait) as waited:
            damaged = None
            if commit:
                hit, damaged = self.get(kind, key)
                if hit:
                    hit.reused, hit.waited = True, waited
                    return hit
                if damaged:
                    self._discard(self._entry_dir(kind, key))
            entry = self._run_locked(kind, key, fn, commit)
            entry.waited, entry.damaged = waited, damaged
            return entry

    def _run_locked(self, kind: str, key: str, fn: Callable[[Path], dict], commit: bool) -> Entry:
        tmp = self.root / "tmp" / f"{kind}-{key[:12]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        out = tmp / "out"
        out.mkdir(parents=True)
        # who runs this folder: a later build removes it only once this key's lock is free again
        (tmp / "owner.json").write_text(json.dumps({"kind": kind, "key": key, "host": socket.gethostname(),
                                                    "pid": os.getpid()}))
        try:
            record = dict(fn(out) or {})
            files = file_entries(out)
            # reserved keys; a stage's own keys (e.g. acquire's input "files") stay as it wrote them
            record.update(out_files=files, outputs_digest=tree_digest(files), kind=kind, key=key,
                          created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
            (tmp / "record.json").write_text(json.dumps(record, indent=1, sort_keys=True))
            (tmp / "stat.json").write_text(json.dumps(
                {rel: [(out / rel).stat().st_size, (out / rel).stat().st_mtime_ns] for rel in files}))
            (tmp / "owner.json").unlink()
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if not commit:
            return Entry(kind, key, tmp, record)
        final = self._entry_dir(kind, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(tmp, final)  # atomic: readers see no entry or the whole entry
        except OSError:
            # committed meanwhile by a build whose lock this one could not see (a filesystem whose
            # locks are local to each machine): keep the first commit, whose files others may link
            shutil.rmtree(tmp, ignore_errors=True)
            committed = self.lookup(kind, key)
            if committed is not None:
                return committed
            raise
        return Entry(kind, key, final, record)

    def _discard(self, entry_dir: Path) -> None:
        """Move a damaged entry out of the way (atomic), then delete it. Build folders keep their hard
        links to the old files."""
        trash = self.root / "tmp" / f"discarded-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(entry_dir, trash)
        except FileNotFoundError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def _sweep_tmp(self) -> None:
        """Remove what dead builds left in tmp/: a folder whose stage lock is free has no live owner."""
        from filelock import FileLock, Timeout

        tmp = self.root / "tmp"
        if not tmp.exists():
            return
        now = time.time()
        for d in tmp.iterdir():
            try:
                owner = json.loads((d / "owner.json").read_text())
            except (OSError, json.JSONDecodeError):
                owner = None
            if owner and owner.get("kind") and owner.get("key"):
                lock = FileLock(str(self.lock_path(owner["kind"], owner["key"])))
                try:
                    lock.acquire(timeout=0)
                except Timeout:
                    continue  # its build is alive (on this machine or another)
                try:
                    shutil.rmtree(d, ignore_errors=True)
                finally:
                    lock.release()
                continue
            # no owner record: a discarded entry being deleted, a commit in its last step, or an older build
            pid = d.name.split("-")[-2] if d.name.count("-") >= 2 else ""
            alive = pid.isdigit() and _pid_alive(int(pid))
            try:
                age = now - d.stat().st_mtime
            except OSError:
                continue
            if (not alive and age > 60) or age > _STALE_TMP_SECONDS:
                shutil.rmtree(d, ignore_errors=True)


def write_json_atomic(path: Path, obj) -> None:
    """Write JSON that readers see whole or not at all (a temporary file renamed over it); a failure
    leaves nothing behind, and is ignored: callers write what is cheap to compute again."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text(json.dumps(obj))
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # only costs a re-hash next time


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
