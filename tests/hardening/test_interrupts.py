"""A build interrupted during each stage kind (SIGINT, SIGTERM, kill -9) leaves the cache and earlier
builds intact, leaves no temporary files once the next build has started, and the next build resumes
after the last finished stage.

The build pauses inside the named stage through the test-only hook of llmbuild/testhooks.py (it writes
a partial file into the stage's temporary folder first), so each signal lands at a known moment.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, corpus_override, latest, manifest, run_cli

DATA = REPO / "data" / "finetune" / "facts-train.jsonl"
# a tiny build that has every stage kind: a short LoRA, evaluation, one GGUF target
SMALL_EVAL = ["eval.tasks=[]", "eval.golden=null", "eval.speed=false"]  # the parity text alone keeps evaluate
ARGS = ["recipe=tiny", corpus_override(), "~targets.onnx32", *SMALL_EVAL, "finetune=lora", "finetune.max_steps=2",
        "finetune.batch_size=2", "finetune.lora.rank=2", "finetune.lora.alpha=4", "finetune.warmup_steps=0",
        "finetune.max_seq_len=32",
        f"finetune.datasets=[{{path: {DATA}, shape: chat, license: cc0-1.0, eval_fraction: 0.02}}]"]
# every stage kind, in the order a build reaches them ("document" is the build folder's reports)
KINDS = ["acquire", "finetune", "reference", "evalref", "export", "verify", "evaluate", "document"]
EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGKILL: -signal.SIGKILL}


def start_paused(cwd: Path, kind: str) -> tuple[subprocess.Popen, Path]:
    marker = cwd / f"paused-{kind}"
    marker.unlink(missing_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LLMBUILD_RECIPES": str(REPO / "tests" / "recipes"),
           "PYTHONPATH": str(REPO), "LLMBUILD_TEST_PAUSE": kind, "LLMBUILD_TEST_PAUSE_FILE": str(marker)}
    env.pop("LLMBUILD_CACHE", None)
    proc = subprocess.Popen([sys.executable, "-m", "llmbuild.cli", *ARGS], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"never paused at {kind} (exit {proc.returncode}):\n{err[-3000:]}")
        time.sleep(0.05)
    return proc, marker


def snapshot(build: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in build.rglob("*") if p.is_file()}


def cache_files(cwd: Path) -> set[Path]:
    return {p for p in (cwd / "outputs" / ".cache").glob("stages-v*/**/*") if p.is_file()}


def tmp_files(cwd: Path) -> list[Path]:
    return [p for p in (cwd / "outputs" / ".cache" / "tmp").rglob("*") if p.is_file()]


def interrupt_every_kind(cwd: Path, signals: list[int]) -> None:
    # an earlier build to keep (another seed: it shares no stage with the interrupted ones)
    proc = run_cli(["recipe=tiny", corpus_override(), "~targets.onnx32", "model.seed=7", *SMALL_EVAL], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    earlier = latest(cwd)
    earlier_files = snapshot(earlier)
    for i, kind in enumerate(KINDS):
        sig = signals[i % len(signals)]
        cached = {p: p.stat().st_mtime_ns for p in cache_files(cwd)}
        proc, marker = start_paused(cwd, kind)
        pid, stage = marker.read_text().split()
        if kind != "document":
            assert any(p.name == "partial.bin" for p in tmp_files(cwd)), "the paused stage has a temporary file"
        os.kill(int(pid), sig)
        out, err = proc.communicate(timeout=300)  # as start_paused: shared CI cores can be slow
        assert proc.returncode == EXIT[sig], (kind, sig, proc.returncode, err[-2000:])
        if sig != signal.SIGKILL:
            assert "Traceback" not in err, err[-3000:]
            assert "the cache and earlier builds are intact" in err.splitlines()[-1]
            assert not tmp_files(cwd), f"{kind}: temporary files left after {signal.Signals(sig).name}"
        # the stages before this one ran (or were reused) in this build: the next one resumes after them
        for before in KINDS[:i]:
            if before != "document":
                assert f"[{before}" in err, (kind, before, err[-2000:])
        # nothing committed was changed, and no entry holds the paused stage's partial file
        assert all(p.stat().st_mtime_ns == t for p, t in cached.items())
        assert not [p for p in cache_files(cwd) if p.name == "partial.bin"]
        assert latest(cwd) == earlier and snapshot(earlier) == earlier_files, f"{kind}: an earlier build changed"
    proc = run_cli(ARGS, cwd)  # the next build resumes: every stage is in the cache
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not tmp_files(cwd)  # what kill -9 left was swept
    m = manifest(latest(cwd))
    assert m["status"] == "built" and not [s for s in m["stages"] if s["status"] == "run"], m["stages"]
    assert snapshot(earlier) == earlier_files


def test_interrupt_each_stage_kind_with_each_signal(tmp_path):
    """Every stage kind once, the signals taking turns (SIGINT, SIGTERM, kill -9)."""
    interrupt_every_kind(tmp_path, [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: signal.Signals(s).name)
def test_interrupt_every_stage_kind(tmp_path, sig):
    interrupt_every_kind(tmp_path, [sig])
