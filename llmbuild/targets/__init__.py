"""The target backends, registered by name in one static table.

A backend is one module in this package holding a `Backend` subclass (targets/base.py) and its
instance `BACKEND`; it joins llmbuild with one row here. Listing or validating targets imports only
the backend modules, which keep torch/onnx/gguf imports inside functions, so planning stays light.

The class declares what the rest of llmbuild reads (base.py has the contract): its `Options`,
precisions and which of them only convert, default gates (the perplexity-ratio gate included), tools
keyed into its exports, the runtime that verifies it and how to install it, path options, recipe-only
checks (`check_options`, run when the recipe is typed) and model checks (`check_model`, right after
acquisition), whether it generates (or why not), the card's "get started" lines and notes, and its
serving layouts. The architecture-specific facts come from the model's `Arch` object
(llmbuild/archs), which names the backends that map it: no backend module names an architecture.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from llmbuild.errors import InvalidInput

if TYPE_CHECKING:
    from llmbuild.targets.base import Backend

BACKENDS: dict[str, str] = {
    "onnx": "llmbuild.targets.onnx",  # onnxruntime, CPU; fp32/fp16 with past key values, int8/int4
    "gguf": "llmbuild.targets.gguf",  # llama.cpp; F32/F16/BF16/Q8_0/Q4_0 ... and the K-quants
    "trtllm": "llmbuild.targets.trtllm",  # TensorRT-LLM/vLLM/SGLang HF checkpoints: bf16/fp16, ModelOpt FP8, INT4-AWQ
    "tensorrt": "llmbuild.targets.tensorrt",  # ONNX prepared for TensorRT; engine built where an NVIDIA GPU is
    "hf": "llmbuild.targets.hf",  # a Hub-ready transformers repository folder (sharded safetensors + card)
}


def names() -> list[str]:
    return list(BACKENDS)


def backend(name: str, key: str = "backend") -> Backend:
    if name not in BACKENDS:
        raise InvalidInput(f"{key}: unknown backend {name!r}; known: {', '.join(sorted(BACKENDS))}")
    return importlib.import_module(BACKENDS[name]).BACKEND
