"""The GGUF target: one llama.cpp model file per build, written by streaming the checkpoint.

What llama.cpp's `convert_hf_to_gguf.py` plus `llama-quantize` would make from a checkpoint. What is
the model's (the GGUF architecture, hyperparameter keys, llama.cpp's tensor names from gguf's own
mapping tables, Q/K rows permuted for llama.cpp's rope where the family needs it, rope tensors, the
context a family without llama.cpp sliding-window support declares) comes from its architecture
object (llmbuild/archs: `gguf_parameters`, `gguf_tensors`), as convert_hf_to_gguf.py's model classes
provide `set_gguf_parameters` and `modify_tensors`. Two quantizers, chosen per type (`QUANTS`,
`LLAMA_CPP_QUANTS`):
- gguf-py writes F32/F16/BF16/Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 directly, with the converter's choice
  of which tensors stay F32/F16, the `general.*` keys and the tokenizer (see gguf_vocab.py). Tensors
  are read with numpy (safetensors_np.py: no torch), converted and quantized one at a time on a small
  thread pool and written in order, so memory holds about one tensor, not the model; a mixture of
  experts' 3-D expert tensors are written one expert matrix at a time and large matrices in row
  blocks (_Sliced). The block types and F16 are made by llama.cpp's own C functions where
  llama-cpp-python is installed (ggml_quant.py; gguf-py's numpy quantizers otherwise): the same bytes.
- llama.cpp's own quantizer (`llama_model_quantize` through llama-cpp-python, the code behind
  `llama-quantize`) makes the K-quants and i-quants, with its per-tensor type mix (Q4_K_M's Q6_K
  layers) and, optionally, an importance matrix computed from calibration text (gguf_imatrix.py). Its
  input is an F32 or F16 GGUF written by the path above into a temporary file in the output folder.
`run_logits` and `generate` run the file in llama.cpp for the verify and evaluate stages.
"""

from __future__ import annotations

import atexit
import importlib.util
import math
import os
import re
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from llmbuild.errors import InvalidInput
from llmbuild.targets import ggml_quant, safetensors_np
from llmbuild.targets.base import Backend, Client, Runtime
from llmbuild.targets.common import ArtifactMeta, Gates, Progress
from llmbuild.targets.gguf_vocab import MODES as TOKENIZER_MODES
from llmbuild.targets.gguf_vocab import read_vocab

NAME = "gguf"
TOOLS = ("gguf", "numpy", "llama-cpp-python")
RUNTIME_DIST = "llama-cpp-python"
PATH_OPTIONS = ("imatrix",)
INSTALL_HINT = "pip install 'llmbuild[llamacpp]' (or make LLAMACPP=1)"

# quant -> (GGML type of the quantized weights, llama_ftype stamped as general.file_type). These are
# the types gguf-py's numpy quantizer makes; the values are gguf.LlamaFileType's, kept here so that
# planning does not import gguf.
QUANTS = {
    "f32": ("F32", 0),
    "f16": ("F16", 1),
    "bf16": ("BF16", 32),
    "q8_0": ("Q8_0", 7),
    "q4_0": ("Q4_0", 2),
    "q4_1": ("Q4_1", 3),
    "q5_0": ("Q5_0", 8),
    "q5_1": ("Q5_1", 9),
}
# quant -> llama_ftype (llama.h LLAMA_FTYPE_MOSTLY_*) for the types only llama.cpp's C quantizer makes.
# The _S/_M/_L suffix is llama.cpp's per-tensor mix: _M gives half of attn_v/ffn_down and the output
# matrix more bits (Q6_K), which is what most published GGUFs are.
LLAMA_CPP_QUANTS = {
    "q2_k": 10,
    "q3_k_s": 11,
    "q3_k_m": 12,
    "q3_k_l": 13,
    "q4_k_s": 14,
    "q4_k_m": 15,
    "q5_k_s": 16,
    "q5_k_m": 17,
    "q6_k": 18,
    "iq4_nl": 25,
    "iq4_xs": 30,
}
# i-quants below 4 bits, ternary and FP4 types: llama.cpp makes them, this backend does not offer them
# (the low i-quants refuse to run without an importance matrix and are untested here)
OTHER_LLAMA_CPP = re.compile(r"^(iq[1-3]_\w+|q2_k_s|tq\d_0|mxfp4\w*|nvfp4)$")
QUANTIZERS = ("auto", "gguf-py", "llama.cpp")
# 4/5-bit files get output.weight at 8 bits: llama-quantize gives it Q6_K (Q8_0 when its rows are not
# a multiple of 256), and gguf-py cannot make Q6_K, so Q8_0 it is.
OUTPUT_AT_8_BITS = {"q4_0", "q4_1", "q5_0", "q5_1"}
# an importance matrix changes nothing for these (llama.cpp ignores it for F16/BF16/Q8_0)
IMATRIX_NO_EFFECT = {"f32", "f16", "bf16", "q8_0"}

