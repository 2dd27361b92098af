"""ONNX quantization for onnxruntime on CPU: the post-export step behind the onnx target's `quant` option.

- int8: `onnxruntime.quantization.quantize_dynamic`: linear-layer weights (per output channel) and the
  embedding table in int8, activations quantized at run time (MatMulInteger, which onnxruntime fuses
  into DynamicQuantizeMatMul): about 1/4 of the fp32 file.
- int4: `MatMulNBitsQuantizer`: weight-only 4-bit blocks of `block_size` input features with one scale
  each (MatMulNBits), the format onnxruntime-genai's builder writes; `accuracy_level` 4 lets the CPU
  kernel multiply in int8 (fast), 0 keeps it in float32 (the builder's CPU default is 4).
fp16 is the target's own `dtype`; the quantizers take the fp32 graph.

Both quantizers act on MatMul nodes with a constant weight, while the onnx target writes linear layers
as Gemm(transB=1) on the checkpoint's [out, in] weights; so each such Gemm first becomes MatMul on the
transposed weight (plus Add for a bias), which computes the same thing. A tied output layer gets its
own transposed copy, which is then quantized, and the embedding lookup keeps the original.
"""

from __future__ import annotations

from pathlib import Path

from llmbuild.errors import InvalidInput

QUANTS = ("none", "int8", "int4")
BLOCK_SIZES = (16, 32, 64, 128, 256)  # MatMulNBits' supported blocks: smaller is more accurate and larger
ACCURACY_LEVELS = (0, 1, 2, 3, 4)  # MatMulNBits: 0/1 float32 compute, 2 fp16, 3 bf16, 4 int8 (fastest on CPU)

# Gates against the fp32 source, above what weight-only 4-bit and dynamic 8-bit cost (llama.cpp's
# Llama-3-8B figures for its nearest types: Q8_0 KLD 0.00136, Q4_0 0.0719; llama.cpp's tools/perplexity/README.md); dynamic int8
# also rounds every activation, so it sits between the two. min_top1 is a floor against broken graphs.
DEFAULT_GATES = {
    "int8": {"min_top1": 0.70, "max_kld": 0.05, "max_abs_diff": 3.0, "max_ppl_ratio": 1.10},
    "int4": {"min_top1": 0.50, "max_kld": 0.15, "max_abs_diff": 5.0, "max_ppl_ratio": 1.25},
}


def check(options, key: str) -> None:
    quant = getattr(options, "quant", "none")
    if quant not in QUANTS:
        raise InvalidInput(f"{key}.quant: unknown quant {quant!r}; known: {', '.join(QUANTS)} (fp16 is dtype: fp16)")
    if quant != "none" and options.dtype != "fp32":
        raise InvalidInput(f"{key}.quant: {quant} quantizes the fp32 graph; set dtype: fp32 (dtype {options.dtype})")
    if getattr(options, "block_size", 32) not in BLOCK_SIZES:
        raise InvalidInput(f"{key}.block_size: {options.block_size} is not one of {', '.join(map(str, BLOCK_SIZES))}")
    if getattr(options, "accuracy_level", 4) not in ACCURACY_LEVELS:
        raise InvalidInput(f"{key}.accuracy_level: {options.accuracy_level} is not one of 0-4")


def precision(options) -> str:
    quant = getattr(options, "quant", "none")
    return options.dtype if quant == "none" else quant


def apply(out_dir: Path, options, record: dict) -> dict:
    """Quantize the exported graph in out_dir in place per options.quant; returns the updated record."""
    quant = getattr(options, "quant", "none")
    if quant == "none":
        return record
    out_dir = Path(out_dir)
    path = out_dir / "model.onnx"
    external = bool(record.get("external_data"))
    info = quantize(path, path, quant, getattr(options, "block_size", 32), getattr(options, "accuracy_level", 4),
                    external, keep_float=record.get("keep_float", ()))
    data = out_dir / "model.onnx.data"
    files = [f for f in record["files"] if f != "model.onnx.data"]
    if data.exists():
        files.insert(1, "model.onnx.data")
    nbytes = sum((out_dir / f).stat().st_size for f in ("model.onnx", "model.onnx.data") if (out_dir / f).exists())
    return {**record, "files": files, "precision": quant, "quant": info, "bytes": nbytes,
            "bits_per_weight": round(8 * nbytes / record["num_parameters"], 4)}


