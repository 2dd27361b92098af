"""Routing agreement, the figure verification adds for a mixture of experts: what the reference records, how the
agreement is counted, and how the card shows it (including a runtime that does not expose its routing)."""

from __future__ import annotations

import numpy as np

from llmbuild.report.document import _routing_section
from llmbuild.stages import reference
from llmbuild.stages.verify import routing_agreement


def test_reference_records_the_sources_routing_for_a_mixture_only(tiny_models, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    for arch, moe in (("Qwen3MoeForCausalLM", True), ("LlamaForCausalLM", False)):
        out = tmp_path / arch
        out.mkdir()
        rec = reference.run(tiny_models[arch], ["The cat sat on the mat.", "One two three four five six"], 24,
                            "auto", False, out)
        routing = reference.load_routing(out / "reference.npz")
        assert (routing is not None) == moe and ("routing" in rec) == moe
        if moe:
            ids, _ = reference.load(out / "reference.npz")
            m = AutoModelForCausalLM.from_pretrained(tiny_models[arch], dtype=torch.float32)
            logits = m(torch.tensor([ids[0]]), output_router_logits=True).router_logits
            # [layers, tokens, top_k], each token's experts sorted, the top-2 of its router logits
            assert routing[0].shape == (2, len(ids[0]), 2)
            want = np.sort(torch.topk(logits[1][3], 2).indices.numpy())
            np.testing.assert_array_equal(routing[0][1, 3], want)


def test_agreement_counts_token_layer_pairs_whose_expert_set_matches():
    ref = [np.array([[[0, 1], [2, 3], [0, 3]], [[1, 2], [0, 1], [2, 3]]])]  # 2 layers, 3 tokens, top-2
    art = [np.array([[[0, 1], [2, 3], [1, 3]], [[1, 2], [0, 1], [2, 3]]])]  # one pair differs
    got = routing_agreement(ref, art)
    assert got == {"status": "measured", "agreement": 5 / 6, "lowest_layer": 2 / 3, "layers": 2, "tokens": 3,
                   "top_k": 2}


def test_card_shows_agreement_or_why_not_observable():
    rows = [{"name": "g", "verification": {"routing": {"agreement": 0.95, "lowest_layer": 0.9, "tokens": 40,
                                                       "layers": 2}}},
            {"name": "t", "verification": {"routing": {"status": "not observable", "reason": "graph outputs logits"}}},
            {"name": "dense", "verification": {"status": "passed"}}]
    text = "\n".join(_routing_section(rows))
    assert "| `g` | 0.9500 | 0.9000 | 40 x 2 |" in text
    assert "| `t` | not observable: graph outputs logits | | |" in text and "dense" not in text
    assert _routing_section(rows[2:]) == []
