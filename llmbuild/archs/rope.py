"""Rotary position embeddings: the rope kinds llmbuild maps, each computed as transformers computes it.

A model's rope is read from config.json (transformers 5 `rope_parameters`, transformers 4
`rope_scaling` + `rope_theta`) into a `Rope`: its base, its kind and the kind's parameters. A kind is a
`RopeKind` registered by name in ROPE_KINDS; it says what the targets need of it:
- `inv_freq`: the inverse frequencies per rotary pair, float32, as transformers' ROPE_INIT_FUNCTIONS
  computes them (the ONNX graph bakes them into a constant);
- `attention_factor` and `longer`: what multiplies cos and sin, and the frequencies a forward pass
  switches to once its positions pass a length (LongRoPE: transformers' `longrope_frequency_update`);
- `gguf_parameters` / `gguf_tensors`: how llama.cpp is told (convert_hf_to_gguf.py's
  `set_gguf_parameters` writes `rope.scaling.*` keys for linear and yarn; `generate_extra_tensors`
  writes Llama 3's per-frequency divisors as a `rope_freqs` tensor, Phi-3's LongRoPE factors as
  `rope_factors_long` / `rope_factors_short`).
A kind a family adds (yarn, longrope) is a subclass registered with `register_rope_kind`, in the
family's module or here; a target that cannot express it says so through `unsupported_by`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

from llmbuild.errors import InvalidInput


@dataclass(frozen=True)
class Rope:
    """One model's rotary embedding."""

    theta: float  # the base of the frequencies (rope_theta)
    kind: RopeKind
    params: dict = field(default_factory=dict)  # the scaling parameters as config.json gives them
    dim: int = 0  # rotary dimensions per head (the head size unless the rotary is partial)
    context: int | None = None  # the model's max_position_embeddings (LongRoPE's attention factor reads it)

    def inv_freq(self):
        return self.kind.inv_freq(self)

    def attention_factor(self) -> float:
        return self.kind.attention_factor(self)

    def longer(self):
        return self.kind.longer(self)


class RopeKind:
    """The default rope: frequencies theta^(-2i/dim)."""

    name: ClassVar[str] = "default"
    required: ClassVar[tuple[str, ...]] = ()  # parameters config.json must give for this kind
    # backend name -> why it cannot express this kind (checked with the model, before any export)
    unsupported_by: ClassVar[dict[str, str]] = {}

    def inv_freq(self, rope: Rope):
        import numpy as np

        # int64 exponents cast to float32, divided in float32: transformers' _compute_default_rope_parameters
        exps = np.arange(0, rope.dim, 2, dtype=np.int64).astype(np.float32) / rope.dim
        return (1.0 / (rope.theta ** exps)).astype(np.float32)

    def attention_factor(self, rope: Rope) -> float:
        """What cos and sin are multiplied by (transformers' `attention_scaling`)."""
        return 1.0

    def longer(self, rope: Rope):
        """(n, frequencies): a forward pass whose largest position id is n or more (its length so far
        passes n) uses these frequencies instead of `inv_freq` for all its tokens (transformers'
        `dynamic_rope_update`); None: the frequencies are fixed."""
        return None

    def check(self, rope: Rope, where: str) -> None:
        """Parameters of the right shape (after `required` are known present); exit 2 otherwise."""

    def gguf_parameters(self, writer, rope: Rope) -> None:
        """llama.cpp's keys for this kind beyond `rope.freq_base` (none for the default)."""

    def gguf_tensors(self, rope: Rope) -> dict:
        """Tensors llama.cpp reads for this kind (name -> float32 numpy array)."""
        return {}


class LinearRope(RopeKind):
    """Position interpolation: every frequency divided by `factor` (Llama 2 long-context fine-tunes)."""

    name = "linear"
    required = ("factor",)

    def inv_freq(self, rope: Rope):
        return (super().inv_freq(rope) / rope.params["factor"]).astype("float32")

    def gguf_parameters(self, writer, rope: Rope) -> None:
        import gguf

        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rope.params["factor"])