# Gates per quant, against the fp32 source. max_kld is the quality gate: above llama.cpp's published
# mean KLD vs fp16 on Llama-3-8B (Q8_0 0.00136, Q6_K 0.00545, Q5_K_M 0.0108, Q4_K_M 0.0313, Q4_0 0.0719,
# Q2_K 0.445; llama.cpp's tools/perplexity/README.md, PR #6936) with room for small models, which quantize worse; the tiny test models
# measure 1.9e-6 (q8_0) and 1.8e-4 (q4_0). min_top1 is a floor that catches a broken file (which agrees
# on ~1/vocab of positions), not a quality bar: on models with near-tied logits it is noisy (tiny
# Llama: q8_0 0.97, q4_0 0.67, q4_1 0.79, q5_x 0.90; tiny Qwen2: 1.0 at every quant). max_abs_diff
# catches a wrong tensor or permutation; quantized files legitimately move a large logit by units
# (tiny models: f32 2e-4, q8_0 0.009, q4_0 0.094). max_ppl_ratio (the evaluate stage's text set) is
# above llama.cpp's Llama-3-8B perplexity ratios (q8_0 1.0008, q6_K 1.0055, q4_K_M 1.029, q2_K 1.574;
# tools/perplexity/README.md) by the same kind of margin.
DEFAULT_GATES = {
    "f32": {"min_top1": 0.99, "max_kld": 1e-4, "max_abs_diff": 0.05, "max_ppl_ratio": 1.001},
    "f16": {"min_top1": 0.98, "max_kld": 1e-3, "max_abs_diff": 0.5, "max_ppl_ratio": 1.01},
    "bf16": {"min_top1": 0.95, "max_kld": 2e-3, "max_abs_diff": 1.0, "max_ppl_ratio": 1.02},
    "q8_0": {"min_top1": 0.90, "max_kld": 0.01, "max_abs_diff": 1.5, "max_ppl_ratio": 1.02},
    "q6_k": {"min_top1": 0.80, "max_kld": 0.03, "max_abs_diff": 2.5, "max_ppl_ratio": 1.05},
    "q5_k_m": {"min_top1": 0.70, "max_kld": 0.05, "max_abs_diff": 3.0, "max_ppl_ratio": 1.10},
    "q5_k_s": {"min_top1": 0.70, "max_kld": 0.05, "max_abs_diff": 3.0, "max_ppl_ratio": 1.10},
    "q5_1": {"min_top1": 0.70, "max_kld": 0.05, "max_abs_diff": 3.0, "max_ppl_ratio": 1.10},
    "q5_0": {"min_top1": 0.70, "max_kld": 0.05, "max_abs_diff": 3.0, "max_ppl_ratio": 1.10},
    "q4_k_m": {"min_top1": 0.50, "max_kld": 0.15, "max_abs_diff": 5.0, "max_ppl_ratio": 1.25},
    "q4_k_s": {"min_top1": 0.50, "max_kld": 0.15, "max_abs_diff": 5.0, "max_ppl_ratio": 1.25},
    "iq4_nl": {"min_top1": 0.50, "max_kld": 0.15, "max_abs_diff": 5.0, "max_ppl_ratio": 1.25},
    "iq4_xs": {"min_top1": 0.50, "max_kld": 0.15, "max_abs_diff": 5.0, "max_ppl_ratio": 1.25},
    "q4_1": {"min_top1": 0.50, "max_kld": 0.15, "max_abs_diff": 5.0, "max_ppl_ratio": 1.25},
    "q4_0": {"min_top1": 0.50, "max_kld": 0.15, "max_abs_diff": 5.0, "max_ppl_ratio": 1.25},
    "q3_k_l": {"min_top1": 0.40, "max_kld": 0.40, "max_abs_diff": 8.0, "max_ppl_ratio": 1.50},
    "q3_k_m": {"min_top1": 0.40, "max_kld": 0.40, "max_abs_diff": 8.0, "max_ppl_ratio": 1.50},
    "q3_k_s": {"min_top1": 0.30, "max_kld": 0.60, "max_abs_diff": 10.0, "max_ppl_ratio": 2.0},
    "q2_k": {"min_top1": 0.20, "max_kld": 1.50, "max_abs_diff": 15.0, "max_ppl_ratio": 3.0},
}

# Expert routers are never quantized: convert_hf_to_gguf.py keeps FFN_GATE_INP and FFN_GATE_INP_SHEXP
# in F32 and llama-quantize skips "ffn_gate_inp.weight" (llama-quant.cpp): a rounded router picks other
# experts, which no later layer can undo.
ROUTER_TENSORS = ("ffn_gate_inp.weight", "ffn_gate_inp_shexp.weight")

# Matrices over this many float32 bytes (embedding, output, the linears of a wide model) are read and
# converted in row blocks of about this size: smaller holds less in flight (a few blocks per thread), at more
# calls; 4 MB keeps the peak flat from a 240M model to a 1B one (bench/scale_memory.py)
ROW_BLOCK_BYTES = 4 << 20

# Rows per quantization call are capped at about this many elements: gguf-py's block quantizers make
# several float32 temporaries of their input, which must not be the size of a 128k-token embedding.
CHUNK_ELEMENTS = 1 << 22


@dataclass
class Options:
    backend: str = "gguf"
    quant: str = "q8_0"  # f32|f16|bf16|q8_0|q6_k|q5_k_m|q5_k_s|q5_0|q5_1|q4_k_m|q4_k_s|q4_0|q4_1|iq4_nl|iq4_xs|q3_k_l|q3_k_m|q3_k_s|q2_k: size vs fidelity (q8_0 ~1/4 of fp32, KLD ~1e-3; q4_k_m ~1/7, KLD ~0.03)
    quantizer: str = "auto"  # auto: gguf-py's writer for the types it makes (llama.cpp's C block quantizers when installed: faster, same bytes), llama.cpp's quantizer for the rest | gguf-py (numpy only) | llama.cpp (every type)
    imatrix: Optional[str] = None  # calibration text -> importance matrix for llama.cpp's quantizer: better 2-5 bit files, costs a torch pass over the text
    imatrix_chunk: int = 512  # tokens per calibration chunk (llama-imatrix's context); capped at the model's context
    threads: int = 0  # worker threads for convert+quantize; 0 = all cores. More is faster, holds more tensors at once
    tokenizer: str = "match"  # match: refuse a tokenizer llama.cpp would run differently | nearest: also build the known near misses (transformers' Metaspace '▁' rule, token stripping) with llama.cpp's closest rule; the card says which texts differ
    gates: Gates = field(default_factory=Gates)  # parity gates; unset ones take default_gates(quant)


def llama_cpp_quantizer_available() -> bool:
    """llama-cpp-python with the C quantizer; its importance-matrix struct came with llama.cpp's C API
    for it (2026), so an older build quantizes but cannot take an imatrix."""
    return importlib.util.find_spec("llama_cpp") is not None


