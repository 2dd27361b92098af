"""`llmbuild-monitor golden`: the build's golden set through llama-cpp-python's server, against eval.json."""

from __future__ import annotations

import json
import shutil

from tests.monitor.helpers import free_port, main, one_error


def test_golden_as_built(llama_server, tiny_build, tmp_path):
    p = main(["golden", f"endpoint={llama_server}", f"build={tiny_build}", "id=g1"], tmp_path)
    assert p.returncode == 0, p.stderr
    rep = json.loads((tmp_path / "outputs/monitor/g1/report.json").read_text())
    ev = json.loads((tiny_build / "eval.json").read_text())
    built = ev["artifacts"]["gguf8"]["golden"]
    assert rep["artifact"] == "gguf8" and rep["n"] == built["n"] == 38
    assert rep["api"] == "completions"  # the tiny tokenizer has no chat template: the build asked plain prompts
    assert rep["max_tokens"] == ev["settings"]["golden_max_new_tokens"]
    figs = {f["figure"]: f for f in rep["figures"]}
    assert {f: figs[f]["build"] for f in figs} == {f: built[f] for f in ("exact_match", "token_f1", "contains")}
    assert all(0 <= f["low"] <= f["deployed"] <= f["high"] <= 1 for f in rep["figures"])
    assert "## Verdict: as built" in (tmp_path / "outputs/monitor/g1/report.md").read_text()


def test_golden_regression_exits_5(llama_server, tiny_build, tmp_path):
    """The same server against a build whose eval.json claims every golden answer right."""
    claimed = tmp_path / "claimed"
    shutil.copytree(tiny_build, claimed)
    ev = json.loads((claimed / "eval.json").read_text())
    ev["artifacts"]["gguf8"]["golden"].update(exact_match=1.0, token_f1=1.0, contains=1.0)
    (claimed / "eval.json").write_text(json.dumps(ev))
    p = main(["golden", f"endpoint={llama_server}", f"build={claimed}", "id=g2", "figures=[exact_match]"], tmp_path)
    assert p.returncode == 5, p.stderr
    assert "golden regression: exact_match 0.000 is more than 0.05 below the build's 1.000 (gguf8)" in one_error(p)
    rep = json.loads((tmp_path / "outputs/monitor/g2/report.json").read_text())
    assert [r["figure"] for r in rep["regressions"]] == ["exact_match"]


def test_golden_bad_inputs(llama_server, tiny_build, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    p = main(["golden", f"endpoint={dead}", f"build={tiny_build}"], tmp_path)
    assert p.returncode == 2 and f"endpoint: {dead} is unreachable" in one_error(p)
    p = main(["golden", f"endpoint={llama_server}", f"build={tmp_path}"], tmp_path)
    assert p.returncode == 2 and "has no manifest.json" in one_error(p)
    p = main(["golden", f"endpoint={llama_server}", f"build={tiny_build}", "artifact=onnx9"], tmp_path)
    assert p.returncode == 2 and "artifact: 'onnx9' has no golden figures in eval.json; known: gguf8" in one_error(p)
    p = main(["golden", f"endpoint={llama_server}", f"build={tiny_build}", "tolerance=2"], tmp_path)
    assert p.returncode == 2 and "tolerance: 2.0 is outside 0-1" in one_error(p)
    assert not (tmp_path / "outputs" / "monitor").exists() or not any((tmp_path / "outputs" / "monitor").iterdir())
