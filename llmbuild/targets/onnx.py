"""The ONNX target: a decoder-only causal LM as one onnxruntime graph with past key values.

The artifact is what onnxruntime needs to score and generate on CPU (or CUDA): `model.onnx` (plus
`model.onnx.data` when the weights live outside the protobuf), `config.json` and the tokenizer files.
The graph's inputs and outputs have the names optimum and onnxruntime-genai use, so generation loops
written for those run it unchanged:
    input_ids [batch, seq] int64, attention_mask [batch, past+seq] int64, position_ids [batch, seq] int64,
    past_key_values.N.key / .value [batch, kv_heads, past, head_dim]
    -> logits [batch, seq, vocab] float32, present.N.key / .value [batch, kv_heads, past+seq, head_dim]

How it is made: the graph is written here with `onnx.helper` from the model's architecture object
(llmbuild/archs: dims, rope, norms, q/k norms, biases, sliding windows per layer, tensor names) and
the checkpoint's tensor headers, then the weights are streamed into the file one tensor at a time,
exactly as stored (cast only when the precision changes). No model is instantiated and no exporter traces one, so peak
memory is about one tensor plus the graph, whatever the model's size, and transformers' modelling code
is not involved. Measured on the 959 MB `mid` checkpoint of anchors-measured.md: 2.2 s and 367 MB peak
RSS for the whole process (fp16: 2.8 s, 387 MB), where optimum-cli takes 34 s and 4,229 MB.
`torch.onnx.export` is not used: exporters hold the whole model and its traced graph, and
transformers 5's cache objects are not the flat past-key-value tensors a graph takes (where Olive's
capture modes failed: docs/anchors.md).

The graph is plain ai.onnx, opset 23 (the first with RMSNormalization, RotaryEmbedding and Attention,
which onnxruntime 1.32 runs on CPU in float32 and float16): per layer RMSNormalization, Gemm
projections, RotaryEmbedding on q and k, one Attention node (grouped-query heads, past key/value in,
present out, an additive mask, a window per sliding-window layer), an RMSNormalization per head of q
and k where the family has them, and the gated MLP. The facts other families add are ops on that
skeleton: Gemma's (1 + w) norms an Add on the scale, its sqrt(hidden) embedding scale a Mul, its
query_pre_attn_scalar Attention's `scale`, attention soft-capping Attention's `softcap` (applied before
the mask, as transformers does), the final logit cap Div/Tanh/Mul in float32, the post-attention and
post-MLP norms two more RMSNormalizations, GELU-tanh ONNX Gelu(approximate="tanh"); Phi-3's fused
qkv_proj and gate_up_proj one Gemm each, then Split; per-layer ropes (Gemma 3's two bases) their own
cos/sin; LongRoPE's factors chosen per pass by a Where on the largest position id, as transformers'
longrope_frequency_update does, with cos/sin scaled by its attention factor; partial rotary
RotaryEmbedding's `rotary_embedding_dim`. Linear layers are Gemm(transB=1) on
[tokens, features], so weights keep the checkpoint's [out, in] layout (written without a transpose) and
tied embeddings are one initializer read by both the Gather and the output Gemm.

fp16: weights, activations and the KV cache are float16. RMSNormalization reduces in float32
(stash_type), Attention's softmax runs in float32 (softmax_precision) and the rotary angles are
computed in float32, as transformers does in its fp16 models. `logits` are float32 in both precisions
(a Cast after the output layer): the type samplers and the verify stage use, where fp16 would round
logits between 16 and 32 to steps of 1/64.

`run_logits` runs the graph in onnxruntime for the verify stage, with the KV cache when asked.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from llmbuild.errors import InvalidInput
from llmbuild.targets import onnx_layout, onnx_moe, onnx_quant, tokenizer_files
from llmbuild.targets.base import Backend, Client, Runtime
from llmbuild.targets.common import ArtifactMeta, Gates, Progress

NAME = "onnx"
# onnxruntime: the opset and ops chosen are those its CPU provider runs, so its version is part of
# what the export was made for; torch/safetensors read and cast the weights that go into the file.
TOOLS = ("onnx", "onnxruntime", "numpy", "torch", "safetensors")
RUNTIME_DIST = "onnxruntime"

DTYPES = ("fp32", "fp16")
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
EXTERNAL_DATA = ("auto", "always", "never")
# 23 is the first opset with Attention, RotaryEmbedding and RMSNormalization; 24 only revises
# Attention (an optional input this graph does not use). Both are checked against transformers.
OPSETS = (23, 24)
# activations the gated MLP computes (config.json hidden_act / hidden_activation) -> how: SiLU, or ONNX
# Gelu's tanh approximation (transformers' gelu_pytorch_tanh and gelu_new are that formula)
ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh"}
PROTOBUF_LIMIT = 2 << 30  # bytes: protobuf cannot serialize a message larger than 2 GiB
AUTO_EXTERNAL_ABOVE = 1.5e9  # bytes of weights: auto keeps a margin below the limit for the graph itself
DATA_FILE = "model.onnx.data"
# elements converted at a time (whole rows): 4 MB of float32 beside the source tensor. Smaller holds less at
# more calls; 4 MB keeps the peak flat from a 240M model to a 1B one (bench/scale_memory.py: 16 MB grew 15 MB)
CHUNK_ELEMENTS = 1 << 20
ITEMSIZE = {1: 4, 10: 2, 2: 1}  # bytes per element of onnx.TensorProto FLOAT, FLOAT16, UINT8
ALIGN = 64  # external tensor offsets: a runtime that maps the file can use each weight in place

# Gates against the fp32 transformers model. fp32 differs only in summation order: the tiny test
# models measure max |dlogit| 2.4e-7 and KLD 1e-15, a 240M-parameter random Llama 3.8e-6 and 3e-13;
# the limits leave room for deeper models with larger logits. fp16 rounds weights and activations:
# tiny models 3.5e-4 and 2.6e-9, the 240M model 4.7e-3 and 3.4e-7 with top-1 0.984 (random weights
# have near-tied logits that fp16 rounding flips). max_kld and max_abs_diff are those of the GGUF f16
# gate; min_top1 is a floor that catches a broken graph (which agrees on ~1/vocab), not a quality bar.
# max_ppl_ratio: above llama.cpp's Llama-3-8B ratios at comparable bits (f16 ~1.000x, q8_0 1.0008; its
# perplexity README) with room for small models.
DEFAULT_GATES = {
    "fp32": {"min_top1": 0.99, "max_kld": 1e-5, "max_abs_diff": 0.01, "max_ppl_ratio": 1.001},
    "fp16": {"min_top1": 0.97, "max_kld": 1e-3, "max_abs_diff": 0.5, "max_ppl_ratio": 1.01},
}


@dataclass
class Options:
    backend: str = "onnx"
    dtype: str = "fp32"  # fp32|fp16: fp16 halves file size and memory, costs a little parity (KLD ~1e-7..1e-4)
    execution_provider: str = "cpu"  # cpu|cuda: where verify runs the graph (same graph); cuda needs onnxruntime-gpu
    external_data: str = "auto"  # auto|always|never: weights beside the graph (any size) or inside it (one file,
    #                               under protobuf's 2 GB); auto: beside it above 1.5 GB
    opset: int = 23  # 23|24: 23 is the first with the fused ops and loads in more runtimes; 24 revises Attention
    quant: str = "none"  # none|int8|int4: int8 dynamic (~1/4 of fp32) or int4 weight-only MatMulNBits; needs fp32
    block_size: int = 32  # int4: weights per scale (16..256): smaller is more accurate and larger
    accuracy_level: int = 4  # int4: MatMulNBits compute, 4 = int8 (fastest on CPU), 0 = fp32 (most exact)
    gates: Gates = field(default_factory=Gates)  # parity gates; unset ones take default_gates(dtype)


def check_options(options, key: str) -> None:
    """Recipe-only checks: option values and the execution provider this onnxruntime has."""
    for opt, known in (("dtype", DTYPES), ("execution_provider", tuple(PROVIDERS)),
                       ("external_data", EXTERNAL_DATA), ("opset", OPSETS)):
        value = getattr(options, opt)
        if value not in known:
            raise InvalidInput(f"{key}.{opt}: unknown value {value!r}; known: {', '.join(map(str, known))}")
    onnx_quant.check(options, key)
    if options.execution_provider != "cpu":
        available = _providers()
        if PROVIDERS[options.execution_provider] not in available:
            raise InvalidInput(f"{key}.execution_provider: {options.execution_provider}, but onnxruntime here has "
                               f"no {PROVIDERS[options.execution_provider]} (has: {', '.join(available) or 'none'}); "
                               "install onnxruntime-gpu or use cpu")


def check_model(options, arch, key: str) -> None:
    """Model checks: what the graph computes is what the model computes, and the file fits protobuf."""
    if arch.activation not in ACTIVATIONS:
        raise InvalidInput(f"{key}: model config hidden_act {arch.activation!r} is not supported by the onnx "
                           f"backend, whose gated MLP computes {', '.join(ACTIVATIONS)}")
    if options.external_data == "never":
        nbytes = arch.estimate_params() * (4 if options.dtype == "fp32" else 2)
        if nbytes > AUTO_EXTERNAL_ABOVE:
            raise InvalidInput(f"{key}.external_data: never, but the {options.dtype} weights are about "
                               f"{nbytes / 1e9:.1f} GB, too close to protobuf's 2 GB limit; use auto or always")


def check_family(options, cls, key: str) -> None:
    """What the graph cannot do for a family's experts: int8 (onnxruntime's dynamic quantization acts on
    MatMul nodes; an 8-bit QMoE on CPU did not reproduce its own dequantized weights here), so a
    mixture of experts quantizes with int4 (QMoE) or stays fp32/fp16."""
    if cls.mixture_of_experts and getattr(options, "quant", "none") == "int8":
        raise InvalidInput(f"{key}.quant: int8 is not applied to the experts of a mixture of experts "
                           f"({cls.hf_names[0]}); use quant int4 (onnxruntime's QMoE) or dtype fp32/fp16")


def check(options, hf_config: dict, key: str) -> None:
    """Both kinds of checks, for a config.json (tests and tools that have no plan)."""
    from llmbuild.archs import for_config

    check_options(options, key)
    check_model(options, for_config(hf_config), key)


def _providers() -> list[str]:
    if not runtime_available():
        return []
    import onnxruntime

    return onnxruntime.get_available_providers()


def precision(options) -> str:
    return onnx_quant.precision(options)


def default_gates(options) -> dict:
    return dict(onnx_quant.DEFAULT_GATES.get(options.quant) or DEFAULT_GATES[options.dtype])


def runtime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def export(ckpt, options, out_dir: Path, meta: ArtifactMeta, progress: Progress) -> dict:
    """Write model.onnx (+ model.onnx.data), config.json and the tokenizer files into out_dir."""
    import onnx

    out_dir = Path(out_dir)
    arch = ckpt.arch
    elem = onnx.TensorProto.FLOAT if options.dtype == "fp32" else onnx.TensorProto.FLOAT16
    itemsize = 4 if options.dtype == "fp32" else 2
    tensors, weight_of = _plan(ckpt, arch)
    # a mixture of experts' stacked expert initializers, streamed expert by expert (onnx_moe.py)
    quant = getattr(options, "quant", "none")
    experts = (onnx_moe.initializers(ckpt, arch, options.dtype, quant, options.block_size)
               if arch.mixture_of_experts else [])
    n_params = sum(math.prod(shape) for _, shape in tensors) + sum(e.params for e in experts)
    nbytes = n_params * itemsize
    external = options.external_data == "always" or (options.external_data == "auto" and nbytes > AUTO_EXTERNAL_ABOVE)
    if not external and nbytes > PROTOBUF_LIMIT - (64 << 20):
        raise InvalidInput(f"external_data: never, but the {options.dtype} weights are {nbytes / 1e9:.2f} GB, "
                           "over protobuf's 2 GB limit; use auto or always")
    graph = _graph(arch, elem, weight_of, quant, options.block_size, options.accuracy_level)
    inits = [onnx.TensorProto(name=name, dims=shape, data_type=elem) for name, shape in tensors]
    inits += [onnx.TensorProto(name=e.name, dims=e.dims, data_type=e.data_type) for e in experts]
    opsets = [onnx.helper.make_opsetid("", options.opset)]
    if experts:
        opsets.append(onnx.helper.make_opsetid(onnx_moe.MS_DOMAIN, 1))
    model = onnx.helper.make_model(graph, opset_imports=opsets, producer_name="llmbuild", producer_version=_version())
    # the contrib domain has no IR-version table in onnx: the standard opset decides
    model.ir_version = onnx.helper.find_min_ir_version_for([o for o in model.opset_import if o.domain == ""])
    onnx.helper.set_model_props(model, _metadata(meta, options.dtype))
    stream = _tensor_chunks(ckpt, [name for name, _ in tensors], options.dtype, progress)
    if experts:
        stream = itertools.chain(stream, ((e.name, e.chunks()) for e in experts))
    if external:
        _write_external(out_dir, model, inits, stream)
    else:
        _write_embedded(out_dir / "model.onnx", model, inits, stream)
    model_files = ["model.onnx", *([DATA_FILE] if external else [])]
    files = list(model_files)
    for name in ("config.json", "generation_config.json"):
        if (ckpt.dir / name).is_file():
            shutil.copyfile(ckpt.dir / name, out_dir / name)
            files.append(name)
    files += tokenizer_files.ship(ckpt.dir, out_dir)
    record = onnx_quant.apply(out_dir, options, {
        "files": files,
        "format": "onnx",
        "precision": options.dtype,
        "opset": options.opset,
        "external_data": external,
        "execution_provider": options.execution_provider,
        "inputs": [i.name for i in graph.input],
        "outputs": [o.name for o in graph.output],
        "bits_per_weight": 8 * nbytes / n_params,
        "num_parameters": n_params,
        "bytes": sum((out_dir / f).stat().st_size for f in model_files),
        **({"experts": {"count": arch.expert_count, "used": arch.experts_per_token,
                        "weights": "int4 QMoE" if quant == "int4" else f"{options.dtype} MoE"},
            "keep_float": onnx_moe.keep_float(arch)} if experts else {}),
    })
    # the clients' layout: onnx/model{suffix}.onnx, genai_config.json, a tokenizer_config.json 4.x loads
    return onnx_layout.apply(out_dir, record, ckpt.config, arch, arch.context)


def _plan(ckpt, arch) -> tuple[list[tuple[str, list[int]]], dict[str, str]]:
    """The checkpoint tensors the graph reads, in the checkpoint's order, with their shapes, and the map
    from each weight name the graph uses to the tensor holding it (the output layer may be the embedding).

    Checkpoint order lets pickled .bin files be read in one pass. A missing tensor, one the graph has no
    place for, or one that is not floating point fails here, before anything is written.
    """
    if ckpt.pickle:  # .bin files have no header: one extra pass
        found = {n: (list(t.shape), str(t.dtype).removeprefix("torch.")) for n, t in ckpt.iter_tensors()}
    else:
        found = {n: (list(s), d) for n, (s, d) in ckpt.tensor_shapes().items()}
    head, embed = f"{arch.LM_HEAD}.weight", f"{arch.EMBED}.weight"
    # tied when config.json says so (transformers then ignores any lm_head.weight) or when the
    # checkpoint has no output matrix of its own
    tied = arch.tied or head not in found
    required, optional = arch.expected_tensors(tied)
    missing = [n for n in required if n not in found]
    if missing:
        raise InvalidInput(f"{ckpt.dir}: tensor {missing[0]!r} is missing ({len(missing)} missing in all)")
    used = set(required) | (set(optional) & set(found))
    for n, (_, dtype) in found.items():
        if n not in used and not arch.ignored(n) and n != head:
            raise InvalidInput(f"{ckpt.dir}: tensor {n!r} has no place in the onnx graph of {arch.name}")
        if n in used and dtype.upper() not in ("F32", "F16", "BF16", "FLOAT32", "FLOAT16", "BFLOAT16"):
            raise InvalidInput(f"{ckpt.dir}: tensor {n!r} is {dtype}; the onnx backend reads float32, float16 "
                               "and bfloat16 checkpoints")
    weight_of = {n: n for n in used} | {head: embed if tied else head}
    stacked = arch.expert_sources()  # written by onnx_moe as stacked initializers
    return [(n, shape) for n, (shape, _) in found.items() if n in used and n not in stacked], weight_of


def _tensor_chunks(ckpt, names: list[str], dtype: str, progress: Progress):
    """Yield (name, chunks) per tensor: its bytes in the target precision as little-endian numpy slices,
    converted one slice at a time. safetensors tensors are read slice by slice too (safetensors_np, the
    GGUF writer's numpy reader), so memory holds one slice whatever the tensor's size: an embedding of a
    large vocabulary is not held whole. Pickled .bin files are loaded whole by torch anyway."""
    import numpy as np

    want = np.float32 if dtype == "fp32" else np.float16
    done = 0
    if not ckpt.pickle:
        from llmbuild.targets import safetensors_np

        read = safetensors_np.Reader(ckpt.index)
        for name in names:
            if read.readable(name):
                yield name, _read_converted(ckpt, read, name, want)
            else:  # a dtype the numpy reader does not return: torch, whole
                yield name, _converted(ckpt, name, ckpt.get_tensor(name).contiguous().view(-1), want)
            done += 1
            progress(done, len(names), name)
        return
    wanted = set(names)
    # pickled .bin files are walked in file order (see Checkpoint.iter_tensors)
    for name, x in ckpt.iter_tensors():
        if name in wanted:
            yield name, _converted(ckpt, name, x.contiguous().view(-1), want)
            done += 1
            progress(done, len(names), name)
        del x  # before the next tensor is read


def _read_converted(ckpt, read, name: str, want):
    """A safetensors tensor as numpy slices of `want`, read CHUNK_ELEMENTS at a time (whole rows; the
    rows of a matrix in order are its row-major bytes)."""
    import numpy as np

    from llmbuild.targets import safetensors_np

    shape = read.shape(name)
    per_row = math.prod(shape[1:]) if len(shape) > 1 else 1
    step = max(1, CHUNK_ELEMENTS // max(per_row, 1)) if len(shape) > 1 else None
    for r in range(0, shape[0], step) if step else [0]:
        src = safetensors_np.widen(read.rows(name, r, r + step) if step else read(name)).reshape(-1)
        arr = src.astype(want, copy=False)
        if arr is not src and want == np.float16 and not np.isfinite(arr).all():
            raise InvalidInput(f"{ckpt.dir}: tensor {name!r} has values beyond float16's range; use dtype fp32")
        yield arr.astype(arr.dtype.newbyteorder("<"), copy=False)


def _converted(ckpt, name: str, flat, want):
    """A flat torch tensor as numpy slices of `want` (np.float32 or np.float16). numpy casts: it is
    single-threaded, so its speed does not depend on what else runs on shared cores."""
    import numpy as np
    import torch

    for part in flat.split(CHUNK_ELEMENTS):
        src = (part.float() if part.dtype == torch.bfloat16 else part).numpy()  # numpy has no bfloat16
        arr = src.astype(want, copy=False)  # the same array, no copy, when the precision does not change
        if arr is not src and want == np.float16 and not np.isfinite(arr).all():
            raise InvalidInput(f"{ckpt.dir}: tensor {name!r} has values beyond float16's range; use dtype fp32")
        yield arr.astype(arr.dtype.newbyteorder("<"), copy=False)  # ONNX raw data is little-endian


def _write_external(out_dir: Path, model, inits, stream) -> None:
    """Weights into model.onnx.data as they stream; model.onnx holds the graph and, per weight, the
    external-data entries (location, offset, length) of the ONNX spec."""
    by_name = {t.name: t for t in inits}
    with open(out_dir / DATA_FILE, "wb") as f:
        for name, chunks in stream:
            f.write(b"\0" * (-f.tell() % ALIGN))
            offset = f.tell()
            f.writelines(memoryview(arr).cast("B") for arr in chunks)
            t = by_name[name]
            t.data_location = t.EXTERNAL
            for key, value in (("location", DATA_FILE), ("offset", offset), ("length", f.tell() - offset)):
                t.external_data.add(key=key, value=str(value))
    model.graph.initializer.extend(inits)
    (out_dir / "model.onnx").write_bytes(model.SerializeToString())


def _write_embedded(path: Path, model, inits, stream) -> None:
    """One self-contained model.onnx, written as the weights stream: the protobuf encoding of the
    model onnx.save would write (its fields in another order), without holding the weights in memory.

    Protobuf fields may come in any order. The graph is a length-prefixed GraphProto: its skeleton
    (nodes, inputs, outputs, small initializers), then each weight as a length-prefixed TensorProto
    whose raw_data field comes last. Every length is known from the shapes, so each prefix is written
    before the data it announces.
    """
    import onnx

    def field_head(proto_cls, name: str, length: int) -> bytes:
        number = proto_cls.DESCRIPTOR.fields_by_name[name].number
        return _varint(number << 3 | 2) + _varint(length)  # wire type 2: length-delimited

    heads, data_len = {}, 0
    for t in inits:
        n = math.prod(t.dims) * ITEMSIZE[t.data_type]
        meta = t.SerializeToString() + field_head(onnx.TensorProto, "raw_data", n)
        heads[t.name] = field_head(onnx.GraphProto, "initializer", len(meta) + n) + meta
        data_len += n
    skeleton = model.graph.SerializeToString()
    graph_len = len(skeleton) + sum(len(h) for h in heads.values()) + data_len
    model.ClearField("graph")
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
        f.write(field_head(onnx.ModelProto, "graph", graph_len))
        f.write(skeleton)
        for name, chunks in stream:
            f.write(heads[name])
            f.writelines(memoryview(arr).cast("B") for arr in chunks)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _graph(arch, elem: int, weight_of: dict[str, str], quant: str = "none", block_size: int = 32,
           accuracy_level: int = 4):
    """The decoder as an ONNX GraphProto whose weight initializers are added by the writer."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    nodes, consts = [], []
    hd = arch.head_dim
    np_dt = np.float32 if elem == TensorProto.FLOAT else np.float16

    def op(op_type: str, inputs: list[str], name: str, outputs: list[str] | None = None, **attrs) -> str:
        outputs = outputs or [name]
        nodes.append(helper.make_node(op_type, inputs, outputs, name=name, **attrs))
        return outputs[0]

    def const(name: str, value) -> str:
        consts.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def linear(x: str, module: str) -> str:
        bias = f"{module}.bias"
        return op("Gemm", [x, weight_of[f"{module}.weight"], *([bias] if bias in weight_of else [])],
                  f"{module}.Gemm", transB=1)

    def rms_norm(x: str, module: str) -> str:
        scale = weight_of[f"{module}.weight"]
        if arch.norm_offset:  # Gemma: x * (1 + w), w as stored
            scale = op("Add", [scale, const("norm_offset", np.array(arch.norm_offset, np_dt))], f"{module}.scale")
        # stash_type float32: the reduction runs in float32 for fp16 models too, as transformers does
        return op("RMSNormalization", [x, scale], module, axis=-1, epsilon=arch.eps, stash_type=TensorProto.FLOAT)

    def head_norm(x: str, module: str, heads: int) -> str:
        """RMSNorm over each head of a [tokens, heads * head_dim] projection (q/k norms)."""
        per_head = op("Reshape", [x, const(f"heads_{heads}_shape", np.array([-1, heads, hd], np.int64))],
                      f"{module}.per_head")
        flat = const(f"flat_{heads}_shape", np.array([-1, heads * hd], np.int64))
        return op("Reshape", [rms_norm(per_head, module), flat], f"{module}.flat")

    # activations are [tokens, features] (Gemm's 2-D form); rotary and attention see [batch, seq, features]
    shape3 = op("Concat", [op("Shape", ["input_ids"], "ids_shape"), const("minus_one", np.array([-1], np.int64))],
                "shape3", axis=0)
    tokens = op("Reshape", ["input_ids", "minus_one"], "tokens")
    h = op("Gather", [weight_of[f"{arch.EMBED}.weight"], tokens], "embed", axis=0)
    if arch.embedding_scale:  # Gemma: times sqrt(hidden), in the weights' dtype as transformers does
        h = op("Mul", [h, const("embedding_scale", np.array(arch.embedding_scale, np_dt))], "embed_scaled")

    rotary = _rotary_caches(arch, op, const, elem)

    # attention mask [batch, 1, seq, past+seq]: key j is visible to query i (absolute index past+i)
    # when j <= past+i, attention_mask[j] is 1, and, in sliding-window layers, j > past+i-window.
    # Hidden positions get half the type's lowest value rather than -inf: a query that sees nothing
    # (a left-padding position) then gets a uniform softmax instead of NaNs that would reach real
    # tokens through 0 * NaN, and adding a score to it cannot overflow to -inf.
    scalar = const("scalar_shape", np.array([], np.int64))
    total = op("Reshape", [op("Shape", ["attention_mask"], "total_1d", start=1, end=2), scalar], "total")
    seq = op("Reshape", [op("Shape", ["input_ids"], "seq_1d", start=1, end=2), scalar], "seq")
    one, zero = const("one", np.array(1, np.int64)), const("zero", np.array(0, np.int64))
    key_idx = op("Range", [zero, total, one], "key_idx")
    query_idx = op("Unsqueeze", [op("Range", [op("Sub", [total, seq], "past_len"), total, one], "query_idx_1d"),
                                 "minus_one"], "query_idx")
    padding = op("Unsqueeze", [op("Cast", ["attention_mask"], "mask_bool", to=TensorProto.BOOL),
                               const("axes_1_2", np.array([1, 2], np.int64))], "padding")
    visible = op("And", [op("LessOrEqual", [key_idx, query_idx], "causal"), padding], "visible")
    hidden_value = const("hidden_value", np.array(np.finfo(np_dt).min / 2, np_dt))
    no_bias = const("no_bias", np.array(0, np_dt))
    masks = {}
    for w in sorted(set(arch.windows), key=lambda w: w or 0):
        v = visible
        if w is not None:
            start = op("Sub", [query_idx, const(f"window_{w}", np.array(w, np.int64))], f"window_start_{w}")
            v = op("And", [visible, op("Greater", [key_idx, start], f"in_window_{w}")], f"visible_{w}")
        masks[w] = op("Where", [v, no_bias, hidden_value], f"mask_{w or 'full'}")

    attn_2d = const("attn_2d_shape", np.array([-1, arch.heads * hd], np.int64))
    attn_attrs = _attention_attrs(arch)
    routing: list[str] = []
    for i in range(arch.layers):
        L = arch.layer(i)
        p = f"model.layers.{i}"
        x = rms_norm(h, L.attn_norm)
        q, k, v = _qkv(x, L, arch, linear, op, const)
        if L.q_norm:
            q = head_norm(q, L.q_norm, arch.heads)
        if L.k_norm:
            k = head_norm(k, L.k_norm, arch.kv_heads)
        q, k, v = (op("Reshape", [t, shape3], f"{p}.{n}3") for t, n in ((q, "q"), (k, "k"), (v, "v")))
        cos, sin, rope_attrs = rotary[i]
        q = op("RotaryEmbedding", [q, cos, sin], f"{p}.q_rope", num_heads=arch.heads, **rope_attrs)
        k = op("RotaryEmbedding", [k, cos, sin], f"{p}.k_rope", num_heads=arch.kv_heads, **rope_attrs)
        y = op("Attention", [q, k, v, masks[L.window], f"past_key_values.{i}.key", f"past_key_values.{i}.value"],
               f"{p}.attn", outputs=[f"{p}.attn", f"present.{i}.key", f"present.{i}.value"],
               q_num_heads=arch.heads, kv_num_heads=arch.kv_heads, softmax_precision=TensorProto.FLOAT, **attn_attrs)
        y = linear(op("Reshape", [y, attn_2d], f"{p}.attn_2d"), L.o)
        if L.post_attn_norm:
            y = rms_norm(y, L.post_attn_norm)
        h = op("Add", [h, y], f"{p}.attn_residual")
        x = rms_norm(h, L.ffn_norm)
        if L.moe is not None:  # a mixture of experts in place of the MLP (onnx_moe.py)
            y, route = onnx_moe.block(op, const, linear, x, L, arch, elem, quant, block_size, accuracy_level, shape3)
            routing.append(route)
            h = op("Add", [h, y], f"{p}.mlp_residual")
            continue
        gate, up = _gate_up(x, L, linear, op)
        mlp = linear(op("Mul", [_activation(arch, gate, f"{p}.mlp", op), up], f"{p}.mlp.gated"), L.down)
        if L.post_ffn_norm:
            mlp = rms_norm(mlp, L.post_ffn_norm)
        h = op("Add", [h, mlp], f"{p}.mlp_residual")

    logits = linear(rms_norm(h, arch.FINAL_NORM), arch.LM_HEAD)
    if elem != TensorProto.FLOAT:
        logits = op("Cast", [logits], "logits_f32", to=TensorProto.FLOAT)
    if arch.final_softcap:  # Gemma 2: cap * tanh(logits / cap), in float32
        cap = const("final_softcap", np.array(arch.final_softcap, np.float32))
        logits = op("Mul", [op("Tanh", [op("Div", [logits, cap], "logits_scaled")], "logits_tanh"), cap],
                    "logits_capped")
    op("Reshape", [logits, shape3], "logits")

    kv_shape = ["batch_size", arch.kv_heads, "past_sequence_length", hd]
    present_shape = ["batch_size", arch.kv_heads, "total_sequence_length", hd]
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"]),
              helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch_size", "sequence_length"])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", "sequence_length", arch.vocab])]
    for i in range(arch.layers):
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kind}", elem, kv_shape))
            outputs.append(helper.make_tensor_value_info(f"present.{i}.{kind}", elem, present_shape))
    for name in routing:
        top_k = arch.experts_per_token
        outputs.append(helper.make_tensor_value_info(name, TensorProto.INT64, ["batch_size", "sequence_length", top_k]))
    return helper.make_graph(nodes, "llmbuild-decoder", inputs, outputs, initializer=consts)


