"""The GGUF target: one llama.cpp model file per build, written by streaming the checkpoint.

What llama.cpp's `convert_hf_to_gguf.py` (plus `llama-quantize` for the 4/5-bit types) would make
from a Llama-family checkpoint, written with gguf-py: llama.cpp's tensor names from gguf's own
mapping tables, Q/K rows permuted for llama.cpp's rope where the architecture needs it, the same
choice of which tensors stay F32/F16 and which are quantized, the `general.*` and hyperparameter
keys, and the tokenizer (see gguf_vocab.py). Tensors are read, converted and quantized one at a
time on a small thread pool and written in order, so memory holds about one tensor, not the model.
`run_logits` runs the file in llama.cpp (llama-cpp-python) for the verify stage.
"""

from __future__ import annotations

import atexit
import importlib.util
import math
import os
import re
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from llmbuild.archs import architecture_of
from llmbuild.errors import InvalidInput
from llmbuild.targets.common import ArtifactMeta, Gates, Progress
from llmbuild.targets.gguf_vocab import read_vocab

NAME = "gguf"
SUPPORTED_ARCHS = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"}
TOOLS = ("gguf", "numpy")
RUNTIME_DIST = "llama-cpp-python"

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
# K-quants, i-quants and ternary types: only llama.cpp's C quantizer (llama-quantize) makes them
LLAMA_CPP_ONLY = re.compile(r"^(q\d_k(_[sml])?|iq\d_\w+|tq\d_0|mxfp4\w*)$")
# 4/5-bit files get output.weight at 8 bits: llama-quantize gives it Q6_K (Q8_0 when its rows are not
# a multiple of 256), and gguf-py cannot make Q6_K, so Q8_0 it is.
OUTPUT_AT_8_BITS = {"q4_0", "q4_1", "q5_0", "q5_1"}
ROPE_KINDS = ("default", "linear", "llama3")

# Gates per quant, against the fp32 source. max_kld is the quality gate: above llama.cpp's published
# mean KLD vs fp16 on Llama-3-8B (Q8_0 0.00136, Q4_0 0.0719; formats.md) with room for small models,
# which quantize worse; the tiny test models measure 1.9e-6 (q8_0) and 1.8e-4 (q4_0). min_top1 is a
# floor that catches a broken file (which agrees on ~1/vocab of positions), not a quality bar: on
# models with near-tied logits it is noisy (tiny Llama: q8_0 0.97, q4_0 0.67, q4_1 0.79, q5_x 0.90;
# tiny Qwen2: 1.0 at every quant). max_abs_diff catches a wrong tensor or permutation; quantized
# files legitimately move a large logit by units (tiny models: f32 2e-4, q8_0 0.009, q4_0 0.094).
DEFAULT_GATES = {
    "f32": {"min_top1": 0.99, "max_kld": 1e-4, "max_abs_diff": 0.05},
    "f16": {"min_top1": 0.98, "max_kld": 1e-3, "max_abs_diff": 0.5},
    "bf16": {"min_top1": 0.95, "max_kld": 2e-3, "max_abs_diff": 1.0},
    "q8_0": {"min_top1": 0.90, "max_kld": 0.01, "max_abs_diff": 1.5},
    "q5_1": {"min_top1": 0.70, "max_kld": 0.05, "max_abs_diff": 3.0},
    "q5_0": {"min_top1": 0.70, "max_kld": 0.05, "max_abs_diff": 3.0},
    "q4_1": {"min_top1": 0.50, "max_kld": 0.15, "max_abs_diff": 5.0},
    "q4_0": {"min_top1": 0.50, "max_kld": 0.15, "max_abs_diff": 5.0},
}

# Rows per quantization call are capped at about this many elements: gguf-py's block quantizers make
# several float32 temporaries of their input, which must not be the size of a 128k-token embedding.
CHUNK_ELEMENTS = 1 << 22


@dataclass
class Options:
    backend: str = "gguf"
    quant: str = "q8_0"  # f32|f16|bf16|q8_0|q4_0|q4_1|q5_0|q5_1: file size vs fidelity (q8_0: ~1/4 of fp32, KLD ~1e-3)
    threads: int = 0  # worker threads for convert+quantize; 0 = all cores. More is faster, holds more tensors at once
    gates: Gates = field(default_factory=Gates)  # parity gates; unset ones take default_gates(quant)


