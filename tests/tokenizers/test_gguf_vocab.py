"""The tokenizer in llmbuild's GGUF, read by llama.cpp, against the source tokenizer in transformers.

Every form the gguf backend writes (SentencePiece from tokenizer.model, SentencePiece-style BPE from
tokenizer.json alone, Gemma's prefix-less SentencePiece, Gemma 4's BPE form, byte-level BPE with each kind of
pre-tokenizer), on tokenizers trained here from the shipped corpus, and every refusal with its one line.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from llmbuild.errors import InvalidInput
from llmbuild.finetune.data import DEFAULT_CHAT_TEMPLATE
from llmbuild.targets import gguf as G
from llmbuild.targets import gguf_pretokenizers as pretok
from llmbuild.targets.gguf_vocab import read_vocab
from tests.conftest import CORPUS, make_tiny
from tests.tokenizers.helpers import (
    TEXTS,
    export_gguf,
    hf_chat_ids,
    llama_chat_ids,
    llama_vocab,
    tiny_model,
    train_bpe,
    train_wordpiece,
)

GOLDEN = [json.loads(line)["prompt"] for line in (CORPUS.parents[0] / "finetune" / "golden.jsonl").open()][:8]


def kv(path: Path) -> dict:
    import gguf

    return {k: f.contents() for k, f in gguf.GGUFReader(path).fields.items()}


def hf(model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def assert_same_ids(llm, tok, texts=TEXTS) -> None:
    """llama.cpp gives transformers' ids: with special tokens added and parsed (a user's prompt), and bare."""
    for t in texts:
        assert llm.tokenize(t.encode(), add_bos=True, special=True) == tok(t).input_ids, t
        assert llm.tokenize(t.encode(), add_bos=False, special=True) == tok(t, add_special_tokens=False).input_ids, t


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory):
    """The tiny test model (a SentencePiece tokenizer.model trained like the demo's) with a chat template."""
    d = make_tiny(tmp_path_factory.mktemp("spm") / "m")
    (d / "chat_template.jinja").write_text(DEFAULT_CHAT_TEMPLATE)
    return d


@pytest.mark.llamacpp
def test_sentencepiece_model(spm_model, tmp_path):
    rec = export_gguf(spm_model, tmp_path)
    meta = kv(tmp_path / rec["file"])
    assert rec["tokenizer"] == {"model": "llama", "pre": "default", "tokens": 512, "file": "tokenizer.model",
                                "add_bos": True, "add_eos": False, "chat_template": True, "add_space_prefix": True}
    assert meta["tokenizer.ggml.add_space_prefix"] is True and meta["tokenizer.chat_template"] == DEFAULT_CHAT_TEMPLATE
    assert meta["tokenizer.ggml.token_type"][:4] == [2, 3, 3, 6]  # unknown, control, control, byte
    tok, llm = hf(spm_model), llama_vocab(tmp_path / rec["file"])
    # leading spaces, and text right after a special token: SentencePiece's "▁" rule on both sides
    assert_same_ids(llm, tok, [*TEXTS, "<s>User: hi</s>\nAssistant: yes</s>", "</s> after"])
    for q in GOLDEN:  # the issue-15 bug: "<s>User" gave ▁U in llama.cpp and U in transformers
        msgs = [{"role": "user", "content": q}]
        assert llama_chat_ids(llm, msgs) == hf_chat_ids(tok, msgs), q


@pytest.mark.llamacpp
def test_sentencepiece_tokenizer_json_alone(spm_model, tmp_path):
    """The converter's LlamaHfVocab case, which exited 2 before: scores from the merge ranks."""
    d = tmp_path / "m"
    shutil.copytree(spm_model, d)
    (d / "tokenizer.model").unlink()
    rec = export_gguf(d, tmp_path / "out")
    assert rec["tokenizer"]["file"] == "tokenizer.json" and rec["tokenizer"]["model"] == "llama"
    llm = llama_vocab(tmp_path / "out" / rec["file"])
    assert_same_ids(llm, hf(d), [*TEXTS, "<s>User: hi</s>"])
    scores = kv(tmp_path / "out" / rec["file"])["tokenizer.ggml.scores"]
    assert scores[1] == -1000.0 and max(scores[259:]) <= 0.0  # specials; merged pieces rank by merge order


def added_tokens_tokenizer(root: Path, normalized: bool) -> Path:
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    from llmbuild.synth import train_tokenizer

    train_tokenizer(CORPUS, 512, root)
    tok = AutoTokenizer.from_pretrained(root)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_end|>"]})
    tok.add_tokens([AddedToken("<tool>", normalized=normalized)])
    tok.save_pretrained(root)
    return root


@pytest.mark.llamacpp
def test_added_tokens_control_and_user_defined(tmp_path):
    """A special added token becomes CONTROL (parsed from text only when asked), a plain one USER_DEFINED
    (always matched whole, as transformers does)."""
    src = added_tokens_tokenizer(tmp_path / "tok", normalized=False)
    d = tiny_model(tmp_path / "m", src)
    rec = export_gguf(d, tmp_path / "out")
    meta = kv(tmp_path / "out" / rec["file"])
    ids = {t: i for i, t in enumerate(meta["tokenizer.ggml.tokens"])}
    assert meta["tokenizer.ggml.token_type"][ids["<|im_end|>"]] == 3
    assert meta["tokenizer.ggml.token_type"][ids["<tool>"]] == 4
    llm = llama_vocab(tmp_path / "out" / rec["file"])
    assert_same_ids(llm, hf(d), ["call <tool> now<|im_end|>", "<tool><tool>x"])
    assert ids["<tool>"] in llm.tokenize(b"a <tool> b", add_bos=False, special=False)


def bpe_styles():
    from tokenizers import Regex, normalizers
    from tokenizers import pre_tokenizers as pt

    def split(name):  # the regexes of llama.cpp's pre-tokenizer, as a tokenizer.json spells them
        return [pt.Split(Regex(r), "isolated") for r in pretok.by_name(name).splits]

    def bytes_only():
        return pt.ByteLevel(add_prefix_space=False, use_regex=False)

    return {
        "gpt-2": dict(pre_tokenizer=pt.ByteLevel(add_prefix_space=False)),
        "llama-bpe": dict(pre_tokenizer=pt.Sequence([*split("llama-bpe"), bytes_only()]), ignore_merges=True,
                          bos_added=True),
        "smaug-bpe": dict(pre_tokenizer=pt.Sequence([*split("llama-bpe"), bytes_only()])),
        "qwen2": dict(pre_tokenizer=pt.Sequence([*split("qwen2"), bytes_only()]), normalizer=normalizers.NFC()),
        "starcoder": dict(pre_tokenizer=pt.Sequence([pt.Digits(individual_digits=True),
                                                     pt.ByteLevel(add_prefix_space=False)])),
        "deepseek-coder": dict(pre_tokenizer=pt.Sequence([*split("deepseek-coder")[:-1],
                                                          pt.Digits(individual_digits=True), bytes_only()])),
        "deepseek-llm": dict(pre_tokenizer=pt.Sequence([*split("deepseek-llm")[:-1],
                                                        pt.Digits(individual_digits=False), bytes_only()])),
    }


@pytest.mark.llamacpp
@pytest.mark.parametrize("style", list(bpe_styles()))
def test_byte_level_bpe_pre_tokenizers(tmp_path, style):
    """Each pre-tokenizer is told by its structure, written under llama.cpp's name, and tokenizes as the source."""
    spec = bpe_styles()[style]
    d = tiny_model(tmp_path / "m", train_bpe(tmp_path / "tok", config={"chat_template": DEFAULT_CHAT_TEMPLATE},
                                             **spec))
    rec = export_gguf(d, tmp_path / "out")
    meta = kv(tmp_path / "out" / rec["file"])
    assert (meta["tokenizer.ggml.model"], meta["tokenizer.ggml.pre"]) == ("gpt2", style)
    assert meta["tokenizer.ggml.merges"] and meta["tokenizer.ggml.token_type"][:2] == [3, 3]
    assert meta["tokenizer.ggml.add_bos_token"] is bool(spec.get("bos_added"))
    assert meta["tokenizer.chat_template"] == DEFAULT_CHAT_TEMPLATE
    assert ("differences" in rec["tokenizer"]) == (style == "qwen2")  # NFC: named in the card, not refused
    llm = llama_vocab(tmp_path / "out" / rec["file"])
    assert_same_ids(llm, hf(d), [*TEXTS, "<|begin_of_text|>x<|end_of_text|>"])


def metaspace_model(root: Path, scheme: str, chat: bool) -> Path:
    """The tiny SentencePiece vocab with transformers' Metaspace rule instead of SentencePiece's own."""
    d = make_tiny(root / "m")
    (d / "tokenizer.model").unlink()
    tj = json.loads((d / "tokenizer.json").read_text())
    tj["normalizer"] = None
    tj["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": scheme, "split": False}
    (d / "tokenizer.json").write_text(json.dumps(tj))
    if chat:
        (d / "chat_template.jinja").write_text(DEFAULT_CHAT_TEMPLATE)
    return d


@pytest.mark.parametrize("scheme", ["first", "always"])
def test_metaspace_prefix_is_refused_at_plan_time(tmp_path, scheme):
    d = metaspace_model(tmp_path, scheme, chat=True)
    with pytest.raises(InvalidInput, match=rf"^targets\.g: .*tokenizer\.json: Metaspace prepend_scheme '{scheme}'"
                                           r".*set the target's tokenizer: nearest"):
        G.check(G.Options(), json.loads((d / "config.json").read_text()), "targets.g", d)
    (tmp_path / "out").mkdir()
    with pytest.raises(InvalidInput, match="prepend_scheme"):
        export_gguf(d, tmp_path / "out")
    assert not list((tmp_path / "out").iterdir())  # refused before writing anything


@pytest.mark.llamacpp
@pytest.mark.parametrize("scheme, chat", [("first", True), ("first", False), ("always", True)])
def test_metaspace_prefix_nearest(tmp_path, scheme, chat):
    """`tokenizer: nearest` builds llama.cpp's closest rule, and the card says where the ids differ."""
    d = metaspace_model(tmp_path, scheme, chat)
    rec = export_gguf(d, tmp_path / "out", tokenizer="nearest")
    prefix = not (scheme == "first" and chat)
    assert rec["tokenizer"]["add_space_prefix"] is prefix
    assert any(f"prepend_scheme '{scheme}'" in n for n in G.BACKEND.notes(rec))
    tok, llm = hf(d), llama_vocab(tmp_path / "out" / rec["file"])
    plain = [t for t in TEXTS if not t.startswith(" ")]
    if prefix:  # texts without special tokens that do not start with a space: the same ids
        for t in plain:
            assert llm.tokenize(t.encode(), add_bos=True, special=True) == tok(t).input_ids, t
    else:  # what a chat template renders: the same ids; the first word of a bare text: not
        for q in GOLDEN:
            msgs = [{"role": "user", "content": q}]
            assert llama_chat_ids(llm, msgs) == hf_chat_ids(tok, msgs), q
        assert llm.tokenize(plain[0].encode(), add_bos=True, special=True) != tok(plain[0]).input_ids
    t = " a leading space"  # as the note says: llama.cpp's rule adds a second "▁", Metaspace does not
    assert (llm.tokenize(t.encode(), add_bos=True, special=True) == tok(t).input_ids) is (not prefix)


@pytest.mark.llamacpp
def test_metaspace_never_is_exact(tmp_path):
    d = metaspace_model(tmp_path, "never", chat=False)
    rec = export_gguf(d, tmp_path / "out")
    assert rec["tokenizer"]["add_space_prefix"] is False and "differences" not in rec["tokenizer"]
    assert_same_ids(llama_vocab(tmp_path / "out" / rec["file"]), hf(d))


@pytest.mark.llamacpp
def test_gemma_sentencepiece_without_prefix(tmp_path):
    """Gemma's form: a tokenizer.model trained without the dummy prefix, spaces replaced by the normalizer
    (and GemmaTokenizer's Split(" "), which then splits nothing): add_space_prefix false."""
    import sentencepiece as spm
    from tokenizers import normalizers

    from llmbuild.synth import SPECIAL, write_tokenizer_config

    src = tmp_path / "tok"
    src.mkdir()
    spm.SentencePieceTrainer.train(input=str(CORPUS), model_prefix=str(src / "tokenizer"), vocab_size=512,
                                   model_type="bpe", byte_fallback=True, character_coverage=1.0, unk_id=0, bos_id=1,
                                   eos_id=2, pad_id=-1, num_threads=1, minloglevel=2, add_dummy_prefix=False,
                                   remove_extra_whitespaces=False, split_digits=True)
    write_tokenizer_config(src)
    tj = json.loads((src / "tokenizer.json").read_text())
    tj["normalizer"] = json.loads(normalizers.Replace(" ", "\u2581").__getstate__())
    tj["pre_tokenizer"] = {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious",
                           "invert": False}
    (src / "tokenizer.json").write_text(json.dumps(tj))
    assert SPECIAL["bos_token"] == "<s>"
    d = tiny_model(tmp_path / "m", src)
    rec = export_gguf(d, tmp_path / "out")
    assert rec["tokenizer"]["file"] == "tokenizer.model" and rec["tokenizer"]["add_space_prefix"] is False
    assert_same_ids(llama_vocab(tmp_path / "out" / rec["file"]), hf(d), [*TEXTS, "<s>no prefix</s>"])


def sentencepiece_style_bpe(root: Path, bos: bool) -> Path:
    """A SentencePiece-style BPE trained by tokenizers (byte fallback, "▁" for spaces, no prefix): its merges
    are the training order, not every pair of tokens, as Gemma 4's are."""
    from tokenizers import normalizers

    return train_bpe(root, None, normalizer=normalizers.Replace(" ", "\u2581"), byte_level=False,
                     byte_fallback=True, special=("<bos>", "<eos>"), bos_added=bos, vocab_size=700)


@pytest.mark.llamacpp
def test_gemma4_form_for_merges_the_scores_cannot_follow(tmp_path):
    d = tiny_model(tmp_path / "m", sentencepiece_style_bpe(tmp_path / "tok", bos=True))
    rec = export_gguf(d, tmp_path / "out")
    meta = kv(tmp_path / "out" / rec["file"])
    assert meta["tokenizer.ggml.model"] == "gemma4" and meta["tokenizer.ggml.merges"]
    assert_same_ids(llama_vocab(tmp_path / "out" / rec["file"]), hf(d), [*TEXTS, "<bos>x<eos>"])


# --- refusals, at plan time, naming the file -----------------------------------------------------------------
def _unigram(root: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    root.mkdir(parents=True)
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train([str(CORPUS)], trainers.UnigramTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"],
                                                      unk_token="<unk>", show_progress=False))
    tok.save(str(root / "tokenizer.json"))
    (root / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                                            "bos_token": "<s>", "eos_token": "</s>"}))
    return root