def _rotary_caches(arch, op, const, elem) -> list[tuple[str, str, dict]]:
    """Per layer: the (cos, sin) inputs of its RotaryEmbedding nodes and their attributes.

    Angles are position * inverse frequency in float32; layers sharing a rope share the nodes (Gemma 3's
    sliding and global layers have two). A rope whose frequencies change with the sequence (LongRoPE)
    picks them per forward pass as transformers' longrope_frequency_update does: the long set for all
    tokens once the largest position id reaches the original context. cos and sin are multiplied by the
    kind's attention factor; partial rotary turns the first `rotary_embedding_dim` of each head.
    """
    import numpy as np
    from onnx import TensorProto

    pos = op("Cast", [op("Unsqueeze", ["position_ids", "minus_one"], "pos3")], "pos_f", to=TensorProto.FLOAT)
    made: dict[bytes, tuple[str, str]] = {}
    out = []
    for i in range(arch.layers):
        rope = arch.layer_rope(i)
        inv, longer, factor = rope.inv_freq(), rope.longer(), rope.attention_factor()
        ident = inv.tobytes() + (longer[1].tobytes() + str(longer[0]).encode() if longer else b"") + str(factor).encode()
        if ident not in made:
            n = f"rope{len(made)}" if made else "rope"
            freqs = const(f"{n}.inv_freq", inv)
            if longer:
                top = op("ReduceMax", ["position_ids"], f"{n}.max_position", keepdims=0)
                past = op("GreaterOrEqual", [top, const(f"{n}.original", np.array(longer[0], np.int64))], f"{n}.past")
                freqs = op("Where", [past, const(f"{n}.long_inv_freq", longer[1]), freqs], f"{n}.freqs")
            angles = op("Mul", [pos, freqs], f"{n}.angles")
            cos, sin = op("Cos", [angles], f"{n}.cos32"), op("Sin", [angles], f"{n}.sin32")
            if factor != 1.0:
                scale = const(f"{n}.attention_factor", np.array(factor, np.float32))
                cos, sin = op("Mul", [cos, scale], f"{n}.cos_scaled"), op("Mul", [sin, scale], f"{n}.sin_scaled")
            if elem != TensorProto.FLOAT:
                cos, sin = op("Cast", [cos], f"{n}.cos", to=elem), op("Cast", [sin], f"{n}.sin", to=elem)
            made[ident] = (cos, sin)
        attrs = {"rotary_embedding_dim": rope.dim} if rope.dim != arch.head_dim else {}
        out.append((*made[ident], attrs))
    return out


