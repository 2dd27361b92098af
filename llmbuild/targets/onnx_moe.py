"""The ONNX target's mixture-of-experts block: onnxruntime's contrib `MoE` / `QMoE` operators, which its CPU
execution provider runs.

What onnxruntime 1.32's CPU kernels compute (contrib_ops/cpu/moe/moe_cpu.cc, moe_quantization_cpu.cc;
the operator schemas in docs/ContribOperators.md), checked here against transformers on the tiny models:
- the router logits go in as `router_probs`; the kernel takes their softmax in float32, keeps the top
  `k` (std::partial_sort) and, with `normalize_routing_weights`, divides them by their sum: exactly
  transformers' routers (softmax, then top-k, renormalized where the family does);
- `activation_type: swiglu` with `swiglu_fusion: 1` (the only layout the CPU kernel takes) reads FC1 as
  gate and up rows interleaved, [g0, u0, g1, u1, ...] per expert ([experts, 2 * inter, hidden]), and
  computes g * sigmoid(alpha * g) * (u + beta): SiLU-gating with alpha 1 and beta 0 (no limit set: no
  clamp). FC2 is [experts, hidden, inter]: the checkpoint's [out, in] per expert, stacked;
- `QMoE` (int4): the same with weights as 4-bit blocks of `block_size` input features, two per byte
  (low nibble first), an offset of 8 and one scale per block ([experts, rows, cols / block]),
  dequantized as (q - 8) * scale: the same symmetric blocks MatMulNBits takes for the other linears.
So no routing is written in standard ops. The router, and Qwen2-MoE's shared expert gate, stay in the
graph's float type (Gemm) in every precision, as ModelOpt's and llama.cpp's exports keep them: int4's
MatMulNBits pass leaves them out.

Each expert's matrices are read one at a time and written as the next rows of the stacked
initializer, so memory holds one expert's gate and up (interleaving needs both), never a layer's experts.

The graph has one more output per sparse layer, `routing.N` [batch, seq, k] (int64): the experts the
router's top-k picks, which is the set the MoE kernel runs (the same logits, the same top-k). Generation
loops ignore it; verification compares it with the source's routing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

MS_DOMAIN = "com.microsoft"


@dataclass
class Init:
    """One initializer the writer streams: its name, shape, ONNX data type and its bytes as numpy arrays."""

    name: str
    dims: list[int]
    data_type: int
    chunks: Callable  # () -> iterator of little-endian numpy arrays, in order
    params: int = 0  # model parameters it holds (its logical elements)


def names(layer: int) -> dict[str, str]:
    p = f"model.layers.{layer}.mlp.moe"
    return {"fc1": f"{p}.fc1", "fc2": f"{p}.fc2", "fc1_scales": f"{p}.fc1_scales", "fc2_scales": f"{p}.fc2_scales",
            "routing": f"routing.{layer}"}


def initializers(ckpt, arch, dtype: str, quant: str, block: int) -> list[Init]:
    """The stacked expert initializers of every sparse layer (dtype fp32|fp16; quant none|int4)."""
    from onnx import TensorProto

    out = []
    elem = TensorProto.FLOAT if dtype == "fp32" else TensorProto.FLOAT16
    inter, h = arch.expert_intermediate, arch.hidden
    for i in range(arch.layers):
        b = arch.layer(i).moe
        if b is None:
            continue
        n, e = names(i), len(b.experts)
        fc1 = lambda b=b: _fc1(ckpt, b)  # noqa: E731  (per-layer closures)
        fc2 = lambda b=b: (ckpt.get_tensor(f"{d}.weight") for _, _, d in b.experts)  # noqa: E731
        if quant == "int4":
            s1, s2 = [], []
            out += [Init(n["fc1"], [e, 2 * inter, h // 2], TensorProto.UINT8, lambda f=fc1, s=s1: _packed(f(), block, s),
                         e * 2 * inter * h),
                    Init(n["fc1_scales"], [e, 2 * inter, h // block], TensorProto.FLOAT, lambda s=s1: _drain(s)),
                    Init(n["fc2"], [e, h, inter // 2], TensorProto.UINT8, lambda f=fc2, s=s2: _packed(f(), block, s),
                         e * h * inter),
                    Init(n["fc2_scales"], [e, h, inter // block], TensorProto.FLOAT, lambda s=s2: _drain(s))]
        else:
            want = "float32" if dtype == "fp32" else "float16"
            out += [Init(n["fc1"], [e, 2 * inter, h], elem, lambda f=fc1, w=want: _cast(f(), w, ckpt), e * 2 * inter * h),
                    Init(n["fc2"], [e, h, inter], elem, lambda f=fc2, w=want: _cast(f(), w, ckpt), e * h * inter)]
    return out


def _fc1(ckpt, b):
    """Each expert's gate and up rows interleaved (swiglu_fusion 1): row 2j is gate row j, 2j+1 up row j."""
    import torch

    for g, u, _ in b.experts:
        wg, wu = ckpt.get_tensor(f"{g}.weight"), ckpt.get_tensor(f"{u}.weight")
        yield torch.stack([wg, wu], dim=1).reshape(-1, wg.shape[1])
        del wg, wu


