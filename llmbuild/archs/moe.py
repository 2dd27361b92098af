"""Mixtures of experts: Mixtral, Qwen2-MoE and Qwen3-MoE, each the dense family's decoder with a sparse MLP.

In every layer the MLP is replaced by a router (a linear hidden -> experts), the experts (SiLU-gated
MLPs of their own, smaller, intermediate size) and, in Qwen2-MoE, an always-on shared expert scaled by
a sigmoid gate. Per token the router's softmax picks the top-k experts; their outputs are summed with
the top-k probabilities as weights, renormalized to sum 1 where the family does (transformers'
modeling_mixtral.py `MixtralTopKRouter` always; modeling_qwen2_moe.py / modeling_qwen3_moe.py when
`norm_topk_prob`). The layer's facts are a `MoeBlock` (archs/base.py) on its `Layer`.

Checkpoints keep one tensor per expert matrix, as published (`block_sparse_moe.experts.E.w1` for
Mixtral, `mlp.experts.E.gate_proj` for Qwen; transformers 5 fuses them on load and splits them again
on save). What each target makes of them:
- GGUF (llama.cpp's convert_hf_to_gguf.py `LlamaModel` with its expert stacking, `Qwen2MoeModel`,
  `Qwen3MoeModel`): the experts of a layer become the 3-D `ffn_{gate,up,down}_exps` tensors, listed
  here as stacked entries that the writer fills one expert matrix at a time; the router is
  `ffn_gate_inp`, the shared expert `ffn_*_shexp` with its gate `ffn_gate_inp_shexp`; the keys
  `expert_count`, `expert_used_count` and the expert feed-forward lengths.
- ONNX (targets/onnx_moe.py), trtllm (targets/trtllm_moe.py): read the same facts.

llama.cpp's graphs fix whether the top-k weights are renormalized (src/models/llama.cpp and
qwen3moe.cpp pass true to build_moe_ffn, qwen2moe.cpp false), so a model whose `norm_topk_prob` says
otherwise is refused by the GGUF target (`gguf_norm_topk`). Dense layers among the sparse ones
(Qwen's `mlp_only_layers`, `decoder_sparse_step`) are not mapped: no published model of these
families has them, and llama.cpp's qwen2moe/qwen3moe graphs have no place for them.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import ClassVar

from llmbuild.archs import register
from llmbuild.archs.base import Arch, GgufTensor, LinearGroup, MoeBlock
from llmbuild.archs.llama import Llama
from llmbuild.archs.qwen2 import Qwen2
from llmbuild.archs.qwen3 import Qwen3
from llmbuild.errors import InvalidInput

# tiny experts for the tests: 4 experts, 2 per token, hidden 64
TINY_MOE = {"num_experts_per_tok": 2}


class Moe:
    """What a mixture-of-experts family adds to its dense decoder (a mixin before the dense class)."""

    mixture_of_experts: ClassVar[bool] = True

    # module names relative to a layer: the router, each expert's prefix ({e}: its index) and its
    # (gate, up, down) linears, the shared expert's (gate, up, down) and its gate (None: none)
    ROUTER: ClassVar[str]
    EXPERT: ClassVar[str]
    EXPERT_PROJ: ClassVar[tuple[str, str, str]] = ("gate_proj", "up_proj", "down_proj")
    SHARED: ClassVar[tuple[str, str, str] | None] = None
    SHARED_GATE: ClassVar[str | None] = None
    # the transformers module holding the fused experts (gate_up_proj [E, 2I, H], down_proj [E, H, I])
    EXPERTS_MODULE: ClassVar[str] = "mlp.experts"
    HF_ROUTER: ClassVar[str] = "mlp.gate"  # the router's module in the transformers model
    # config.json keys: the expert count (the first present), the expert intermediate size
    EXPERT_COUNT_KEYS: ClassVar[tuple[str, ...]]
    EXPERT_SIZE_KEY: ClassVar[str] = "moe_intermediate_size"
    # transformers' config defaults (configuration_*.py) for keys an init recipe may leave out
    config_defaults: ClassVar[dict] = {}
    # whether llama.cpp's graph for the GGUF arch renormalizes the top-k weights (see the module doc)
    gguf_norm_topk: ClassVar[bool] = True
    # LoRA: attention by default (the experts are most of the weights and adapting them all costs
    # memory per expert; the router stays frozen so routing stays the base model's); `experts` adapts
    # every expert through PEFT's target_parameters (the fused 3-D parameters), on request
    lora_modules: ClassVar[tuple[str, ...]] = ("q_proj", "k_proj", "v_proj", "o_proj")
    lora_extra_modules: ClassVar[tuple[str, ...]] = ("embed_tokens", "lm_head", "experts")
    lora_parameters: ClassVar[dict[str, tuple[str, ...]]] = {"experts": ("experts.gate_up_proj", "experts.down_proj")}
    # tensorrt traces the model: the default experts loop is data-dependent, batched_mm is not
    hf_model_kwargs: ClassVar[dict] = {"experts_implementation": "batched_mm"}

    # -- what this model has -------------------------------------------------------------------------
    @property
    def expert_count(self) -> int:
        return int(next(self.config[k] for k in self.EXPERT_COUNT_KEYS if k in self.config))

    @property
    def experts_per_token(self) -> int:
        return int(self.config["num_experts_per_tok"])

    @property
    def expert_intermediate(self) -> int:
        return int(self.config[self.EXPERT_SIZE_KEY])

    @property
    def shared_intermediate(self) -> int:
        return int(self.config.get("shared_expert_intermediate_size") or 0) if self.SHARED else 0

    @property
    def norm_topk_prob(self) -> bool:
        return bool(self.config.get("norm_topk_prob", False))

    def _check_moe_config(self) -> None:
        cfg, where = self.config, self.where
        count_key = next((k for k in self.EXPERT_COUNT_KEYS if k in cfg), None)
        missing = [k for k in ("num_experts_per_tok", self.EXPERT_SIZE_KEY) if k not in cfg]
        if count_key is None:
            missing.insert(0, self.EXPERT_COUNT_KEYS[0])
        if self.SHARED and "shared_expert_intermediate_size" not in cfg:
            missing.append("shared_expert_intermediate_size")
        if missing:
            raise InvalidInput(f"{where}: missing keys {', '.join(missing)} ({self.name} needs them)")
        _check_top_k(cfg["num_experts_per_tok"], cfg[count_key], count_key, where)
        if cfg.get("mlp_only_layers") or cfg.get("decoder_sparse_step", 1) != 1:
            raise InvalidInput(f"{where}: mlp_only_layers {cfg.get('mlp_only_layers') or []} / decoder_sparse_step "
                               f"{cfg.get('decoder_sparse_step', 1)}: dense layers among the sparse ones are not mapped "
                               "by llmbuild (no published model of the family has them)")

    @classmethod
    def check_recipe_config(cls, config: dict, key: str) -> None:
        """An init model's expert settings, with transformers' defaults for the keys left out."""
        values = {**cls.config_defaults, **config}
        count_key = next((k for k in cls.EXPERT_COUNT_KEYS if k in config), cls.EXPERT_COUNT_KEYS[0])
        if "num_experts_per_tok" in values and count_key in values:
            _check_top_k(values["num_experts_per_tok"], values[count_key], count_key, key)

    # -- tensors --------------------------------------------------------------------------------------
    def moe_block(self, i: int) -> MoeBlock:
        p = f"model.layers.{i}."
        experts = tuple(tuple(p + self.EXPERT.format(e=e) + proj for proj in self.EXPERT_PROJ)
                        for e in range(self.expert_count))
        return MoeBlock(p + self.ROUTER, experts, self.experts_per_token, self.norm_topk_prob,
                        tuple(p + s for s in self.SHARED) if self.SHARED else None,
                        p + self.SHARED_GATE if self.SHARED_GATE else None,
                        self.expert_intermediate, self.shared_intermediate)

    def layer(self, i: int):
        return replace(super().layer(i), gate=None, up=None, down=None, moe=self.moe_block(i))

    def expected_tensors(self, tied: bool) -> tuple[list[str], list[str]]:
        """The dense decoder's attention and norms, and per layer the router, every expert and the shared
        expert with its gate."""
        required, optional = super().expected_tensors(tied)
        for i in range(self.layers):
            b = self.layer(i).moe
            required += [f"{m}.weight" for m in (b.router, *(m for e in b.experts for m in e), *(b.shared or ()),
                                                  *([b.shared_gate] if b.shared_gate else []))]
        return required, optional

    def expert_sources(self) -> set[str]:
        return {f"{m}.weight" for i in range(self.layers) for e in self.layer(i).moe.experts for m in e}

    def expert_of(self, name: str) -> tuple[int, int, int] | None:
        """(layer, expert, projection 0 gate | 1 up | 2 down) of an expert weight's checkpoint name."""
        if not hasattr(self, "_expert_re"):
            expert = re.escape(self.EXPERT).replace(re.escape("{e}"), r"(\d+)")
            projs = "|".join(map(re.escape, self.EXPERT_PROJ))
            self._expert_re = re.compile(rf"^model\.layers\.(\d+)\.{expert}({projs})\.weight$")
        m = self._expert_re.match(name)
        return (int(m.group(1)), int(m.group(2)), self.EXPERT_PROJ.index(m.group(3))) if m else None

    def check_checkpoint(self, model_dir) -> None:
        """The experts found per layer are the config's count, and every layer has its router."""
        from pathlib import Path

        from llmbuild.checkpoint import safetensors_header, weight_files

        files, pickle = weight_files(Path(model_dir), allow_pickle=True)
        if pickle:
            return  # no header to read: the export stages name a missing tensor
        names = {n for f in files for n in safetensors_header(f) if n != "__metadata__"}
        where = files[0].name if len(files) == 1 else "model.safetensors.index.json"
        count_key = next(k for k in self.EXPERT_COUNT_KEYS if k in self.config)
        found: dict[int, set[int]] = {}
        for n in names:
            hit = self.expert_of(n)
            if hit:
                found.setdefault(hit[0], set()).add(hit[1])
        for i in range(self.layers):
            b = self.layer(i).moe
            if f"{b.router}.weight" not in names:
                raise InvalidInput(f"{where}: router tensor {b.router}.weight is missing (layer {i} of a "
                                   f"{self.name} has one)")
            got = found.get(i, set())
            if got != set(range(self.expert_count)):
                prefix = self.EXPERT.format(e="N").rstrip(".")
                raise InvalidInput(f"{where}: layer {i} has {len(got)} experts ({prefix}: "
                                   f"{_ranges(sorted(got)) or 'none'}), config.json {count_key} says {self.expert_count}")

    # -- GGUF -----------------------------------------------------------------------------------------
    def gguf_refusal(self) -> str | None:
        if self.norm_topk_prob != self.gguf_norm_topk:
            return (f"config.json norm_topk_prob is {str(self.norm_topk_prob).lower()}, but llama.cpp's {self.gguf_arch} "
                    f"graph {'always' if self.gguf_norm_topk else 'never'} renormalizes the top-k expert weights: the "
                    "GGUF would compute another model")
        return super().gguf_refusal()

    def gguf_parameters(self, w) -> None:
        super().gguf_parameters(w)
        w.add_expert_count(self.expert_count)
        w.add_expert_used_count(self.experts_per_token)
        if self.EXPERT_SIZE_KEY != "intermediate_size":
            # Qwen2MoeModel.set_gguf_parameters (Qwen3MoeModel inherits it); Mixtral's experts are
            # feed_forward_length wide
            w.add_expert_feed_forward_length(self.expert_intermediate)
        if self.SHARED:
            w.add_expert_shared_feed_forward_length(self.shared_intermediate)

    def gguf_tensors(self, shapes: dict[str, tuple[int, ...]]) -> list[GgufTensor]:
        """The dense decoder's tensors, with each layer's experts as three stacked entries (gate, up,
        down: [experts, rows, cols]) at the place of its first expert tensor."""
        import gguf

        experts = self.expert_sources()
        dense = {n: s for n, s in shapes.items() if n not in experts}
        out = super().gguf_tensors(dense)
        by_src = {t.srcs[0]: k for k, t in enumerate(out) if t.srcs}
        inserts: dict[int, list[GgufTensor]] = {}
        kinds = (gguf.MODEL_TENSOR.FFN_GATE_EXP, gguf.MODEL_TENSOR.FFN_UP_EXP, gguf.MODEL_TENSOR.FFN_DOWN_EXP)
        inter, h = self.expert_intermediate, self.hidden
        for i in range(self.layers):
            b = self.layer(i).moe
            for proj, kind in enumerate(kinds):
                srcs = tuple(f"{e[proj]}.weight" for e in b.experts)
                want = (h, inter) if proj == 2 else (inter, h)
                for s in srcs:
                    if s not in shapes:
                        raise InvalidInput(f"tensor {s!r} is missing")
                    if tuple(shapes[s]) != want:
                        raise InvalidInput(f"tensor {s!r} is {list(shapes[s])}, {self.name}'s config says {list(want)}")
                name = gguf.TENSOR_NAMES[kind].format(bid=i) + ".weight"
                # after the layer's router: the file keeps the converter's order within a block
                at = by_src.get(f"{b.router}.weight", len(out))
                inserts.setdefault(at, []).append(GgufTensor(srcs, name, (len(srcs), *want), stacked=True))
        merged = []
        for k, t in enumerate(out):
            merged.append(t)
            merged += inserts.pop(k, [])
        merged += [t for k in sorted(inserts) for t in inserts[k]]
        return merged

    # -- Hugging Face layout (trtllm) ------------------------------------------------------------------
    def linear_groups(self) -> tuple[LinearGroup, ...]:
        """Attention's linears, and the shared expert's (the experts are not nn.Linear modules in
        transformers 5: targets take them from `moe_block`)."""
        groups = super().linear_groups()[:2]
        if self.SHARED:
            g, u, d = self.SHARED
            groups += (LinearGroup(None, (g, u)), LinearGroup(None, (d,)))
        return groups

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        shapes = {k: v for k, v in super().linear_shapes().items() if k in (self.Q_PROJ, self.K_PROJ, self.V_PROJ,
                                                                            self.O_PROJ)}
        if self.SHARED:
            g, u, d = self.SHARED
            si, h = self.shared_intermediate, self.hidden
            shapes.update({g: (si, h), u: (si, h), d: (h, si)})
        return shapes

    def expert_shapes(self) -> dict[str, tuple[int, int]]:
        """(out_features, in_features) of an expert's gate, up and down (the names of EXPERT_PROJ)."""
        inter, h = self.expert_intermediate, self.hidden
        g, u, d = self.EXPERT_PROJ
        return {g: (inter, h), u: (inter, h), d: (h, inter)}

    @property
    def unquantized_modules(self) -> tuple[str, ...]:
        """The output layer and embedding, and every layer's router and shared-expert gate: ModelOpt's
        default configs disable `*mlp.gate.*`, `*block_sparse_moe.gate*` and `*shared_expert_gate*`,
        and its export lists each of them in exclude_modules."""
        per_layer = [m for i in range(self.layers) for m in (self.layer(i).moe.router, self.layer(i).moe.shared_gate) if m]
        return (self.LM_HEAD, self.EMBED, *per_layer)

    def hf_layer_state(self, i: int, get, available) -> dict:
        """The state dict of transformers' decoder layer `i` (fused experts) from checkpoint tensors
        (`get(name)`; `available`: the checkpoint's tensor names): each expert's gate and up stacked
        into gate_up_proj [E, 2I, H], its down into down_proj [E, H, I], the router renamed; the fused
        tensors are filled one expert at a time."""
        import torch

        p = f"model.layers.{i}."
        b = self.layer(i).moe
        skip = self.expert_sources() | {f"{b.router}.weight"}
        state = {n[len(p):]: get(n) for n in available if n.startswith(p) and n not in skip and not self.ignored(n)}
        state[f"{self.HF_ROUTER}.weight"] = get(f"{b.router}.weight")
        inter, h, n_e = self.expert_intermediate, self.hidden, self.expert_count
        gate_up = down = None
        for e, (g, u, d) in enumerate(b.experts):
            wg, wu, wd = get(f"{g}.weight"), get(f"{u}.weight"), get(f"{d}.weight")
            if gate_up is None:
                gate_up = torch.empty((n_e, 2 * inter, h), dtype=wg.dtype)
                down = torch.empty((n_e, h, inter), dtype=wd.dtype)
            gate_up[e, :inter], gate_up[e, inter:], down[e] = wg, wu, wd
        state[f"{self.EXPERTS_MODULE}.gate_up_proj"] = gate_up
        state[f"{self.EXPERTS_MODULE}.down_proj"] = down
        return state

    def estimate_params(self) -> int:
        attn = self.hidden * self.head_dim * (2 * self.heads + 2 * self.kv_heads)
        embed = self.vocab * self.hidden * (1 if self.tied else 2)
        experts = 3 * self.hidden * (self.expert_count * self.expert_intermediate + self.shared_intermediate)
        return embed + self.layers * (attn + experts + self.hidden * self.expert_count)


