"""The target backends, registered by name in one static table.

A backend is one module in this package; it joins llmbuild with one row here. Listing or validating
targets imports only the backend modules, which keep torch/onnx/gguf imports inside functions.

The contract a backend module fulfils (see onnx.py and gguf.py):
    NAME: str                        the `backend:` value in a recipe
    Options: dataclass               its recipe keys, with `backend` and `gates: Gates` fields
    SUPPORTED_ARCHS: set[str]        HF architecture names it can convert
    TOOLS: tuple[str, ...]           distributions whose versions enter the export cache key
    RUNTIME_DIST: str                distribution of the runtime that verifies its artifacts
    check(options, hf_config, key) -> None   plan-time checks, starting with common.check_architecture;
                                             raise InvalidInput naming key + ".opt"
    precision(options) -> str                e.g. "fp32", "q8_0"; picks default gates
    default_gates(options) -> dict           {"min_top1":…, "max_kld":…, "max_abs_diff":…}
    export(ckpt, options, out_dir, meta, progress) -> dict   write files in out_dir only
    runtime_available() -> bool
    run_logits(artifact_dir, record, token_ids, split=None) -> list[np.ndarray]
Optional:
    key_extra(options) -> dict               what the export depends on beyond its options (input file
                                             contents, the GPU and TensorRT version an engine is tied to)
    PATH_OPTIONS: tuple[str, ...]            options holding file paths, resolved like the recipe's own
    generate(artifact_dir, record, prompt_ids, max_new_tokens, eos_id, threads=2, timings=None) -> list[int]
                                             greedy decoding through the runtime's KV cache (golden sets, speed)
"""

from __future__ import annotations

import importlib
from types import ModuleType

from llmbuild.errors import InvalidInput

BACKENDS: dict[str, str] = {
    "onnx": "llmbuild.targets.onnx",  # onnxruntime, CPU; fp32/fp16 with past key values
    "gguf": "llmbuild.targets.gguf",  # llama.cpp; F32/F16/BF16/Q8_0/Q4_0...
    "trtllm": "llmbuild.targets.trtllm",  # TensorRT-LLM/vLLM/SGLang HF checkpoints: bf16/fp16, ModelOpt FP8, INT4-AWQ
    "tensorrt": "llmbuild.targets.tensorrt",  # ONNX prepared for TensorRT; engine built where an NVIDIA GPU is
}


def backend(name: str, key: str = "backend") -> ModuleType:
    if name not in BACKENDS:
        raise InvalidInput(f"{key}: unknown backend {name!r}; known: {', '.join(sorted(BACKENDS))}")
    return importlib.import_module(BACKENDS[name])