def llama_cpp_binds(name: str) -> bool:
    """Whether llama-cpp-python's ctypes bindings (llama_cpp/llama_cpp.py, star-imported by the package)
    define the class, function or constant `name`, read from their source: importing llama_cpp loads
    libllama, numpy and jinja2 (~80 ms), which a plan check, run on every build and rebuild, need not pay.
    An install without that source file is asked by importing it."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None:
        return False
    for folder in spec.submodule_search_locations or []:
        bindings = Path(folder) / "llama_cpp.py"
        if bindings.is_file():
            text = bindings.read_text(encoding="utf-8", errors="replace")
            return re.search(rf"^(class |def )?{re.escape(name)}\b", text, re.M) is not None
    import llama_cpp

    return hasattr(llama_cpp, name)


def uses_llama_cpp(options) -> bool:
    return options.quant in LLAMA_CPP_QUANTS or options.quantizer == "llama.cpp" or bool(options.imatrix)


def check_options(options, key: str) -> None:
    """Recipe-only checks: the quant and its quantizer, llama.cpp's quantizer where it is needed, the
    calibration file."""
    quant = options.quant
    known = [*QUANTS, *LLAMA_CPP_QUANTS]
    if quant not in known:
        hint = (" (llama.cpp makes it, but this backend does not offer it)"
                if OTHER_LLAMA_CPP.match(str(quant).lower()) else "")
        raise InvalidInput(f"{key}.quant: unknown quant {quant!r}{hint}; known: {', '.join(known)}")
    if options.quantizer not in QUANTIZERS:
        raise InvalidInput(f"{key}.quantizer: unknown quantizer {options.quantizer!r}; known: {', '.join(QUANTIZERS)}")
    if options.quantizer == "gguf-py" and (quant in LLAMA_CPP_QUANTS or options.imatrix):
        what = f"{quant!r}" if quant in LLAMA_CPP_QUANTS else "an importance matrix"
        raise InvalidInput(f"{key}.quantizer: gguf-py cannot make {what}; use quantizer auto or llama.cpp")
    if uses_llama_cpp(options) and not llama_cpp_quantizer_available():
        raise InvalidInput(f"{key}.quant: {quant} is made by llama.cpp's quantizer and llama-cpp-python is not "
                           f"installed: {INSTALL_HINT}")
    if options.imatrix:
        from llmbuild.evaluation.data import read_text

        if quant in IMATRIX_NO_EFFECT:
            raise InvalidInput(f"{key}.imatrix: an importance matrix has no effect on {quant}; it helps the 2-6 bit "
                               f"types ({', '.join(q for q in known if q not in IMATRIX_NO_EFFECT)})")
        read_text(options.imatrix, f"{key}.imatrix")
        if not llama_cpp_binds("llama_model_imatrix_data"):
            raise InvalidInput(f"{key}.imatrix: this llama-cpp-python cannot pass an importance matrix to "
                               f"llama.cpp's quantizer (it predates llama_model_imatrix_data); upgrade it: {INSTALL_HINT}")
    if options.imatrix_chunk < 2:
        raise InvalidInput(f"{key}.imatrix_chunk: {options.imatrix_chunk} is too small; llama-imatrix uses 512")
    if options.threads < 0:
        raise InvalidInput(f"{key}.threads: {options.threads} is negative; 0 means all cores")
    if options.tokenizer not in TOKENIZER_MODES:
        raise InvalidInput(f"{key}.tokenizer: unknown mode {options.tokenizer!r}; known: {', '.join(TOKENIZER_MODES)}")


def check_model(options, arch, model_dir: Path | None, key: str) -> None:
    """Model checks: llama.cpp computes what the model computes (activation, context), and the
    tokenizer is one llama.cpp can run (read here, so a tokenizer it cannot map fails before any work)."""
    if not arch.context:
        raise InvalidInput(f"{key}: config.json has no max_position_embeddings, which llama.cpp requires")
    if arch.activation not in arch.gguf_activations:
        raise InvalidInput(f"{key}: config.json hidden_act {arch.activation!r}, but llama.cpp's {arch.gguf_arch} "
                           f"architecture computes {', '.join(arch.gguf_activations)}")
    refusal = arch.gguf_refusal()
    if refusal:
        raise InvalidInput(f"{key}: {refusal}")
    if model_dir is not None:
        try:
            read_vocab(Path(model_dir), arch.vocab, options.tokenizer)
        except InvalidInput as e:
            raise InvalidInput(f"{key}: {e}") from None


def check_family(options, cls, key: str) -> None:
    """What this backend cannot apply to a family's experts: an importance matrix (gguf_imatrix.py
    collects the inputs of nn.Linear modules, and transformers 5 computes experts from fused 3-D
    parameters, so the experts' columns would get no statistics)."""
    if cls.mixture_of_experts and options.imatrix:
        raise InvalidInput(f"{key}.imatrix: an importance matrix is not computed for the experts of a mixture of "
                           f"experts ({cls.hf_names[0]}) yet; drop imatrix (the K-quants work without one)")


def check(options, hf_config: dict, key: str, model_dir: Path | None = None) -> None:
    """Both kinds of checks, for a config.json (tests and tools that have no plan)."""
    from llmbuild.archs import for_config

    check_options(options, key)
    check_model(options, for_config(hf_config), model_dir, key)


def precision(options) -> str:
    return options.quant


def default_gates(options) -> dict:
    return dict(DEFAULT_GATES[options.quant])


def key_extra(options) -> dict:
    """The calibration text's content enters the export key: editing the file reruns the export."""
    if not options.imatrix:
        return {}
    from llmbuild.hashing import sha256_file

    return {"imatrix_sha256": sha256_file(Path(options.imatrix))}


@dataclass
class _Tensor:
    """One tensor of the GGUF: what it is made from (the architecture's GgufTensor) and what it becomes."""

    srcs: tuple[str, ...]  # checkpoint tensor names; () for a tensor computed from the config
    name: str  # llama.cpp's name
    shape: tuple[int, ...]  # numpy order (rows last-but-one); GGUF stores it reversed
    qtype: object  # gguf.GGMLQuantizationType
    nbytes: int
    transform: object = None  # numpy arrays of srcs -> the values written; None: the one source as is
    data: object = None  # the values of a computed tensor
    stacked: bool = False  # srcs are the slices of the first axis (experts): written one at a time
    c_quant: bool = False  # quantized by llama.cpp's C functions (ggml_quant.py), else by gguf-py


