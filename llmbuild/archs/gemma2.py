"""Gemma 2: the Llama decoder with Gemma's quirks, each an architecture fact the targets compute.

What transformers' modeling_gemma2.py computes beyond Llama, and llama.cpp's conversion/gemma.py
`Gemma2Model` writes (GGUF arch "gemma2"):
- RMSNorms compute x * (1 + w) (the checkpoint stores w - 1; the converter adds 1), with an extra norm on
  the attention output and on the MLP output before each residual add (`post_attention_layernorm`,
  `post_feedforward_layernorm`; the MLP's input norm is `pre_feedforward_layernorm`);
- a GELU-tanh gated MLP (`hidden_activation: gelu_pytorch_tanh`), the embedding multiplied by
  sqrt(hidden_size), q scaled by query_pre_attn_scalar ** -0.5 instead of head_dim ** -0.5;
- attention scores and the final logits soft-capped: cap * tanh(x / cap);
- sliding-window and global layers alternating (layer 0 sliding), which llama.cpp implements
  (`attention.sliding_window` + the per-layer `sliding_window_pattern`), tied embeddings (llama.cpp's
  gemma2 has no output tensor of its own).
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

from llmbuild.archs import register
from llmbuild.archs.base import Arch, Layer

# the tiny test models: weights 10x transformers' initializer_range, so the random model's attention scores
# (up to ~12) and logits (~10) are peaked, and caps those values reach, as 50 and 30 are reached by the
# real models' scores and logits: with Gemma 2's own caps, soft-capping would go untested
TINY_SOFTCAPS = {"initializer_range": 0.2, "attn_logit_softcapping": 5.0, "final_logit_softcapping": 8.0}


@register("Gemma2ForCausalLM")
class Gemma2(Arch):
    """Gemma 2 2B/9B/27B."""

    norm_offset = 1.0
    gguf_arch = "gemma2"
    gguf_permute_qk = False  # NeoX rope in llama.cpp's gemma archs
    gguf_sliding_window = True
    # transformers' tanh-approximated GELUs; llama.cpp's LLM_FFN_GELU is the tanh approximation
    gguf_activations = ("gelu_pytorch_tanh", "gelu_new")
    # llama.cpp hard-codes the attention scale: 1/sqrt(hidden/heads) for this many layers (27B), else
    # 1/sqrt(head_dim) (src/models/gemma2.cpp load_arch_hparams)
    gguf_hidden_scale_layers: ClassVar[int] = 46
    # every layer `(i + 1) % pattern` nonzero slides (transformers' default layer_types)
    sliding_pattern: ClassVar[int] = 2
    # transformers' defaults for these would silently differ from the model (head_dim 256, scalar 256,
    # caps 50/30)
    required_config = (*Arch.required_config, "head_dim", "query_pre_attn_scalar", "attn_logit_softcapping",
                       "final_logit_softcapping")
    FFN_NORM = "pre_feedforward_layernorm"
    POST_ATTN_NORM, POST_FFN_NORM = "post_attention_layernorm", "post_feedforward_layernorm"
    # head_dim 16 = query_pre_attn_scalar as in 2B/9B; a 16-token window, shorter than the test probes
    tiny: ClassVar[dict] = {**Arch.tiny, "head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 16,
                            **TINY_SOFTCAPS}
    tiny_norm_jitter = 0.1
    variants: ClassVar[dict] = {}

    # -- facts ---------------------------------------------------------------------------------------
    @property
    def activation(self) -> str:
        cfg = self.config
        return cfg.get("hidden_activation") or cfg.get("hidden_act") or "gelu_pytorch_tanh"

    @property
    def tied(self) -> bool:
        return bool(self.config.get("tie_word_embeddings", True))  # Gemma's configs default to tied

    @property
    def embedding_scale(self) -> float:
        return math.sqrt(self.hidden)

    @property
    def attn_scale(self) -> float:
        return float(self.config["query_pre_attn_scalar"]) ** -0.5

    @property
    def attn_softcap(self) -> float | None:
        return self.config.get("attn_logit_softcapping")

    @property
    def final_softcap(self) -> float | None:
        return self.config.get("final_logit_softcapping")

    def layer_types(self) -> list[str]:
        """Each layer's attention kind as transformers decides it: config.json's layer_types, else the
        family's pattern (Gemma 3's configs may give it as sliding_window_pattern)."""
        if self.config.get("layer_types"):
            return list(self.config["layer_types"])
        n = int(self.config.get("sliding_window_pattern") or self.sliding_pattern)
        return ["sliding_attention" if (i + 1) % n else "full_attention" for i in range(self.layers)]

    def _windows(self) -> list[int | None]:
        w = self.config.get("sliding_window")
        return [w if t == "sliding_attention" else None for t in self.layer_types()]

    def layer(self, i: int) -> Layer:
        p = f"model.layers.{i}."
        return dataclasses.replace(super().layer(i), post_attn_norm=p + self.POST_ATTN_NORM,
                                   post_ffn_norm=p + self.POST_FFN_NORM)

    # -- GGUF -----------------------------------------------------------------------------------------
    def _gguf_scale_refusal(self) -> str | None:
        hd = (self.hidden / self.heads) if self.layers == self.gguf_hidden_scale_layers else self.head_dim
        if not math.isclose(self.attn_scale, hd ** -0.5, rel_tol=1e-6):
            return (f"config.json query_pre_attn_scalar {self.config['query_pre_attn_scalar']}, but llama.cpp's "
                    f"{self.gguf_arch} architecture scales attention by 1/sqrt({hd:g}) for a {self.layers}-layer model")
        return None

    def gguf_refusal(self) -> str | None:
        if self._gguf_scale_refusal():
            return self._gguf_scale_refusal()
        if not self.attn_softcap or not self.final_softcap:
            return (f"config.json has no attention or final logit soft-capping, which llama.cpp's {self.gguf_arch} "
                    "architecture always applies")
        if not self.tied:
            return (f"tie_word_embeddings is false, but llama.cpp's {self.gguf_arch} architecture reads the "
                    "embedding as its output layer")
        return super().gguf_refusal()

    def gguf_parameters(self, w) -> None:
        super().gguf_parameters(w)
        if self.attn_softcap:
            w.add_attn_logit_softcapping(float(self.attn_softcap))
        if self.final_softcap:
            w.add_final_logit_softcapping(float(self.final_softcap))
        windows = [x for x in self.windows if x]
        if windows:
            w.add_sliding_window(windows[0])
            # per layer, as convert_hf_to_gguf writes it from layer_types: no pattern arithmetic to match
            w.add_sliding_window_pattern([x is not None for x in self.windows])

    def gguf_tensors(self, shapes):
        # tied: llama.cpp reads no lm_head (the converter's filter_tensors drops it too)
        return super().gguf_tensors({n: s for n, s in shapes.items()
                                     if not (self.tied and n == f"{self.LM_HEAD}.weight")})
