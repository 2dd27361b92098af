"""Qwen3 (dense): the Qwen2 decoder without q/k/v biases, with an RMSNorm on every head of q and k.

llama.cpp: conversion/qwen.py `Qwen3Model`, GGUF arch "qwen3" (`attn_q_norm`, `attn_k_norm`), NeoX
rope. Heads are wider than hidden/heads in the published sizes (0.6B: hidden 1024, 16 heads of 128),
and transformers' default head_dim is 128 whatever the hidden size, so config.json must state it.
"""

from __future__ import annotations

from typing import ClassVar

from llmbuild.archs import register
from llmbuild.archs.base import Arch
from llmbuild.archs.qwen2 import Qwen2


@register("Qwen3ForCausalLM")
class Qwen3(Qwen2):
    """Qwen3 0.6B-32B."""

    qkv_bias = False
    qk_norm = True
    gguf_arch = "qwen3"
    required_config = (*Arch.required_config, "head_dim")
    # head_dim 32 with hidden 64 and 4 heads: q_proj is wider than the hidden size, as in Qwen3
    tiny: ClassVar[dict] = {**Arch.tiny, "head_dim": 32, "tie_word_embeddings": True}
    variants: ClassVar[dict] = {
        "qwen3-window": ("Qwen3ForCausalLM", {"use_sliding_window": True, "sliding_window": 32,
                                              "max_window_layers": 1}),
    }