def export(ckpt, options, out_dir: Path, meta: ArtifactMeta, progress: Progress) -> dict:
    """Write `<name>-<quant>.gguf` into out_dir; returns the record that run_logits reads."""
    path = Path(out_dir) / f"{_file_stem(meta.name)}-{options.quant}.gguf"
    threads = options.threads or _cores()
    t0 = time.monotonic()
    # first: a tokenizer llama.cpp cannot run fails before anything is written; the name is checked
    # here because llama.cpp strips spaces around special tokens by the model's name (Phi-3)
    vocab = read_vocab(ckpt.dir, ckpt.arch.vocab, options.tokenizer)
    vocab.check_name(meta.name, options.tokenizer)
    if not uses_llama_cpp(options):
        # the same bytes either way (tests/targets/test_gguf.py): llama.cpp's C block quantizers where
        # llama-cpp-python is installed (quantizer auto), gguf-py's numpy ones otherwise
        c_quant = options.quantizer == "auto" and ggml_quant.available() and QUANTS[options.quant][0] in ggml_quant.TYPES
        n_params = _write(ckpt, options.quant, path, meta, threads, progress, vocab, c_quant)
        c_name = "ggml_cpu_fp32_to_fp16" if QUANTS[options.quant][0] == "F16" else "ggml_quantize_chunk"
        quantizer = ({"name": f"llama.cpp {c_name} (llama-cpp-python's libggml)",
                      "version": _version("llama-cpp-python")} if c_quant else
                     {"name": "gguf-py", "version": _version("gguf")})
        extra = {}
    else:
        # llama.cpp quantizes from a float GGUF: F16 when every matrix is stored in F16 (the usual
        # convert_hf_to_gguf --outtype f16 input), else F32, which holds F32 and BF16 weights exactly
        base = "f16" if _all_matrices_f16(ckpt) else "f32"
        tmp = Path(out_dir) / f".{path.stem}.{base}.gguf.part"
        try:
            n_params = _write(ckpt, base, tmp, meta, threads, progress, vocab, ggml_quant.available())
            extra = {"quantized_from": base}
            imatrix = None
            if options.imatrix:
                from llmbuild.targets import gguf_imatrix

                imatrix = gguf_imatrix.compute(ckpt.dir, options.imatrix, ckpt.arch, options.imatrix_chunk,
                                               "imatrix")
                gguf_imatrix.write_gguf(imatrix, Path(out_dir) / "imatrix.gguf")
                extra["imatrix"] = {"file": "imatrix.gguf", "text": Path(options.imatrix).name,
                                    "tokens": imatrix.tokens, "chunks": imatrix.chunks,
                                    "chunk_size": imatrix.chunk_size, "entries": len(imatrix.sums)}
            extra["fallbacks"] = llama_quantize(tmp, path, options.quant, threads, imatrix)
        finally:
            tmp.unlink(missing_ok=True)
        quantizer = {"name": "llama.cpp llama_model_quantize", "version": _version("llama-cpp-python")}
    stats = file_stats(path)
    ctx, ctx_note = ckpt.arch.gguf_context()
    return {
        **_rope_switch(ckpt.arch),
        "file": path.name,
        "quant": options.quant,
        "file_type": QUANTS[options.quant][1] if options.quant in QUANTS else LLAMA_CPP_QUANTS[options.quant],
        "gguf_arch": ckpt.arch.gguf_arch,
        **({"experts": {"count": ckpt.arch.expert_count, "used": ckpt.arch.experts_per_token}}
           if ckpt.arch.mixture_of_experts else {}),
        "context_length": ctx,
        **({"context_note": ctx_note} if ctx_note else {}),
        "quantizer": quantizer,
        **extra,
        "tensors": stats["tensors"],
        "tensor_types": stats["tensor_types"],
        "params": n_params,
        "bytes": path.stat().st_size,
        "tensor_bytes": stats["tensor_bytes"],
        "bits_per_weight": stats["bits_per_weight"],
        "quantize_seconds": round(time.monotonic() - t0, 3),
        "tokenizer": vocab.record(),
    }


def _write(ckpt, quant: str, path: Path, meta: ArtifactMeta, threads: int, progress: Progress, vocab,
           c_quant: bool = False) -> int:
    """Convert the checkpoint into a GGUF of a type gguf-py makes; returns the parameter count."""
    import gguf
    import numpy as np

    from llmbuild.targets.gguf_writer import GGUFWriter

    arch = ckpt.arch
    plan = _plan(ckpt, quant)
    for t in plan:
        t.c_quant = c_quant and t.qtype.name in ggml_quant.TYPES
    writer = GGUFWriter(path, arch.gguf_arch)
    n_params = sum(math.prod(t.shape) for t in plan if t.srcs)
    # gguf's size label: "8x7B" for a mixture (GGUFWriter.get_total_parameter_count's split)
    expert = sum(math.prod(t.shape[1:]) for t in plan if t.stacked)
    n_experts = plan[[t.stacked for t in plan].index(True)].shape[0] if expert else 0
    writer.add_size_label(gguf.size_label(n_params, n_params - expert * (n_experts or 1), expert, n_experts))
    _add_metadata(writer, arch, quant, meta, n_params)
    vocab.add_to(writer)
    for t in plan:
        # the logical shape with a float dtype: gguf takes raw_dtype as the type and the shape as is
        writer.add_tensor_info(t.name, t.shape, np.dtype(np.float32), t.nbytes, raw_dtype=t.qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    try:
        _write_tensors(writer, ckpt, plan, threads, progress)
    finally:
        writer.close()
    return n_params


def _all_matrices_f16(ckpt) -> bool:
    if ckpt.pickle:
        return False
    dtypes = {d for shape, d in ckpt.tensor_shapes().values() if len(shape) >= 2}
    return dtypes == {"F16"}


# llama.cpp's note when a tensor's rows are not whole blocks of the wanted type (K-quants: 256)
_FALLBACK = re.compile(r"^warning: (\S+)\s+- ncols\s+\d+ not divisible by \d+ \(required for type\s+(\w+)\)"
                       r".*-> falling back to\s+(\w+)")


def llama_quantize(src: Path, dst: Path, quant: str, threads: int, imatrix=None) -> list[dict]:
    """llama.cpp's quantizer on a float GGUF (what `llama-quantize [--imatrix F] SRC DST TYPE` does).

    The importance matrix goes in as llama.h's NULL-terminated `llama_model_imatrix_data` array of
    per-column means, and the `quantize.imatrix.*` keys llama-quantize writes are set the same way,
    so the file says an imatrix was used. Returns the tensors llama.cpp gave another type because their
    rows are not whole blocks of the wanted one (small models: every K-quant tensor under 256 wide).
    """
    import ctypes
    import logging

    import llama_cpp

    ftype = LLAMA_CPP_QUANTS.get(quant, QUANTS.get(quant, (None, None))[1])
    # llama.cpp logs every tensor at INFO; llama-cpp-python's logger prints what its level lets through
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = threads
    params.ftype = ftype
    keep = []  # the arrays params points into must outlive the call
    if imatrix is not None:
        values = imatrix.values()
        entries = (llama_cpp.llama_model_imatrix_data * (len(values) + 1))()
        for i, (name, v) in enumerate(sorted(values.items())):
            keep.append(v)
            entries[i].name = name.encode()
            entries[i].data = v.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            entries[i].size = v.size
        params.imatrix = entries
        kvs = (llama_cpp.llama_model_kv_override * 5)()
        for i, (k, val) in enumerate([("quantize.imatrix.file", "imatrix.gguf"),
                                       ("quantize.imatrix.dataset", imatrix.dataset),
                                       ("quantize.imatrix.entries_count", len(values)),
                                       ("quantize.imatrix.chunks_count", imatrix.chunks)]):
            kvs[i].key = k.encode()
            if isinstance(val, str):
                kvs[i].tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR
                kvs[i].value.val_str = val.encode()[:127]
            else:
                kvs[i].tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_INT
                kvs[i].value.val_i64 = val
        params.kv_overrides = kvs  # the zeroed last entry (empty key) ends the list
        keep += [entries, kvs]
    log = dst.with_name(f".{dst.name}.log")
    try:
        # llama.cpp writes its per-tensor notes straight to the C stderr: keep them out of the console
        with _c_stderr_to(log):
            rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
        lines = log.read_text(errors="replace").splitlines()
    finally:
        log.unlink(missing_ok=True)
    if rc != 0 or not dst.is_file():
        dst.unlink(missing_ok=True)
        last = next((ln for ln in reversed(lines) if ln.strip()), "")
        raise RuntimeError(f"llama.cpp's quantizer failed on {src.name} -> {quant} (code {rc}): {last}")
    return [{"tensor": m[1], "wanted": m[2].lower(), "used": m[3].lower()}
            for m in map(_FALLBACK.match, lines) if m]


@contextmanager
def _c_stderr_to(path: Path):
    """Send stderr to `path` for a block: file descriptor 2 (where C code writes) and sys.stderr (where
    llama-cpp-python's log callback prints llama.cpp's messages), both appending to the file."""
    import contextlib
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "ab") as raw, open(path, "a", encoding="utf-8", errors="replace") as text:
            os.dup2(raw.fileno(), 2)
            try:
                with contextlib.redirect_stderr(text):
                    yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def file_stats(path: Path) -> dict:
    """What the file holds, read back from its header: tensor types, tensor bytes and bits per weight
    (tensor bytes * 8 / parameters, what llama.cpp prints as BPW)."""
    import gguf

    types: dict[str, int] = {}
    nbytes = elements = 0
    infos = tensor_infos(path)
    for _, n, ggml_type in infos:
        qtype = gguf.GGMLQuantizationType(ggml_type)
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
        types[qtype.name] = types.get(qtype.name, 0) + 1
        nbytes += n // block * type_size
        elements += n
    return {"tensors": len(infos), "tensor_types": types, "tensor_bytes": nbytes,
            "bits_per_weight": round(nbytes * 8 / elements, 4) if elements else None}


