"""The Llama-family decoder as a class: every fact a target needs about one model, from its config.json.

`Arch` is llama.cpp's `LlamaModel` in llmbuild's terms (convert_hf_to_gguf.py / conversion/llama.py):
the class holds what a family *is* (its tensor layout, norm, activation, which targets map it, how
llama.cpp names and permutes its tensors, which linears share an input for AWQ, its LoRA modules),
an instance is bound to one model's config.json and answers what that model *has* (dims, rope,
sliding windows per layer, tied embeddings, context). A family that differs subclasses it and
overrides the facts that differ (qwen2.py: q/k/v biases and NeoX rope; qwen3.py: q/k norms), as
llama.cpp's families override `set_gguf_parameters` and `modify_tensors`.

Targets ask these objects and never test an architecture's name. Facts some families have are here
with their neutral values (a norm offset, an embedding scale, an attention scale, soft-capping, post
norms, fused projections, a rope per layer, partial rotary), so a target computes every family the same
way; what llama.cpp hard-codes differently a family reports through `gguf_refusal`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, ClassVar

from llmbuild.archs.rope import Rope, rope_of
from llmbuild.errors import InvalidInput

ALL_TARGETS = frozenset({"onnx", "gguf", "trtllm", "tensorrt", "hf"})  # hf: transformers reads every family it has a class for


@dataclass(frozen=True)
class Layer:
    """One decoder layer: the checkpoint's module names (no `.weight`) and its attention facts."""

    index: int
    attn_norm: str  # RMSNorm before attention
    q: str | None  # None where q, k and v are one fused projection (`qkv`)
    k: str | None
    v: str | None
    o: str
    ffn_norm: str  # RMSNorm before the MLP
    gate: str | None  # None where gate and up are one fused projection (`gate_up`), or in a sparse layer
    up: str | None
    down: str | None  # None in a sparse layer (see `moe`)
    q_norm: str | None = None  # per-head RMSNorm of q before the rotary (Qwen3, Gemma 3); None: none
    k_norm: str | None = None
    window: int | None = None  # sliding attention window in tokens; None: full attention
    post_attn_norm: str | None = None  # RMSNorm on the attention output before the residual add (Gemma 2/3)
    post_ffn_norm: str | None = None  # RMSNorm on the MLP output before the residual add (Gemma 2/3)
    qkv: str | None = None  # one projection whose output is [q | k | v] (Phi-3's qkv_proj)
    gate_up: str | None = None  # one projection whose output is [gate | up] (Phi-3's gate_up_proj)
    moe: MoeBlock | None = None  # the layer's mixture of experts in place of the MLP (archs/moe.py)

    def linears(self) -> list[str]:
        """The layer's projections, fused ones as one module."""
        return [m for m in (self.qkv, self.q, self.k, self.v, self.o, self.gate_up, self.gate, self.up, self.down)
                if m]

    def norms(self) -> list[str]:
        return [m for m in (self.attn_norm, self.q_norm, self.k_norm, self.post_attn_norm, self.ffn_norm,
                            self.post_ffn_norm) if m]


@dataclass(frozen=True)
class MoeBlock:
    """A sparse MLP (module names, no `.weight`): a router picks `top_k` of the experts per token by
    softmax probability, their SiLU-gated MLPs are summed with those probabilities as weights
    (renormalized to sum 1 when `norm_topk`), plus an always-on shared expert scaled by
    sigmoid(shared_gate . x) where the family has one (Qwen2-MoE)."""

    router: str  # linear hidden -> experts: the router logits
    experts: tuple[tuple[str, str, str], ...]  # (gate, up, down) of each expert, in expert order
    top_k: int
    norm_topk: bool
    shared: tuple[str, str, str] | None = None  # (gate, up, down) of the shared expert
    shared_gate: str | None = None  # linear hidden -> 1 scaling the shared expert
    intermediate: int = 0  # each expert's intermediate size
    shared_intermediate: int = 0


