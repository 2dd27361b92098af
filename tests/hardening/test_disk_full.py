"""A disk that fills during export: the partial file is removed, the cache keeps no entry, the one-line
error names the file (exit 2, as the README's exit-code table says), and earlier builds are intact."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import REPO, corpus_override, latest, one_line_error, run_cli


def run_on_full_disk(args: list[str], cwd, limit: int) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LLMBUILD_RECIPES": str(REPO / "tests" / "recipes"),
           "PYTHONPATH": str(REPO)}
    env.pop("LLMBUILD_CACHE", None)
    return subprocess.run([sys.executable, "-m", "tests.hardening.diskfull", str(limit), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def entries(cwd, kind: str) -> list:
    return sorted((cwd / "outputs" / ".cache").glob(f"stages-v*/{kind}/*/*"))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("diskfull")
    proc = run_cli(["recipe=tiny", corpus_override(), "~targets.onnx32"], cwd)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return cwd


@pytest.mark.parametrize("target,kind,suffix", [
    ("+targets.full.backend=gguf", "export-gguf", ".gguf"),
    ("+targets.full.backend=onnx", "export-onnx", "model.onnx"),
])
def test_export_on_a_full_disk(built, target, kind, suffix):
    cwd = built
    before = latest(cwd)
    before_files = {p: p.stat().st_mtime_ns for p in before.rglob("*") if p.is_file()}
    had = entries(cwd, kind)
    proc = run_on_full_disk(["recipe=tiny", corpus_override(), "~targets.onnx32", target,
                             "+targets.full.quant=f32" if "gguf" in target else "+targets.full.dtype=fp32"],
                            cwd, limit=20_000)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = one_line_error(proc)
    assert "no space left on device" in line and "export:full" in line and suffix in line, line
    assert entries(cwd, kind) == had  # no entry for the failed export
    assert not [p for p in (cwd / "outputs" / ".cache" / "tmp").rglob("*") if p.is_file()]  # partial file removed
    assert latest(cwd) == before and {p: p.stat().st_mtime_ns for p in before.rglob("*") if p.is_file()} == before_files
    if kind != "export-gguf":
        return  # one backend is enough for the rest: the stage runner is the same for all
    # the disk has room again: the same command builds, reusing everything before the export
    proc = run_cli(["recipe=tiny", corpus_override(), "~targets.onnx32", target,
                    "+targets.full.quant=f32" if "gguf" in target else "+targets.full.dtype=fp32"], cwd)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "[reference] reused from cache" in proc.stderr and "[export:full] running" in proc.stderr
