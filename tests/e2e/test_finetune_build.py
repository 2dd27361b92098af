"""End to end through the engine: a LoRA fine-tune feeds every target, the evidence reaches the card and
the manifest, the dataset license reaches the license gate, and a rerun reuses the stage."""

from __future__ import annotations

import json

import pytest

from tests.helpers import REPO, corpus_override, latest, manifest, run_cli

DATA = REPO / "data" / "finetune"
LORA = ["finetune=lora", "finetune.max_steps=6", "finetune.batch_size=4", "finetune.lora.rank=4",
        "finetune.lora.alpha=8", "finetune.checkpoint_every=3", "finetune.max_seq_len=64",
        f"finetune.golden={DATA / 'golden.jsonl'}",
        f"finetune.datasets=[{{path: {DATA / 'facts-train.jsonl'}, shape: chat, license: cc0-1.0, "
        f"eval_path: {DATA / 'facts-eval.jsonl'}}}]"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("ft")
    proc = run_cli(["recipe=tiny", corpus_override(), "~targets.onnx32", *LORA], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd


def test_targets_are_built_from_the_merged_model(built):
    d = latest(built)
    m = manifest(d)
    ft = m["finetune"]
    assert ft["method"] == "lora" and ft["steps"] == 6 and len(ft["train_loss"]) == 6
    assert m["inputs"]["model_digest"] != m["base_model_inputs"]["model_digest"]
    assert m["inputs"]["model_dir"].endswith("merged")
    assert all(a["verification"]["status"] == "passed" for a in m["artifacts"])
    assert (d / "loss.png").stat().st_size > 1000 and (d / "adapter" / "adapter_config.json").is_file()
    card = (d / "README.md").read_text()
    assert "golden set exact match (38 questions)" in card and "base_model_relation" not in card  # no hub base
    report = json.loads((d / "license_report.json").read_text())
    assert "cc0-1.0" in json.dumps(report)  # the dataset's license went to the gate


def test_rerun_reuses_the_finetune_stage(built):
    proc = run_cli(["recipe=tiny", corpus_override(), "~targets.onnx32", *LORA], built)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stages = {s["stage"]: s["status"] for s in manifest(latest(built))["stages"]}
    assert stages["finetune"] == "reused"


def test_nc_training_data_fails_the_commercial_gate(built):
    nc = [x.replace("license: cc0-1.0", "license: cc-by-nc-4.0") for x in LORA]
    proc = run_cli(["recipe=tiny", corpus_override(), "~targets.onnx32", *nc], built)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
