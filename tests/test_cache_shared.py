"""The cache shared by builds at once: one lock per stage key, a dead holder's lock taken over, committed files
checked on reuse, and a cache folder without locks refused."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from llmbuild.cache import Cache
from llmbuild.errors import InvalidInput

KEY = "d" * 64


def _child(root, body: str) -> subprocess.Popen:
    """A separate process (another build) using the same cache."""
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {os.getcwd()!r})
        from pathlib import Path
        from llmbuild.cache import Cache
        cache = Cache(Path({str(root)!r}))
    """) + textwrap.dedent(body)
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)


def test_second_build_waits_and_reuses(tmp_path):
    """While one process computes a stage, another asking for the same key waits and gets its entry."""
    holder = _child(tmp_path, f"""
        def slow(out):
            print("started", flush=True)
            time.sleep(1.5)
            (out / "w.bin").write_text("first")
            return {{"who": "first"}}
        cache.run("kind", {KEY!r}, slow)
    """)
    assert holder.stdout.readline().strip() == "started"
    ran, waited = [], []

    def second(out):
        ran.append(True)
        (out / "w.bin").write_text("second")
        return {"who": "second"}

    e = Cache(tmp_path).run("kind", KEY, second, on_wait=lambda: waited.append(True))
    assert holder.wait(timeout=30) == 0
    assert ran == [] and waited == [True]
    assert e.reused and e.waited > 0.3 and e.record["who"] == "first"
    assert (e.out / "w.bin").read_text() == "first"


def test_dead_holder_is_taken_over(tmp_path):
    """kill -9 in the middle of a stage: its lock goes with it, the next build runs the stage and sweeps the
    dead build's temporary folder."""
    holder = _child(tmp_path, f"""
        def hang(out):
            (out / "part").write_text("x")
            print("started", flush=True)
            time.sleep(120)
        cache.run("kind", {KEY!r}, hang)
    """)
    assert holder.stdout.readline().strip() == "started"
    assert len(list((tmp_path / "tmp").iterdir())) == 1
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    t0 = time.monotonic()
    cache = Cache(tmp_path)
    assert not any((tmp_path / "tmp").iterdir()), "the dead build's folder was not swept"
    e = cache.run("kind", KEY, lambda out: (out / "w.bin").write_text("new") and {})
    assert time.monotonic() - t0 < 10 and not e.reused
    assert cache.lookup("kind", KEY).files["w.bin"]["size"] == 3


def test_live_holder_tmp_is_kept(tmp_path):
    """A build starting beside a running one leaves the running one's folder alone."""
    holder = _child(tmp_path, f"""
        def hang(out):
            print("started", flush=True)
            time.sleep(120)
        cache.run("kind", {KEY!r}, hang)
    """)
    try:
        assert holder.stdout.readline().strip() == "started"
        Cache(tmp_path)
        assert len(list((tmp_path / "tmp").iterdir())) == 1
    finally:
        holder.kill()
        holder.wait()


def _committed(tmp_path, data: bytes = b"0123456789" * 100):
    cache = Cache(tmp_path)
    e = cache.run("kind", KEY, lambda out: (out / "w.bin").write_bytes(data) and {"n": 1})
    return cache, e


def test_modified_file_is_detected_and_recomputed(tmp_path):
    cache, e = _committed(tmp_path)
    f = e.out / "w.bin"
    data = bytearray(f.read_bytes())
    data[5] ^= 0xFF  # same size, other content (mtime moves): needs the full digest
    f.write_bytes(bytes(data))
    hit, why = cache.get("kind", KEY)
    assert hit is None and "out/w.bin was modified after it was committed" in why
    again = cache.run("kind", KEY, lambda out: (out / "w.bin").write_bytes(b"0123456789" * 100) and {"n": 2})
    assert again.damaged == why and not again.reused and again.record["n"] == 2
    assert cache.lookup("kind", KEY).record["n"] == 2


def test_truncated_file_is_detected(tmp_path):
    cache, e = _committed(tmp_path)
    with open(e.out / "w.bin", "r+b") as fh:
        fh.truncate(10)
    hit, why = cache.get("kind", KEY)
    assert hit is None and why == "out/w.bin is 10 bytes, 1000 when committed (truncated or modified)"


def test_missing_file_is_detected(tmp_path):
    cache, e = _committed(tmp_path)
    (e.out / "w.bin").unlink()
    assert cache.get("kind", KEY) == (None, "out/w.bin is missing")


def test_touched_file_is_hashed_once(tmp_path, monkeypatch):
    """Only size and mtime are read while they match; a touched file is hashed once, then trusted again."""
    import llmbuild.cache as cache_mod

    cache, e = _committed(tmp_path)
    calls = []
    real = cache_mod.sha256_file
    monkeypatch.setattr(cache_mod, "sha256_file", lambda p: calls.append(p) or real(p))
    assert cache.get("kind", KEY)[0] is not None and calls == []
    st = (e.out / "w.bin").stat()
    os.utime(e.out / "w.bin", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert cache.get("kind", KEY)[0] is not None and len(calls) == 1
    assert cache.get("kind", KEY)[0] is not None and len(calls) == 1
    assert json.loads((e.dir / "stat.json").read_text())["w.bin"][1] == st.st_mtime_ns + 10**9


def test_filesystem_without_locks_is_refused(tmp_path, monkeypatch):
    import fcntl

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_flock)
    with pytest.raises(InvalidInput, match=r"build.cache_dir: the cache folder .* is on a filesystem without "
                                           r"advisory locks \(flock: No locks available\)"):
        Cache(tmp_path / "c")
    assert not (tmp_path / "c" / "stages-v2").exists()
