"""The source model in PyTorch (float32 unless the recipe's model.dtype says otherwise): the baseline
every artifact is compared with, and the fp32 torch speed baseline.

Generation is greedy with the model's KV cache (one forward over the prompt, then one token per step
through transformers' cache), the same procedure every artifact's runtime runs, timed the same way.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from llmbuild.evaluation.greedy import greedy


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

    def batch_logits(self, token_ids: list[list[int]]):
        """Logits [len, vocab] (float32 numpy) of each sequence, every position, in one forward pass.

        Sequences are padded on the right to the longest (lm-evaluation-harness's HFLM pads the same
        way): causal attention makes each position's logits depend on the tokens up to it only, so the
        padding changes none of the rows returned.
        """
        import torch

        if not token_ids:
            return []
        width = max(len(ids) for ids in token_ids)
        x = torch.tensor([list(ids) + [0] * (width - len(ids)) for ids in token_ids])
        with torch.inference_mode():
            logits = self.model(x).logits.float().numpy()
        return [logits[i, :len(ids)] for i, ids in enumerate(token_ids)]

    def generate(self, prompt_ids: list[int], max_new_tokens: int, eos_id: int | None,
                 timings: dict | None = None) -> list[int]:
        import torch

        state = {"cache": None}

        def step(ids: list[int]) -> int:
            # logits_to_keep=1: the output layer for the last position only, as a serving runtime does
            out = self.model(torch.tensor([ids]), cache=state["cache"], use_cache=True, logits_to_keep=1)
            state["cache"] = out.cache
            return int(out.logits[0, -1].argmax())

        with torch.inference_mode():
            return greedy(step, prompt_ids, max_new_tokens, eos_id, timings)