def check(options, hf_config: dict, key: str) -> None:
    """Plan-time checks: the quant, the architecture and the rope scaling are ones this backend maps."""
    quant = options.quant
    if quant not in QUANTS:
        if LLAMA_CPP_ONLY.match(str(quant).lower()):
            raise InvalidInput(
                f"{key}.quant: {quant!r} needs llama.cpp's quantizer (llama-quantize), not yet supported by "
                f"this backend; it makes {', '.join(QUANTS)}"
            )
        raise InvalidInput(f"{key}.quant: unknown quant {quant!r}; known: {', '.join(QUANTS)}")
    if options.threads < 0:
        raise InvalidInput(f"{key}.threads: {options.threads} is negative; 0 means all cores")
    arch = architecture_of(hf_config)
    if arch not in SUPPORTED_ARCHS:
        raise InvalidInput(
            f"{key}: architecture {arch!r} is not supported by the gguf backend; "
            f"supported: {', '.join(sorted(SUPPORTED_ARCHS))}"
        )
    if "max_position_embeddings" not in hf_config:
        raise InvalidInput(f"{key}: config.json has no max_position_embeddings, which llama.cpp requires")
    kind = _rope(hf_config)[1]
    if kind not in ROPE_KINDS:
        raise InvalidInput(
            f"{key}: config.json rope scaling {kind!r} is not mapped by the gguf backend; "
            f"supported: {', '.join(ROPE_KINDS)}"
        )


def precision(options) -> str:
    return options.quant


def default_gates(options) -> dict:
    return dict(DEFAULT_GATES[options.quant])


@dataclass
class _Tensor:
    """One tensor of the GGUF: where it comes from and what it becomes."""

    src: str | None  # checkpoint tensor name; None for a tensor computed here
    name: str  # llama.cpp's name
    shape: tuple[int, ...]  # numpy order (rows last-but-one); GGUF stores it reversed
    qtype: object  # gguf.GGMLQuantizationType
    nbytes: int
    heads: int = 0  # > 0: interleave each of this many heads' rotary halves (llama.cpp's "llama" rope)
    data: object = None  # the values of a computed tensor


