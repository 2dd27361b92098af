"""A golden set copied from the fine-tuning data is found and gated through a real build: the tiny recipe
fine-tunes on data/finetune/facts-train.jsonl, whose questions the shipped golden set repeats word for
word; with eval.contamination.max_overlap the build writes its reports and exits 4 naming the gate,
and the card and eval.json say which documents overlap and where."""

from __future__ import annotations

import json

import pytest

from tests.helpers import REPO, corpus_override, manifest, one_line_error, run_cli

DATA = REPO / "data" / "finetune"
LORA = ["finetune=lora", "finetune.max_steps=2", "finetune.batch_size=4", "finetune.lora.rank=4",
        "finetune.max_seq_len=32", "finetune.checkpoint_every=0",
        f"finetune.datasets=[{{path: {DATA / 'facts-train.jsonl'}, shape: chat, license: cc0-1.0, "
        f"eval_path: {DATA / 'facts-eval.jsonl'}}}]"]
QUICK = ["~targets.gguf8", "eval.text=null", "eval.tasks=[]", "eval.speed=false", "eval.max_tokens=8"]


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("contaminated")
    proc = run_cli(["recipe=tiny", corpus_override(), *QUICK, *LORA, "eval.contamination.min_words=5",
                    "eval.contamination.max_overlap=0.1", f"eval.heldout_text={REPO / 'data' / 'eval' / 'heldout.txt'}"],
                   cwd)
    return cwd, proc


def test_the_copied_golden_set_fails_the_gate(gated):
    cwd, proc = gated
    assert proc.returncode == 4, proc.stderr[-3000:]
    line = one_line_error(proc)
    assert "eval.contamination.max_overlap" in line and "contamination.golden.share = 1" in line, line


def test_the_reports_name_the_overlap(gated):
    cwd, _ = gated
    build = next((cwd / "outputs" / "tiny").glob("2*"))
    ev = json.loads((build / "eval.json").read_text())
    c = ev["contamination"]
    sets = {s["set"]: s for s in c["sets"]}
    assert c["n"] == 13 and c["training_files"] == ["facts-train.jsonl"] and c["training_documents"] == 308
    g = sets["golden"]
    assert (g["documents"], g["contaminated"], g["share"]) == (38, 38, 1.0)
    assert g["examples"][0]["text"] == "What is the capital of France? Paris"
    assert g["examples"][0]["training"].startswith("facts-train.jsonl:")
    assert sets["heldout_text"]["kind"] == "held-out text" and sets["heldout_text"]["share"] < 0.5
    assert [x["passed"] for x in c["gates"] if x["figure"] == "contamination.golden.share"] == [False]
    card = (build / "README.md").read_text()
    assert "### Contamination" in card and "**38 of 38** documents (100.0%)" in card and "**FAILED**" in card
    stages = {s["stage"]: s["status"] for s in manifest(build)["stages"]}
    assert stages["contamination"] == "run"
