"""End to end through the engine: a LoRA fine-tune feeds every target, the evidence reaches the card and
the manifest, the dataset license reaches the license gate, and a rerun reuses the stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import REPO, corpus_override, latest, manifest, run_cli

DATA = REPO / "data" / "finetune"
LORA = ["finetune=lora", "finetune.max_steps=6", "finetune.batch_size=4", "finetune.lora.rank=4",
        "finetune.lora.alpha=8", "finetune.checkpoint_every=3", "finetune.max_seq_len=64",
        f"finetune.golden={DATA / 'golden.jsonl'}",
        f"finetune.datasets=[{{path: {DATA / 'facts-train.jsonl'}, shape: chat, license: cc0-1.0, "
        f"eval_path: {DATA / 'facts-eval.jsonl'}, hub_id: acme/demo-facts}}]", "+targets.merged.backend=hf"]


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


def test_adapter_finds_its_base_and_the_merged_model_is_a_hub_folder(built):
    """The build's adapter names its base (here the seeded model's folder), so AutoPeftModelForCausalLM loads
    it alone and computes what the merged model in artifacts/merged (the hf target) computes; that folder's
    card lists the dataset by its Hub id, never its path, and says it is a fine-tune."""
    import torch
    from huggingface_hub import ModelCard
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM

    from llmbuild.report.card_checks import problems

    d = latest(built)
    acfg = json.loads((d / "adapter" / "adapter_config.json").read_text())
    base = acfg["base_model_name_or_path"]
    assert base and (Path(base) / "config.json").is_file()
    assert base == str((built / manifest(d)["base_model_inputs"]["model_dir"]).resolve())
    peft_model = AutoPeftModelForCausalLM.from_pretrained(str(d / "adapter"), dtype=torch.float32).eval()
    merged = AutoModelForCausalLM.from_pretrained(str(d / "artifacts" / "merged"), dtype=torch.float32).eval()
    ids = torch.tensor([[1, 45, 87, 300, 12, 99]])
    with torch.no_grad():
        assert (peft_model(ids).logits - merged(ids).logits).abs().max() < 1e-3
    # the cached adapter is untouched: its config keeps null (the cache entry's bytes do not depend on paths)
    cached = next(built.glob("outputs/.cache/**/finetune/**/adapter/adapter_config.json"))
    assert json.loads(cached.read_text())["base_model_name_or_path"] is None
    text = (d / "artifacts" / "merged" / "README.md").read_text()
    assert problems(text) == []
    data = ModelCard(text).data.to_dict()
    assert data["datasets"] == ["acme/demo-facts"] and data["library_name"] == "transformers"
    assert ModelCard.load(d / "README.md").data.to_dict()["datasets"] == ["acme/demo-facts"]


def test_dataset_hub_id_must_be_an_id(tmp_path):
    from tests.helpers import one_line_error

    args = [a for a in LORA if not a.startswith("finetune.datasets=")] + [
        f"finetune.datasets=[{{path: {DATA / 'facts-train.jsonl'}, shape: chat, license: cc0-1.0, "
        f"hub_id: {DATA / 'facts-train.jsonl'}}}]"]
    proc = run_cli(["recipe=tiny", corpus_override(), "~targets.onnx32", *args], tmp_path)
    assert proc.returncode == 2 and "finetune.datasets[0].hub_id" in one_line_error(proc)


def test_dry_run_after_the_build_shows_the_keys_the_manifest_recorded(built):
    """The plan is what ran: after a build with a fine-tune, evaluation, contamination and two targets, the
    dry run lists exactly the manifest's stages, each cached (or checked) under the key the build recorded."""
    from tests.test_dry_run import plan_lines

    recorded = {s["stage"]: s for s in manifest(latest(built))["stages"]}
    assert {"finetune", "evalref", "contamination", "export:gguf8", "client:merged"} <= set(recorded)
    proc = run_cli(["recipe=tiny", corpus_override(), "~targets.onnx32", *LORA, "build.dry_run=true"], built)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = plan_lines(proc.stderr)
    assert list(lines) == list(recorded), proc.stderr
    for name, line in lines.items():
        assert line["status"] == ("checked" if recorded[name]["status"] == "checked" else "cached"), proc.stderr
        assert recorded[name]["key"] and line["key"] == recorded[name]["key"][:12], (name, proc.stderr)
