"""The tokenizer half of the GGUF backend: map a checkpoint's tokenizer onto a llama.cpp vocab.

llama.cpp tokenizes with its own code, so a GGUF carries the vocab in one of the forms it implements:
"llama" (SentencePiece pieces, scores and types, from `tokenizer.model`) or "gpt2" (byte-level BPE
tokens and merges, from `tokenizer.json`, plus the name of a pre-tokenizer llama.cpp has built in).
Anything else fails at the start of the export with the tokenizer file named, instead of producing a
GGUF that loads and then tokenizes differently from the source model. The token tables follow
llama.cpp's `convert_hf_to_gguf.py`; special ids, add_bos/add_eos, merges and the chat template come
from gguf-py's `SpecialVocab`, the converter's own helper.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from llmbuild.errors import InvalidInput

# The split regexes of the byte-level BPE pre-tokenizers llama.cpp implements, as tokenizer.json
# spells them, mapped to the `tokenizer.ggml.pre` name that selects llama.cpp's copy. Keyed by the
# regex rather than the architecture, because one architecture ships several tokenizers (a model of
# the Llama architecture may carry Llama 3's, SmolLM's or a SentencePiece one) and a wrong name tokenizes
# silently differently. llama.cpp identifies them by hashing a test string's tokens instead
# (`get_vocab_base_pre`); the regex is the part of that which a file states.
GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
BPE_PRE = {
    GPT2_REGEX: "gpt-2",  # GPT-2's ByteLevel pre-tokenizer (use_regex): GPT-2 and small BPE models
    LLAMA3_REGEX: "llama-bpe",  # Llama 3, 3.1, 3.2, 3.3
    QWEN2_REGEX: "qwen2",  # Qwen2, Qwen2.5
}

# llama.cpp's token types (llama_token_type; gguf.TokenType has the same values)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


@dataclass
class Vocab:
    """A tokenizer as llama.cpp's loader reads it: `tokenizer.ggml.*` in the GGUF."""

    model: str  # tokenizer.ggml.model: "llama" (SentencePiece) or "gpt2" (byte-level BPE)
    pre: str  # tokenizer.ggml.pre: which pre-tokenizer llama.cpp runs
    tokens: list[bytes]
    types: list[int]
    scores: list[float] | None  # SentencePiece only
    source: Path  # the file the tokens came from

    def add_to(self, writer, model_dir: Path) -> None:
        import gguf

        writer.add_tokenizer_model(self.model)
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        if self.scores is not None:
            writer.add_token_scores(self.scores)
        writer.add_token_types(self.types)
        # SpecialVocab warns about pair templates and the like, which llama.cpp never uses; keep the
        # build's output to what matters
        log = logging.getLogger("gguf.vocab")
        level = log.level
        log.setLevel(logging.ERROR)
        try:
            special = gguf.SpecialVocab(model_dir, load_merges=self.model == "gpt2", n_vocab=len(self.tokens))
        finally:
            log.setLevel(level)
        if self.model == "gpt2" and not special.merges:
            raise InvalidInput(f"{self.source}: byte-level BPE tokenizer without merges")
        # Written even when false: llama.cpp's default depends on the pre-tokenizer (llama-bpe adds BOS),
        # and the GGUF must add exactly what the source tokenizer adds.
        special.add_special_token.setdefault("bos", False)
        special.add_special_token.setdefault("eos", False)
        special.add_to_gguf(writer, quiet=True)


def read_vocab(model_dir: Path, vocab_size: int) -> Vocab:
    """The llama.cpp vocab of a checkpoint folder, padded to the embedding's `vocab_size` rows."""
    spm, tj = model_dir / "tokenizer.model", model_dir / "tokenizer.json"
    if spm.is_file():
        return _sentencepiece(spm, model_dir, vocab_size)
    if tj.is_file():
        return _byte_level_bpe(tj, vocab_size)
    raise InvalidInput(
        f"{model_dir}: no tokenizer.model or tokenizer.json; a GGUF must carry its tokenizer for llama.cpp"
    )


def _sentencepiece(path: Path, model_dir: Path, vocab_size: int) -> Vocab:
    from sentencepiece import SentencePieceProcessor

    sp = SentencePieceProcessor()
    try:
        sp.LoadFromFile(str(path))
    except (OSError, RuntimeError) as e:
        raise InvalidInput(f"{path}: not a SentencePiece model ({str(e).splitlines()[0]})") from None
    n_sp = sp.vocab_size()
    _check_size(path, n_sp, vocab_size)
    # rows of the embedding past the tokenizer are padding, as the converter writes them
    tokens = [f"[PAD{i}]".encode() for i in range(vocab_size)]
    scores = [-10000.0] * vocab_size
    types = [UNUSED] * vocab_size
    for i in range(n_sp):
        tokens[i] = sp.IdToPiece(i).encode("utf-8")
        scores[i] = sp.GetScore(i)
        if sp.IsUnknown(i):
            types[i] = UNKNOWN
        elif sp.IsControl(i):
            types[i] = CONTROL
        elif sp.IsUnused(i):
            types[i] = UNUSED
        elif sp.IsByte(i):
            types[i] = BYTE
        else:
            types[i] = NORMAL
    for tid, content, special in _added_tokens(model_dir):
        if tid >= vocab_size:
            raise InvalidInput(f"{path.parent}: added token {content!r} has id {tid}, past vocab_size {vocab_size}")
        # SentencePiece's own <unk>/<s>/</s> keep their types: transformers 5 lists them as added
        # tokens, and turning <unk> into a control token would change what llama.cpp does with it.
        if tid < n_sp and types[tid] in (UNKNOWN, CONTROL) and tokens[tid] == content.encode("utf-8"):
            continue
        tokens[tid], types[tid] = _added_entry(content, special)
        scores[tid] = -1000.0
    return Vocab("llama", "default", tokens, types, scores, path)


