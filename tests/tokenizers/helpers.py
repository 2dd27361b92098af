"""Shared by the tokenizer tests: tiny models behind a given tokenizer, their GGUF, llama.cpp reading it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from llmbuild.checkpoint import open_checkpoint
from llmbuild.synth import create_model
from llmbuild.targets import gguf as G
from llmbuild.targets.common import ArtifactMeta
from tests.conftest import CORPUS

# the smallest Llama that carries an embedding per token: the tokenizer is what these tests are about
TINY_SHAPE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  num_key_value_heads=1, max_position_embeddings=256)
# texts every test tokenizer is held to: spaces, tabs, line feeds, digits, accents, CJK, emoji
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Digits 1234567,  two  spaces,\ttab and\nnew lines.",
    "Unicode: café, naïve, 東京, 🚀!",
    " a leading space",
    "   three, then\n\n\ntwo line feeds",
    "I've been 'told he's there, 'RE you sure?",
]
# where the Makefile puts llama.cpp's vocab files and chat templates (from llama-cpp-python's sdist)
DATA_ENV = "LLMBUILD_TEST_DATA"


def tiny_model(out: Path, tokenizer_dir: Path, **shape) -> Path:
    """A random tiny Llama behind the tokenizer in `tokenizer_dir` (vocab_size: the tokenizer's)."""
    return create_model(out, "LlamaForCausalLM", {**TINY_SHAPE, **shape}, seed=0, tokenizer_dir=tokenizer_dir)


def export_gguf(model_dir: Path, out: Path, tokenizer: str = "match", name: str = "tiny") -> dict:
    out.mkdir(parents=True, exist_ok=True)
    return G.export(open_checkpoint(model_dir), G.Options(quant="f16", tokenizer=tokenizer), out,
                    ArtifactMeta(name=name), lambda *a: None)


def llama_vocab(path: Path):
    """llama.cpp's tokenizer of a GGUF (vocab only: no weights loaded)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)


def llama_chat_ids(llm, messages: list[dict]) -> list[int]:
    """A chat prompt as llama-cpp-python's create_chat_completion makes it: the GGUF's template rendered
    with the GGUF's BOS/EOS text, then llama.cpp's tokenizer with special tokens parsed."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    vocab = llm._model
    bos, eos = vocab.token_bos(), vocab.token_eos()
    fmt = Jinja2ChatFormatter(template=llm.metadata["tokenizer.chat_template"],
                              bos_token=vocab.token_get_text(bos) if bos >= 0 else "",
                              eos_token=vocab.token_get_text(eos) if eos >= 0 else "")
    prompt = fmt(messages=messages).prompt
    return llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)


def hf_chat_ids(tok, messages: list[dict]) -> list[int]:
    """The same prompt as llmbuild's evaluation makes it with transformers (finetune.data.golden_prompt_ids)."""
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return list(tok(text, add_special_tokens=False).input_ids)


def vocab_dir() -> Path:
    """llama.cpp's models/ folder (ggml-vocab-*.gguf with .inp/.out, templates/), or skip saying how to get it."""
    d = os.environ.get(DATA_ENV)
    models = Path(d) / "models" if d else None
    if not models or not (models / "ggml-vocab-llama-spm.gguf").is_file():
        pytest.skip(f"llama.cpp's vocab files are absent: `make test-data` fetches them and `make test` sets "
                    f"{DATA_ENV}")
    return models


def vocab_cases(models: Path, name: str) -> list[tuple[str, list[int]]]:
    """llama.cpp's test strings for a vocab file and the ids its test expects (tests/test-tokenizer-0)."""
    texts = (models / f"ggml-vocab-{name}.gguf.inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    texts[-1] = texts[-1].removesuffix("\n__ggml_vocab_test__\n").removesuffix("\n__ggml_vocab_test__")
    lines = (models / f"ggml-vocab-{name}.gguf.out").read_text(encoding="utf-8").split("\n")
    ids = [[int(x) for x in line.split()] for line in lines[: len(texts)]]
    assert len(texts) == len(ids) > 10, name
    return list(zip(texts, ids))


def train_bpe(out: Path, pre_tokenizer, *, normalizer=None, byte_level=True, vocab_size=400,
              special=("<|begin_of_text|>", "<|end_of_text|>"), bos_added=False, config: dict | None = None,
              byte_fallback=False, ignore_merges=False) -> Path:
    """A BPE tokenizer.json trained on the shipped corpus with the given pipeline, in a folder of its own."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(byte_fallback=byte_fallback, ignore_merges=ignore_merges))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    if byte_level:
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
        alphabet = []
    extra = [f"<0x{i:02X}>" for i in range(256)] if byte_fallback else []
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[*special, *extra], show_progress=False,
                                  initial_alphabet=alphabet)
    # lines without their line feed: with no pre-tokenizer a token could join "\n" to letters, which
    # no tokenizer of that kind has (llama.cpp's gemma4 form splits at line feeds)
    tok.train_from_iterator([line.rstrip("\n") for line in CORPUS.open(encoding="utf-8")], trainer)
    if bos_added:
        tok.post_processor = processors.TemplateProcessing(single=f"{special[0]} $A", special_tokens=[
            (special[0], tok.token_to_id(special[0]))])
    tok.save(str(out / "tokenizer.json"))
    if extra:  # byte tokens are vocab entries, not added tokens: the trainer can only add them as specials
        tj = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))
        tj["added_tokens"] = [t for t in tj["added_tokens"] if t["content"] not in extra]
        (out / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False), encoding="utf-8")
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": special[0], "eos_token": special[1],
           **(config or {})}
    (out / "tokenizer_config.json").write_text(json.dumps(cfg))
    return out


def train_wordpiece(root: Path) -> Path:
    """A BERT-style WordPiece tokenizer, which no llama.cpp decoder tokenizer runs."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    root.mkdir(parents=True)
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train([str(CORPUS)], trainers.WordPieceTrainer(vocab_size=300, special_tokens=["[UNK]", "[CLS]"],
                                                        show_progress=False))
    tok.save(str(root / "tokenizer.json"))
    (root / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"}))
    return root


def tokenizer_from_gguf(models: Path, file: str):
    """The transformers tokenizer transformers rebuilds from a GGUF file's metadata."""
    from transformers import AutoTokenizer, GemmaTokenizer

    if "gemma" in file:  # AutoTokenizer reads Gemma 4's config too, which transformers' GGUF reader cannot map
        return GemmaTokenizer.from_pretrained(models, gguf_file=file)
    return AutoTokenizer.from_pretrained(models, gguf_file=file)
