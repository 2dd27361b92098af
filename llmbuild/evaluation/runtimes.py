"""Which function generates text through each backend's runtime, and the timing of one generation.

A backend (llmbuild/targets/base.py) generates greedily through its runtime's KV cache with
`generate(artifact_dir, record, prompt_ids, max_new_tokens, eos_id, threads=..., timings=None)`, or
declares `no_generation` with the reason (golden sets and speed are then skipped, the reason recorded);
`no_speed` skips the speed figures of a backend that generates with a loader whose speed is not a
deployment's.
"""

from __future__ import annotations

import statistics


def generator(backend):
    """(generate function, None) or (None, the reason there is none)."""
    if backend.no_generation:
        return None, backend.no_generation
    return backend.generate, None


def measure_speed(run, prompt_ids: list[int], new_tokens: int, repeats: int = 3) -> dict:
    """Prompt and generated tokens per second of `run(prompt_ids, new_tokens, timings)`, the median of
    `repeats` runs after one short warm-up on the same prompt (first calls pay for allocation and
    thread start-up).

    Generation runs with no end-of-sequence token, so every runtime decodes the same number of steps.
    Threads wait passively between operations in every runtime (OMP_WAIT_POLICY=PASSIVE, set by the
    CLI, and onnxruntime without spinning), as a build on shared cores must; on very small models that
    makes the per-token step slower than a spinning runtime's would be.
    """
    run(prompt_ids, 2, {})
    prompt_rates, gen_rates = [], []
    for _ in range(repeats):
        t: dict = {}
        run(prompt_ids, new_tokens, t)
        prompt_rates.append(len(prompt_ids) / t["prompt_seconds"])
        if t["decode_steps"]:
            gen_rates.append(t["decode_steps"] / t["decode_seconds"])
    return {"prompt_tokens": len(prompt_ids), "new_tokens": new_tokens, "repeats": repeats,
            "prompt_tokens_per_s": round(statistics.median(prompt_rates), 2),
            "gen_tokens_per_s": round(statistics.median(gen_rates), 2) if gen_rates else None}