def _attention_attrs(arch) -> dict:
    """Attention attributes beyond the heads: a q.k scale other than 1/sqrt(head_dim) (Gemma's
    query_pre_attn_scalar) and soft-capping of the scores before the mask (Gemma 2), as onnxruntime
    applies `softcap`: cap * tanh(scores / cap)."""
    attrs = {}
    if not math.isclose(arch.attn_scale, arch.head_dim ** -0.5, rel_tol=1e-7):
        attrs["scale"] = float(arch.attn_scale)
    if arch.attn_softcap:
        attrs["softcap"] = float(arch.attn_softcap)
    return attrs


def _qkv(x: str, L, arch, linear, op, const) -> tuple[str, str, str]:
    """q, k, v of a layer: three projections, or one fused one (Phi-3's qkv_proj) split [q | k | v]."""
    import numpy as np

    if not L.qkv:
        return linear(x, L.q), linear(x, L.k), linear(x, L.v)
    sizes = [arch.heads * arch.head_dim, arch.kv_heads * arch.head_dim, arch.kv_heads * arch.head_dim]
    names = [f"{L.qkv}.{t}" for t in ("q", "k", "v")]
    op("Split", [linear(x, L.qkv), const(f"qkv_split_{'_'.join(map(str, sizes))}", np.array(sizes, np.int64))],
       f"{L.qkv}.Split", outputs=names, axis=-1)
    return names[0], names[1], names[2]


