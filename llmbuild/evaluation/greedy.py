"""Greedy decoding, the loop every runtime shares: the prompt in one pass, then one token per step.

Each runtime supplies only `step(ids) -> next token`, which feeds `ids` through its own KV cache
(llama.cpp's context, the ONNX graph's past_key_values, transformers' cache), so the loop, the stop
rule and the timings are the same for all and their speed figures compare like with like.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def greedy(step: Callable[[list[int]], int], prompt_ids: list[int], max_new_tokens: int, eos_id: int | None,
           timings: dict | None = None) -> list[int]:
    """Tokens after the prompt, stopping after `eos_id` (not returned) or `max_new_tokens`.

    `timings`, when given, receives the seconds of the prompt pass and of the decode steps, and the
    number of steps: the first new token comes out of the prompt pass, each later one costs one step.
    """
    t0 = time.perf_counter()
    tok = step(list(prompt_ids))
    t1 = time.perf_counter()
    out, steps = [], 0
    while tok != eos_id and len(out) < max_new_tokens:
        out.append(tok)
        if len(out) == max_new_tokens:
            break
        tok = step([tok])
        steps += 1
    if timings is not None:
        timings.update(prompt_seconds=t1 - t0, decode_seconds=time.perf_counter() - t1, decode_steps=steps)
    return out