@dataclass(frozen=True)
class LinearGroup:
    """Linears of a layer that read the same input (module names relative to the layer). Runtimes fuse
    them (TensorRT-LLM's qkv and gate_up, vLLM's QKVParallelLinear/MergedColumnParallelLinear), so they
    share one AWQ smoothing scale, folded into `norm` (the module feeding them); None: the scale stays as
    the linears' pre_quant_scale (ModelOpt's requantize_resmooth_fused_llm_layers + fuse_prequant_layernorm)."""

    norm: str | None
    linears: tuple[str, ...]


@dataclass
class GgufTensor:
    """One tensor of a GGUF file: the checkpoint tensors it is made from and how (modify_tensors)."""

    srcs: tuple[str, ...]  # checkpoint tensor names; () for a tensor computed from the config
    name: str  # llama.cpp's name
    shape: tuple[int, ...]  # numpy order (rows last-but-one); GGUF stores it reversed
    # numpy arrays of srcs (in that order) -> the values llama.cpp reads; None: the one source as is
    transform: Callable | None = None
    data: object = None  # the values of a computed tensor
    # srcs are the slices of the first axis, in order (llama.cpp's 3-D expert tensors): the writer
    # converts and writes them one at a time, each through `transform` alone, and never stacks them
    stacked: bool = False


