"""Fixtures of the tokenizer tests: llama.cpp's vocab files rebuilt as transformers tokenizers, cached."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.tokenizers.helpers import tokenizer_from_gguf, vocab_dir


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
            tok = tokenizer_from_gguf(models, src.name)
            tmp = root / f".{d.name}.part"
            shutil.rmtree(tmp, ignore_errors=True)
            tok.save_pretrained(tmp)
            shutil.rmtree(d, ignore_errors=True)
            tmp.rename(d)
        return d

    return get
