"""Phi-3, Phi-3.5 and Phi-4-mini: the Llama decoder with fused projections, LongRoPE and partial rotary.

transformers' modeling_phi3.py: q, k and v are one `qkv_proj` whose output is [q | k | v], gate and up one
`gate_up_proj` whose output is [gate | up] (SiLU on the gate half); the 128k models scale the rope with
LongRoPE (`rope_scaling.type: longrope`, "su" in the first configs: archs/rope.py `LongRope`); Phi-4-mini
turns only `partial_rotary_factor` (0.75) of each head and ties its embeddings; Phi-3-mini-4k's
`sliding_window` (2047) is shorter than its context and applies to every layer.
llama.cpp: conversion/phi.py `Phi3MiniModel`, GGUF arch "phi3" (`attn_qkv`, a 2 * n_ff `ffn_up` that its
SwiGLU splits, NeoX rope over `rope.dimension_count`, LongRoPE as `rope_factors_long/short` tensors
plus `rope.scaling.attn_factor`). Its graph reads `attention.sliding_window` but runs every layer with
full attention ("Phi SWA is currently disabled", src/models/phi3.cpp), so a windowed GGUF declares the
window as its context.
"""

from __future__ import annotations

from typing import ClassVar

from llmbuild.archs import register
from llmbuild.archs.base import Arch, Layer, LinearGroup
from llmbuild.archs.rope import parameters

# Phi-3.5-mini's 48 LongRoPE factor pairs have this shape: ~1 for the fast-turning pairs, growing for the
# slow ones (long up to ~60 at 128k). The tiny models take such a curve over their pairs.


def _factors(n: int, top: float) -> list[float]:
    return [round(1.0 + (top - 1.0) * (i / max(n - 1, 1)) ** 2, 4) for i in range(n)]


def _longrope(pairs: int, original: int) -> dict:
    return {"rope_type": "longrope", "rope_theta": 10000.0, "short_factor": _factors(pairs, 1.5),
            "long_factor": _factors(pairs, 8.0), "original_max_position_embeddings": original}


@register("Phi3ForCausalLM")
class Phi3(Arch):
    """Phi-3 mini/small-dense/medium (4k, 128k), Phi-3.5-mini, Phi-4-mini."""

    gguf_arch = "phi3"
    gguf_permute_qk = False  # NeoX rope
    QKV_PROJ, GATE_UP_PROJ = "self_attn.qkv_proj", "mlp.gate_up_proj"
    lora_modules: ClassVar[tuple[str, ...]] = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
    # Phi-3-mini's layout (no GQA, no scaling): the variants add what the later models changed
    # initializer_range 0.1: peaked logits, so top-1 and KLD say something; pad_token_id 32000 is past 512
    tiny: ClassVar[dict] = {**Arch.tiny, "num_key_value_heads": 4, "pad_token_id": None, "initializer_range": 0.1}
    tiny_default = "phi4-mini"
    variants: ClassVar[dict] = {
        # Phi-3.5-mini: LongRoPE whose original context (256) the probes stay within: short factors and
        # the attention factor everywhere, in every runtime
        "phi3.5-mini": ("Phi3ForCausalLM", {"max_position_embeddings": 512, "original_max_position_embeddings": 256,
                                            "rope_parameters": _longrope(8, 256)}),
        # Phi-4-mini: GQA, 3/4 of each head rotated, tied embeddings, LongRoPE whose original context (8)
        # every probe passes: the long factors
        "phi4-mini": ("Phi3ForCausalLM", {"num_key_value_heads": 2, "tie_word_embeddings": True,
                                          "original_max_position_embeddings": 8,
                                          "rope_parameters": {**_longrope(6, 8), "partial_rotary_factor": 0.75}}),
        # Phi-3-mini-4k: a window on every layer shorter than the context (2047 of 4096)
        "phi3-window": ("Phi3ForCausalLM", {"sliding_window": 32}),
    }

    @property
    def rotary_dim(self) -> int:
        # transformers: int(head_dim * partial_rotary_factor), the factor in rope_parameters (5) or beside it (4)
        factor = parameters(self.config).get("partial_rotary_factor") or self.config.get("partial_rotary_factor") or 1.0
        return int(self.head_dim * float(factor))

    def layer(self, i: int) -> Layer:
        p = f"model.layers.{i}."
        return Layer(i, p + self.ATTN_NORM, None, None, None, p + self.O_PROJ, p + self.FFN_NORM, None, None,
                     p + self.DOWN_PROJ, window=self.windows[i], qkv=p + self.QKV_PROJ, gate_up=p + self.GATE_UP_PROJ)

    def linear_groups(self) -> tuple[LinearGroup, ...]:
        # the fused modules are one linear each: one AWQ scale folded into the norm before each
        return (LinearGroup(self.ATTN_NORM, (self.QKV_PROJ,)), LinearGroup(None, (self.O_PROJ,)),
                LinearGroup(self.FFN_NORM, (self.GATE_UP_PROJ,)), LinearGroup(None, (self.DOWN_PROJ,)))

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        h, hd, inter = self.hidden, self.head_dim, self.intermediate
        q, kv = self.heads * hd, self.kv_heads * hd
        return {self.QKV_PROJ: (q + 2 * kv, h), self.O_PROJ: (h, q), self.GATE_UP_PROJ: (2 * inter, h),
                self.DOWN_PROJ: (h, inter)}

    def gguf_refusal(self) -> str | None:
        if self.heads * self.head_dim != self.hidden:
            return (f"config.json head_dim {self.head_dim} x {self.heads} heads is not hidden_size {self.hidden}, "
                    "which llama.cpp's phi3 architecture assumes")
        return super().gguf_refusal()

    def gguf_parameters(self, w) -> None:
        super().gguf_parameters(w)
        # as the converter writes it (0: none); llama.cpp's phi3 graph does not apply it (see the docstring)
        w.add_sliding_window(self.config.get("sliding_window") or 0)