# byte sizes of GGUF's scalar metadata types (gguf.GGUFValueType: UINT8..FLOAT64, 8 = string, 9 = array)
_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def tensor_infos(path: Path) -> list[tuple[str, int, int]]:
    """(name, elements, GGML type) of every tensor, from the header alone.

    Hand-written rather than gguf-py's GGUFReader, which builds a numpy view per metadata element: for a
    128k-token vocab with its merges that is ~20 s per file, where skipping the metadata takes ~0.2 s.
    """
    import mmap
    import struct

    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        if m[:4] != b"GGUF":
            raise RuntimeError(f"{path}: not a GGUF file")
        _, n_tensors, n_kv = struct.unpack_from("<IQQ", m, 4)
        pos = 24

        def skip(vtype: int, pos: int) -> int:
            if vtype == 8:
                return pos + 8 + struct.unpack_from("<Q", m, pos)[0]
            if vtype == 9:
                etype, count = struct.unpack_from("<IQ", m, pos)
                pos += 12
                if etype in _SCALAR_SIZES:
                    return pos + count * _SCALAR_SIZES[etype]
                for _ in range(count):
                    pos = skip(etype, pos)
                return pos
            return pos + _SCALAR_SIZES[vtype]

        for _ in range(n_kv):
            pos += 8 + struct.unpack_from("<Q", m, pos)[0]  # the key
            (vtype,) = struct.unpack_from("<I", m, pos)
            pos = skip(vtype, pos + 4)
        out = []
        for _ in range(n_tensors):
            (length,) = struct.unpack_from("<Q", m, pos)
            name = m[pos + 8 : pos + 8 + length].decode("utf-8")
            pos += 8 + length
            (n_dims,) = struct.unpack_from("<I", m, pos)
            dims = struct.unpack_from(f"<{n_dims}Q", m, pos + 4)
            pos += 4 + 8 * n_dims
            ggml_type, _ = struct.unpack_from("<IQ", m, pos)
            pos += 12
            out.append((name, math.prod(dims), ggml_type))
        return out


