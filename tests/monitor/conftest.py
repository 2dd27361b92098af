"""Session fixtures of the monitor tests: one tiny build (GGUF), llama-cpp-python's OpenAI-compatible server
serving it, and a tiny NLI checker, each made once per session."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import corpus_override, latest, run_cli
from tests.monitor.helpers import REPO, env, free_port, make_checker, stop, wait_http

# the tiny recipe's GGUF (q8_0) with golden figures; its ONNX target and multiple-choice task are not needed here
TINY_GGUF = ["recipe=tiny", corpus_override(), "~targets.onnx32", "eval.tasks=[]",
             f"eval.text={REPO / 'data/eval/parity.txt'}", f"eval.golden={REPO / 'data/finetune/golden.jsonl'}"]


def _needs_server():
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (make llamacpp)")
    pytest.importorskip("uvicorn", reason="the [monitor] extra is not installed")


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory) -> Path:
    """A tiny recipe's build with one GGUF artifact and golden figures in eval.json."""
    _needs_server()
    cwd = tmp_path_factory.mktemp("monitor-build")
    proc = run_cli(TINY_GGUF, cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return latest(cwd)


def serve_gguf(gguf: Path, port: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
                             "--port", str(port), "--n_ctx", "512", "--n_threads", "1", "--verbose", "false"],
                            env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="session")
def llama_server(tiny_build):
    """llama-cpp-python's server ([server] extra) on a free loopback port, serving the tiny GGUF."""
    gguf = next((tiny_build / "artifacts" / "gguf8").glob("*.gguf"))
    port = free_port()
    proc = serve_gguf(gguf, port)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/v1/models", timeout=90, proc=proc)
        yield url
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def checker(tmp_path_factory) -> Path:
    """A tiny DeBERTa-v2 NLI checker with random weights (no checker can be downloaded here)."""
    return make_checker(tmp_path_factory.mktemp("checker"))
