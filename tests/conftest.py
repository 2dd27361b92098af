"""Shared fixtures: tiny models made here (random init + a tokenizer trained on the shipped corpus)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llmbuild import archs

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see llmbuild/cli.py: spinning threads on shared cores

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "data" / "tokenizer_corpus.txt"

def _registry():
    tiny = {name: dict(archs.arch_class(name).tiny) for name in archs.names()}
    variants = {v: spec for name in archs.names() for v, spec in archs.arch_class(name).variants.items()}
    return tiny, variants


# every supported architecture's tiny config, and every family's named variants (variant ->
# (architecture, overrides)): from the registry (llmbuild/archs), never restated here
TINY, VARIANTS = _registry()


def make_tiny(out: Path, arch: str = "LlamaForCausalLM", seed: int = 0, **overrides) -> Path:
    from llmbuild.synth import create_model

    return create_model(out, arch, {**TINY[arch], **overrides}, seed=seed, train_text=CORPUS, vocab_size=512,
                        norm_jitter=archs.arch_class(arch).tiny_norm_jitter)


def make_variant(out: Path, variant: str, seed: int = 0) -> Path:
    arch, overrides = VARIANTS[variant]
    return make_tiny(out, arch, seed, **overrides)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """One tiny checkpoint per supported architecture, made once per test session."""
    root = tmp_path_factory.mktemp("tiny")
    return {arch: make_tiny(root / arch, arch) for arch in TINY}


@pytest.fixture(scope="session")
def variant_models(tmp_path_factory):
    """variant -> its tiny checkpoint, made on first use, once per test session."""
    root = tmp_path_factory.mktemp("variants")
    made: dict[str, Path] = {}

    def get(variant: str) -> Path:
        if variant not in made:
            made[variant] = make_variant(root / variant, variant)
        return made[variant]

    return get