def export(ckpt, options, out_dir: Path, meta: ArtifactMeta, progress: Progress) -> dict:
    """Write `<name>-<quant>.gguf` into out_dir; returns the record that run_logits reads."""
    import gguf
    import numpy as np

    cfg = ckpt.config
    vocab = read_vocab(ckpt.dir, cfg["vocab_size"])  # first: a tokenizer llama.cpp cannot run fails fast
    plan = _plan(ckpt, options.quant)
    path = Path(out_dir) / f"{_file_stem(meta.name)}-{options.quant}.gguf"
    writer = gguf.GGUFWriter(path, ckpt.arch.gguf_arch)
    n_params = sum(math.prod(t.shape) for t in plan if t.src is not None)
    _add_metadata(writer, cfg, options.quant, meta, n_params)
    vocab.add_to(writer, ckpt.dir)
    for t in plan:
        # the logical shape with a float dtype: gguf takes raw_dtype as the type and the shape as is
        writer.add_tensor_info(t.name, t.shape, np.dtype(np.float32), t.nbytes, raw_dtype=t.qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    try:
        _write_tensors(writer, ckpt, plan, options.threads or _cores(), progress)
    finally:
        writer.close()
    types: dict[str, int] = {}
    for t in plan:
        types[t.qtype.name] = types.get(t.qtype.name, 0) + 1
    return {
        "file": path.name,
        "quant": options.quant,
        "file_type": QUANTS[options.quant][1],
        "gguf_arch": ckpt.arch.gguf_arch,
        "tensors": len(plan),
        "tensor_types": types,
        "params": n_params,
        "bytes": path.stat().st_size,
        "tokenizer": {"model": vocab.model, "pre": vocab.pre, "tokens": len(vocab.tokens), "file": vocab.source.name},
    }


def _plan(ckpt, quant: str) -> list[_Tensor]:
    """Every tensor of the file, in file order, from the checkpoint's headers (no weights read)."""
    import gguf

    cfg = ckpt.config
    n_layer, n_head = cfg["num_hidden_layers"], cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads") or n_head
    arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == ckpt.arch.gguf_arch)
    names = gguf.get_tensor_name_map(arch, n_layer)
    if ckpt.pickle:
        # .bin files have no header to read shapes from: one extra pass, in the order the data pass sees
        shapes = {n: tuple(t.shape) for n, t in ckpt.iter_tensors()}
    else:
        shapes = {n: tuple(s) for n, (s, _) in ckpt.tensor_shapes().items()}
    mapped: list[tuple[str, str, tuple[int, ...]]] = []
    for src, shape in shapes.items():
        if src.endswith(".rotary_emb.inv_freq"):
            continue  # recomputed by every runtime from the rope settings
        name = names.get_name(src, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise InvalidInput(f"{ckpt.dir}: tensor {src!r} has no llama.cpp name for {ckpt.arch.gguf_arch}")
        mapped.append((src, name, shape))
    has_output = any(name == "output.weight" for _, name, _ in mapped)
    plan = []
    if (factors := _llama3_rope_factors(cfg)) is not None:
        plan.append(_entry(None, gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", factors.shape,
                           quant, has_output, data=factors))
    for src, name, shape in mapped:
        heads = 0
        if ckpt.arch.gguf_permute_qk and name.endswith(("attn_q.weight", "attn_k.weight")):
            heads = n_head if "attn_q" in name else n_kv
        plan.append(_entry(src, name, shape, quant, has_output, heads=heads))
    return plan


def _entry(src, name, shape, quant, has_output, heads=0, data=None) -> _Tensor:
    import gguf

    q = gguf.GGMLQuantizationType
    qtype = q[QUANTS[quant][0]]
    # The converter's rules (prepare_tensors): 1-D tensors, norms and non-weights (biases) stay F32,
    # because most of llama.cpp only handles those in F32.
    if len(shape) <= 1 or name.endswith("_norm.weight") or not name.endswith(".weight"):
        qtype = q.F32
    elif quant in OUTPUT_AT_8_BITS and (name == "output.weight" or (name == "token_embd.weight" and not has_output)):
        qtype = q.Q8_0  # llama-quantize's rule for the output matrix (tied: the embedding), see OUTPUT_AT_8_BITS
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    if shape[-1] % block:
        # rows that are not whole blocks: the converter falls back to F16 (its QuantError handler)
        qtype = q.F16
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    nbytes = math.prod(shape) // block * type_size
    return _Tensor(src, name, tuple(shape), qtype, nbytes, heads, data)


def _write_tensors(writer, ckpt, plan: list[_Tensor], threads: int, progress: Progress) -> None:
    """Convert on `threads` workers while this thread reads the next tensors and writes finished ones.

    Tensors are written in plan order (gguf's write_tensor_data streams them in tensor-info order);
    reading ahead stops at a byte budget, so memory holds about the largest tensor plus a few layers.
    """
    budget = max(max(math.prod(t.shape) * 4 for t in plan), 64 << 20)
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
        for t, x in _sources(ckpt, plan):
            nbytes = math.prod(t.shape) * 4
            while pending and (in_flight + nbytes > budget or len(pending) > 2 * threads):
                write_oldest()
            pending.append((t, nbytes, pool.submit(_convert, t, x)))
            in_flight += nbytes
            del x
        while pending:
            write_oldest()


def _sources(ckpt, plan: list[_Tensor]):
    """(plan entry, tensor) in plan order, one tensor read at a time.

    safetensors tensors are fetched one by one: each `get_tensor` maps the file and the mapping goes
    with the tensor, whereas `iter_tensors` keeps one mapping open per file, so every page it touched
    would stay in this process's resident set until the file is done. Pickled .bin files are loaded
    whole by torch anyway; those are walked in file order, which is the plan's order.
    """
    stream = ckpt.iter_tensors() if ckpt.pickle else None
    for t in plan:
        if t.src is None:
            yield t, t.data
        elif stream is None:
            yield t, ckpt.get_tensor(t.src)
        else:
            name, x = next(stream)
            while name != t.src:  # tensors the plan drops (rotary inv_freq)
                name, x = next(stream)
            yield t, x


def _convert(t: _Tensor, x):
    """torch tensor -> GGUF bytes (as a numpy array) for one plan entry."""
    import numpy as np
    import torch
    from gguf.quants import quantize

    if isinstance(x, torch.Tensor):
        # numpy has no bfloat16; float16/float32 go through without a copy
        x = (x if x.dtype in (torch.float16, torch.float32) else x.float()).numpy()
    if t.heads:
        x = _interleave_rotary(x, t.heads)
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


def _interleave_rotary(w, n_head: int):
    """Reorder q/k projection rows from HF's rotate_half layout to llama.cpp's "llama" rope layout.

    HF rotates dimension i of a head with dimension i + d/2; llama.cpp's LLAMA rope rotates adjacent
    pairs (2i, 2i+1). Within each head, the row order [x0..x(d/2-1), y0..y(d/2-1)] becomes
    [x0, y0, x1, y1, ...], which makes the two computations the same (the converter's `permute`).
    """
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _rope(cfg: dict) -> tuple[float, str, dict]:
    """(rope theta, scaling kind, scaling parameters) from a transformers 4 or 5 config.json."""
    params = dict(cfg.get("rope_parameters") or {})  # transformers 5
    params.update(cfg.get("rope_scaling") or {})  # transformers 4
    theta = params.get("rope_theta", cfg.get("rope_theta", 10000.0))
    return float(theta), params.get("rope_type") or params.get("type") or "default", params


def _llama3_rope_factors(cfg: dict):
    """Llama 3.1's frequency-dependent rope scaling as the per-frequency divisors llama.cpp reads
    from a `rope_freqs` tensor; None for other rope kinds.

    Wavelengths shorter than original_context/high_freq_factor are kept, longer than
    original_context/low_freq_factor are scaled by `factor`, and those between are interpolated.
    """
    import numpy as np

    theta, kind, p = _rope(cfg)
    if kind != "llama3":
        return None
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    factor, low, high = p.get("factor", 8.0), p.get("low_freq_factor", 1.0), p.get("high_freq_factor", 4.0)
    old_ctx = p.get("original_max_position_embeddings", 8192)
    wavelen = 2 * math.pi * theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    smooth = (old_ctx / wavelen - low) / (high - low)
    mid = 1 / ((1 - smooth) / factor + smooth)
    out = np.where(wavelen < old_ctx / high, 1.0, np.where(wavelen > old_ctx / low, factor, mid))
    return out.astype(np.float32)


def _add_metadata(w, cfg: dict, quant: str, meta: ArtifactMeta, n_params: int) -> None:
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
    w.add_size_label(gguf.size_label(n_params, n_params, 0, 0))

    n_head = cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_head
    theta, kind, rope = _rope(cfg)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(cfg.get("num_key_value_heads") or n_head)
    w.add_rope_freq_base(theta)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_vocab_size(cfg["vocab_size"])
    w.add_rope_dimension_count(head_dim)
    if cfg.get("head_dim"):
        # heads wider than hidden/heads (Mistral NeMo): llama.cpp otherwise assumes hidden/heads
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    if kind == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rope["factor"])
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


