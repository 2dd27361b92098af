"""Gemma 3 (text): the Gemma 2 decoder with q/k norms, five sliding-window layers to each global one,
and two rotary bases.

transformers' modeling_gemma3.py (Gemma3ForCausalLM, text only): per-head (1 + w) RMSNorms on q and k
before the rotary; layer_types from `sliding_window_pattern` (6: layers 0-4 slide, 5 is global); the
sliding layers' rope has its own base (`rope_local_base_freq`, 10000; transformers 5 nests
`rope_parameters` by layer type) while the global layers' may be scaled (4B and up: linear, factor 8);
attention soft-capping is gone and final-logit soft-capping is off in the published models.
llama.cpp: conversion/gemma.py `Gemma3Model`, GGUF arch "gemma3", `rope.freq_base_swa` for the sliding
layers' base (their rope is never scaled there), an output tensor only when the model has its own.
"""

from __future__ import annotations

from typing import ClassVar

from llmbuild.archs import register
from llmbuild.archs.base import Arch
from llmbuild.archs.gemma2 import Gemma2
from llmbuild.archs.rope import Rope, parameters, rope_of

# transformers' Gemma3TextConfig.default_theta: what a config without rope settings gets
DEFAULT_THETA = {"full_attention": 1_000_000.0, "sliding_attention": 10_000.0}


@register("Gemma3ForCausalLM")
class Gemma3(Gemma2):
    """Gemma 3 270M/1B (text-only checkpoints) and the text decoder of 4B/12B/27B."""

    qk_norm = True
    gguf_arch = "gemma3"
    gguf_hidden_scale_layers = 62  # 27B (src/models/gemma3.cpp)
    sliding_pattern = 6
    required_config = (*Arch.required_config, "head_dim", "query_pre_attn_scalar")
    # 6 layers: the 5:1 pattern once; global rope as Gemma 3 4B's (base 1e6, linear factor 8), local base 1e4
    tiny: ClassVar[dict] = {**Arch.tiny, "num_hidden_layers": 6, "head_dim": 16, "query_pre_attn_scalar": 16,
                            "sliding_window": 16, "initializer_range": 0.2,
                            "rope_parameters": {
                                "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
                                "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}}}
    variants: ClassVar[dict] = {}

    def __init__(self, config: dict, name: str, where: str = "config.json"):
        super().__init__(config, name, where)
        self.rope = rope_of(config, self.rotary_dim, where, params=self._params("full_attention"))
        self.local_rope: Rope = rope_of(config, self.rotary_dim, where, params=self._params("sliding_attention"))

    def _params(self, layer_type: str) -> dict:
        """One layer type's rope settings, as transformers' Gemma3TextConfig.convert_rope_params_to_dict
        reads them from a transformers 5 (nested) or 4 (rope_theta, rope_local_base_freq) config."""
        cfg = self.config
        nested = cfg.get("rope_parameters") or {}
        if any(isinstance(v, dict) for v in nested.values()):
            p = parameters(cfg, layer_type)
            p["rope_theta"] = (nested.get(layer_type) or {}).get("rope_theta", DEFAULT_THETA[layer_type])
        elif layer_type == "sliding_attention":
            p = {"rope_type": "default", "rope_theta": cfg.get("rope_local_base_freq") or DEFAULT_THETA[layer_type]}
        else:
            p = parameters(cfg)
            p["rope_theta"] = cfg.get("rope_theta") or nested.get("rope_theta") or DEFAULT_THETA[layer_type]
        return p

    def layer_rope(self, i: int) -> Rope:
        return self.local_rope if self.layer_types()[i] == "sliding_attention" else self.rope

    @property
    def attn_softcap(self) -> float | None:
        return self.config.get("attn_logit_softcapping")  # None in every Gemma 3

    def gguf_refusal(self) -> str | None:
        if self._gguf_scale_refusal():
            return self._gguf_scale_refusal()
        if self.attn_softcap:
            return (f"config.json attn_logit_softcapping {self.attn_softcap}, but llama.cpp's gemma3 architecture "
                    "does not soft-cap attention")
        if self.local_rope.kind.name != "default":
            return (f"the sliding-window layers' rope is {self.local_rope.kind.name}-scaled, but llama.cpp's gemma3 "
                    "architecture scales only the global layers' rope")
        return Arch.gguf_refusal(self)

    def gguf_parameters(self, w) -> None:
        super().gguf_parameters(w)
        w.add_rope_freq_base_swa(self.local_rope.theta)