def _version(dist: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def _plan(ckpt, quant: str) -> list[_Tensor]:
    """Every tensor of the file, in file order, from the checkpoint's headers (no weights read)."""
    if ckpt.pickle:
        # .bin files have no header to read shapes from: one extra pass, in the order the data pass sees
        shapes = {n: tuple(t.shape) for n, t in ckpt.iter_tensors()}
    else:
        shapes = {n: tuple(s) for n, (s, _) in ckpt.tensor_shapes().items()}
    try:
        specs = ckpt.arch.gguf_tensors(shapes)
    except InvalidInput as e:
        raise InvalidInput(f"{ckpt.dir}: {e}") from None
    has_output = any(t.name == "output.weight" for t in specs)
    return [_entry(t, quant, has_output) for t in specs]


def _entry(spec, quant: str, has_output: bool) -> _Tensor:
    import gguf

    name, shape = spec.name, spec.shape
    q = gguf.GGMLQuantizationType
    qtype = q[QUANTS[quant][0]]
    # The converter's rules (prepare_tensors): 1-D tensors, norms and non-weights (biases) stay F32,
    # because most of llama.cpp only handles those in F32.
    if len(shape) <= 1 or name.endswith("_norm.weight") or not name.endswith(".weight"):
        qtype = q.F32
    elif name.endswith(ROUTER_TENSORS):
        qtype = q.F32  # routers stay F32 in both converters (see ROUTER_TENSORS)
    elif quant in OUTPUT_AT_8_BITS and (name == "output.weight" or (name == "token_embd.weight" and not has_output)):
        qtype = q.Q8_0  # llama-quantize's rule for the output matrix (tied: the embedding), see OUTPUT_AT_8_BITS
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    if shape[-1] % block:
        # rows that are not whole blocks: the converter falls back to F16 (its QuantError handler)
        qtype = q.F16
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    nbytes = math.prod(shape) // block * type_size
    return _Tensor(spec.srcs, name, tuple(shape), qtype, nbytes, spec.transform, spec.data,
                   getattr(spec, "stacked", False))


def _write_tensors(writer, ckpt, plan: list[_Tensor], threads: int, progress: Progress) -> None:
    """Convert on `threads` workers while this thread reads the next tensors and writes finished ones.

    Tensors are written in plan order (gguf's write_tensor_data streams them in tensor-info order);
    reading ahead stops at a byte budget, so memory holds about the largest tensor plus a few layers.
    A stacked tensor (a layer's experts) and a large matrix (an embedding) are written slice by slice
    instead (_Sliced): memory then holds a few expert matrices or row blocks, never a layer's experts
    (let alone twice) or a vocabulary-sized matrix.
    """
    budget = max(max(_largest_part(t) for t in plan), 64 << 20)
    pending: deque = deque()
    in_flight = 0
    done = 0

    def write_oldest() -> None:
        nonlocal in_flight, done
        t, nbytes, fut = pending.popleft()
        writer.write_tensor_data(fut.result())
        in_flight -= nbytes
        done += 1
        progress(done, len(plan), t.name)

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="gguf") as pool:
        for t, x, sliced in _sources(ckpt, plan):
            if sliced:
                while pending:
                    write_oldest()
                # a stacked tensor keeps at most half of its experts in flight, whatever the thread count
                depth = min(2 * threads, max(1, len(t.srcs) // 2)) if t.stacked else 2 * threads
                writer.write_tensor_data(_Sliced(t, x, pool, depth))
                done += 1
                progress(done, len(plan), t.name)
                continue
            nbytes = math.prod(t.shape) * 4
            while pending and (in_flight + nbytes > budget or len(pending) > 2 * threads):
                write_oldest()
            pending.append((t, nbytes, pool.submit(_convert, t, x)))
            in_flight += nbytes
            del x
        while pending:
            write_oldest()


def _largest_part(t: _Tensor) -> int:
    """float32 bytes of what is converted at once: the tensor, or one slice of a sliced one."""
    if t.stacked:
        return math.prod(t.shape[1:]) * 4
    return min(math.prod(t.shape) * 4, ROW_BLOCK_BYTES) if _row_streamable(t) else math.prod(t.shape) * 4


class _Sliced:
    """A tensor as gguf's write_tensor_data sees an array (`nbytes`, `tofile`), made of slices of its first
    axis (a stacked tensor's experts, or a matrix's row blocks): they are read one by one, converted on
    the pool (at most `depth` at a time) and written in order, each slice's bytes being the next rows
    of the tensor (quantization blocks run along the last axis, so a slice's blocks are exactly its
    own). llama.cpp's converter instead stacks a layer's experts into one tensor beside its sources
    (conversion/llama.py `_experts`, torch.stack)."""

    def __init__(self, t: _Tensor, slices, pool, depth: int):
        self.t, self.slices, self.pool, self.depth = t, slices, pool, max(1, depth)
        self.nbytes = t.nbytes

    def tofile(self, f) -> None:
        part = _Tensor((), self.t.name, tuple(self.t.shape[1:]), self.t.qtype, 0, self.t.transform,
                       c_quant=self.t.c_quant)
        pending: deque = deque()
        written = 0
        for x in self.slices:
            while len(pending) >= self.depth:
                written += _write_array(f, pending.popleft().result())
            pending.append(self.pool.submit(_convert, part, [x]))
            del x
        while pending:
            written += _write_array(f, pending.popleft().result())
        if written != self.nbytes:  # a bug, not bad input: the plan and the slices disagree
            raise RuntimeError(f"{self.t.name}: wrote {written} bytes, planned {self.nbytes}")


def _write_array(f, arr) -> int:
    arr.tofile(f)
    return arr.nbytes


def _sources(ckpt, plan: list[_Tensor]):
    """(plan entry, its source tensors, sliced) in plan order, one entry's tensors read at a time; for a
    stacked entry and a large matrix (sliced), an iterator that reads its slices (experts, row blocks)
    one at a time as the writer asks for them.

    safetensors tensors are read with numpy into buffers of their own (safetensors_np.py): no torch, and
    no mapping whose touched pages would stay in this process's resident set. Pickled .bin files are
    loaded whole by torch anyway; those are walked in file order, which is the plan's order, keeping
    aside only tensors that an entry needs before its turn (several sources merged into one, e.g. experts).
    """
    if not ckpt.pickle:
        # numpy reads, no torch (safetensors_np.py); a dtype it does not return goes through torch
        read = safetensors_np.Reader(ckpt.index)

        def get(src: str):
            return read(src) if read.readable(src) else ckpt.get_tensor(src)

        # reads are deferred (thunks, see _read): the worker that converts a tensor reads it, so on N
        # threads N tensors are read and quantized at once while this thread only writes
        for t in plan:
            if t.stacked:
                yield t, ((lambda s=s: get(s)) for s in t.srcs), True
            elif _row_streamable(t) and read.readable(t.srcs[0]) and math.prod(t.shape) * 4 > ROW_BLOCK_BYTES:
                step = max(1, ROW_BLOCK_BYTES // (t.shape[-1] * 4))
                unit = getattr(t.transform, "row_unit", 1)  # a transform of whole heads: blocks of heads
                step = max(unit, step // unit * unit)
                # every name bound now: the workers call these after this loop has moved to later tensors
                yield t, ((lambda r=r, src=t.srcs[0], step=step: read.rows(src, r, r + step))
                          for r in range(0, t.shape[0], step)), True
            else:
                yield t, [(lambda s=s: get(s)) for s in t.srcs] if t.srcs else [t.data], False
        return
    stream, waiting = ckpt.iter_tensors(), {}

    def take(src: str):
        while src not in waiting:
            name, x = next(stream)
            waiting[name] = x  # tensors the plan drops (rotary inv_freq) are overwritten or left
        return waiting.pop(src)

    for t in plan:
        if not t.srcs:
            yield t, [t.data], False
        elif t.stacked:
            yield t, (take(src) for src in t.srcs), True
        else:
            yield t, [take(src) for src in t.srcs], False


def _row_streamable(t: _Tensor) -> bool:
    """A matrix converted row block by row block: one source, and no transform or one that maps blocks
    of whole `row_unit` rows alone (rows stay independent, or heads do)."""
    whole_rows = t.transform is None or getattr(t.transform, "row_unit", None)
    return len(t.srcs) == 1 and bool(whole_rows) and len(t.shape) == 2


def _convert(t: _Tensor, xs: list):
    """torch tensors -> GGUF bytes (as a numpy array) for one plan entry."""
    import numpy as np
    from gguf.quants import quantize

    xs = [_numpy(_read(x)) for x in xs]
    x = t.transform(*xs) if t.transform else xs[0]
    if t.c_quant:
        return ggml_quant.quantize(x, t.qtype)  # one pass in C, no temporaries
    if t.qtype.name in ("F32", "F16"):
        return quantize(x, t.qtype)  # a cast: no temporaries beyond its output
    rows = x.reshape(-1, x.shape[-1])
    step = max(1, CHUNK_ELEMENTS // rows.shape[1])
    out = None
    for r in range(0, rows.shape[0], step):
        q = quantize(rows[r : r + step], t.qtype)
        if out is None:
            out = np.empty((rows.shape[0], q.shape[1]), dtype=q.dtype)
        out[r : r + step] = q
    return out


def _read(x):
    """A source tensor: read now if _sources deferred it (a thunk; numpy's fromfile releases Python's lock
    while it reads, so workers read in parallel), else the tensor already in memory."""
    return x() if callable(x) else x


def _numpy(x):
    """A source tensor as numpy: bfloat16 widened to float32 (exactly), torch tensors (pickled checkpoints,
    dtypes the numpy reader does not return) converted; float16/float32 go through without a copy."""
    x = safetensors_np.widen(x)
    if type(x).__module__.startswith("torch"):
        import torch

        return (x if x.dtype in (torch.float16, torch.float32) else x.float()).numpy()
    if (x.dtype.kind == "f" and x.dtype.itemsize > 4) or x.dtype.kind in "iub":
        return x.astype("float32")
    return x


def _add_metadata(w, arch, quant: str, meta: ArtifactMeta, n_params: int) -> None:
    import gguf

    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(meta.name)
    if meta.description:
        w.add_description(meta.description)
    if meta.license_id:
        w.add_license(meta.license_id)
    if meta.license_name:
        w.add_license_name(meta.license_name)
    if meta.license_link:
        w.add_license_link(meta.license_link)
    if meta.base_model:
        w.add_base_model_count(1)
        w.add_base_model_name(0, meta.base_model.rsplit("/", 1)[-1])
        if meta.base_model_organization:
            w.add_base_model_organization(0, meta.base_model_organization)
        if meta.base_model_url:
            w.add_base_model_repo_url(0, meta.base_model_url)
    w.add_quantized_by(meta.quantized_by)
    arch.gguf_parameters(w)  # the model's hyperparameters, as its family writes them
    w.add_file_type(QUANTS[quant][1])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may use, not the machine's
    except AttributeError:
        return os.cpu_count() or 1


def _file_stem(name: str) -> str:
    """A model name as a file name: path separators and odd characters become '-'."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", name).strip("-.") or "model"


def runtime_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


# (path, logits_all, threads) -> (file identity, n_ctx, Llama): a verify or evaluate stage calls
# run_logits and generate many times per file
_LOADED: dict[tuple, tuple[tuple[int, int], int, object]] = {}


def _llama(path: Path, n_ctx: int, logits_all: bool = True, threads: int = 2):
    import llama_cpp

    st = path.stat()
    ident = (st.st_mtime_ns, st.st_size)
    slot = (str(path), logits_all, threads)
    hit = _LOADED.get(slot)
    if hit and hit[0] == ident and hit[1] >= n_ctx:
        return hit[2]
    # one file's contexts at a time: a build evaluates artifact after artifact, and every context kept
    # would hold its buffers (and, for a big model, its share of the page cache) for the whole build
    for other in [k for k in _LOADED if k == slot or k[0] != str(path)]:
        _LOADED.pop(other)[2].close()
    # verbose=False: llama-cpp-python's log callback then passes on llama.cpp's errors only.
    # logits_all=False for generation: llama.cpp then computes the output layer for the last token
    # only, as a serving runtime does, so timings are a runtime's and not a scorer's.
    batch = n_ctx if logits_all else min(n_ctx, 512)
    llm = llama_cpp.Llama(model_path=str(path), logits_all=logits_all, n_ctx=n_ctx, n_batch=batch, n_ubatch=batch,
                          n_threads=threads, n_threads_batch=threads, verbose=False)
    _LOADED[slot] = (ident, n_ctx, llm)
    return llm


def _close_all() -> None:
    """Free llama.cpp models before interpreter teardown, when their destructors can no longer run."""
    while _LOADED:
        _LOADED.popitem()[1][2].close()


atexit.register(_close_all)


def _n_ctx(record: dict, need: int, wanted: int) -> int:
    """`wanted` positions, but no more than the file's context when `need` fits in it (llama.cpp warns of
    a training-context overflow for a context larger than the file declares), and no more than the
    rope's switch length when `need` fits in that (see _rope_switch)."""
    for limit in (record.get("context_length"), record.get("rope_switch_context")):
        if limit and need <= limit:
            wanted = min(wanted, limit)
    return wanted


def _rope_switch(arch) -> dict:
    """A rope whose frequencies change past a length (LongRoPE): llama.cpp picks them by the context it
    runs with (llama_model::get_rope_factors: the long factors for every token when n_ctx is over the
    original context), where transformers switches once a sequence passes it. Sequences within the
    original context therefore run with n_ctx no larger than it, so both use the short factors."""
    longer = arch.rope.longer()
    if not longer:
        return {}
    n = longer[0]
    # llama.cpp rounds n_ctx up to a multiple of 256 (llama_context: GGML_PAD(n_ctx, 256))
    short = (f"for inputs of up to {n} tokens keep n_ctx at {n} or less to compute what the model computes"
             if n >= 256 and n % 256 == 0 else
             f"llama.cpp rounds n_ctx up to a multiple of 256, so inputs of up to {n} tokens run with the long "
             "factors here where transformers uses the short ones")
    return {"rope_switch_context": n,
            "rope_note": f"llama.cpp uses the LongRoPE long factors for every token once n_ctx is over {n} tokens "
                         f"(transformers: once a sequence passes {n}); {short}"}


def run_logits(artifact_dir: Path, record: dict, token_ids: list[list[int]], split: int | None = None):
    """llama.cpp's logits [seq, vocab] (float32) for each probe's given token ids, every position.

    With `split`, the first `split` tokens go in one batch and the rest one at a time through
    llama.cpp's KV cache, which is how generation uses the file.
    """
    import numpy as np

    need = max(len(t) for t in token_ids)
    llm = _llama(Path(artifact_dir) / record["file"], _n_ctx(record, need, need + 8))
    out = []
    for ids in token_ids:
        llm.reset()
        if split is None:
            llm.eval(ids)
        else:
            llm.eval(ids[:split])
            for tok in ids[split:]:
                llm.eval([tok])
        out.append(np.array(llm.scores[: len(ids)], dtype=np.float32))
    return out


def run_routing(artifact_dir: Path, record: dict, token_ids: list[list[int]]):
    """The experts llama.cpp runs per token and sparse layer, read from its graph (gguf_routing.py)."""
    from llmbuild.targets import gguf_routing

    need = max(len(t) for t in token_ids)
    llm = _llama(Path(artifact_dir) / record["file"], _n_ctx(record, need, need + 8))
    e = record["experts"]
    return [gguf_routing.routing(llm._model.model, ids, e["count"], e["used"]) for ids in token_ids]


def generate(artifact_dir: Path, record: dict, prompt_ids: list[int], max_new_tokens: int, eos_id: int | None,
             threads: int = 2, timings: dict | None = None) -> list[int]:
    """Greedy decoding in llama.cpp with its KV cache: the prompt in one batch, then one token per step.

    Stops after `eos_id` (not returned) or `max_new_tokens`. `timings`, when given, receives the
    seconds spent on the prompt pass and on the decode steps, and how many steps ran.
    """
    import llama_cpp
    import numpy as np

    from llmbuild.evaluation.greedy import greedy

    # whole blocks of 256 positions: short warm-up runs and the runs they warm share one context
    need = len(prompt_ids) + max_new_tokens
    n_ctx = _n_ctx(record, need, -(-(need + 8) // 256) * 256)
    llm = _llama(Path(artifact_dir) / record["file"], n_ctx, logits_all=False, threads=threads)
    n_vocab = llm.n_vocab()

    def step(ids: list[int]) -> int:
        llm.eval(ids)
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))
        return int(logits.argmax())

    llm.reset()
    return greedy(step, prompt_ids, max_new_tokens, eos_id, timings)


class Gguf(Backend):
    name = NAME
    Options = Options
    precisions = (*QUANTS, *LLAMA_CPP_QUANTS)
    tools = TOOLS
    runtime = Runtime(RUNTIME_DIST, "llama_cpp", INSTALL_HINT)
    path_options = PATH_OPTIONS
    card_library = "gguf"
    no_routing = None  # llama.cpp's graph names the experts it picks (gguf_routing.py)
    client = Client(RUNTIME_DIST, "llama_cpp", INSTALL_HINT, "the GGUF's vocab and tokenizer.chat_template")

    def check_options(self, options, key):
        check_options(options, key)

    def check_model(self, options, arch, model_dir, key):
        check_model(options, arch, model_dir, key)

    def check_family(self, options, cls, key):
        check_family(options, cls, key)

    def precision(self, options):
        return precision(options)

    def default_gates(self, options):
        return default_gates(options)

    def key_extra(self, options):
        return key_extra(options)

    def context_length(self, options, arch):
        return arch.gguf_context()

    def planned_files(self, options, model_name):
        return [f"{_file_stem(model_name)}-{options.quant}.gguf", *(["imatrix.gguf"] if options.imatrix else [])]

    def runtime_available(self):
        return runtime_available()

    def export(self, ckpt, options, out_dir, meta, progress):
        return export(ckpt, options, out_dir, meta, progress)

    def run_logits(self, artifact_dir, record, token_ids, split=None):
        return run_logits(artifact_dir, record, token_ids, split)

    def generate(self, *args, **kwargs):
        return generate(*args, **kwargs)

    def run_routing(self, artifact_dir, record, token_ids):
        return run_routing(artifact_dir, record, token_ids)

    def open_client(self, artifact_dir, record, threads):
        from llmbuild.targets import gguf_client

        return gguf_client.open_session(artifact_dir, record, threads)

    def usage(self, target, record, files):
        path = f"artifacts/{target}/{record.get('file', 'model.gguf')}"
        return [f"`{target}` with llama.cpp (`pip install llama-cpp-python`):", "", "```python",
                "from llama_cpp import Llama", f"llm = Llama(model_path='{path}')",
                "print(llm('Hello', max_tokens=32)['choices'][0]['text'])", "```", ""]

    def serving(self, target, record):
        """llama.cpp's server and llama-cpp-python's, on the file with its declared context."""
        path = f"artifacts/{target}/{record.get('file', 'model.gguf')}"
        ctx = record.get("context_length")
        return {"llama-server": [f"llama-server -m {path} --jinja --host 127.0.0.1 --port 8080"
                                 + (f" -c {ctx}" if ctx else "")],
                "llama_cpp.server": [f"python -m llama_cpp.server --model {path} --host 127.0.0.1 --port 8080"
                                     + (f" --n_ctx {ctx}" if ctx else "")]}

    def notes(self, record):
        notes = super().notes(record)
        if record.get("fallbacks"):
            used = sorted({f["used"] for f in record["fallbacks"]})
            notes.append(f"{len(record['fallbacks'])} of {record.get('tensors')} tensors stored as {'/'.join(used)}: "
                         f"their rows are not whole {record['quant']} blocks (llama.cpp's fallback)")
        if record.get("rope_note"):
            notes.append(record["rope_note"])
        for diff in (record.get("tokenizer") or {}).get("differences", []):
            notes.append(f"llama.cpp's tokenizer differs from the source's: {diff}")
        if isinstance(record.get("imatrix"), dict):
            im = record["imatrix"]
            notes.append(f"importance matrix from `{im['text']}` ({im['tokens']} tokens), shipped as `{im['file']}`")
        return notes


BACKEND = Gguf()
