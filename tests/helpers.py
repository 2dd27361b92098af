"""Run the llmbuild CLI as a user does: a subprocess, in a folder of the test's own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cli_env(env: dict | None = None) -> dict:
    e = {**os.environ, "HF_HUB_OFFLINE": "1", "LLMBUILD_RECIPES": str(REPO / "tests" / "recipes"),
         "PYTHONPATH": str(REPO), **(env or {})}
    e.pop("LLMBUILD_CACHE", None)
    return e


def run_cli(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 600,
            wrap: list[str] = ()) -> subprocess.CompletedProcess:
    """`wrap`: a command the CLI runs under (e.g. `unshare ... exec "$@"`)."""
    return subprocess.run([*wrap, sys.executable, "-m", "llmbuild.cli", *args], cwd=cwd, env=cli_env(env),
                          capture_output=True, text=True, timeout=timeout)


def corpus_override() -> str:
    return f"model.tokenizer.train_text={REPO / 'data' / 'tokenizer_corpus.txt'}"


def latest(cwd: Path, recipe: str = "tiny") -> Path:
    return (cwd / "outputs" / recipe / "latest").resolve()


def manifest(build_dir: Path) -> dict:
    return json.loads((build_dir / "manifest.json").read_text())


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The error a user sees: exactly one line on stderr, no traceback."""
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in err if line.startswith("llmbuild: error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]
