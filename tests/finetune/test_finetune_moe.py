"""Fine-tuning a mixture of experts (a bf16 tiny Qwen2-MoE): LoRA adapts attention by default and the experts on
request (PEFT's target_parameters on transformers' fused experts), the routers never move unless full
fine-tuning is told to train them, and the merged checkpoint keeps the published per-expert layout that
every target reads."""

from __future__ import annotations

import pytest

from llmbuild.checkpoint import open_checkpoint
from tests.conftest import CORPUS, TINY
from tests.finetune.test_finetune import FACTS, cfg_for, chat, run, write_jsonl

ARCH = "Qwen2MoeForCausalLM"


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> dict:
    from llmbuild.synth import create_model

    root = tmp_path_factory.mktemp("ft-moe")
    model = create_model(root / "base", ARCH, TINY[ARCH], seed=0, train_text=CORPUS, vocab_size=512, dtype="bfloat16")
    return {"root": root, "model": model, "train": write_jsonl(root / "train.jsonl", [chat(q, a) for q, a in FACTS] * 4),
            "golden": write_jsonl(root / "golden.jsonl", [{"prompt": q, "answer": a} for q, a in FACTS[:2]])}


def changed(ws, out) -> set[str]:
    from safetensors.torch import load_file

    base, tuned = load_file(ws["model"] / "model.safetensors"), load_file(out / "merged" / "model.safetensors")
    assert set(base) == set(tuned)  # the per-expert layout, as published and as the targets read it
    assert all(t.dtype == base[k].dtype for k, t in tuned.items())
    return {k for k in base if not base[k].equal(tuned[k])}


def kinds(names: set[str]) -> set[str]:
    out = set()
    for n in names:
        out.add("router" if ".mlp.gate." in n else "shared_gate" if "shared_expert_gate" in n else
                "experts" if ".mlp.experts." in n else "shared" if ".shared_expert." in n else
                "attention" if ".self_attn." in n else n)
    return out


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_lora_adapts_attention_by_default_and_leaves_experts_and_routers(ws):
    rec, out = run(ws, cfg_for(ws), "lora-default")
    assert rec["hyperparameters"]["lora"]["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert kinds(changed(ws, out)) == {"attention"}
    open_checkpoint(out / "merged").arch.check_checkpoint(out / "merged")  # experts and routers all there


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_lora_on_the_experts_when_asked_with_routers_frozen(ws):
    from llmbuild.errors import InvalidInput

    mods = {"lora.target_modules": ["q_proj", "v_proj", "experts"]}
    with pytest.raises(InvalidInput, match=r"^finetune\.lora\.dropout: 0\.1, but LoRA on experts .* set lora\.dropout=0$"):
        run(ws, cfg_for(ws, **mods), "lora-experts-dropout")
    rec, out = run(ws, cfg_for(ws, **mods, **{"lora.dropout": 0.0}), "lora-experts")
    got = kinds(changed(ws, out))
    assert {"attention", "experts"} <= got and "router" not in got and "shared_gate" not in got, got


def test_full_finetune_freezes_the_routers_unless_told(ws):
    _, out = run(ws, cfg_for(ws, method="full", lr=1e-4, max_steps=2), "full")
    got = kinds(changed(ws, out))
    assert "experts" in got and "router" not in got, got
    _, out = run(ws, cfg_for(ws, method="full", lr=1e-4, max_steps=2, **{"full.train_router": True}), "full-router")
    assert "router" in kinds(changed(ws, out))
