"""The golden set: questions with one right answer, asked greedily before and after fine-tuning.

Exact match after stripping surrounding whitespace, on the checkpoint as saved (the base model before,
the merged model after), so the figure is evidence about the artifact every target is built from, not
about the training copy in memory. Prompts are rendered like the first dataset's prompts (chat template,
instruction sections or plain text), so the model is asked the way it was taught.
"""

from __future__ import annotations

from pathlib import Path

from llmbuild.finetune.config import Shape
from llmbuild.finetune.data import ensure_chat_template, golden_prompt_ids


def exact_match(model_dir: Path, golden: list[dict], shape: Shape, max_new_tokens: int,
                default_template: bool = False, keep: int = 5) -> dict:
    """{"exact_match", "correct", "n", "examples": the first `keep` (prompt, answer, output, ok)}."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    if default_template:
        ensure_chat_template(tok)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype="auto").eval()
    eos = tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    rows, correct = [], 0
    with torch.no_grad():
        for g in golden:
            ids = torch.tensor([golden_prompt_ids(g["prompt"], shape, tok)])
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, eos_token_id=eos, pad_token_id=pad)
            text = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
            ok = text == g["answer"].strip()
            correct += ok
            rows.append({"prompt": g["prompt"], "answer": g["answer"], "output": text, "ok": ok})
    n = len(golden)
    return {"exact_match": round(correct / n, 4), "correct": correct, "n": n, "examples": rows[:keep]}
