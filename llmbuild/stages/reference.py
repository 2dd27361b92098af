"""Reference: the source model's logits on the probe prompts, computed once in torch.

Every artifact's verification compares against this file, so the source model is loaded once per
(model, probes) and not once per target. The token ids are stored too: every runtime is fed the same
ids, which separates conversion errors from tokenizer differences.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TOOLS = ("torch", "transformers", "tokenizers", "numpy")


def tokenize_probes(model_dir: Path, probes: list[str], max_tokens: int, trust_remote_code: bool) -> list[list[int]]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=trust_remote_code)
    out = []
    for p in probes:
        ids = tok(p).input_ids[:max_tokens]
        if len(ids) >= 2:
            out.append(ids)
    return out


def run(model_dir: Path, probes: list[str], max_tokens: int, dtype: str, trust_remote_code: bool, out: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    token_ids = tokenize_probes(model_dir, probes, max_tokens, trust_remote_code)
    # "auto" computes the reference in float32: upcasting is exact, so the reference is the source model
    torch_dtype = torch.float32 if dtype == "auto" else getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch_dtype,
                                                 trust_remote_code=trust_remote_code).eval()
    top_k = _experts_per_token(model_dir)
    arrays = {}
    with torch.inference_mode():
        for i, ids in enumerate(token_ids):
            res = model(torch.tensor([ids]), **({"output_router_logits": True} if top_k else {}))
            arrays[f"ids_{i}"] = np.asarray(ids, dtype=np.int64)
            arrays[f"logits_{i}"] = res.logits[0].float().numpy().astype(np.float32)
            if top_k:
                arrays[f"routing_{i}"] = routing_of(res.router_logits, top_k)
    np.savez(out / "reference.npz", **arrays)
    return {"probes": len(token_ids), "tokens": sum(len(t) for t in token_ids), "dtype": str(torch_dtype),
            **({"routing": {"top_k": top_k}} if top_k else {})}


def _experts_per_token(model_dir: Path) -> int:
    """top-k of a mixture of experts (0 for a dense model): routing is recorded beside the logits."""
    import json

    from llmbuild.archs import for_config

    arch = for_config(json.loads((Path(model_dir) / "config.json").read_text()))
    return arch.experts_per_token if arch.mixture_of_experts else 0


def routing_of(router_logits, top_k: int) -> np.ndarray:
    """transformers' router logits (one [tokens, experts] tensor per sparse layer) -> the experts each
    token runs, [layers, tokens, top_k], each row sorted: the routers pick the top-k of the softmax,
    which are the top-k logits."""
    import torch

    return np.stack([np.sort(torch.topk(r.float(), top_k, dim=-1).indices.numpy(), axis=-1)
                     for r in router_logits]).astype(np.int32)


def load_routing(path: Path) -> list[np.ndarray] | None:
    """The source's routing per probe, or None for a dense model."""
    data = np.load(path)
    n = len([k for k in data.files if k.startswith("ids_")])
    return [data[f"routing_{i}"] for i in range(n)] if "routing_0" in data.files else None


def load(path: Path) -> tuple[list[list[int]], list[np.ndarray]]:
    data = np.load(path)
    n = len([k for k in data.files if k.startswith("ids_")])
    return [data[f"ids_{i}"].tolist() for i in range(n)], [data[f"logits_{i}"] for i in range(n)]