def _gate_up(x: str, L, linear, op) -> tuple[str, str]:
    """gate and up of a layer's MLP: two projections, or one fused one (Phi-3's gate_up_proj) whose
    first half is the gate (transformers' `chunk(2, dim=-1)`)."""
    if not L.gate_up:
        return linear(x, L.gate), linear(x, L.up)
    names = [f"{L.gate_up}.gate", f"{L.gate_up}.up"]
    op("Split", [linear(x, L.gate_up)], f"{L.gate_up}.Split", outputs=names, axis=-1, num_outputs=2)
    return names[0], names[1]


def _activation(arch, gate: str, prefix: str, op) -> str:
    if ACTIVATIONS[arch.activation] == "gelu_tanh":
        return op("Gelu", [gate], f"{prefix}.gelu", approximate="tanh")
    return op("Mul", [gate, op("Sigmoid", [gate], f"{prefix}.sigmoid")], f"{prefix}.silu")


def _metadata(meta: ArtifactMeta, dtype: str) -> dict[str, str]:
    props = {
        "llmbuild.name": meta.name,
        "license": meta.license_id,
        "license_name": meta.license_name,
        "license_link": meta.license_link,
        "base_model": meta.base_model,
        "base_model_url": meta.base_model_url,
        "quantized_by": meta.quantized_by,
        "description": meta.description,
        "llmbuild.version": _version(),
        "llmbuild.precision": dtype,
    }
    return {k: str(v) for k, v in props.items() if v}