def _check_top_k(k, n, count_key: str, where: str) -> None:
    if not isinstance(k, int) or k < 1:
        raise InvalidInput(f"{where}: num_experts_per_tok {k!r} must be a positive integer")
    if k > n:
        raise InvalidInput(f"{where}: num_experts_per_tok {k} is more than the {n} experts ({count_key}); "
                           "the router cannot pick more experts than there are")


def _ranges(ids: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    out, start = [], None
    for k, x in enumerate(ids):
        if start is None:
            start = x
        if k + 1 == len(ids) or ids[k + 1] != x + 1:
            out.append(f"{start}-{x}" if x != start else str(x))
            start = None
    return ", ".join(out)


@register("MixtralForCausalLM")
class Mixtral(Moe, Llama):
    """Mixtral 8x7B and 8x22B: the Mistral decoder, top-2 of 8 experts, no shared expert."""

    ROUTER = "block_sparse_moe.gate"
    EXPERT = "block_sparse_moe.experts.{e}."
    EXPERT_PROJ = ("w1", "w3", "w2")  # gate, up, down
    EXPERT_COUNT_KEYS = ("num_local_experts",)
    EXPERT_SIZE_KEY = "intermediate_size"
    config_defaults: ClassVar[dict] = {"num_local_experts": 8, "num_experts_per_tok": 2}  # MixtralConfig
    required_config = (*Arch.required_config, "num_local_experts", "num_experts_per_tok")
    tiny: ClassVar[dict] = {**Arch.tiny, **TINY_MOE, "num_local_experts": 4}
    variants: ClassVar[dict] = {}

    def __init__(self, config: dict, name: str, where: str = "config.json"):
        super().__init__(config, name, where)
        self._check_moe_config()

    @property
    def norm_topk_prob(self) -> bool:
        return True  # MixtralTopKRouter renormalizes the top-k probabilities unconditionally


@register("Qwen2MoeForCausalLM")
class Qwen2Moe(Moe, Qwen2):
    """Qwen1.5-MoE-A2.7B, Qwen2-57B-A14B: the Qwen2 decoder, top-k of many small experts plus a shared
    expert whose output is scaled by sigmoid(shared_expert_gate . x)."""

    ROUTER = "mlp.gate"
    EXPERT = "mlp.experts.{e}."
    SHARED = ("mlp.shared_expert.gate_proj", "mlp.shared_expert.up_proj", "mlp.shared_expert.down_proj")
    SHARED_GATE = "mlp.shared_expert_gate"
    EXPERT_COUNT_KEYS = ("num_experts",)
    config_defaults: ClassVar[dict] = {"num_experts": 60, "num_experts_per_tok": 4}  # Qwen2MoeConfig
    gguf_arch = "qwen2moe"
    gguf_norm_topk = False  # qwen2moe.cpp: build_moe_ffn(..., norm_w = false, ...)
    lora_extra_modules: ClassVar[tuple[str, ...]] = (*Moe.lora_extra_modules, "gate_proj", "up_proj", "down_proj")
    # Qwen1.5-MoE's shapes in small: experts narrower than the shared expert, no tied embeddings
    tiny: ClassVar[dict] = {**Arch.tiny, **TINY_MOE, "num_experts": 4, "moe_intermediate_size": 32,
                            "shared_expert_intermediate_size": 64, "tie_word_embeddings": False}
    variants: ClassVar[dict] = {}

    def __init__(self, config: dict, name: str, where: str = "config.json"):
        super().__init__(config, name, where)
        self._check_moe_config()

    def gguf_tensors(self, shapes):
        out = super().gguf_tensors(shapes)
        if not any(t.name == "output.weight" for t in out):
            # qwen2moe.cpp requires output.weight (no fallback to the embedding): a tied model gets a copy
            embed = f"{self.EMBED}.weight"
            out.append(GgufTensor((embed,), "output.weight", tuple(shapes[embed])))
        return out


@register("Qwen3MoeForCausalLM")
class Qwen3Moe(Moe, Qwen3):
    """Qwen3-30B-A3B, Qwen3-235B-A22B: the Qwen3 decoder (q/k norms), top-8 of 128 experts, top-k weights
    renormalized (`norm_topk_prob: true` in the published configs), no shared expert."""

    ROUTER = "mlp.gate"
    EXPERT = "mlp.experts.{e}."
    # the Hub configs say num_experts; transformers 5 writes num_local_experts (its attribute_map)
    EXPERT_COUNT_KEYS = ("num_experts", "num_local_experts")
    config_defaults: ClassVar[dict] = {"num_experts": 128, "num_experts_per_tok": 8}  # Qwen3MoeConfig
    gguf_arch = "qwen3moe"
    gguf_norm_topk = True  # qwen3moe.cpp: build_moe_ffn(..., norm_w = true, ...)
    tiny: ClassVar[dict] = {**Qwen3.tiny, **TINY_MOE, "num_experts": 4, "moe_intermediate_size": 32,
                            "norm_topk_prob": True, "tie_word_embeddings": False}
    variants: ClassVar[dict] = {}

    def __init__(self, config: dict, name: str, where: str = "config.json"):
        super().__init__(config, name, where)
        self._check_moe_config()
