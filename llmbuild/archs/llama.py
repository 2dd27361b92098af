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


@register("LlamaForCausalLM", "MistralForCausalLM")
class Llama(Arch):
    """Llama 2, Llama 3.x, TinyLlama, SmolLM, Yi, DeepSeek (v1 dense); Mistral 7B, Mistral NeMo."""

    variants: ClassVar[dict] = {
    }