def _version() -> str:
    from llmbuild import __version__

    return __version__


# (model path, mtime, provider) -> InferenceSession: the verify stage calls run_logits once per probe
_SESSIONS: dict[tuple[str, int, str], object] = {}


def _session(path: Path, provider: str):
    import onnxruntime as ort

    key = (str(path), path.stat().st_mtime_ns, provider)
    if key not in _SESSIONS:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        # no busy-waiting between ops: on shared cores spinning threads starve the others
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = [PROVIDERS[provider]] + (["CPUExecutionProvider"] if provider != "cpu" else [])
        _SESSIONS[key] = ort.InferenceSession(str(path), so, providers=providers)
    return _SESSIONS[key]


def run_routing(artifact_dir: Path, record: dict, token_ids: list[list[int]]):
    """The experts the graph runs per token and sparse layer: its `routing.N` outputs, [layers, seq, k]."""
    import numpy as np

    sess = _session(Path(artifact_dir) / record.get("file", "model.onnx"), record.get("execution_provider", "cpu"))
    pasts = [i for i in sess.get_inputs() if i.name.startswith("past_key_values.")]
    kv_type = np.float16 if pasts[0].type == "tensor(float16)" else np.float32
    names = sorted((o.name for o in sess.get_outputs() if o.name.startswith("routing.")),
                   key=lambda n: int(n.split(".")[1]))
    out = []
    for ids in token_ids:
        feed = {"input_ids": np.array([ids], np.int64), "attention_mask": np.ones((1, len(ids)), np.int64),
                "position_ids": np.arange(len(ids), dtype=np.int64)[None],
                **{i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), kv_type) for i in pasts}}
        res = sess.run(names, feed)
        out.append(np.sort(np.stack([r[0] for r in res]), axis=-1).astype(np.int32))
    return out