def _bpe(**kw):
    def make(root: Path) -> Path:
        from tokenizers import pre_tokenizers as pt

        return train_bpe(root, kw.pop("pre", pt.ByteLevel(add_prefix_space=False)), **kw)

    return make


def _edit_added(make, **flags):
    def edit(root: Path) -> Path:
        d = make(root)
        tj = json.loads((d / "tokenizer.json").read_text())
        tj["added_tokens"][-1].update(flags)
        (d / "tokenizer.json").write_text(json.dumps(tj))
        return d

    return edit


def _other_added(root: Path) -> Path:
    from tokenizers import Tokenizer, processors

    d = _bpe(special=("<s>", "</s>", "<sep>"))(root)
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A <sep>", special_tokens=[
        ("<s>", tok.token_to_id("<s>")), ("<sep>", tok.token_to_id("<sep>"))])
    tok.save(str(d / "tokenizer.json"))
    return d


def _regex(r):
    def make(root: Path) -> Path:
        from tokenizers import Regex
        from tokenizers import pre_tokenizers as pt

        return train_bpe(root, pt.Sequence([pt.Split(Regex(r), "isolated"),
                                            pt.ByteLevel(add_prefix_space=False, use_regex=False)]))

    return make


def _prefixed(root: Path) -> Path:
    from tokenizers import pre_tokenizers as pt

    return train_bpe(root, pt.ByteLevel(add_prefix_space=True))


