"""Many builds on one cache: concurrent builds of one recipe compute each stage once and agree byte for byte;
a cache entry changed after its commit is refused, recomputed and reported; a cache or outputs folder that
cannot be written, or a cache on a filesystem without locks, fails before any work with one line and exit 2."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, cli_env, corpus_override, latest, manifest, one_line_error, run_cli

# the tiny recipe cut to its cheapest stages (one f16 GGUF, no evaluation), so four builds at once stay quick
# on 2 cores; the stages left (acquire, reference, export, verify) are keyed and locked like every other
ARGS = ["recipe=tiny", corpus_override(), "targets.gguf8.quant=f16", "~targets.onnx32", "eval.text=null",
        "eval.tasks=[]", "eval.golden=null"]


def _concurrent(cwd: Path, n: int) -> list[subprocess.CompletedProcess]:
    procs = [subprocess.Popen([sys.executable, "-m", "llmbuild.cli", *ARGS], cwd=cwd, env=cli_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(n)]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


def _assert_each_stage_once(cwd: Path, procs: list[subprocess.CompletedProcess]) -> None:
    n = len(procs)
    assert [p.returncode for p in procs] == [0] * n, [p.stderr[-2000:] for p in procs]
    builds = [Path(p.stdout.strip().splitlines()[-1]) for p in procs]
    assert len(set(builds)) == n
    manifests = [manifest(cwd / b) for b in builds]
    keyed = {s["stage"] for s in manifests[0]["stages"] if s["key"] and s["stage"] != "license"}
    assert {"acquire", "reference", "export:gguf8", "verify:gguf8"} <= keyed
    for stage in keyed:
        statuses = [next(s["status"] for s in m["stages"] if s["stage"] == stage) for m in manifests]
        assert statuses.count("run") == 1 and statuses.count("reused") == n - 1, (stage, statuses)
    files = [{f["path"]: f["sha256"] for a in m["artifacts"] for f in a["files"]} for m in manifests]
    assert all(f == files[0] for f in files) and files[0]
    assert sum("waiting: another build is running this stage" in p.stderr for p in procs) >= 1
    assert not any((cwd / "outputs" / ".cache" / "tmp").iterdir())


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Two builds of one recipe started together on one empty cache (the later tests reuse the workspace)."""
    cwd = tmp_path_factory.mktemp("two")
    return cwd, _concurrent(cwd, 2)


def test_two_concurrent_builds_compute_each_stage_once(built):
    _assert_each_stage_once(*built)


def test_four_concurrent_builds_compute_each_stage_once(tmp_path):
    _assert_each_stage_once(tmp_path, _concurrent(tmp_path, 4))


def test_modified_artifact_is_rebuilt_and_reported(built):
    """A file edited in a build folder is the cache's file (hard links): the next build refuses the entry,
    runs the export again, and says why in the log and the manifest."""
    cwd = built[0]
    gguf = next((latest(cwd) / "artifacts" / "gguf8").glob("*.gguf"))
    good = gguf.read_bytes()
    with open(gguf, "r+b") as f:  # in place, same size: only the digest can tell
        f.seek(len(good) - 100)
        f.write(b"\xff" * 50)
    proc = run_cli(ARGS, cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = manifest(latest(cwd))
    stage = next(s for s in m["stages"] if s["stage"] == "export:gguf8")
    assert stage["status"] == "run"
    assert "cache entry damaged: out/" in stage["reason"] and "was modified after it was committed" in stage["reason"]
    assert "[export:gguf8] cache entry" in (latest(cwd) / "build.log").read_text()
    rebuilt = next((latest(cwd) / "artifacts" / "gguf8").glob("*.gguf"))
    assert rebuilt.read_bytes() == good  # the same bytes again, from the same inputs
    # downstream stages keyed by the artifact's digest are reused: the digest is the same again
    assert next(s for s in m["stages"] if s["stage"] == "verify:gguf8")["status"] == "reused"


def test_truncated_artifact_is_rebuilt_and_reported(built):
    cwd = built[0]
    gguf = next((latest(cwd) / "artifacts" / "gguf8").glob("*.gguf"))
    with open(gguf, "r+b") as f:  # what a full disk or a killed copy leaves
        f.truncate(1000)
    proc = run_cli(ARGS, cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stage = next(s for s in manifest(latest(cwd))["stages"] if s["stage"] == "export:gguf8")
    assert stage["status"] == "run" and f"out/{gguf.name} is 1000 bytes" in stage["reason"], stage
    assert "truncated" in proc.stderr


def _read_only(folder: Path) -> list[str]:
    """A command prefix under which `folder` cannot be written: a read-only bind mount in a private mount
    namespace when running as root (root ignores file modes), else no prefix and mode 0555."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return []
    if not shutil.which("unshare"):
        pytest.skip("running as root without unshare(1): cannot make a folder read-only for the build")
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare --mount is not permitted here: {probe.stderr.decode().strip()}")
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && exec "$@"', str(folder)]


def _snapshot(folder: Path) -> dict:
    """Every file (a folder's mtime moves with the writability probe, its files do not)."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def test_read_only_cache_dir(built, tmp_path):
    built = built[0]
    ro = tmp_path / "ro-cache"
    ro.mkdir()
    before = _snapshot(built / "outputs" / "tiny")
    try:
        proc = run_cli([*ARGS, f"build.cache_dir={ro}"], built, wrap=_read_only(ro))
    finally:
        ro.chmod(0o755)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = one_line_error(proc)
    assert f"build.cache_dir: the cache folder {ro} is not writable (Read-only file system" in line or (
        f"build.cache_dir: the cache folder {ro} is not writable (Permission denied" in line), line
    assert not any(ro.iterdir())
    after = _snapshot(built / "outputs" / "tiny")
    assert {k: v for k, v in after.items() if k in before} == before and len(after) == len(before)


def test_dry_run_plans_on_a_read_only_cache(built):
    """A dry run writes nothing, so it plans on a cache it may only read (a CI job inspecting a shared cache)."""
    built = built[0]
    cache = built / "outputs" / ".cache"
    before = _snapshot(cache)
    try:
        proc = run_cli([*ARGS, "build.dry_run=true", f"build.cache_dir={cache}"], built, wrap=_read_only(cache))
    finally:
        cache.chmod(0o755)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "[export:gguf8] cached (key " in proc.stderr
    assert _snapshot(cache) == before


def test_read_only_outputs_dir(built, tmp_path):
    built = built[0]
    ro = tmp_path / "ro-out"
    ro.mkdir()
    try:
        proc = run_cli([*ARGS, f"build.outputs_dir={ro}", f"build.cache_dir={built / 'outputs' / '.cache'}"],
                       built, wrap=_read_only(ro))
    finally:
        ro.chmod(0o755)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = one_line_error(proc)
    assert f"build.outputs_dir: {ro / 'tiny'} is not writable" in line, line
    assert not any(ro.iterdir())


def test_cache_on_a_filesystem_without_locks(built, tmp_path):
    """flock fails as it does on NFS without a lock manager or Lustre without -o flock (ENOLCK): refused."""
    built = built[0]
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import errno, fcntl, os\n"
        "def _no_flock(fd, op):\n"
        "    raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))\n"
        "fcntl.flock = _no_flock\n")
    before = _snapshot(built / "outputs")
    proc = run_cli(ARGS, built, env={"PYTHONPATH": f"{hook}{os.pathsep}{REPO}"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = one_line_error(proc)
    assert "build.outputs_dir: the cache folder outputs/.cache is on a filesystem without advisory locks" in line
    after = _snapshot(built / "outputs")
    assert after == before
