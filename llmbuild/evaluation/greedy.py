"""Greedy decoding, the loop every runtime shares: the prompt in one pass, then one token per step.

Each runtime supplies only `step(ids) -> next token`, which feeds `ids` through its own KV cache
(llama.cpp's context, the ONNX graph's past_key_values, transformers' cache), so the loop, the stop
rule and the timings are the same for all and their speed figures compare like with like.

Besides the end-of-sequence token, a run can stop on a rule over the tokens generated so far (the
harness's `until` strings are text, so the rule decodes and looks for them). The backends' generate
functions take no such argument (their signature is the backend contract), so the rule is set for a
block with `stop_when(...)` and every greedy loop run inside it obeys it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

# the stop rule of the running block: new tokens so far -> stop now (the last token is kept)
_STOP: ContextVar[Callable[[list[int]], bool] | None] = ContextVar("llmbuild_greedy_stop", default=None)


@contextmanager
def stop_when(rule: Callable[[list[int]], bool] | None) -> Iterator[None]:
    """Every greedy loop in this block also stops once `rule(new_tokens)` is true."""
    token = _STOP.set(rule)
    try:
        yield
    finally:
        _STOP.reset(token)


def greedy(step: Callable[[list[int]], int], prompt_ids: list[int], max_new_tokens: int, eos_id: int | None,
           timings: dict | None = None) -> list[int]:
    """Tokens after the prompt, stopping after `eos_id` (not returned), `max_new_tokens`, or when the
    block's stop rule (`stop_when`) holds for the tokens so far.

    `timings`, when given, receives the seconds of the prompt pass and of the decode steps, and the
    number of steps: the first new token comes out of the prompt pass, each later one costs one step.
    """
    stop = _STOP.get()
    t0 = time.perf_counter()
    tok = step(list(prompt_ids))
    t1 = time.perf_counter()
    out, steps = [], 0
    while tok != eos_id and len(out) < max_new_tokens:
        out.append(tok)
        if len(out) == max_new_tokens or (stop is not None and stop(out)):
            break
        tok = step([tok])
        steps += 1
    if timings is not None:
        timings.update(prompt_seconds=t1 - t0, decode_seconds=time.perf_counter() - t1, decode_steps=steps)
    return out
