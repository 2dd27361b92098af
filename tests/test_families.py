"""Every model family, and every variant its module names, through every target: each artifact run by its
own runtime against transformers under the backend's default gates, in full and through the KV cache.

The families, their tiny configs and variants come from the architecture registry (tests/conftest.py) and
the backends from the backend registry; CASES names the precisions each backend is taken through and must
cover every backend. The default run takes each backend's first case on every family and variant (Qwen3,
Llama 3.2's scaled rope past its original context with tied embeddings, the sliding windows), or on the one
model a family names as `tiny_default` (Phi-3: Phi-4-mini's partial rotary, LongRoPE and tied embeddings),
the TensorRT-prepared graph on one family; the rest is slow-marked (`pytest -m slow tests/test_families.py`).
"""

from __future__ import annotations

import numpy as np
import pytest

from llmbuild import archs
from llmbuild import targets as registry
from llmbuild.checkpoint import open_checkpoint
from llmbuild.stages.verify import apply_gates, compare
from llmbuild.targets.common import ArtifactMeta
from tests.conftest import CORPUS, TINY, VARIANTS

MODELS = [*TINY, *VARIANTS]
# backend -> case -> options: the precisions every family goes through (issue 10)
CASES = {
    "onnx": {"fp32": {}, "fp16": {"dtype": "fp16"}, "int4": {"quant": "int4"}},
    "gguf": {"q8_0": {"quant": "q8_0"}, "f32": {"quant": "f32"}, "q4_k_m": {"quant": "q4_k_m"}},
    "trtllm": {"bf16": {}, "fp8": {"quant": "fp8", "calibration_text": str(CORPUS), "calibration_tokens": 256}},
    "tensorrt": {"fp16": {}},
    "hf": {"bf16": {"dtype": "bfloat16"}, "fp32": {"dtype": "float32"}},
}
RNG = np.random.default_rng(7)
# 47 tokens: past Llama 3.2's original context and past the variants' 32-token windows
PROBES = [[1, *RNG.integers(3, 512, n).tolist()] for n in (22, 46)]
META = ArtifactMeta(name="family-test")
TENSORRT_DEFAULT = "Qwen3ForCausalLM"


def _in_default_run(model: str) -> bool:
    """A family that names its default-run model (`tiny_default`) runs only that one by default; the
    others run every architecture and variant."""
    family = archs.arch_class(VARIANTS[model][0] if model in VARIANTS else model)
    return family.tiny_default in (None, model)


def _params():
    out = []
    for model in MODELS:
        for backend, cases in CASES.items():
            for i, case in enumerate(cases):
                # torch.export costs seconds per model: the default run exports one family's graph
                slow = i > 0 or (backend == "tensorrt" and model != TENSORRT_DEFAULT) or not _in_default_run(model)
                out.append(pytest.param(model, backend, case, id=f"{model}-{backend}-{case}",
                                        marks=[pytest.mark.slow] if slow else []))
    return out


def test_cases_cover_every_backend():
    assert list(CASES) == registry.names()


@pytest.fixture(scope="module")
def model_dir(tiny_models, variant_models):
    return lambda model: tiny_models[model] if model in TINY else variant_models(model)


@pytest.fixture(scope="module")
def source(model_dir):
    """model -> (transformers' float32 logits on PROBES, its routing per probe or None for a dense model)."""
    import torch
    from transformers import AutoModelForCausalLM

    from llmbuild.stages.reference import routing_of

    done = {}

    def get(model: str):
        if model not in done:
            m = AutoModelForCausalLM.from_pretrained(model_dir(model), dtype=torch.float32).eval()
            k = getattr(m.config, "num_experts_per_tok", None)
            with torch.no_grad():
                outs = [m(torch.tensor([p]), **({"output_router_logits": True} if k else {})) for p in PROBES]
            done[model] = ([o.logits[0].numpy() for o in outs],
                           [routing_of(o.router_logits, k) for o in outs] if k else None)
        return done[model]

    return get


@pytest.fixture(scope="module")
def reference(source):
    """model -> transformers' float32 logits on PROBES."""
    return lambda model: source(model)[0]


@pytest.mark.parametrize("model, backend, case", _params())
def test_family_through_target(model, backend, case, model_dir, reference, source, tmp_path):
    b = registry.backend(backend)
    if not b.runtime_available():
        pytest.skip(f"{b.runtime.dist} is not installed")
    opts = b.Options(**CASES[backend][case])
    ckpt = open_checkpoint(model_dir(model))
    b.check_options(opts, "targets.t")
    b.check_model(opts, ckpt.arch, ckpt.dir, "targets.t")
    rec = b.export(ckpt, opts, tmp_path, META, lambda *a: None)
    # the build verifies every artifact within the context it declares (a window, where llama.cpp has none)
    ctx, why = b.context_length(opts, ckpt.arch)
    probes = [p[:ctx] for p in PROBES]
    ref = [r[:len(p)] for r, p in zip(reference(model), probes)]
    full = b.run_logits(tmp_path, rec, probes)
    kv = [b.run_logits(tmp_path, rec, [p], split=len(p) // 2)[0] for p in probes]
    record = {"metrics": compare(ref, full), "kv_metrics": compare(ref, kv)}
    gates = b.default_gates(opts)
    if b.quantized(opts):
        gates.pop("min_top1")  # random weights: near-tied logits make top-1 noise under quantization
    results = apply_gates(record, gates)
    assert all(r["passed"] for r in results), (results, record)
    if why:
        assert ctx < ckpt.arch.context and rec.get("context_length") == ctx and why in b.notes(rec)
    if ckpt.arch.mixture_of_experts:
        _check_routing(b, opts, tmp_path, rec, probes, source(model)[1])


def _check_routing(b, opts, artifact_dir, rec, probes, ref_routing):
    """Where the runtime shows its routing, the experts it runs are the source's: every token and layer
    for a lossless precision (the same logits up to float rounding), most of them when quantized."""
    from llmbuild.stages.verify import routing_agreement

    if b.no_routing:
        assert isinstance(b.no_routing, str) and b.no_routing
        return
    got = routing_agreement([r[:, : len(p)] for r, p in zip(ref_routing, probes)], b.run_routing(artifact_dir, rec, probes))
    assert got["layers"] == ref_routing[0].shape[0] and got["top_k"] == ref_routing[0].shape[2]
    floor = 0.99 if b.precision(opts) in ("fp32", "f32") else 0.6
    assert got["agreement"] >= floor, got


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_changes_what_the_model_computes(variant, reference):
    """Same seed, same weights: a variant's quirk (scaled rope past its original context, a window shorter
    than the probes) moves transformers' logits well beyond every gate, so passing them above means the
    targets compute the quirk too."""
    base = VARIANTS[variant][0]
    assert max(np.abs(a[: len(b)] - b[: len(a)]).max() for a, b in zip(reference(variant), reference(base))) > 1e-2