def run_logits(artifact_dir: Path, record: dict, token_ids: list[list[int]], split: int | None = None):
    """onnxruntime's logits [seq, vocab] (float32) for each probe, every position, batch 1.

    With `split`, the first `split` tokens run with an empty past and the rest one at a time, each
    step's present key/values fed back as the next step's past: generation's path through the graph.
    """
    import numpy as np

    sess = _session(Path(artifact_dir) / record.get("file", "model.onnx"), record.get("execution_provider", "cpu"))
    pasts = [i for i in sess.get_inputs() if i.name.startswith("past_key_values.")]
    kv_type = np.float16 if pasts[0].type == "tensor(float16)" else np.float32
    out_names = [o.name for o in sess.get_outputs()]
    results = []
    for ids in token_ids:
        past = {i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), kv_type) for i in pasts}
        cut = len(ids) if split is None else split
        chunks = [c for c in [ids[:cut], *([t] for t in ids[cut:])] if c]
        logits, done = [], 0
        for chunk in chunks:
            n = len(chunk)
            feed = {"input_ids": np.array([chunk], np.int64),
                    "attention_mask": np.ones((1, done + n), np.int64),
                    "position_ids": np.arange(done, done + n, dtype=np.int64)[None], **past}
            outs = dict(zip(out_names, sess.run(out_names, feed)))
            logits.append(outs["logits"][0])
            past = {f"past_key_values.{k.removeprefix('present.')}": v for k, v in outs.items() if k.startswith("present.")}
            done += n
        results.append(np.concatenate(logits).astype(np.float32, copy=False))
    return results


