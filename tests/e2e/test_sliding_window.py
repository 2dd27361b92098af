"""A model whose sliding window is shorter than its context, built to ONNX (windows in the graph) and GGUF
(llama.cpp's architecture has none: the file declares the window as its context): the build passes its
gates within the context every artifact declares, and the card says why the GGUF's context is shorter.
Before this, such a build failed its perplexity gate with no word about the window."""

from __future__ import annotations

import json

from tests.conftest import VARIANTS
from tests.helpers import corpus_override, latest, manifest, one_line_error, run_cli


def window_args() -> list[str]:
    arch, overrides = VARIANTS["mistral-window"]
    return [f"model.architecture={arch}", *(f"+model.config.{k}={v}" for k, v in overrides.items())]


def test_window_shorter_than_context_builds_and_says_so(tmp_path):
    window = VARIANTS["mistral-window"][1]["sliding_window"]
    proc = run_cli(["recipe=tiny", corpus_override(), *window_args(), "eval.window=0"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    d = latest(tmp_path)
    arts = {a["target"]: a for a in manifest(d)["artifacts"]}
    for a in arts.values():
        assert a["verification"]["status"] == "passed" and a["evaluation"]["status"] == "passed", a
    gguf = arts["gguf8"]
    assert gguf["export"]["context_length"] == window and "sliding window" in " ".join(gguf["notes"])
    assert "context_length" not in arts["onnx32"]["export"]  # the graph computes the windows
    ev = json.loads((d / "eval.json").read_text())
    assert ev["source"]["window"] == window  # evaluated within the shortest declared context
    card = (d / "README.md").read_text()
    assert f"context recorded as {window} tokens, the model's sliding window" in card

    # asking for evaluation windows longer than the GGUF's context is refused, naming both
    proc = run_cli(["recipe=tiny", corpus_override(), *window_args(), "eval.window=64"], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = one_line_error(proc)
    assert "eval.window: 64 tokens is beyond the 32-token context targets.gguf8 declares" in line, line
