"""Llama and Mistral: the decoder of `base.Arch`, as it is.

llama.cpp converts both with one class (conversion/llama.py `LlamaModel`, GGUF arch "llama"); so
does this module. What the family's real models add, the variants below reproduce in the tests:
Llama 3.1's `rope_type: llama3` scaling, Llama 3.2 1B/3B's tied embeddings, Mistral 7B v0.1's
4096-token sliding window (shorter than its 32k context).
"""

from __future__ import annotations

from typing import ClassVar

from llmbuild.archs import register
from llmbuild.archs.base import Arch

# Llama 3.2 1B's rope (rope_theta 500000, factor 32, original context 8192), with the original context
# cut to 32 tokens so the tests' probes run past it
LLAMA32_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 32}


@register("LlamaForCausalLM", "MistralForCausalLM")
class Llama(Arch):
    """Llama 2, Llama 3.x, TinyLlama, SmolLM, Yi, DeepSeek (v1 dense); Mistral 7B, Mistral NeMo."""

    variants: ClassVar[dict] = {
        "llama3.2": ("LlamaForCausalLM", {"rope_parameters": LLAMA32_ROPE, "tie_word_embeddings": True}),
        "mistral-window": ("MistralForCausalLM", {"sliding_window": 32}),
    }
