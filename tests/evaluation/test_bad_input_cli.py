"""Bad evaluation and quantization input through the CLI: one line naming the key or file (and the
line of a bad record), exit 2, no traceback, nothing built."""

from __future__ import annotations

import pytest

from tests.helpers import corpus_override, one_line_error, run_cli


@pytest.fixture(scope="module")
def cwd(tmp_path_factory):
    return tmp_path_factory.mktemp("bad-eval")


def bad(cwd, args, *needles) -> str:
    proc = run_cli(["recipe=tiny", corpus_override(), "~targets.onnx32", *args], cwd)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    line = one_line_error(proc)
    assert all(n in line for n in needles), line
    assert not list((cwd / "outputs" / "tiny").glob("2*")), "a failed plan leaves no build folder"
    return line


def test_gate_with_an_unknown_name(cwd):
    bad(cwd, ["+targets.gguf8.gates.max_perplexity=2"], "targets.gguf8", "max_perplexity")


def test_evaluation_file_in_the_wrong_format(cwd, tmp_path):
    f = tmp_path / "mc.jsonl"
    f.write_text('{"question": "Q?", "choices": ["a", "b", "c", "d"], "answer": 1}\n'
                 '{"question": "Q?", "choices": ["a", "b"], "answer": 1}\n')
    bad(cwd, [f"eval.tasks=[{{name: m, path: {f}, format: mmlu}}]"], "eval.tasks[0].path", f"{f}:2", "4 strings")


def test_golden_file_in_the_wrong_format(cwd, tmp_path):
    f = tmp_path / "golden.jsonl"
    f.write_text('{"prompt": "a", "answer": "b"}\n{"question": "a", "answer": "b"}\n')
    bad(cwd, [f"eval.golden={f}"], "eval.golden", f"{f}:2")


def test_unknown_mc_format(cwd):
    bad(cwd, ["eval.tasks=[{name: m, path: x.jsonl, format: arc}]"], "eval.tasks", "arc")


def test_calibration_file_missing(cwd, tmp_path):
    pytest.importorskip("llama_cpp")
    bad(cwd, ["targets.gguf8.quant=q4_k_m", f"+targets.gguf8.imatrix={tmp_path / 'none.txt'}"],
        "targets.gguf8.imatrix", "none.txt", "not found")


def test_calibration_file_empty(cwd, tmp_path):
    pytest.importorskip("llama_cpp")
    (tmp_path / "empty.txt").write_text("")
    bad(cwd, ["targets.gguf8.quant=q4_k_m", f"+targets.gguf8.imatrix={tmp_path / 'empty.txt'}"],
        "targets.gguf8.imatrix", "empty.txt", "is empty")


def test_unknown_quantization_type(cwd):
    bad(cwd, ["targets.gguf8.quant=q4_k_x"], "targets.gguf8.quant", "q4_k_x", "q4_k_m")