# path -> (file identity, n_ctx, Llama): a verify stage calls run_logits several times per file
_LOADED: dict[str, tuple[tuple[int, int], int, object]] = {}


def _llama(path: Path, n_ctx: int):
    import llama_cpp

    st = path.stat()
    ident = (st.st_mtime_ns, st.st_size)
    hit = _LOADED.get(str(path))
    if hit and hit[0] == ident and hit[1] >= n_ctx:
        return hit[2]
    _LOADED.pop(str(path), None)
    # verbose=False: llama-cpp-python's log callback then passes on llama.cpp's errors only
    llm = llama_cpp.Llama(model_path=str(path), logits_all=True, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx,
                          n_threads=2, verbose=False)
    _LOADED[str(path)] = (ident, n_ctx, llm)
    return llm


def _close_all() -> None:
    """Free llama.cpp models before interpreter teardown, when their destructors can no longer run."""
    while _LOADED:
        _LOADED.popitem()[1][2].close()


atexit.register(_close_all)


def run_logits(artifact_dir: Path, record: dict, token_ids: list[list[int]], split: int | None = None):
    """llama.cpp's logits [seq, vocab] (float32) for each probe's given token ids, every position.

    With `split`, the first `split` tokens go in one batch and the rest one at a time through
    llama.cpp's KV cache, which is how generation uses the file.
    """
    import numpy as np

    llm = _llama(Path(artifact_dir) / record["file"], max(len(t) for t in token_ids) + 8)
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
