"""End to end: the tiny recipe builds, every artifact passes its runtime's parity gates, the card
loads with huggingface_hub, a second build reuses every stage, and a target change reruns only it."""

from __future__ import annotations

import json

import pytest

from tests.helpers import corpus_override, latest, manifest, run_cli


@pytest.fixture(scope="module")
def first_build(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("e2e")
    proc = run_cli(["recipe=tiny", corpus_override()], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd, proc


def test_build_outputs(first_build):
    cwd, proc = first_build
    d = latest(cwd)
    assert proc.stdout.strip().endswith(d.name)  # the build path is printed at the end
    m = manifest(d)
    assert m["status"] == "built"
    assert {s["stage"] for s in m["stages"]} >= {"acquire", "license", "reference", "evalref", "export:onnx32",
                                                   "verify:onnx32", "evaluate:onnx32", "export:gguf8", "verify:gguf8",
                                                   "evaluate:gguf8", "client:onnx32", "client:gguf8"}
    for name in ("onnx32", "gguf8"):
        a = next(x for x in m["artifacts"] if x["target"] == name)
        v = a["verification"]
        assert v["status"] == "passed", v
        assert v["metrics"]["top1"] >= a["gates"]["min_top1"]
        assert v["kv_metrics"]["positions"] == v["metrics"]["positions"]
        for f in a["files"]:
            assert (d / f["path"]).is_file()
            assert f["sha256"] and len(f["sha256"]) == 64
    assert (d / "artifacts" / "onnx32" / "onnx" / "model.onnx").is_file()  # where transformers.js and optimum look
    assert any(p.suffix == ".gguf" for p in (d / "artifacts" / "gguf8").iterdir())
    # inputs are recorded with digests
    assert all(len(v["sha256"]) == 64 for v in m["inputs"]["files"].values())
    assert "model.safetensors" in m["inputs"]["files"]
    assert m["tools"]["torch"].startswith("2.")
    assert (d / "build.log").read_text().count("[export:onnx32]") >= 1


def test_model_card_loads(first_build):
    from huggingface_hub import ModelCard

    cwd, _ = first_build
    card = ModelCard.load(latest(cwd) / "README.md")
    assert card.data.license == "apache-2.0"
    assert card.data.pipeline_tag == "text-generation"
    names = {r.metric_name for r in card.data.eval_results}
    assert "onnx32 top-1 agreement" in names and "gguf8 mean KL divergence" in names
    for section in ("## Model Details", "## Uses", "## Bias, Risks, and Limitations", "## How to Get Started",
                    "## Training Details", "## Evaluation", "## Environmental Impact", "## Technical Specifications",
                    "## License", "## Citation", "Context window: 256 tokens"):
        assert section in card.text, section


def test_license_report_written(first_build):
    cwd, _ = first_build
    d = latest(cwd)
    report = json.loads((d / "license_report.json").read_text())
    assert report["verdict"] in ("pass", "pass with obligations")
    assert (d / "LICENSE_REPORT.md").read_text().strip()
    for name in ("onnx32", "gguf8"):
        assert (d / "artifacts" / name / "LICENSE").is_file()


def test_rebuild_reuses_every_stage(first_build):
    cwd, _ = first_build
    first = latest(cwd)
    proc = run_cli(["recipe=tiny", corpus_override()], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    second = latest(cwd)
    assert second != first and first.is_dir()  # a new build folder; the old one is kept
    m = manifest(second)
    ran = [s["stage"] for s in m["stages"] if s["status"] == "run"]
    assert ran == [], ran
    assert "reused from cache" in proc.stderr
    # the same artifacts, byte for byte
    a1 = {f["path"]: f["sha256"] for a in manifest(first)["artifacts"] for f in a["files"]}
    a2 = {f["path"]: f["sha256"] for a in m["artifacts"] for f in a["files"]}
    assert a1 == a2


def test_target_change_reruns_only_that_target(first_build):
    cwd, _ = first_build
    proc = run_cli(["recipe=tiny", corpus_override(), "targets.gguf8.quant=q4_0"], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = manifest(latest(cwd))
    ran = sorted(s["stage"] for s in m["stages"] if s["status"] == "run")
    assert ran == ["client:gguf8", "evaluate:gguf8", "export:gguf8", "verify:gguf8"], ran


def test_gate_too_tight_fails_with_4(first_build):
    cwd, _ = first_build
    before = latest(cwd)
    proc = run_cli(["recipe=tiny", corpus_override(), "+targets.gguf8.gates.max_abs_diff=1e-9"], cwd)
    assert proc.returncode == 4, proc.stderr[-2000:]
    assert "targets.gguf8.gates.max_abs_diff" in proc.stderr
    assert latest(cwd) == before  # latest moves only on success
    failed = sorted((cwd / "outputs" / "tiny").glob("*"), key=lambda p: p.stat().st_mtime)[-1]
    m = manifest(failed)
    assert m["status"] == "gate failed"
    assert "FAILED" in (failed / "README.md").read_text()


def test_dry_run_lists_cached_stages(first_build):
    cwd, _ = first_build
    proc = run_cli(["recipe=tiny", corpus_override(), "build.dry_run=true", "targets.onnx32.dtype=fp16"], cwd)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "[reference] cached (key " in proc.stderr
    assert "[export:onnx32] would run (key " in proc.stderr
    assert "[verify:onnx32] depends on an earlier stage (export:onnx32)" in proc.stderr
    assert "[export:gguf8] cached (key " in proc.stderr


def test_cfg_job_prints_composed_config(first_build):
    cwd, _ = first_build
    proc = run_cli(["recipe=tiny", "--cfg", "job"], cwd)
    assert proc.returncode == 0, proc.stderr
    assert "backend: gguf" in proc.stdout and "hidden_size: 64" in proc.stdout


def test_multirun_builds_each_combination(first_build):
    cwd, _ = first_build
    proc = run_cli(["-m", "recipe=tiny", corpus_override(), "targets.gguf8.quant=q8_0,f16"], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    builds = [p for p in (cwd / "outputs" / "tiny").iterdir() if p.is_dir() and not p.is_symlink()]
    quants = set()
    for b in builds:
        mf = b / "manifest.json"
        if mf.exists() and manifest(b)["status"] == "built":
            quants.add(manifest(b)["config"]["targets"]["gguf8"]["quant"])
    assert {"q8_0", "f16"} <= quants


def test_evaluation_in_eval_json_manifest_and_card(first_build):
    from huggingface_hub import ModelCard

    cwd, _ = first_build
    d = latest(cwd)
    ev = json.loads((d / "eval.json").read_text())
    assert ev["source"]["parity"]["windows"] == 2 and ev["source"]["tasks"]["mmlu-sample"]["n"] == 4
    assert ev["source"]["speed"]["runtime"] == "torch float32"
    m = manifest(d)
    for name in ("onnx32", "gguf8"):
        a = next(x for x in m["artifacts"] if x["target"] == name)
        e = a["evaluation"]
        assert e == {k: v for k, v in ev["artifacts"][name].items()
                     if k not in ("backend", "precision", "size", "bits_per_weight", "client")}
        assert ev["artifacts"][name]["client"] == a["client"]  # the figures through the artifact's client
        assert e["status"] == "passed" and e["parity"]["tokens"] == 2 * 31
        assert e["tasks"]["mmlu-sample"]["n"] == 4 and e["golden"]["n"] == 38
        assert e["speed"]["gen_tokens_per_s"] > 0 and e["gates"]
        assert a["export"]["bits_per_weight"] > 0
    card = ModelCard.load(d / "README.md")
    names = {r.metric_name for r in card.data.eval_results}
    assert {"gguf8 text mean KL divergence", "gguf8 text perplexity ratio", "onnx32 mmlu-sample acc",
            "gguf8 golden exact match"} <= names
    assert "### Quality and speed against the source model" in card.text
    assert "| source | torch float32 |" in card.text


def test_eval_gate_too_tight_fails_with_4_and_reruns_nothing(first_build):
    cwd, _ = first_build
    before = latest(cwd)
    # the random model answers no golden question: a floor of 0.5 on exact match fails
    proc = run_cli(["recipe=tiny", corpus_override(), "+targets.gguf8.gates.min_golden_em=0.5"], cwd)
    assert proc.returncode == 4, proc.stderr[-2000:]
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("llmbuild: error:")]
    assert len(err) == 1 and "targets.gguf8.gates.min_golden_em: golden.exact_match = 0, limit 0.5" in err[0]
    assert latest(cwd) == before
    failed = sorted((cwd / "outputs" / "tiny").glob("*"), key=lambda p: p.stat().st_mtime)[-1]
    m = manifest(failed)
    assert m["status"] == "gate failed" and not [s for s in m["stages"] if s["status"] == "run"]
    assert (failed / "eval.json").is_file()
    assert "min_golden_em golden.exact_match 0.5 **FAILED**" in (failed / "README.md").read_text()