def quantize(src: Path, dst: Path, quant: str, block_size: int = 32, accuracy_level: int = 4,
             external: bool = False, keep_float=()) -> dict:
    """Rewrite Gemm as MatMul and quantize `src` to `dst` (which may be the same file). `keep_float`: Gemm
    nodes left unquantized (a mixture of experts' routers: see onnx_moe.py)."""
    import logging

    import onnx

    model = onnx.load(str(src))  # external data is read in: the quantizers need the weights
    n = gemm_to_matmul(model)
    data = Path(dst).with_name("model.onnx.data")
    if quant == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        data.unlink(missing_ok=True)
        # its advice to run shape pre-processing (meant for conv nets) goes to the root logger as a warning
        root, level = logging.getLogger(), logging.getLogger().level
        root.setLevel(logging.ERROR)
        try:
            quantize_dynamic(model, str(dst), op_types_to_quantize=["MatMul", "Gather"], per_channel=True,
                             weight_type=QuantType.QInt8, use_external_data_format=external,
                             extra_options={"MatMulConstBOnly": True})
        finally:
            root.setLevel(level)
        info = {"method": "onnxruntime quantize_dynamic", "weights": "int8 per channel",
                "activations": "uint8, dynamic", "ops": ["MatMul", "Gather"]}
    else:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        q = MatMulNBitsQuantizer(model, bits=4, block_size=block_size, is_symmetric=True,
                                 accuracy_level=accuracy_level, op_types_to_quantize=("MatMul",),
                                 nodes_to_exclude=[f"{n}.MatMul" for n in keep_float])
        q.process()
        data.unlink(missing_ok=True)
        q.model.save_model_to_file(str(dst), use_external_data_format=external)
        info = {"method": "onnxruntime MatMulNBitsQuantizer", "weights": "int4 symmetric", "block_size": block_size,
                "accuracy_level": accuracy_level, "ops": ["MatMul"],
                **({"kept_float": len(keep_float)} if keep_float else {})}
    if external and Path(dst).with_name(Path(dst).name + ".data").exists():
        # onnxruntime's writer names the data file after the model; the target's name is model.onnx.data
        Path(dst).with_name(Path(dst).name + ".data").replace(data)
    return {**info, "gemm_rewritten": n}


def gemm_to_matmul(model) -> int:
    """Each Gemm(A, W[, C]) with transB=1, transA=0, alpha=beta=1 and an initializer W becomes
    MatMul(A, W^T) (+ Add C); returns how many were rewritten."""
    import numpy as np
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    transposed: dict[str, str] = {}
    nodes, n = [], 0
    for node in g.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        w = node.input[1] if len(node.input) > 1 else None
        if (node.op_type != "Gemm" or w not in inits or attrs.get("transB", 0) != 1 or attrs.get("transA", 0)
                or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0):
            nodes.append(node)
            continue
        if w not in transposed:
            wt = numpy_helper.to_array(inits[w]).T
            name = f"{w}.T"
            g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(wt), name))
            transposed[w] = name
        has_bias = len(node.input) > 2 and node.input[2]
        mm_out = f"{node.output[0]}.matmul" if has_bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], transposed[w]], [mm_out], name=f"{node.name}.MatMul"))
        if has_bias:
            nodes.append(helper.make_node("Add", [mm_out, node.input[2]], [node.output[0]], name=f"{node.name}.Add"))
        n += 1
    del g.node[:]
    g.node.extend(nodes)
    # weights only the Gemms read are now unused: drop them (a tied embedding stays, for its Gather)
    used = {i for node in g.node for i in node.input}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    return n
