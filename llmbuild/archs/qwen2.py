"""Qwen2 and Qwen2.5: the Llama decoder with q/k/v biases and NeoX-style rope.

llama.cpp: conversion/qwen.py `Qwen2Model`, GGUF arch "qwen2", whose rope rotates the two halves of
each head as transformers does, so q/k rows keep their order. The small sizes tie their embeddings;
configs carry `use_sliding_window` (off in the published models) with `max_window_layers`.
"""

from __future__ import annotations

from typing import ClassVar

from llmbuild.archs import register
from llmbuild.archs.base import Arch


@register("Qwen2ForCausalLM")
class Qwen2(Arch):
    """Qwen2, Qwen2.5 (and their Coder/Math fine-tunes)."""

    qkv_bias = True
    gguf_arch = "qwen2"
    gguf_permute_qk = False
    tiny: ClassVar[dict] = {**Arch.tiny, "tie_word_embeddings": True}
    variants: ClassVar[dict] = {
        # layer 0 full attention, layer 1 a 32-token window (transformers writes layer_types for it)
        "qwen2-window": ("Qwen2ForCausalLM", {"use_sliding_window": True, "sliding_window": 32,
                                              "max_window_layers": 1}),
    }
