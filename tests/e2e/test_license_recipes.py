"""The shipped license-family recipes build or fail exactly as their licenses say (issue 3).

The recipes are run as shipped, with the model shrunk and one GGUF target kept so the test is quick.
"""

from __future__ import annotations

import json

import pytest

from tests.helpers import REPO, latest, manifest, run_cli

SMALL = [f"model.tokenizer.train_text={REPO / 'data' / 'tokenizer_corpus.txt'}", "model.tokenizer.vocab_size=512",
         "model.config.hidden_size=64", "model.config.intermediate_size=128", "model.config.num_hidden_layers=2",
         "model.config.num_attention_heads=4", "model.config.num_key_value_heads=2",
         "~targets.cpu-onnx", "~targets.cpu-onnx-fp16", "~targets.cpu-gguf-q4", "eval.max_tokens=16"]


@pytest.fixture(scope="module")
def cwd(tmp_path_factory):
    return tmp_path_factory.mktemp("licenses")


def report(build_dir):
    return json.loads((build_dir / "license_report.json").read_text())


def test_llama_recipe_ships_its_obligations(cwd):
    proc = run_cli(["recipe=license-llama", *SMALL], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    d = latest(cwd, "license-llama")
    assert report(d)["verdict"] == "pass with obligations"
    art = d / "artifacts" / "cpu-gguf"
    assert "Llama 3.1 is licensed under the Llama 3.1 Community License" in (art / "NOTICE").read_text()
    assert (art / "USE_POLICY.md").read_text().strip()
    assert "LLAMA 3.1 COMMUNITY LICENSE AGREEMENT" in (art / "LICENSE").read_text().upper()
    assert "Built with Llama" in (d / "README.md").read_text()
    from gguf import GGUFReader

    gguf_file = next(art.glob("*.gguf"))
    fields = GGUFReader(gguf_file).fields
    lic = fields["general.license"]
    assert bytes(lic.parts[lic.data[0]]).decode() == "llama3.1"
    assert manifest(d)["license"]["verdict"] == "pass with obligations"


def test_llama_recipe_needs_the_name_prefix(cwd):
    proc = run_cli(["recipe=license-llama", *SMALL, "build.model_name=my-model"], cwd)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "build.model_name" in proc.stderr and "Traceback" not in proc.stderr


def test_openrail_recipe_passes_with_use_restrictions(cwd):
    proc = run_cli(["recipe=license-openrail", *SMALL], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    d = latest(cwd, "license-openrail")
    r = report(d)
    assert r["verdict"] == "pass with obligations"
    assert (d / "artifacts" / "cpu-gguf" / "USE_POLICY.md").is_file()


def test_cc_by_nc_fails_commercial_before_export(cwd):
    proc = run_cli(["recipe=license-cc-by-nc", *SMALL], cwd)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "LICENSE_REPORT.md" in proc.stderr and "Traceback" not in proc.stderr
    failed = max((cwd / "outputs" / "license-cc-by-nc").iterdir(), key=lambda p: p.stat().st_mtime)
    assert report(failed)["verdict"] == "fail"
    assert not (failed / "artifacts").exists()  # stopped before any export
    assert not any(s["stage"].startswith("export") for s in manifest(failed)["stages"])


def test_cc_by_nc_builds_for_research(cwd):
    proc = run_cli(["recipe=license-cc-by-nc", "license/policy=research", *SMALL], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert report(latest(cwd, "license-cc-by-nc"))["verdict"] == "pass with obligations"
