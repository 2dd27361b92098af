"""LoRA on every family of the registry: the family's default target modules are the ones peft adapts
(Phi-3's fused qkv_proj and gate_up_proj, Gemma's projections beside its extra norms), training moves each
of them, and the merged checkpoint loads as the family's transformers model."""

from __future__ import annotations

import json

import pytest

from llmbuild import archs
from llmbuild.finetune import stage
from tests.conftest import make_tiny
from tests.finetune.test_finetune import FACTS, chat, write_jsonl

FAMILIES = archs.names()


@pytest.mark.filterwarnings("ignore::FutureWarning")  # peft 0.21 on transformers 5: a rename notice
@pytest.mark.parametrize("arch", FAMILIES)
def test_lora_adapts_the_family_modules(arch, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from llmbuild.finetune.config import from_dict

    base = make_tiny(tmp_path / "base", arch)
    train = write_jsonl(tmp_path / "train.jsonl", [chat(q, a) for q, a in FACTS] * 2)
    cfg = from_dict({"method": "lora", "datasets": [{"path": str(train), "shape": "chat", "license": "cc0-1.0",
                                                      "eval_fraction": 0.2}],
                     "max_steps": 3, "batch_size": 4, "lr": 5e-3, "checkpoint_every": 3, "max_seq_len": 64,
                     "lora": {"rank": 4, "alpha": 8, "dropout": 0.0}})
    out = tmp_path / "out"
    out.mkdir()
    rec = stage.run(base, cfg, out, tmp_path / "work")
    family = archs.arch_class(arch)
    assert rec["hyperparameters"]["lora"]["target_modules"] == list(family.lora_modules)
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert set(adapter["target_modules"]) == set(family.lora_modules)
    merged = AutoModelForCausalLM.from_pretrained(str(out / "merged"), dtype=torch.float32).eval()
    before = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32).eval()
    assert type(merged).__name__ == arch
    ids = torch.tensor([[1, 50, 60, 70, 80]])
    with torch.no_grad():
        moved = (merged(ids).logits - before(ids).logits).abs().max()
    assert moved > 1e-3, "training left the merged model unchanged"
    # every adapted module was merged: the fused projections of Phi-3 included
    changed = {n.rsplit(".", 2)[-2] for n, p in merged.named_parameters()
               if not torch.equal(p, before.get_parameter(n))}
    assert set(family.lora_modules) <= changed, changed