def _nfkc(root: Path) -> Path:
    from tokenizers import normalizers
    from tokenizers import pre_tokenizers as pt

    return train_bpe(root, pt.ByteLevel(add_prefix_space=False), normalizer=normalizers.NFKC())


REFUSED = {
    "unigram": (_unigram, "a Unigram"),
    "wordpiece": (train_wordpiece, "a WordPiece"),
    "unknown-regex": (_regex(r"\w+|\W"), r"pre-tokenizer '\\\\w\+\|\\\\W' is not one llama.cpp implements"),
    "byte-level-prefix-space": (_prefixed, "is not one llama.cpp implements"),
    "nfkc": (_nfkc, "normalizer NFKC"),
    "adds-another-token": (_other_added, r"adds \['<sep>'\] around every text"),
    "single-word": (_edit_added(_bpe(), single_word=True), "matches single words only"),
    "rstrip": (_edit_added(_bpe(special=("<s>", "</s>", "<|user|>")), rstrip=True),
               "'<\\|user\\|>' .* has rstrip in the source and no stripping in llama.cpp"),
    "normalized-added-token": (lambda root: added_tokens_tokenizer(root, normalized=True),
                               "'<tool>' .* is marked normalized, so transformers matches it as '▁<tool>'"),
    "gemma4-without-bos": (lambda root: sentencepiece_style_bpe(root, bos=False), "always adds BOS.* this tokenizer does not add BOS"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_unmappable_tokenizer_refused_at_plan_time(tmp_path, case):
    make, message = REFUSED[case]
    d = tiny_model(tmp_path / "m", make(tmp_path / "tok"))
    cfg = json.loads((d / "config.json").read_text())
    with pytest.raises(InvalidInput, match=rf"^targets\.g: {d}/tokenizer\.json: .*{message}") as e:
        G.check(G.Options(), cfg, "targets.g", d)
    assert "\n" not in str(e.value)
    (tmp_path / "out").mkdir()
    with pytest.raises(InvalidInput):
        export_gguf(d, tmp_path / "out")
    assert not list((tmp_path / "out").iterdir())


def test_more_tokens_than_embedding_rows(spm_model):
    with pytest.raises(InvalidInput, match=r"tokenizer.json: 512 tokens but config.json vocab_size is 500"):
        read_vocab(spm_model, 500)


def phi3_style(root: Path) -> Path:
    """Phi-3's added tokens: rstrip on every special token but <unk>, <s> and <|endoftext|>."""
    d = _bpe(special=("<s>", "</s>", "<unk>", "<|endoftext|>", "<|user|>", "<|end|>"))(root)
    tj = json.loads((d / "tokenizer.json").read_text())
    for t in tj["added_tokens"]:
        t["rstrip"] = t["content"] in ("</s>", "<|user|>", "<|end|>")
    (d / "tokenizer.json").write_text(json.dumps(tj))
    return d


@pytest.mark.llamacpp
def test_phi3_stripping_follows_the_gguf_name(tmp_path):
    """llama.cpp strips spaces after Phi-3's special tokens only in a GGUF named like Phi-3: the plan cannot
    know the name, the export can, and refuses another name with the fix."""
    d = tiny_model(tmp_path / "m", phi3_style(tmp_path / "tok"))
    G.check(G.Options(), json.loads((d / "config.json").read_text()), "targets.g", d)  # deferred to export
    (tmp_path / "a").mkdir()
    with pytest.raises(InvalidInput, match=r"has rstrip in the source and no stripping in llama.cpp.*name contains 'phi-3' or 'phi3'"):
        export_gguf(d, tmp_path / "a", name="tiny")
    rec = export_gguf(d, tmp_path / "b", name="tiny-phi-3-test")
    assert rec["tokenizer"]["model"] == "gpt2"
    llm = llama_vocab(tmp_path / "b" / rec["file"])
    assert_same_ids(llm, hf(d), ["<|user|>\n  hi<|end|>\n", "<s> x</s>  y", "<|endoftext|> z"])
    (tmp_path / "c").mkdir()
    with pytest.raises(InvalidInput, match=r"Phi-3 token rules, which need the tokens .* has no '<unk>'"):
        export_gguf(tiny_model(tmp_path / "m2", _bpe(special=("<s>", "</s>"))(tmp_path / "tok2")), tmp_path / "c",
                    name="phi3-mini")