def _float(x):
    import torch

    return (x.float() if x.dtype == torch.bfloat16 else x).numpy()  # numpy has no bfloat16


def _cast(mats, want: str, ckpt):
    import numpy as np

    from llmbuild.errors import InvalidInput

    for x in mats:
        src = _float(x)
        arr = src.astype(want, copy=False)
        if want == "float16" and arr is not src and not np.isfinite(arr).all():
            raise InvalidInput(f"{ckpt.dir}: an expert tensor has values beyond float16's range; use dtype fp32")
        yield arr.astype(arr.dtype.newbyteorder("<"), copy=False)


def _packed(mats, block: int, scales: list):
    """Each matrix [rows, cols] as QMoE's int4 blocks: uint8 [rows, cols / 2]; its scales go to `scales`
    for the initializer written next."""
    for x in mats:
        q, s = quantize_int4(_float(x), block)
        scales.append(s)
        yield q


def _drain(scales: list):
    while scales:
        yield scales.pop(0)


def quantize_int4(w, block: int):
    """Symmetric 4-bit blocks along the input axis: scale = amax / 7 (1 where a block is all zeros),
    q = clip(round(w / scale), -8, 7) + 8, two per byte with the even column in the low nibble."""
    import numpy as np

    rows, cols = w.shape
    g = w.reshape(rows, cols // block, block).astype(np.float32)
    scale = np.abs(g).max(axis=-1, keepdims=True) / 7.0
    scale[scale == 0] = 1.0
    q = (np.clip(np.rint(g / scale), -8, 7) + 8).astype(np.uint8).reshape(rows, cols)
    return (q[:, 0::2] | (q[:, 1::2] << 4)).astype(np.uint8), scale[..., 0].astype("<f4")


def block(op, const, linear, x: str, L, arch, elem: int, quant: str, block_size: int, accuracy_level: int,
          shape3: str) -> tuple[str, str]:
    """The layer's sparse MLP on x [tokens, hidden]: (its output, the routing output's name)."""
    import numpy as np

    b, n = L.moe, names(L.index)
    p = f"model.layers.{L.index}.mlp"
    logits = linear(x, b.router)
    attrs = dict(k=b.top_k, activation_type="swiglu", swiglu_fusion=1, activation_alpha=1.0, activation_beta=0.0,
                 normalize_routing_weights=int(b.norm_topk))
    if quant == "int4":
        y = op("QMoE", [x, logits, n["fc1"], n["fc1_scales"], "", n["fc2"], n["fc2_scales"]], f"{p}.moe",
               domain=MS_DOMAIN, expert_weight_bits=4, block_size=block_size, accuracy_level=accuracy_level, **attrs)
    else:
        y = op("MoE", [x, logits, n["fc1"], "", n["fc2"]], f"{p}.moe", domain=MS_DOMAIN, **attrs)
    k = const(f"top_k_{b.top_k}", np.array([b.top_k], np.int64))
    op("TopK", [logits, k], f"{p}.router_topk", outputs=[f"{p}.router_top_values", f"{p}.router_top"], axis=-1)
    op("Reshape", [f"{p}.router_top", shape3], n["routing"])
    if b.shared:
        g, u, d = b.shared
        gate = linear(x, g)
        silu = op("Mul", [gate, op("Sigmoid", [gate], f"{p}.shared.sigmoid")], f"{p}.shared.silu")
        shared = linear(op("Mul", [silu, linear(x, u)], f"{p}.shared.gated"), d)
        scale = op("Sigmoid", [linear(x, b.shared_gate)], f"{p}.shared_gate.sigmoid")
        y = op("Add", [y, op("Mul", [shared, scale], f"{p}.shared.scaled")], f"{p}.moe_out")
    return y, n["routing"]


def keep_float(arch) -> list[str]:
    """The Gemm nodes a quantizer must leave in float: every router and shared-expert gate."""
    out = []
    for i in range(arch.layers):
        b = arch.layer(i).moe
        if b is not None:
            out += [f"{m}.Gemm" for m in (b.router, b.shared_gate) if m]
    return out
