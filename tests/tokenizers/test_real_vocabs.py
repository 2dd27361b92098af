"""Real tokenizers through llmbuild's GGUF: llama.cpp's own vocab files and test strings (tests/test-tokenizer-0).

For each vocab file, the source tokenizer is rebuilt with transformers (`AutoTokenizer.from_pretrained(dir,
gguf_file=...)`, saved as a model's tokenizer folder), a tiny random Llama with that many embedding rows is put
behind it, llmbuild converts it to GGUF, and llama.cpp reading that GGUF must tokenize every test string as the
source does. Two sources per file where they differ:
- "transformers": the tokenizer exactly as transformers rebuilds it. It is not always the model's own: it
  spells Llama 2's "▁" rule as Metaspace "first", drops Llama 3's ignore_merges, gives DeepSeek GPT-2's
  regex, and Qwen3.5's loads back as a Qwen2Tokenizer with Qwen2's. llmbuild must map what it is, or refuse it.
- "original": the same vocab and merges with the pre-tokenizer the model's own tokenizer.json has (llmbuild's
  table of llama.cpp's pre-tokenizers, gguf_pretokenizers.py; Llama 2's Prepend normalizer). Its ids must
  also be the .out ids llama.cpp's test expects, which holds the table to llama.cpp's ground truth.
The small vocabs run by default; the 100k-260k ones are slow-marked. Rebuilt tokenizers are cached in
pytest's cache folder, per transformers version.
"""

from __future__ import annotations

import json
import shutil
import unicodedata
from pathlib import Path

import pytest

from llmbuild.errors import InvalidInput
from llmbuild.targets import gguf_pretokenizers as pretok
from tests.tokenizers.helpers import export_gguf, llama_vocab, tiny_model, vocab_cases, vocab_dir

pytestmark = pytest.mark.llamacpp

# vocab file -> (GGUF model/pre llmbuild writes for the transformers rebuild, the same for the original or
# None where the rebuild is the original)
EXPECTED = {
    "llama-spm": (None, ("llama", "default")),  # rebuilt: refused in match mode (Metaspace "first")
    "phi-3": (("llama", "default"), None),
    "gpt-2": (("gpt2", "gpt-2"), None),
    "deepseek-coder": (("gpt2", "gpt-2"), ("gpt2", "deepseek-coder")),
    "starcoder": (("gpt2", "gpt-2"), ("gpt2", "starcoder")),
    "llama-bpe": (("gpt2", "smaug-bpe"), ("gpt2", "llama-bpe")),
    "qwen2": (("gpt2", "qwen2"), None),
    # saved and loaded back, a qwen35 rebuild is a Qwen2Tokenizer, which rebuilds Qwen2's regex
    "qwen35": (("gpt2", "qwen2"), ("gpt2", "qwen35")),
    "deepseek-llm": (("gpt2", "gpt-2"), ("gpt2", "deepseek-llm")),
    "gemma-4": (("llama", "default"), None),
}
DEFAULT = {"llama-spm", "phi-3", "gpt-2", "deepseek-coder", "starcoder"}


def _params(names):
    return [n if n in DEFAULT else pytest.param(n, marks=pytest.mark.slow) for n in names]


def original(tok_dir: Path, name: str, out: Path) -> Path:
    """The tokenizer with the pre-tokenizer its model's tokenizer.json has."""
    shutil.copytree(tok_dir, out)
    tj = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))
    if name == "llama-spm":  # Llama 2's tokenizer.json: SentencePiece's rule as a normalizer
        tj["normalizer"] = {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}
        tj["pre_tokenizer"] = None
    else:
        pre = pretok.by_name(name)
        tj["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
            *({"type": "Split", "pattern": {"Regex": r}, "behavior": "Isolated", "invert": False} for r in pre.splits),
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
        tj["model"]["ignore_merges"] = pre.ignore_merges
        if name == "qwen35":  # Qwen3.5 dropped Qwen2's NFC normalizer: its .out ids keep decomposed accents
            tj["normalizer"] = None
    (out / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False), encoding="utf-8")
    cfg = json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"  # loaded as the file says, not rebuilt by a class
    (out / "tokenizer_config.json").write_text(json.dumps(cfg), encoding="utf-8")
    return out