def _byte_level_bpe(path: Path, vocab_size: int) -> Vocab:
    try:
        tj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidInput(f"{path}: not valid JSON ({e})") from None
    model = tj.get("model") or {}
    decoder = (tj.get("decoder") or {}).get("type")
    if model.get("type") != "BPE" or model.get("byte_fallback") or decoder != "ByteLevel":
        raise InvalidInput(
            f"{path}: a {model.get('type')} tokenizer with a {decoder} decoder and no tokenizer.model; "
            "the gguf backend maps SentencePiece tokenizer.model files and byte-level BPE tokenizer.json files"
        )
    regex = _split_regex(tj.get("pre_tokenizer"))
    if regex not in BPE_PRE:
        raise InvalidInput(
            f"{path}: pre-tokenizer {str(regex)[:60]!r} is not one llama.cpp implements under a known name "
            f"(known: {', '.join(BPE_PRE.values())})"
        )
    vocab: dict[str, int] = model.get("vocab") or {}
    added = {t["id"]: (t["content"], bool(t.get("special"))) for t in tj.get("added_tokens") or []}
    by_id = {i: s for s, i in vocab.items()}
    by_id.update({i: c for i, (c, _) in added.items()})
    _check_size(path, max(by_id, default=-1) + 1, vocab_size)
    tokens: list[bytes] = []
    types: list[int] = []
    for i in range(vocab_size):
        if i in added:
            token, toktype = _added_entry(*added[i])
        elif i in by_id:
            token, toktype = by_id[i].encode("utf-8"), NORMAL
        else:
            token, toktype = f"[PAD{i}]".encode(), UNUSED
        tokens.append(token)
        types.append(toktype)
    return Vocab("gpt2", BPE_PRE[regex], tokens, types, None, path)


def _split_regex(pre: dict | None) -> str | None:
    """The regex a byte-level pre-tokenizer splits with: a Split's pattern, or ByteLevel's built-in."""
    if not pre:
        return None
    parts = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    for p in parts:
        if p.get("type") == "Split" and "Regex" in (p.get("pattern") or {}):
            return p["pattern"]["Regex"]
        if p.get("type") == "ByteLevel" and p.get("use_regex", True):
            return GPT2_REGEX
    return None


def _added_tokens(model_dir: Path) -> list[tuple[int, str, bool]]:
    """(id, content, special) of the tokens added on top of the model's vocab.

    transformers 5 records them in tokenizer.json only; older checkpoints in tokenizer_config.json's
    added_tokens_decoder and the legacy added_tokens.json.
    """
    out: dict[int, tuple[str, bool]] = {}
    legacy = model_dir / "added_tokens.json"
    if legacy.is_file():
        out.update({int(i): (c, False) for c, i in _json(legacy).items()})
    cfg = model_dir / "tokenizer_config.json"
    if cfg.is_file():
        for i, t in (_json(cfg).get("added_tokens_decoder") or {}).items():
            out[int(i)] = (t["content"], bool(t.get("special")))
    tj = model_dir / "tokenizer.json"
    if tj.is_file():
        for t in _json(tj).get("added_tokens") or []:
            out[int(t["id"])] = (t["content"], bool(t.get("special")))
    return [(i, c, s) for i, (c, s) in sorted(out.items())]


def _added_entry(content: str, special: bool) -> tuple[bytes, int]:
    if special or _looks_special(content):
        return content.encode("utf-8"), CONTROL
    # llama.cpp matches user-defined tokens against normalized text, where SentencePiece's "▁" is a space
    return content.replace("\u2581", " ").encode("utf-8"), USER_DEFINED


def _looks_special(content: str) -> bool:
    """Added tokens some models forget to mark special (the converter's `does_token_look_special`)."""
    return (
        content in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
        or (content.startswith("<|") and content.endswith("|>"))
        or (content.startswith("<\uff5c") and content.endswith("\uff5c>"))
        or (content.startswith("<unused") and content.endswith(">"))
    )


def _check_size(path: Path, n_tokens: int, vocab_size: int) -> None:
    if n_tokens > vocab_size:
        raise InvalidInput(
            f"{path}: {n_tokens} tokens but config.json vocab_size is {vocab_size}; llama.cpp needs one "
            "embedding row per token"
        )


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidInput(f"{path}: not valid JSON ({e})") from None
