"""Model families: one module per family, one class per module, registered by the architectures it converts.

`ARCHS` is the static table from a config.json `architectures[0]` to the module that converts it
(llama.cpp's conversion/__init__.py TEXT_MODEL_MAP): listing and validating names import nothing, and
a family's module is imported only when a model of it is built. The module's class registers itself
with `@register(...)`; `arch_class(name)` returns it and `for_config(config)` binds it to one model's
config.json (missing keys and rope kinds llmbuild does not map exit 2 there).

Everything a target needs to know about a model comes from that object (archs/base.py): dims, rope,
norms, activation, sliding windows per layer, tied embeddings, tensor names, how llama.cpp names and
transforms each tensor, which linears share an input (AWQ), LoRA modules, and which targets map the
family. Targets ask it; no module in llmbuild/targets names an architecture.

Adding a dense family is one module here plus its row in ARCHS:
    @register("NewForCausalLM")
    class New(Arch):                 # or a subclass of the family it extends
        gguf_arch = "new"            # llama.cpp's LLM_ARCH name; gguf_permute_qk for GPT-J-style rope
        qkv_bias = ...; qk_norm = ...; required_config = (...); tiny = {...}; variants = {...}
and overrides where its model computes something else (`layer`, `expected_tensors`,
`gguf_parameters`, `gguf_transform`, `linear_groups`). The tests take every family, its tiny config
and its variants from this registry.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from llmbuild.errors import InvalidInput

if TYPE_CHECKING:
    from llmbuild.archs.base import Arch

# config.json architecture -> module of llmbuild.archs that converts it
ARCHS: dict[str, str] = {
    "LlamaForCausalLM": "llama",  # Llama 2, Llama 3.x, TinyLlama, SmolLM, Yi, DeepSeek (v1 dense)
    "MistralForCausalLM": "llama",  # Mistral 7B v0.1-v0.3, Mistral NeMo
    "Qwen2ForCausalLM": "qwen2",  # Qwen2, Qwen2.5
    "Qwen3ForCausalLM": "qwen3",  # Qwen3 dense
    "Gemma2ForCausalLM": "gemma2",  # Gemma 2 2B/9B/27B
    "Gemma3ForCausalLM": "gemma3",  # Gemma 3 text (270M, 1B; the text decoder of 4B-27B)
    "Phi3ForCausalLM": "phi3",  # Phi-3 mini/medium 4k/128k, Phi-3.5-mini, Phi-4-mini
    "MixtralForCausalLM": "moe",  # Mixtral 8x7B, 8x22B
    "Qwen2MoeForCausalLM": "moe",  # Qwen1.5-MoE-A2.7B, Qwen2-57B-A14B
    "Qwen3MoeForCausalLM": "moe",  # Qwen3-30B-A3B, Qwen3-235B-A22B
}

_CLASSES: dict[str, type[Arch]] = {}


def register(*names: str):
    """Class decorator: the family converts these config.json architectures (each must be in ARCHS)."""
    def deco(cls):
        for name in names:
            if ARCHS.get(name) != cls.__module__.rsplit(".", 1)[-1]:
                raise RuntimeError(f"{name}: add it to llmbuild.archs.ARCHS with module {cls.__module__!r}")
            _CLASSES[name] = cls
        cls.hf_names = tuple(names)
        return cls
    return deco


def names() -> list[str]:
    """Every architecture llmbuild converts, without importing any family."""
    return sorted(ARCHS)


def arch_class(name: str | None, where: str = "config.json architectures") -> type[Arch]:
    """The class converting `name`, or exit 2 naming it and the supported ones."""
    if name not in ARCHS:
        raise InvalidInput(f"{where}: unsupported architecture {name!r}; supported: {', '.join(names())}")
    if name not in _CLASSES:
        importlib.import_module(f"llmbuild.archs.{ARCHS[name]}")
    return _CLASSES[name]


def architecture_of(config: dict) -> str | None:
    names_ = config.get("architectures") or []
    return names_[0] if names_ else None


def for_config(config: dict, where: str = "config.json") -> Arch:
    """The family of a config.json bound to it: the object every target asks."""
    name = architecture_of(config)
    return arch_class(name, f"{where} architectures")(config, name, where)
