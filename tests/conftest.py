"""Shared fixtures: tiny models made here (random init + a tokenizer trained on the shipped corpus)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see llmbuild/cli.py: spinning threads on shared cores

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "data" / "tokenizer_corpus.txt"

TINY = {
    "LlamaForCausalLM": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                             intermediate_size=128, max_position_embeddings=256),
    "MistralForCausalLM": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                               intermediate_size=128, max_position_embeddings=256),
    "Qwen2ForCausalLM": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                             intermediate_size=128, max_position_embeddings=256, tie_word_embeddings=True),
}


def make_tiny(out: Path, arch: str = "LlamaForCausalLM", seed: int = 0, **overrides) -> Path:
    from llmbuild.synth import create_model

    return create_model(out, arch, {**TINY[arch], **overrides}, seed=seed, train_text=CORPUS, vocab_size=512)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """One tiny checkpoint per supported architecture, made once per test session."""
    root = tmp_path_factory.mktemp("tiny")
    return {arch: make_tiny(root / arch, arch) for arch in TINY}
