"""An artifact whose runtime is not installed is built, marked UNVERIFIED in the manifest and the card,
and never counted as passed (simulated by making llama.cpp unavailable in-process)."""

from __future__ import annotations

import pytest

from tests.helpers import REPO, corpus_override, latest, manifest


def test_missing_runtime_marks_artifact_unverified(tmp_path, monkeypatch, capsys):
    from llmbuild import cli
    from llmbuild.targets import gguf

    monkeypatch.setattr(gguf, "runtime_available", lambda: False)
    monkeypatch.setenv("LLMBUILD_RECIPES", str(REPO / "tests" / "recipes"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        cli.main(["recipe=tiny", corpus_override(), "~targets.onnx32"])
    assert e.value.code == 0
    d = latest(tmp_path)
    art = next(a for a in manifest(d)["artifacts"] if a["target"] == "gguf8")
    assert art["verification"]["status"] == "unverified"
    assert "llama-cpp-python is not installed" in art["verification"]["reason"]
    assert "UNVERIFIED" in (d / "README.md").read_text()
    assert "UNVERIFIED" in capsys.readouterr().err
    assert any(p.suffix == ".gguf" for p in (d / "artifacts" / "gguf8").iterdir())  # still built