class Arch:
    """The Llama decoder: RMSNorm, SiLU-gated MLP, rotary attention with grouped KV heads."""

    # -- what the family is ------------------------------------------------------------------------
    hf_names: ClassVar[tuple[str, ...]] = ()  # the config.json architectures it converts (set by @register)
    targets: ClassVar[frozenset[str]] = ALL_TARGETS  # backends that map it (the others exit 2 naming these)
    # config.json keys every target needs; a family adds those whose transformers default would mislead
    required_config: ClassVar[tuple[str, ...]] = (
        "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size",
        "rms_norm_eps",
    )
    qkv_bias: ClassVar[bool] = False  # q/k/v projections carry a bias (required tensors, not optional ones)
    qk_norm: ClassVar[bool] = False  # per-head RMSNorm on q and k before the rotary
    # RMSNorm computes x * (norm_offset + w): Gemma stores w - 1 (llama.cpp adds 1 when converting)
    norm_offset: ClassVar[float] = 0.0
    # llama.cpp: general.architecture, whether its rope needs q/k rows interleaved (the "llama" rope
    # is GPT-J style while transformers uses rotate_half; NeoX-rope archs need no permute), whether its
    # graph implements sliding-window attention, and which activations its graph computes
    gguf_arch: ClassVar[str] = "llama"
    gguf_permute_qk: ClassVar[bool] = True
    gguf_sliding_window: ClassVar[bool] = False
    gguf_activations: ClassVar[tuple[str, ...]] = ("silu",)
    # LoRA: the modules adapted by default (every linear of attention and MLP: QLoRA's finding that
    # adapting all matters more than the rank), and the others a recipe may name
    lora_modules: ClassVar[tuple[str, ...]] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                               "down_proj")
    lora_extra_modules: ClassVar[tuple[str, ...]] = ("embed_tokens", "lm_head")
    # module names relative to a layer, and the model-level ones
    ATTN_NORM, FFN_NORM = "input_layernorm", "post_attention_layernorm"
    Q_PROJ, K_PROJ, V_PROJ, O_PROJ = "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"
    Q_NORM, K_NORM = "self_attn.q_norm", "self_attn.k_norm"
    GATE_PROJ, UP_PROJ, DOWN_PROJ = "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"
    EMBED, FINAL_NORM, LM_HEAD = "model.embed_tokens", "model.norm", "lm_head"
    LAYER_WEIGHT = re.compile(r"^model\.layers\.(\d+)\.(.+)\.weight$")
    # tests: a tiny config of the family (a few layers, real-shaped quirks), and named variants of it
    # (variant -> (config.json architecture, overrides)) that real models of the family have
    tiny: ClassVar[dict] = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                intermediate_size=128, max_position_embeddings=256)
    variants: ClassVar[dict[str, tuple[str, dict]]] = {}
    # tests: noise added to every norm weight of the tiny model, so a norm read from the wrong tensor
    # shows (transformers initializes them all alike); 0 keeps transformers' initialization
    tiny_norm_jitter: ClassVar[float] = 0.0
    # tests: the one model of the family (its architecture or a variant) the default test run takes
    # through each backend; None: every one (the rest run with -m slow)
    tiny_default: ClassVar[str | None] = None
    # keyword arguments a target passes to transformers' from_pretrained when it traces the model
    # (tensorrt's torch.onnx export): a family whose default modelling code cannot be traced says how
    hf_model_kwargs: ClassVar[dict] = {}

    def __init__(self, config: dict, name: str, where: str = "config.json"):
        self.config, self.name, self.where = config, name, where
        missing = [k for k in self.required_config if k not in config]
        if missing:
            raise InvalidInput(f"{where}: missing keys {', '.join(missing)} ({name} needs them)")
        self.rope: Rope = rope_of(config, self.rotary_dim, where)
        self.windows: list[int | None] = self._windows()

    # -- what this model has -------------------------------------------------------------------------
    @property
    def layers(self) -> int:
        return self.config["num_hidden_layers"]

    @property
    def hidden(self) -> int:
        return self.config["hidden_size"]

    @property
    def heads(self) -> int:
        return self.config["num_attention_heads"]

    @property
    def kv_heads(self) -> int:
        return self.config.get("num_key_value_heads") or self.heads

    @property
    def head_dim(self) -> int:
        # explicit in config.json where heads are wider than hidden/heads (Mistral NeMo, Qwen3)
        return self.config.get("head_dim") or self.hidden // self.heads

    @property
    def rotary_dim(self) -> int:
        """Dimensions of each head the rotary turns (the rest pass through: partial rotary, Phi-4-mini)."""
        return self.head_dim

    @property
    def attn_scale(self) -> float:
        """What q.k is multiplied by before the softmax (Gemma: query_pre_attn_scalar ** -0.5)."""
        return self.head_dim ** -0.5

    def layer_rope(self, i: int) -> Rope:
        """Layer i's rotary embedding (Gemma 3: one base for sliding-window layers, another for global)."""
        return self.rope

    @property
    def intermediate(self) -> int:
        return self.config["intermediate_size"]

    @property
    def vocab(self) -> int:
        return self.config["vocab_size"]

    @property
    def eps(self) -> float:
        return float(self.config["rms_norm_eps"])

    @property
    def context(self) -> int | None:
        return self.config.get("max_position_embeddings")

    @property
    def tied(self) -> bool:
        """The output layer is the embedding (transformers then ignores any lm_head.weight)."""
        return bool(self.config.get("tie_word_embeddings"))

    @property
    def activation(self) -> str:
        return self.config.get("hidden_act", "silu")

    # mixture of experts (archs/moe.py): whether the family's MLPs are sparse, and the experts per
    # sparse layer (0 for a dense decoder)
    mixture_of_experts: ClassVar[bool] = False
    expert_count: ClassVar[int] = 0

    def expert_sources(self) -> set[str]:
        """Checkpoint tensors a target writes as stacked expert tensors rather than one by one."""
        return set()

    @classmethod
    def check_recipe_config(cls, config: dict, key: str) -> None:
        """Checks of an `init` model's config that the recipe alone allows (plan time). Raise InvalidInput."""

    def check_checkpoint(self, model_dir) -> None:
        """Checks of the checkpoint's tensor names against config.json (a header read, right after
        acquisition). Raise InvalidInput naming the file and the tensor."""

    # facts of other families, neutral here: sqrt(hidden) embedding scale, attention and final logit
    # soft-capping (Gemma 2: properties read from its config)
    embedding_scale: ClassVar[float | None] = None
    attn_softcap: ClassVar[float | None] = None
    final_softcap: ClassVar[float | None] = None

    def _windows(self) -> list[int | None]:
        """Each layer's sliding attention window (None: full attention), as transformers decides it:
        `layer_types` where config.json has them (transformers 5), use_sliding_window and
        max_window_layers in older Qwen configs, else `sliding_window` on every layer (Mistral)."""
        cfg, n = self.config, self.layers
        w = cfg.get("sliding_window")
        if cfg.get("layer_types"):
            return [w if t == "sliding_attention" else None for t in cfg["layer_types"]]
        if "use_sliding_window" in cfg:
            on = cfg["use_sliding_window"] and w is not None
            return [w if on and i >= cfg.get("max_window_layers", 0) else None for i in range(n)]
        return [w] * n

    # -- tensors --------------------------------------------------------------------------------------
    def layer(self, i: int) -> Layer:
        p = f"model.layers.{i}."
        return Layer(i, p + self.ATTN_NORM, p + self.Q_PROJ, p + self.K_PROJ, p + self.V_PROJ, p + self.O_PROJ,
                     p + self.FFN_NORM, p + self.GATE_PROJ, p + self.UP_PROJ, p + self.DOWN_PROJ,
                     q_norm=p + self.Q_NORM if self.qk_norm else None,
                     k_norm=p + self.K_NORM if self.qk_norm else None, window=self.windows[i])

    def expected_tensors(self, tied: bool) -> tuple[list[str], list[str]]:
        """(required, optional) checkpoint tensor names. Optional: the biases some models of the family
        add (attention_bias, mlp_bias)."""
        required = [f"{self.EMBED}.weight", f"{self.FINAL_NORM}.weight", *([] if tied else [f"{self.LM_HEAD}.weight"])]
        optional = []
        for i in range(self.layers):
            L = self.layer(i)
            required += [f"{m}.weight" for m in L.norms()]
            required += [f"{m}.weight" for m in L.linears()]
            attn_in = {L.qkv, L.q, L.k, L.v} - {None}
            biases = [f"{m}.bias" for m in L.linears() if m in attn_in]
            (required if self.qkv_bias else optional).extend(biases)
            optional += [f"{m}.bias" for m in L.linears() if m not in attn_in]
        return required, optional

    def ignored(self, name: str) -> bool:
        """Checkpoint tensors no target reads: buffers every runtime recomputes from the config."""
        return name.endswith(".rotary_emb.inv_freq")

    # -- GGUF (llama.cpp's convert_hf_to_gguf.py: set_gguf_parameters, modify_tensors) ----------------
    def gguf_context(self) -> tuple[int, str | None]:
        """The context length the GGUF declares, and why when it is not the model's. llama.cpp runs a
        layer with full attention where its architecture has no sliding windows, which matches the
        model only within one window: the file then says so by declaring the window as its context."""
        windows = [w for w in self.windows if w]
        ctx = self.context
        if windows and not self.gguf_sliding_window and min(windows) < ctx:
            w = min(windows)
            return w, (f"context recorded as {w} tokens, the model's sliding window (its config says {ctx}): "
                       f"llama.cpp's {self.gguf_arch} architecture has no sliding-window attention, so it "
                       f"computes the model exactly up to {w} tokens")
        return ctx, None

    def gguf_refusal(self) -> str | None:
        """Why llama.cpp's architecture would compute something else than this model (checked with the
        model, before any export), or None. llama.cpp hard-codes some facts a config.json states."""
        return None

    def gguf_parameters(self, w) -> None:
        """The hyperparameter keys of the GGUF (`{arch}.*`), on a gguf.GGUFWriter."""
        w.add_context_length(self.gguf_context()[0])
        w.add_embedding_length(self.hidden)
        w.add_block_count(self.layers)
        w.add_feed_forward_length(self.intermediate)
        w.add_head_count(self.heads)
        w.add_head_count_kv(self.kv_heads)
        w.add_rope_freq_base(self.rope.theta)
        w.add_layer_norm_rms_eps(self.eps)
        w.add_vocab_size(self.vocab)
        w.add_rope_dimension_count(self.rope.dim)
        if self.config.get("head_dim"):
            # llama.cpp otherwise assumes hidden/heads
            w.add_key_length(self.head_dim)
            w.add_value_length(self.head_dim)
        self.rope.kind.gguf_parameters(w, self.rope)

    def gguf_name(self, src: str) -> str | None:
        """llama.cpp's name for a checkpoint tensor, from gguf-py's tensor_mapping tables."""
        import gguf

        if not hasattr(self, "_gguf_names"):
            arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == self.gguf_arch)
            self._gguf_names = gguf.get_tensor_name_map(arch, self.layers)
        return self._gguf_names.get_name(src, try_suffixes=(".weight", ".bias"))

    def gguf_tensors(self, shapes: dict[str, tuple[int, ...]]) -> list[GgufTensor]:
        """Every tensor of the GGUF in file order: the rope kind's computed tensors first, then each
        checkpoint tensor (in checkpoint order) under its llama.cpp name with its transform."""
        out = [GgufTensor((), name, tuple(data.shape), data=data)
               for name, data in self.rope.kind.gguf_tensors(self.rope).items()]
        for src, shape in shapes.items():
            if self.ignored(src):
                continue
            name = self.gguf_name(src)
            if name is None:
                raise InvalidInput(f"tensor {src!r} has no llama.cpp name for {self.gguf_arch}")
            out.append(GgufTensor((src,), name, tuple(shape), self.gguf_transform(name)))
        return out

    def gguf_transform(self, name: str) -> Callable | None:
        """What a tensor needs on its way into the GGUF: q/k rows interleaved for llama.cpp's rope,
        norms with their offset added."""
        heads = 0
        if self.gguf_permute_qk and name.endswith(("attn_q.weight", "attn_q.bias")):
            heads = self.heads
        elif self.gguf_permute_qk and name.endswith(("attn_k.weight", "attn_k.bias")):
            heads = self.kv_heads
        if heads:
            return InterleaveRotary(self.head_dim)
        if self.norm_offset and name.endswith("_norm.weight"):
            return lambda x, off=self.norm_offset: x + off
        return None

    # -- Hugging Face layout (trtllm: ModelOpt's unified checkpoint; AWQ folding) --------------------
    def linear_groups(self) -> tuple[LinearGroup, ...]:
        """The quantizable linears of a layer, grouped by the input they read."""
        return (
            LinearGroup(self.ATTN_NORM, (self.Q_PROJ, self.K_PROJ, self.V_PROJ)),
            LinearGroup(None, (self.O_PROJ,)),
            LinearGroup(self.FFN_NORM, (self.GATE_PROJ, self.UP_PROJ)),
            LinearGroup(None, (self.DOWN_PROJ,)),
        )

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(out_features, in_features) of each quantizable linear of a layer."""
        h, hd, inter = self.hidden, self.head_dim, self.intermediate
        q, kv = self.heads * hd, self.kv_heads * hd
        return {self.Q_PROJ: (q, h), self.K_PROJ: (kv, h), self.V_PROJ: (kv, h), self.O_PROJ: (h, q),
                self.GATE_PROJ: (inter, h), self.UP_PROJ: (inter, h), self.DOWN_PROJ: (h, inter)}

    # modules quantized checkpoints keep in the model dtype: ModelOpt's default configs never quantize
    # them (the output layer is the most sensitive; the embedding is a lookup, not a GEMM)
    unquantized_modules: ClassVar[tuple[str, ...]] = (LM_HEAD, EMBED)

    def estimate_params(self) -> int:
        """Parameter count from config.json alone (plan time), biases and norms aside."""
        attn = self.hidden * self.head_dim * (2 * self.heads + 2 * self.kv_heads)
        embed = self.vocab * self.hidden * (1 if self.tied else 2)
        return embed + self.layers * (attn + 3 * self.hidden * self.intermediate)


@dataclass(frozen=True)
class InterleaveRotary:
    """interleave_rotary as a GGUF tensor's transform. Each head's rows are reordered among themselves,
    so a block of whole heads converts alone: `row_unit` tells the GGUF writer to stream the tensor in
    blocks of whole heads (a 2048-wide model's q_proj is 16 MB of float32) instead of converting it whole."""

    row_unit: int  # rows per head

    def __call__(self, w):
        return interleave_rotary(w, w.shape[0] // self.row_unit)


def interleave_rotary(w, n_head: int):
    """Reorder q/k projection rows from transformers' rotate_half layout to llama.cpp's "llama" rope.

    transformers rotates dimension i of a head with dimension i + d/2; llama.cpp's LLAMA rope rotates
    adjacent pairs (2i, 2i+1). Within each head, the row order [x0..x(d/2-1), y0..y(d/2-1)] becomes
    [x0, y0, x1, y1, ...], which makes the two computations the same (the converter's `permute`).
    """
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