class Llama3Rope(RopeKind):
    """Llama 3.1's frequency-dependent scaling: wavelengths longer than
    original_max_position_embeddings / low_freq_factor are slowed by `factor`, those shorter than
    original / high_freq_factor kept, those between interpolated (transformers'
    _compute_llama3_parameters; llama.cpp's LlamaModel.generate_extra_tensors)."""

    name = "llama3"
    required = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")

    def inv_freq(self, rope: Rope):
        import numpy as np

        p = rope.params
        inv = super().inv_freq(rope)
        factor, low, high = p["factor"], p["low_freq_factor"], p["high_freq_factor"]
        old_ctx = p["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > old_ctx / low, inv / factor, inv)
        smooth = (old_ctx / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_ctx / high) & (wavelen <= old_ctx / low)
        return np.where(medium, smoothed, scaled).astype(np.float32)

    def gguf_tensors(self, rope: Rope) -> dict:
        """The per-frequency divisors llama.cpp reads from `rope_freqs` (float64 arithmetic, as the
        converter's loop in Python floats)."""
        import gguf
        import numpy as np

        p = rope.params
        factor, low, high = p["factor"], p["low_freq_factor"], p["high_freq_factor"]
        old_ctx = p["original_max_position_embeddings"]
        wavelen = 2 * math.pi * rope.theta ** (np.arange(0, rope.dim, 2, dtype=np.float64) / rope.dim)
        smooth = (old_ctx / wavelen - low) / (high - low)
        mid = 1 / ((1 - smooth) / factor + smooth)
        out = np.where(wavelen < old_ctx / high, 1.0, np.where(wavelen > old_ctx / low, factor, mid))
        return {gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight": out.astype(np.float32)}


class LongRope(RopeKind):
    """LongRoPE (Phi-3 128k, Phi-3.5, Phi-4-mini): each frequency divided by a factor per rotary pair,
    `short_factor` while the positions stay within original_max_position_embeddings and `long_factor`
    once a forward pass goes past it; cos and sin scaled by sqrt(1 + ln(s) / ln(original)), s the
    context extension max_position_embeddings / original (transformers' _compute_longrope_parameters
    and longrope_frequency_update; llama.cpp's Phi3MiniModel.generate_extra_tensors)."""

    name = "longrope"
    required = ("short_factor", "long_factor", "original_max_position_embeddings")

    def _freqs(self, rope: Rope, factors):
        import numpy as np

        # transformers: 1 / (ext_factors * base ** (arange(0, dim, 2) / dim)), all in float32
        exps = np.arange(0, rope.dim, 2, dtype=np.int64).astype(np.float32) / rope.dim
        return (np.float32(1.0) / (np.asarray(factors, np.float32) * (rope.theta ** exps))).astype(np.float32)

    def inv_freq(self, rope: Rope):
        return self._freqs(rope, rope.params["short_factor"])

    def longer(self, rope: Rope):
        # transformers: torch.max(position_ids) + 1 > original_max_position_embeddings
        return int(rope.params["original_max_position_embeddings"]), self._freqs(rope, rope.params["long_factor"])

    def attention_factor(self, rope: Rope) -> float:
        p = rope.params
        if p.get("attention_factor") is not None:
            return float(p["attention_factor"])
        original = p["original_max_position_embeddings"]
        factor = p.get("factor") or (rope.context or original) / original
        return 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))

    def check(self, rope: Rope, where: str) -> None:
        for key in ("short_factor", "long_factor"):
            got = rope.params[key]
            if not isinstance(got, (list, tuple)) or len(got) != rope.dim // 2:
                n = len(got) if isinstance(got, (list, tuple)) else type(got).__name__
                raise InvalidInput(f"{where}: rope_scaling {self.name} {key} has {n} entries; the rotary's "
                                   f"{rope.dim} dimensions need {rope.dim // 2}")

    def gguf_parameters(self, writer, rope: Rope) -> None:
        # the converter writes no rope.scaling.type for Phi-3: llama.cpp applies the factors it finds
        # (llama_model::get_rope_factors) and scales cos/sin by rope.scaling.attn_factor
        writer.add_rope_scaling_orig_ctx_len(int(rope.params["original_max_position_embeddings"]))
        writer.add_rope_scaling_attn_factors(self.attention_factor(rope))

    def gguf_tensors(self, rope: Rope) -> dict:
        import gguf
        import numpy as np

        t = gguf.TENSOR_NAMES
        return {t[gguf.MODEL_TENSOR.ROPE_FACTORS_LONG] + ".weight": np.asarray(rope.params["long_factor"], np.float32),
                t[gguf.MODEL_TENSOR.ROPE_FACTORS_SHORT] + ".weight": np.asarray(rope.params["short_factor"], np.float32)}


class SuRope(LongRope):
    """`su`: LongRoPE's name in the first Phi-3 128k configs (transformers reads it as longrope)."""

    name = "su"


ROPE_KINDS: dict[str, RopeKind] = {}


def register_rope_kind(kind: type[RopeKind]) -> type[RopeKind]:
    ROPE_KINDS[kind.name] = kind()
    return kind


for _kind in (RopeKind, LinearRope, Llama3Rope, LongRope, SuRope):
    register_rope_kind(_kind)

# transformers 5 nests rope_parameters by layer type where layers differ (Gemma 3)
LAYER_TYPES = ("full_attention", "sliding_attention")


def parameters(config: dict, layer_type: str | None = None) -> dict:
    """The rope settings of a transformers 4 or 5 config.json as one dict (rope_theta included), for
    one layer type where the config gives them per type (the global layers' by default)."""
    params = dict(config.get("rope_parameters") or {})  # transformers 5
    if any(isinstance(params.get(t), dict) for t in LAYER_TYPES):
        params = dict(params.get(layer_type or "full_attention") or {})
    if layer_type in (None, "full_attention"):
        params.update(config.get("rope_scaling") or {})  # transformers 4: the global layers' scaling
    params.setdefault("rope_theta", config.get("rope_theta", 10000.0))
    if config.get("original_max_position_embeddings"):
        # Phi-3 states it beside rope_scaling; transformers' standardize_rope_params gives it priority
        params["original_max_position_embeddings"] = config["original_max_position_embeddings"]
    return params


def rope_of(config: dict, dim: int, where: str = "config.json", layer_type: str | None = None,
            params: dict | None = None) -> Rope:
    """The model's Rope, or exit 2 naming a kind llmbuild does not map or a parameter it lacks."""
    params = parameters(config, layer_type) if params is None else params
    name = params.get("rope_type") or params.get("type") or "default"
    kind = ROPE_KINDS.get(name)
    if kind is None:
        raise InvalidInput(f"{where}: rope_scaling type {name!r} is not one llmbuild maps; known: "
                           f"{', '.join(ROPE_KINDS)}")
    missing = [k for k in kind.required if k not in params]
    if missing:
        raise InvalidInput(f"{where}: rope_scaling {name} needs {', '.join(missing)}")
    rope = Rope(float(params["rope_theta"]), kind, params, dim, config.get("max_position_embeddings"))
    kind.check(rope, where)
    return rope
