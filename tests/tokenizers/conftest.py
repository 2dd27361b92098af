"""Fixtures of the tokenizer tests: llama.cpp's vocab files rebuilt as transformers tokenizers, cached."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.tokenizers.helpers import vocab_dir


@pytest.fixture(scope="session")
def rebuilt(request):
    """vocab name -> a tokenizer folder as transformers rebuilds it from llama.cpp's vocab file (cached)."""
    import transformers

    models = vocab_dir()
    root = Path(request.config.cache.mkdir(f"llmbuild-ggml-vocab-{transformers.__version__}"))

    def get(name: str) -> Path:
        src = models / f"ggml-vocab-{name}.gguf"
        d = root / f"{name}-{src.stat().st_size}"
        if not (d / "tokenizer_config.json").is_file():
            tok = _from_gguf(models, src.name)
            tmp = root / f".{d.name}.part"
            shutil.rmtree(tmp, ignore_errors=True)
            tok.save_pretrained(tmp)
            shutil.rmtree(d, ignore_errors=True)
            tmp.rename(d)
        return d

    return get


def _from_gguf(models: Path, file: str):
    from transformers import AutoTokenizer, GemmaTokenizer

    if "gemma" in file:  # AutoTokenizer reads Gemma 4's config too, which transformers' GGUF reader cannot map
        return GemmaTokenizer.from_pretrained(models, gguf_file=file)
    return AutoTokenizer.from_pretrained(models, gguf_file=file)
