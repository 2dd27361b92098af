"""The source tokenizer read in a child interpreter without torch (what a process that never imported
torch does, source_tokenizer._load_without_torch) holds the same facts as transformers loading it in a
process with torch, and a GGUF export in a fresh interpreter imports no torch and writes the same bytes."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap

import pytest

from llmbuild.errors import InvalidInput
from llmbuild.targets import source_tokenizer as st
from tests.conftest import REPO
from tests.tokenizers.helpers import export_gguf
from tests.tokenizers.test_gguf_vocab import REFUSED

# tokenizer kinds beyond the tiny models': a normalizer, an added token marked normalized, a token added
# around every text, a Unigram model, an added token that strips
KINDS = ["nfkc", "normalized-added-token", "adds-another-token", "unigram", "rstrip"]


def _same_facts(d):
    a, b = st._load(d), st._load_without_torch(d)
    assert st.to_json(b) == st.to_json(a)
    return a


def test_tiny_models_tokenizers(tiny_models):
    seen = set()
    for arch, d in tiny_models.items():
        kind = json.dumps(st._load(d).pipeline.get("pre_tokenizer"), sort_keys=True)
        if kind in seen:
            continue  # the same tokenizer kind again: one child each is enough
        seen.add(kind)
        src = _same_facts(d)
        assert src.encoded[next(iter(st.encoded_texts()))], arch
    assert len(seen) >= 2  # SentencePiece-style and byte-level at least


@pytest.mark.parametrize("case", KINDS)
def test_tokenizer_kinds(tmp_path, case):
    make, _ = REFUSED[case]
    _same_facts(make(tmp_path / "tok"))


def test_invalid_tokenizer_is_the_same_one_line_error(tmp_path):
    d = REFUSED["nfkc"][0](tmp_path / "tok")
    (d / "tokenizer.json").write_text("{not json")
    with pytest.raises(InvalidInput) as in_process:
        st._load(d)
    with pytest.raises(InvalidInput) as child:
        st._load_without_torch(d)
    assert str(child.value) == str(in_process.value)
    assert str(d / "tokenizer.json") in str(child.value) and "\n" not in str(child.value)


def test_gguf_export_in_a_fresh_interpreter_imports_no_torch(tmp_path, tiny_models):
    d = tiny_models["LlamaForCausalLM"]
    export_gguf(d, tmp_path / "in-process")
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from tests.tokenizers.helpers import export_gguf
        export_gguf(Path({str(d)!r}), Path({str(tmp_path / "child")!r}))
        assert "torch" not in sys.modules, "torch imported"
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in
              (next((tmp_path / w).glob("*.gguf")) for w in ("in-process", "child"))]
    assert digest[0] == digest[1]


# llama.cpp's own vocab files as transformers rebuilds them (tests/tokenizers/conftest.py): SentencePiece
# (Llama 2, Phi-3) and byte-level BPE (GPT-2, DeepSeek Coder; Llama 3's 128k and Qwen2's 151k slow-marked)
@pytest.mark.parametrize("name", ["llama-spm", "phi-3", "gpt-2", "deepseek-coder",
                                  pytest.param("llama-bpe", marks=pytest.mark.slow),
                                  pytest.param("qwen2", marks=pytest.mark.slow)])
def test_real_vocabs(rebuilt, name):
    _same_facts(rebuilt(name))


@pytest.fixture
def memo(tmp_path, monkeypatch):
    """source_tokenizer's memo in tmp_path/memo; the in-process cache emptied before and after."""
    monkeypatch.setattr(st, "_MEMO", None)
    monkeypatch.setattr(st, "_MEMO_WRITE", False)
    st._CACHE.clear()
    yield tmp_path / "memo"
    st._CACHE.clear()


def test_facts_are_remembered_by_content(tmp_path, tiny_models, memo, monkeypatch):
    import shutil

    d = shutil.copytree(tiny_models["LlamaForCausalLM"], tmp_path / "m")
    st.remember_in(memo)
    first = st.load(d)
    assert len(list(memo.glob("*.json"))) == 1
    loads = []
    monkeypatch.setattr(st, "_load", lambda m: loads.append(m) or first)
    monkeypatch.setattr(st, "_load_without_torch", lambda m: loads.append(m) or first)
    st._CACHE.clear()
    copy = shutil.copytree(d, tmp_path / "copy")  # the same files elsewhere: remembered, with its own paths
    again = st.load(copy)
    assert not loads and again.dir == copy and again.file == copy / first.file.name
    assert {**st.to_json(again), "dir": "", "file": ""} == {**st.to_json(first), "dir": "", "file": ""}
    cfg = json.loads((copy / "tokenizer_config.json").read_text())
    (copy / "tokenizer_config.json").write_text(json.dumps({**cfg, "model_max_length": 77}))
    st.load(copy)  # a changed file: loaded again
    assert loads == [copy]


def test_a_read_only_memo_is_read_not_written(tiny_models, memo):
    st.remember_in(memo, write=False)
    st.load(tiny_models["LlamaForCausalLM"])
    assert not memo.exists()


def test_a_build_remembers_in_its_cache(tmp_path, tiny_models, memo, monkeypatch):
    from llmbuild import cli
    from llmbuild.config import typed_config
    from llmbuild.engine import _open_cache
    from tests.helpers import corpus_override

    monkeypatch.setenv("LLMBUILD_RECIPES", str(REPO / "tests" / "recipes"))
    monkeypatch.chdir(REPO)  # the tiny recipe names its data relative to the checkout
    bc = typed_config(cli.compose(cli.find_recipe("tiny"), ["recipe=tiny", corpus_override(),
                                                            f"build.cache_dir={tmp_path / 'cache'}"]))
    _open_cache(bc, readonly=False)
    st.load(tiny_models["LlamaForCausalLM"])
    assert list((tmp_path / "cache" / "tokenizers").glob("*.json"))
