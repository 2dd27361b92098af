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
    arrays = {}
    with torch.inference_mode():
        for i, ids in enumerate(token_ids):
            logits = model(torch.tensor([ids])).logits[0].float().numpy()
            arrays[f"ids_{i}"] = np.asarray(ids, dtype=np.int64)
            arrays[f"logits_{i}"] = logits.astype(np.float32)
    np.savez(out / "reference.npz", **arrays)
    return {"probes": len(token_ids), "tokens": sum(len(t) for t in token_ids), "dtype": str(torch_dtype)}


def load(path: Path) -> tuple[list[list[int]], list[np.ndarray]]:
    data = np.load(path)
    n = len([k for k in data.files if k.startswith("ids_")])
    return [data[f"ids_{i}"].tolist() for i in range(n)], [data[f"logits_{i}"] for i in range(n)]