class Onnx(Backend):
    name = NAME
    Options = Options
    precisions = (*DTYPES, *(q for q in onnx_quant.QUANTS if q != "none"))
    tools = TOOLS
    runtime = Runtime(RUNTIME_DIST, "onnxruntime", "pip install onnxruntime")
    card_library = "onnx"
    no_routing = None  # the graph outputs the experts its routers pick (onnx_moe.py)
    client = Client("onnxruntime-genai", "onnxruntime_genai", "pip install 'llmbuild[clients]' (onnxruntime-genai)",
                    "the folder's tokenizer files and chat template (genai_config.json)")

    def check_options(self, options, key):
        check_options(options, key)

    def check_model(self, options, arch, model_dir, key):
        check_model(options, arch, key)
        if model_dir is not None:
            tokenizer_files.check(model_dir, key)  # the folder ships the tokenizer its clients load

    def check_family(self, options, cls, key):
        check_family(options, cls, key)

    def run_routing(self, artifact_dir, record, token_ids):
        return run_routing(artifact_dir, record, token_ids)

    def precision(self, options):
        return precision(options)

    def default_gates(self, options):
        return default_gates(options)

    def key_extra(self, options):
        return {"layout": onnx_layout.REVISION}

    def runtime_available(self):
        return runtime_available()

    def planned_files(self, options, model_name):
        graph = onnx_layout.model_file(precision(options))
        big = f"{graph}_data (when the weights pass {AUTO_EXTERNAL_ABOVE / 1e9:g} GB)"
        data = {"always": [f"{graph}_data"], "auto": [big]}
        return [graph, *data.get(options.external_data, []), "genai_config.json", "config.json", "tokenizer files"]

    def export(self, ckpt, options, out_dir, meta, progress):
        return export(ckpt, options, out_dir, meta, progress)

    def run_logits(self, artifact_dir, record, token_ids, split=None):
        return run_logits(artifact_dir, record, token_ids, split)

    def generate(self, *args, **kwargs):
        from llmbuild.evaluation import onnx_runtime  # the greedy loop over past key values

        return onnx_runtime.generate(*args, **kwargs)

    def open_client(self, artifact_dir, record, threads):
        from llmbuild.targets import onnx_client

        return onnx_client.open_session(artifact_dir, record, threads)

    def usage(self, target, record, files):
        return onnx_layout.usage(target, record)

    def serving(self, target, record):
        return onnx_layout.serving(target, record)


BACKEND = Onnx()