def through_llamacpp(tok_dir: Path, tmp: Path, tokenizer: str = "match"):
    """(record, transformers tokenizer, llama.cpp vocab) for a tiny model behind the tokenizer."""
    from transformers import AutoTokenizer

    d = tiny_model(tmp / "m", tok_dir)
    rec = export_gguf(d, tmp / "out", tokenizer=tokenizer)
    return rec, AutoTokenizer.from_pretrained(d), llama_vocab(tmp / "out" / rec["file"])


def ids_of(llm, tok, text: str) -> tuple[list[int], list[int]]:
    """(transformers, llama.cpp) ids of a text as llama.cpp's tokenizer test takes them: no special tokens."""
    return tok.encode(text, add_special_tokens=False), llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)


@pytest.mark.parametrize("name", _params(EXPECTED))
def test_as_transformers_rebuilds_it(name, rebuilt, tmp_path):
    cases = vocab_cases(vocab_dir(), name)
    form, _ = EXPECTED[name]
    if form is None:  # Metaspace "first": llama.cpp's "▁" rule differs, refused unless asked for the nearest
        with pytest.raises(InvalidInput, match="prepend_scheme 'first'.*tokenizer: nearest"):
            through_llamacpp(rebuilt(name), tmp_path / "match")
        rec, tok, llm = through_llamacpp(rebuilt(name), tmp_path / "nearest", tokenizer="nearest")
        assert rec["tokenizer"]["differences"]
        for text, _ in cases:  # as the card's note says: only texts that start with a space differ
            hf, cpp = ids_of(llm, tok, text)
            assert (hf == cpp) is (not text.startswith(" ")), text
        return
    rec, tok, llm = through_llamacpp(rebuilt(name), tmp_path)
    assert (rec["tokenizer"]["model"], rec["tokenizer"]["pre"]) == form
    nfc = any("NFC" in d for d in rec["tokenizer"].get("differences", []))
    for text, expected in cases:
        hf, cpp = ids_of(llm, tok, text)
        if nfc and not unicodedata.is_normalized("NFC", text):
            continue  # the difference the card names: transformers composes accents first, llama.cpp does not
        assert cpp == hf, text
        if hf == expected:  # where transformers agrees with llama.cpp's test, so does llmbuild's GGUF
            assert cpp == expected


@pytest.mark.parametrize("name", _params([n for n, (_, own) in EXPECTED.items() if own]))
def test_with_the_models_own_pre_tokenizer(name, rebuilt, tmp_path):
    cases = vocab_cases(vocab_dir(), name)
    src = original(rebuilt(name), name, tmp_path / "tok")
    rec, tok, llm = through_llamacpp(src, tmp_path)
    assert (rec["tokenizer"]["model"], rec["tokenizer"]["pre"]) == EXPECTED[name][1]
    assert "differences" not in rec["tokenizer"]
    for text, expected in cases:
        hf, cpp = ids_of(llm, tok, text)
        assert hf == expected, text  # the table's spelling is the model's: transformers gives llama.cpp's ids
        assert cpp == expected, text


def test_pre_tokenizer_known_by_hash_alone(rebuilt, tmp_path):
    """GPT-2's regex spelled another way (an equivalent pattern llmbuild's table does not hold): identified as
    llama.cpp's converter does, by the hash of a fixed text's tokens."""
    src = tmp_path / "tok"
    shutil.copytree(rebuilt("gpt-2"), src)
    tj = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    tj["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "(?:" + pretok.GPT2_REGEX + ")"}, "behavior": "Isolated",
         "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    (src / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False), encoding="utf-8")
    rec, tok, llm = through_llamacpp(src, tmp_path / "b")
    assert rec["tokenizer"]["pre"] == "gpt-2"
    for text, expected in vocab_cases(vocab_dir(), "gpt-2"):
        assert ids_of(llm, tok, text) == (expected, expected), text
