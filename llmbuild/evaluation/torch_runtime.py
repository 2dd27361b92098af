"""The source model in PyTorch (float32 unless the recipe's model.dtype says otherwise): the baseline
every artifact is compared with, and the fp32 torch speed baseline.

Generation is greedy with the model's KV cache (one forward over the prompt, then one token per step
through transformers' cache), the same procedure every artifact's runtime runs, timed the same way.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def torch_threads(n: int):
    """Set torch's intra-op threads for a block (the speed figures give every runtime the same count)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


class TorchModel:
    def __init__(self, model_dir: Path, dtype: str = "auto", trust_remote_code: bool = False):
        import torch
        from transformers import AutoModelForCausalLM

        torch_dtype = torch.float32 if dtype == "auto" else getattr(torch, dtype)
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch_dtype,
                                                          trust_remote_code=trust_remote_code).eval()
        self.dtype = str(torch_dtype).replace("torch.", "")

    def logits(self, token_ids: list[list[int]]):
        """Logits [len, vocab] (float32 numpy) of each sequence, every position."""
        import torch

        with torch.inference_mode():
            return [self.model(torch.tensor([ids])).logits[0].float().numpy() for ids in token_ids]

    def generate(self, prompt_ids: list[int], max_new_tokens: int, eos_id: int | None,
                 timings: dict | None = None) -> list[int]:
        import torch

        with torch.inference_mode():
            t0 = time.perf_counter()
            # logits_to_keep=1: the output layer for the last position only, as a serving runtime does
            out = self.model(torch.tensor([prompt_ids]), use_cache=True, logits_to_keep=1)
            tok = int(out.logits[0, -1].argmax())
            t1 = time.perf_counter()
            cache, gen, steps = out.cache, [], 0
            while tok != eos_id and len(gen) < max_new_tokens:
                gen.append(tok)
                if len(gen) == max_new_tokens:
                    break
                out = self.model(torch.tensor([[tok]]), cache=cache, use_cache=True)
                cache, steps = out.cache, steps + 1
                tok = int(out.logits[0, -1].argmax())
        if timings is not None:
            timings.update(prompt_seconds=t1 - t0, decode_seconds=time.perf_counter() - t1, decode_steps=steps)
        return gen
