"""Per-architecture facts as one table: what each Hugging Face architecture is and how targets map it.

One row per `architectures[0]` value of a `config.json`. The comment on each row names models that use
it. Targets read these facts instead of testing architecture names in their own code, so adding an
architecture of the Llama family is one row here (and a test row in tests/test_archs.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from llmbuild.errors import InvalidInput


@dataclass(frozen=True)
class Arch:
    hf_name: str
    # gguf `general.architecture` (llama.cpp's LLM_ARCH name)
    gguf_arch: str
    # llama.cpp's "llama" arch uses interleaved (GPT-J style) rotary pairs while HF uses rotate_half:
    # its converter permutes q_proj/k_proj rows for these; "qwen2" uses NeoX rope and needs no permute.
    gguf_permute_qk: bool
    # q/k/v projections carry a bias
    qkv_bias: bool
    # config keys that must be present in config.json for any target to map the model
    required_config: tuple[str, ...] = (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "vocab_size",
        "rms_norm_eps",
    )


ARCHS: dict[str, Arch] = {
    # Llama 2, Llama 3.x, TinyLlama, SmolLM, Yi, DeepSeek (v1 dense) ...
    "LlamaForCausalLM": Arch("LlamaForCausalLM", gguf_arch="llama", gguf_permute_qk=True, qkv_bias=False),
    # Mistral 7B v0.1-v0.3, Mistral NeMo (sliding window is irrelevant below its 4096-token window)
    "MistralForCausalLM": Arch("MistralForCausalLM", gguf_arch="llama", gguf_permute_qk=True, qkv_bias=False),
    # Qwen2, Qwen2.5 (q/k/v bias, tied embeddings on the small sizes)
    "Qwen2ForCausalLM": Arch("Qwen2ForCausalLM", gguf_arch="qwen2", gguf_permute_qk=False, qkv_bias=True),
}


def lookup(hf_name: str | None, where: str = "config.json architectures") -> Arch:
    """The row for an architecture, or exit 2 naming it and the supported ones."""
    if hf_name not in ARCHS:
        raise InvalidInput(
            f"{where}: unsupported architecture {hf_name!r}; supported: {', '.join(sorted(ARCHS))}"
        )
    return ARCHS[hf_name]


def architecture_of(config: dict, where: str = "config.json") -> str | None:
    names = config.get("architectures") or []
    return names[0] if names else None
