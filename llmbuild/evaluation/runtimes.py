"""Which function generates text through each backend's runtime, the timing of one generation, and the
small runtime interface the lm-evaluation-harness adapter is written against.

A backend (llmbuild/targets/base.py) generates greedily through its runtime's KV cache with
`generate(artifact_dir, record, prompt_ids, max_new_tokens, eos_id, threads=..., timings=None)`, or
declares `no_generation` with the reason (golden sets and speed are then skipped, the reason recorded);
`no_speed` skips the speed figures of a backend that generates with a loader whose speed is not a
deployment's.

`Runtime` is all that llmbuild.evaluation.harness_lm needs of a runtime: logits at every position of
some token-id sequences, and greedy generation through the KV cache that stops at eos (and at the
stop rule of llmbuild.evaluation.greedy.stop_when). `artifact_runtime` is the one place that builds it
from what a backend offers; `source_runtime` builds it for the source model in torch.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def generator(backend):
    """(generate function, None) or (None, the reason there is none)."""
    if backend.no_generation:
        return None, backend.no_generation
    return backend.generate, None


@dataclass
class Runtime:
    """One model as the harness adapter sees it."""

    name: str  # what the records call it: "onnxruntime", "llama-cpp-python", "torch float32"
    # sequences of token ids -> float32 logits [len(seq), vocab] for each, every position
    logits: Callable[[list[list[int]]], list]
    # (prompt ids, max new tokens, eos id) -> greedy new tokens (eos not included); None: cannot generate
    generate: Callable[[list[int], int, int | None], list[int]] | None = None
    no_generation: str | None = None  # why generate is None
    batched: bool = False  # logits() runs its sequences as one padded batch (else one by one)


def artifact_runtime(backend, artifact_dir: Path, record: dict, threads: int) -> Runtime:
    """The runtime of a built artifact, from what its backend offers (`run_logits`, `generate` or the
    reason there is none); an ONNX graph with past key values of any batch size (what the onnx backend
    writes) is run a padded batch at a time instead of one sequence at a time."""
    from llmbuild.evaluation import onnx_runtime

    gen, reason = generator(backend)
    if onnx_runtime.batchable(artifact_dir, record, threads):
        def logits(seqs):
            return onnx_runtime.batch_logits(artifact_dir, record, seqs, threads=threads)

        batched = True
    else:
        def logits(seqs):
            return backend.run_logits(artifact_dir, record, seqs)

        batched = False

    def generate(prompt_ids, max_new_tokens, eos_id):
        return gen(artifact_dir, record, prompt_ids, max_new_tokens, eos_id, threads=threads)

    return Runtime(name=backend.runtime.dist, logits=logits, generate=generate if gen else None,
                   no_generation=reason, batched=batched)


def source_runtime(model, threads: int) -> Runtime:
    """The source model in torch (llmbuild.evaluation.torch_runtime.TorchModel): batched logits, and
    generation through transformers' KV cache."""
    from llmbuild.evaluation.torch_runtime import torch_threads

    def generate(prompt_ids, max_new_tokens, eos_id):
        with torch_threads(threads):
            return model.generate(prompt_ids, max_new_tokens, eos_id)

    return Runtime(name=f"torch {model.dtype}", logits=model.batch_logits, generate=generate, batched=True)


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
