"""Harness tasks in the evaluate stage: the source side scores them once, each artifact beside it with the
drop per metric, max_drop gates, a cache key that follows the task data by content, and the card,
eval.json and model-index rows they produce."""

from __future__ import annotations

import copy
import json
import shutil
from types import SimpleNamespace

import pytest

from llmbuild.checkpoint import open_checkpoint
from llmbuild.config import EvalConfig, HarnessConfig
from llmbuild.stages import evaluate
from llmbuild.targets.common import ArtifactMeta
from tests.evaluation import harness_tasks

pytest.importorskip("lm_eval")


@pytest.fixture(scope="module")
def stage(tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("harness-stage")
    tasks = harness_tasks.write(root / "tasks")
    cfg = EvalConfig(speed=False, harness=HarnessConfig(tasks=["t_mc", "t_gen"], include_path=str(tasks),
                                                        bootstrap_iters=10, max_drop={"acc": 0.0}))
    model = tiny_models["LlamaForCausalLM"]
    ref_out = root / "ref"
    ref_out.mkdir()
    summary = evaluate.prepare(model, cfg, "auto", False, ref_out)
    return SimpleNamespace(root=root, cfg=cfg, model=model, ref_out=ref_out, summary=summary, tasks=tasks)


def artifact(stage, name, **quant):
    from llmbuild.targets import onnx, onnx_quant

    out = stage.root / name
    if not out.exists():
        out.mkdir()
        rec = onnx.export(open_checkpoint(stage.model), onnx.Options(), out, ArtifactMeta(name="t"), lambda *a: None)
        if quant:
            rec = onnx_quant.apply(out, SimpleNamespace(dtype="fp32", **quant), rec)
        (out / "record.json").write_text(json.dumps(rec))
    return out, json.loads((out / "record.json").read_text())


def test_source_and_artifacts_side_by_side(stage):
    from llmbuild.targets import onnx

    src = stage.summary["harness"]
    assert src["runtime"] == "torch float32" and set(src["tasks"]) == {"t_mc", "t_gen"}
    assert src["tasks"]["t_mc"]["n"] == len(harness_tasks.QUESTIONS) and src["tasks"]["t_mc"]["num_fewshot"] == 0
    assert set(src["tasks"]["t_mc"]["metrics"]) == {"acc", "acc_norm"}
    out, rec = artifact(stage, "onnx32")
    ev = evaluate.run(onnx.BACKEND, "onnx", out, rec, stage.ref_out, stage.summary, stage.model, stage.cfg, False)
    acc = ev["harness"]["tasks"]["t_mc"]["metrics"]["acc"]
    assert acc["value"] == acc["source"] and acc["drop"] == 0 and acc["stderr"] is not None
    gates = evaluate.apply_gates(ev, {}, stage.cfg)
    assert gates == [{"gate": "max_drop", "figure": "harness.t_mc.acc", "value": 0.0, "limit": 0.0, "passed": True,
                      "key": "eval.harness.max_drop.acc"}]


def test_a_drop_beyond_max_drop_fails_the_gate(stage):
    from llmbuild.evaluation import harness

    src = stage.summary["harness"]
    worse = copy.deepcopy(src)
    worse["tasks"]["t_mc"]["metrics"]["acc"]["value"] -= 0.25
    worse["tasks"]["t_gen"]["metrics"]["exact_match"]["value"] += 0.5  # better is no drop
    rec = harness.compare(worse, src)
    assert rec["tasks"]["t_mc"]["metrics"]["acc"]["drop"] == pytest.approx(0.25)
    assert rec["tasks"]["t_gen"]["metrics"]["exact_match"]["drop"] == pytest.approx(-0.5)
    gates = harness.gates(rec, {"acc": 0.1, "exact_match": 0.0})
    assert [(g["figure"], g["passed"]) for g in gates] == [("harness.t_mc.acc", False), ("harness.t_gen.exact_match", True)]
    # lower is better: a rise in perplexity is the drop
    ppl = {"tasks": {"t": {"metrics": {"word_perplexity": {"value": 12.0, "higher_is_better": False}}}}}
    base = {"tasks": {"t": {"metrics": {"word_perplexity": {"value": 10.0, "stderr": None}}}}}
    assert harness.compare(ppl, base)["tasks"]["t"]["metrics"]["word_perplexity"]["drop"] == pytest.approx(2.0)


def test_the_key_follows_the_task_data_by_content(stage, tmp_path):
    from llmbuild.evaluation import harness
    from llmbuild.hashing import sha256_file

    tasks = tmp_path / "tasks"
    shutil.copytree(stage.tasks, tasks, ignore=shutil.ignore_patterns("datasets"))
    for y in tasks.glob("*.yaml"):  # the copied YAML points at the copied data
        y.write_text(y.read_text().replace(str(stage.tasks), str(tasks)))
    c = HarnessConfig(tasks=["t_mc"], include_path=str(tasks))
    k1 = harness.key_parts(c, sha256_file)
    assert k1["lm_eval"] == harness.version() and k1["tasks"]["t_mc"]["docs"]
    assert harness.key_parts(c, sha256_file) == k1
    lines = (tasks / "mc.jsonl").read_text().splitlines()
    (tasks / "mc.jsonl").write_text("\n".join([lines[1], lines[0], *lines[2:]]) + "\n")  # same files, new order
    k2 = harness.key_parts(c, sha256_file)
    assert k2["tasks"]["t_mc"]["docs"] != k1["tasks"]["t_mc"]["docs"] and k2["include_path"] != k1["include_path"]
    assert harness.key_parts(HarnessConfig(tasks=["t_mc"], include_path=str(tasks), num_fewshot=2), sha256_file) != k2


def test_card_eval_json_and_model_index(stage):
    from huggingface_hub import EvalResult

    from llmbuild.evaluation import harness
    from llmbuild.report import document

    src = stage.summary["harness"]
    art = harness.compare(copy.deepcopy(src), src)
    art["runtime"] = "onnxruntime"
    art["skipped"] = {}
    rows = [{"name": "cpu-onnx", "evaluation": {"harness": art, "gates": harness.gates(art, {"acc": 0.01})}}]
    build = SimpleNamespace(eval_source={"harness": src}, contamination={
        "n": 13, "min_words": 8, "training_documents": 308, "training_files": ["train.jsonl"], "gates": [],
        "sets": [{"set": "golden", "kind": "golden set", "source": "golden.jsonl", "documents": 38, "checked": 38,
                  "too_short": 0, "contaminated": 38, "share": 1.0,
                  "examples": [{"doc": 0, "text": "What is the capital of France? Paris",
                                "ngram": "what is the capital of france paris", "training": "train.jsonl:12"}]}]})
    lines = "\n".join(document.harness_section(build, rows))
    acc = src["tasks"]["t_mc"]["metrics"]["acc"]
    assert "### lm-evaluation-harness tasks" in lines and "t_mc acc (0-shot, 6 docs)" in lines
    assert f"| `cpu-onnx` | onnxruntime | {acc['value']:.4g} ± {acc['stderr']:.3f} (+0)" in lines
    assert "max_drop t_mc.acc 0.01 ok" in lines
    text = "\n".join(document.contamination_lines(build))
    assert "`golden` (golden set, golden.jsonl): **38 of 38** documents (100.0%)" in text
    assert "`train.jsonl:12`" in text
    entries = document.harness_results("cpu-onnx", art, EvalResult)
    e = next(x for x in entries if x.dataset_type == "t_mc" and x.metric_type == "acc")
    assert e.metric_value == pytest.approx(acc["value"]) and e.metric_args["num_fewshot"] == 0
    assert e.metric_args["lm_eval_version"] == harness.version() and e.metric_args["source_value"] == acc["value"]
    assert e.metric_args["stderr"] == pytest.approx(acc["stderr"])


def test_settings_the_artifact_side_reads_change_evalref_outputs(tiny_models, tmp_path):
    """The artifacts' evaluate keys hold evalref's output digest: a setting only the artifact side reads
    (here the golden answers' length) must change those outputs, or artifacts would be reused stale."""
    golden = tmp_path / "golden.jsonl"
    golden.write_text(json.dumps({"prompt": "What is the capital of France?", "answer": "Paris"}) + "\n")
    outs = []
    for n in (2, 3):
        out = tmp_path / f"ref{n}"
        out.mkdir()
        evaluate.prepare(tiny_models["LlamaForCausalLM"], EvalConfig(golden=str(golden), speed=False,
                                                                     golden_max_new_tokens=n), "auto", False, out)
        outs.append((out / "evalref.json").read_bytes())
    assert outs[0] != outs[1]


def test_the_key_is_the_same_in_another_process(stage):
    """The shipped demo task uses Python functions (custom_dataset, doc_to_choice): the key holds their
    source, never a repr with a memory address, so a second build reuses the evaluation."""
    import subprocess
    import sys

    from llmbuild.evaluation import harness
    from llmbuild.hashing import sha256_file, sha256_json
    from tests.conftest import REPO

    code = ("import sys; from llmbuild.config import HarnessConfig; from llmbuild.evaluation import harness; "
            "from llmbuild.hashing import sha256_file, sha256_json; "
            "print(sha256_json(harness.key_parts(HarnessConfig(tasks=['demo_facts', 'demo_facts_gen'], "
            "include_path=sys.argv[1]), sha256_file)))")
    inc = str(REPO / "data" / "eval" / "harness")
    other = subprocess.run([sys.executable, "-c", code, inc], capture_output=True, text=True, check=True, cwd=REPO)
    here = sha256_json(harness.key_parts(HarnessConfig(tasks=["demo_facts", "demo_facts_gen"], include_path=inc),
                                         sha256_file))
    assert other.stdout.strip() == here
