"""The tokenizer half of the GGUF backend: the source tokenizer as a llama.cpp vocab, or a refusal.

llama.cpp tokenizes with its own code, steered by the `tokenizer.ggml.*` keys, so a GGUF must carry
the tokenizer in a form llama.cpp runs exactly as transformers runs the source (source_tokenizer.py);
what it cannot run is refused at plan time with the file and the reason, instead of a GGUF that
loads and then feeds the model other ids. The forms, after llama.cpp's converter
(https://github.com/ggml-org/llama.cpp, convert_hf_to_gguf.py / conversion/base.py) and its loader
(src/llama-vocab.cpp):
- "llama" (SentencePiece): pieces, scores, types. From tokenizer.model (`_set_vocab_sentencepiece`), or
  from a SentencePiece-style BPE tokenizer.json alone (byte fallback, "▁" for spaces; the converter's
  `LlamaHfVocab` path). llama.cpp merges the adjacent pair whose result scores highest, so the scores
  written rank tokens by the merge that makes them; that equals transformers' BPE only when every
  pair of vocab tokens that concatenates to a vocab token is a merge, which is checked.
  `add_space_prefix` says whether llama.cpp puts "▁" before the text and after every special token
  (SentencePiece's own rule, written in tokenizer.json as a Prepend("▁") normalizer); transformers'
  Metaspace prepend_scheme "first" (after special tokens: no "▁") and "always" (no second "▁" before a
  leading space) have no llama.cpp equivalent: refused unless the target says `tokenizer: nearest`.
- "gemma4": real BPE merges over raw UTF-8 with "▁" for spaces (Gemma 4's), for a SentencePiece-style
  tokenizer whose merges the score rule cannot follow; llama.cpp then splits at line feeds and always
  adds BOS, so only a tokenizer without a prefix that adds BOS can take it.
- "gpt2" (byte-level BPE): tokens, merges and the name of llama.cpp's pre-tokenizer
  (gguf_pretokenizers.py), identified from the pre-tokenizer's regexes or the converter's hash.
Added tokens become CONTROL (special) or USER_DEFINED tokens (both matched whole in the text, as
transformers does); add_bos/add_eos are written as the source behaves, never left to llama.cpp's
per-pre-tokenizer defaults; the chat template travels as tokenizer.chat_template.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from llmbuild.errors import InvalidInput
from llmbuild.targets import gguf_pretokenizers as pretok
from llmbuild.targets.source_tokenizer import SourceTokenizer, load

# llama.cpp's token types (llama_token_type; gguf.TokenType has the same values)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
MODES = ("match", "nearest")
SPACE = "\u2581"  # SentencePiece's visible space
BYTE_TOKEN = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


@dataclass
class Vocab:
    """A tokenizer as llama.cpp's loader reads it: `tokenizer.ggml.*` in the GGUF."""

    model: str  # tokenizer.ggml.model: "llama" (SentencePiece), "gemma4" or "gpt2" (byte-level BPE)
    pre: str | None  # tokenizer.ggml.pre: which pre-tokenizer llama.cpp runs (None: gemma4, set by llama.cpp)
    tokens: list[bytes]
    types: list[int]
    scores: list[float] | None  # SentencePiece forms
    source: Path  # the file the tokens came from
    merges: list[str] = field(default_factory=list)  # BPE forms, "a b" in rank order
    special_ids: dict[str, int] = field(default_factory=dict)  # bos/eos/unk/pad
    add_bos: bool = False
    add_eos: bool = False
    add_space_prefix: bool | None = None  # SentencePiece form only
    chat_template: str | list | None = None
    # where llama.cpp tokenizes differently from the source, one sentence each (the card's notes)
    differences: list[str] = field(default_factory=list)
    # id -> (lstrip, rstrip) of the added tokens, as the source strips whitespace around them
    strips: dict[int, tuple[bool, bool]] = field(default_factory=dict)

    def add_to(self, writer) -> None:
        writer.add_tokenizer_model(self.model)
        if self.pre is not None:
            writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        if self.scores is not None:
            writer.add_token_scores(self.scores)
        writer.add_token_types(self.types)
        if self.merges:
            writer.add_token_merges(self.merges)
        for typ, tid in self.special_ids.items():
            getattr(writer, f"add_{typ}_token_id")(tid)
        # written even when false: llama.cpp's default depends on the form (SentencePiece and llama-bpe
        # add BOS), and the GGUF must add exactly what the source tokenizer adds
        writer.add_add_bos_token(self.add_bos)
        writer.add_add_eos_token(self.add_eos)
        if self.add_space_prefix is not None:
            writer.add_add_space_prefix(self.add_space_prefix)
        if self.chat_template is not None:
            writer.add_chat_template(self.chat_template)

    def record(self) -> dict:
        """What the export record (and the card) says about the tokenizer."""
        out = {"model": self.model, "pre": self.pre, "tokens": len(self.tokens), "file": self.source.name,
               "add_bos": self.add_bos, "add_eos": self.add_eos, "chat_template": self.chat_template is not None}
        if self.add_space_prefix is not None:
            out["add_space_prefix"] = self.add_space_prefix
        if self.differences:
            out["differences"] = list(self.differences)
        return out

    def check_name(self, name: str | None, mode: str = "match") -> None:
        """llama.cpp strips whitespace around some special tokens by the model's general.name (Phi-3's
        rstrip, src/llama-vocab.cpp); the GGUF's name must give the stripping the source does."""
        if name is not None and _phi3_named(name):
            have = {t.decode("utf-8", "replace") for t in self.tokens}
            missing = [t for t in PHI3_TOKENS if t not in have]
            if missing:  # llama.cpp looks them up unchecked and fails to load the file
                raise InvalidInput(f"{self.source}: a GGUF named {name!r} gets llama.cpp's Phi-3 token rules, which "
                                   f"need the tokens {', '.join(PHI3_TOKENS)}; this vocab has no {missing[0]!r}: name "
                                   "the model without 'phi-3'/'phi3' (build.model_name)")
        wrong = [tid for tid, flags in self.strips.items() if flags != _llamacpp_strip(self, tid, name or "")]
        if not wrong:
            return
        phi3 = all(self.strips[t] == _llamacpp_strip(self, t, "phi-3") for t in self.strips)
        if name is None and (phi3 or mode == "nearest"):
            return  # decided at export, where the GGUF's name is known
        tid = wrong[0]

        def says(flags):
            return "/".join(k for k, v in zip(("lstrip", "rstrip"), flags) if v) or "no stripping"

        hint = (" (llama.cpp strips them so only for a model whose name contains 'phi-3' or 'phi3': set "
                "build.model_name)") if phi3 else ""
        what = (f"added token {self.tokens[tid].decode('utf-8', 'replace')!r} ({len(wrong)} in all) has "
                f"{says(self.strips[tid])} in the source and {says(_llamacpp_strip(self, tid, name or ''))} in "
                f"llama.cpp for a GGUF named {name!r}{hint}")
        if mode == "nearest":
            self.differences.append(f"{what}: whitespace next to it tokenizes differently")
            return
        raise InvalidInput(f"{self.source}: {what}")


def read_vocab(model_dir: Path, vocab_size: int, mode: str = "match") -> Vocab:
    """The llama.cpp vocab of a checkpoint folder's tokenizer, padded to the embedding's `vocab_size`
    rows; `mode` "nearest" also takes the documented near misses (see the module docstring)."""
    src = load(Path(model_dir))
    model = src.model
    kind = model.get("type")
    if kind != "BPE":
        why = {"Unigram": "a Unigram (SentencePiece unigram) model: llama.cpp's SentencePiece tokenizer "
                          "merges pairs by score, which is not unigram segmentation",
               "WordPiece": "a WordPiece (BERT) model", "WordLevel": "a WordLevel model"}
        raise InvalidInput(f"{src.file}: {why.get(kind, f'a {kind} model')}; the gguf backend maps BPE "
                           "tokenizers (SentencePiece-style and byte-level)")
    for opt in ("dropout", "continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(opt):
            raise InvalidInput(f"{src.file}: BPE option {opt}={model[opt]!r}, which llama.cpp does not implement")
    if src.other_added:
        names = [src.token_names[i] for i in src.other_added]
        raise InvalidInput(f"{src.file}: the tokenizer adds {names} around every text, which llama.cpp cannot "
                           "(it adds only BOS and EOS)")
    if _byte_level(src.pipeline.get("pre_tokenizer")):
        vocab = _byte_level_bpe(src, vocab_size)
    else:
        vocab = _sentencepiece_style(src, vocab_size, mode)
    vocab.special_ids = {k: v for k, v in src.special_ids.items() if v < vocab_size}
    vocab.add_bos, vocab.add_eos = src.add_bos, src.add_eos
    vocab.chat_template = _chat_template(src)
    vocab.strips = {tid: (bool(t.get("lstrip")), bool(t.get("rstrip"))) for tid, t in src.added.items()
                    if tid < vocab_size}
    single = [t["content"] for t in src.added.values() if t.get("single_word")]
    if single:
        raise InvalidInput(f"{src.file}: added token {single[0]!r} matches single words only, which llama.cpp "
                           "does not implement")
    _check_normalized_added(src, vocab, mode)
    vocab.check_name(None, mode)
    return pad(vocab, vocab_size)


def _check_normalized_added(src: SourceTokenizer, vocab: Vocab, mode: str) -> None:
    """An added token marked normalized is matched, in transformers, as its normalized form in the
    normalized text ("<tool>" under Prepend("▁") matches only as "▁<tool>", i.e. after a space);
    llama.cpp matches the token's text in the raw text, so such a token cannot be carried over."""
    changed = [raw for raw, normalized in src.normalized.items() if normalized != raw]
    if not changed:
        return
    what = (f"added token {changed[0]!r} ({len(changed)} in all) is marked normalized, so transformers matches it "
            f"as {src.normalized[changed[0]]!r} in the normalized text; llama.cpp matches the raw text")
    if mode == "nearest":
        vocab.differences.append(what)
        return
    raise InvalidInput(f"{src.file}: {what} (added with normalized=False it would map)")


# --- SentencePiece-style BPE -----------------------------------------------------------------------------
def _sentencepiece_style(src: SourceTokenizer, vocab_size: int, mode: str) -> Vocab:
    model = src.model
    if not _spaces_become_marker(src.pipeline):
        raise InvalidInput(f"{src.file}: a BPE tokenizer that is neither byte-level nor SentencePiece-style "
                           f"(spaces are not replaced by {SPACE!r}); llama.cpp cannot run it")
    if model.get("ignore_merges"):
        raise InvalidInput(f"{src.file}: a SentencePiece-style BPE with ignore_merges, which llama.cpp's "
                           "SentencePiece tokenizer does not implement")
    by_id = src.vocab_by_id()
    _check_size(src.file, max(by_id, default=-1) + 1, vocab_size)
    if not model.get("byte_fallback") and any(BYTE_TOKEN.match(t) for t in by_id.values()):
        raise InvalidInput(f"{src.file}: <0xNN> byte tokens without byte_fallback; llama.cpp falls back to them")
    prefix, differences = _space_prefix(src, mode)
    base = {s: i for s, i in (model.get("vocab") or {}).items() if i not in src.added}
    merges = src.merges()
    _check_marker_split(src, base)
    spm = _spm_scores(src, by_id)
    if spm is not None:
        tokens, types, scores = spm
        source = src.dir / "tokenizer.model"
    else:
        tokens, types, scores = _hf_pieces(src, by_id, vocab_size, merges)
        source = src.file
    complete = _merges_complete(base, merges)
    if complete is not None:
        # no score order gives transformers' merges: Gemma 4's form runs the merges themselves, where
        # llama.cpp splits at line feeds, puts no "▁" before the text and always adds BOS
        a, b = complete
        why = ("puts a '▁' before the text" if prefix else "does not add BOS" if not src.add_bos else
               "has tokens joining a line feed to other text" if any("\n" in t and t.strip("\n") for t in base)
               else None)
        if why is None:
            return Vocab("gemma4", None, tokens, types, scores, source, _gguf_merges(src, merges, raw=True),
                         differences=differences)
        raise InvalidInput(f"{src.file}: {a!r} + {b!r} is a vocab token but not a merge, so llama.cpp's SentencePiece "
                           "tokenizer (which merges any such pair, by score) would merge where transformers does not; "
                           f"llama.cpp's gemma4 form, which runs the merges themselves, always adds BOS, splits at "
                           f"line feeds and adds no '▁' prefix, and this tokenizer {why}")
    return Vocab("llama", "default", tokens, types, scores, source, add_space_prefix=prefix,
                 differences=differences)


def _parts(node: dict | None, list_key: str) -> list[dict]:
    if not node:
        return []
    if node.get("type") == "Sequence":
        return [p for n in node.get(list_key) or [] for p in _parts(n, list_key)]
    return [node]


def _normalizers(pipeline: dict) -> list[dict]:
    return _parts(pipeline.get("normalizer"), "normalizers")


def _pre_tokenizers(pipeline: dict) -> list[dict]:
    return _parts(pipeline.get("pre_tokenizer"), "pretokenizers")


def _replaces_space(n: dict) -> bool:
    return n.get("type") == "Replace" and (n.get("pattern") or {}).get("String") == " " and n.get("content") == SPACE


def _spaces_become_marker(pipeline: dict) -> bool:
    return (any(_replaces_space(n) for n in _normalizers(pipeline))
            or any(p.get("type") == "Metaspace" and p.get("replacement") == SPACE for p in _pre_tokenizers(pipeline)))


def _space_prefix(src: SourceTokenizer, mode: str) -> tuple[bool, list[str]]:
    """add_space_prefix for llama.cpp, and the differences left where it cannot say what the source does.

    llama.cpp (add_space_prefix) prepends a space to the text and to every text after a special token,
    then turns spaces into "▁": SentencePiece's rule, which tokenizer.json spells Prepend("▁") +
    Replace(" ", "▁"). Metaspace prepends "▁" only when the text does not start with one already, and
    with prepend_scheme "first" only at the very start.
    """
    norms, pres = _normalizers(src.pipeline), _pre_tokenizers(src.pipeline)
    known_norm = [n for n in norms if _replaces_space(n) or (n.get("type") == "Prepend" and n.get("prepend") == SPACE)]
    if len(known_norm) != len(norms):
        other = next(n for n in norms if n not in known_norm)
        raise InvalidInput(f"{src.file}: normalizer {other.get('type')} ({_short(other)}), which llama.cpp's "
                           "SentencePiece tokenizer does not run")
    meta = [p for p in pres if p.get("type") == "Metaspace"]
    others = [p for p in pres if p.get("type") != "Metaspace" and not _noop_split(p, norms)]
    if others:
        raise InvalidInput(f"{src.file}: pre-tokenizer {others[0].get('type')} ({_short(others[0])}), which "
                           "llama.cpp's SentencePiece tokenizer does not run")
    prepend = any(n.get("type") == "Prepend" for n in norms)
    scheme = "never"
    if meta:
        m = meta[0]
        scheme = m.get("prepend_scheme") or ("always" if m.get("add_prefix_space", True) else "never")
    if prepend and scheme != "never":
        raise InvalidInput(f"{src.file}: both a Prepend normalizer and a Metaspace prefix; llama.cpp adds one '▁'")
    if prepend:
        return True, []
    if scheme == "never":
        return False, []
    if scheme == "always":
        what = ("Metaspace prepend_scheme 'always' adds no second '▁' to a text (or a text after a special "
                "token) that starts with a space, where llama.cpp's SentencePiece rule does (' Hi': [▁Hi] vs [▁, ▁Hi])")
        nearest, note = True, what
    elif scheme == "first":
        chat = src.chat_template is not None
        what = ("Metaspace prepend_scheme 'first' (transformers' legacy=False) puts no '▁' after a special token and "
                "none before a leading space; llama.cpp's SentencePiece rule puts '▁' at the start of every text "
                "and after every special token, or nowhere")
        nearest = not chat  # a chat template puts text after special tokens: match those, not the first word
        where = ("the first word of a text that starts without a space" if chat else
                 "text right after a special token (chat templates) and texts starting with a space")
        note = f"{what}; written with add_space_prefix={str(nearest).lower()}, so ids differ on {where}"
    else:
        raise InvalidInput(f"{src.file}: Metaspace prepend_scheme {scheme!r}, which llama.cpp does not know")
    if mode != "nearest":
        raise InvalidInput(f"{src.file}: {what}; set the target's tokenizer: nearest to build it anyway "
                           "(the card then says which texts tokenize differently)")
    return nearest, [note]


def _noop_split(p: dict, norms: list[dict]) -> bool:
    """Gemma's Split(" ") runs after the normalizer has turned every space into "▁": it splits nothing."""
    return (p.get("type") == "Split" and (p.get("pattern") or {}).get("String") == " "
            and any(_replaces_space(n) for n in norms))


def _check_marker_split(src: SourceTokenizer, base: dict[str, int]) -> None:
    """Metaspace split=true keeps merges inside words; llama.cpp never splits, which is the same only
    when no token holds a "▁" past its first character."""
    if not any(p.get("type") == "Metaspace" and p.get("split") for p in _pre_tokenizers(src.pipeline)):
        return
    inner = next((t for t in base if SPACE in t[1:]), None)
    if inner is not None:
        raise InvalidInput(f"{src.file}: Metaspace split=true with token {inner!r}, which llama.cpp (no word "
                           "splitting) would produce across words")


def _spm_scores(src: SourceTokenizer, by_id: dict[int, str]):
    """(pieces, types, scores) from tokenizer.model, as the converter writes them, when it is a BPE
    SentencePiece model whose pieces are the source's vocab; else None."""
    path = src.dir / "tokenizer.model"
    if not path.is_file():
        return None
    from sentencepiece import SentencePieceProcessor
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    try:
        proto.ParseFromString(path.read_bytes())
        sp = SentencePieceProcessor()
        sp.LoadFromSerializedProto(proto.SerializeToString())
    except Exception:  # not a SentencePiece model (tiktoken files share the name): tokenizer.json decides
        return None
    if proto.trainer_spec.model_type != pb.TrainerSpec.BPE:
        return None
    n = sp.vocab_size()
    if any(by_id.get(i) != sp.IdToPiece(i) for i in range(n) if i not in src.added):
        return None  # tokenizer.json's vocab is not this model's: the source is tokenizer.json
    size = max(max(by_id, default=-1) + 1, n)
    tokens = [f"[PAD{i}]".encode() for i in range(size)]
    scores = [-10000.0] * size
    types = [UNUSED] * size
    for i in range(n):
        tokens[i] = sp.IdToPiece(i).encode("utf-8")
        scores[i] = sp.GetScore(i)
        types[i] = (UNKNOWN if sp.IsUnknown(i) else CONTROL if sp.IsControl(i) else UNUSED if sp.IsUnused(i)
                    else BYTE if sp.IsByte(i) else NORMAL)
    for tid, t in src.added.items():
        content = t["content"]
        # SentencePiece's own <unk>/<s>/</s> keep their types: transformers 5 lists them as added
        # tokens, and turning <unk> into a control token would change what llama.cpp does with it
        if tid < n and types[tid] in (UNKNOWN, CONTROL) and tokens[tid] == content.encode("utf-8"):
            continue
        tokens[tid], types[tid] = _added_entry(content, bool(t.get("special")))
        scores[tid] = -1000.0
    return tokens, types, scores


def _hf_pieces(src: SourceTokenizer, by_id: dict[int, str], vocab_size: int, merges: list[tuple[str, str]]):
    """(pieces, types, scores) from tokenizer.json: each merged token scores minus the rank of the first
    merge that makes it, so llama.cpp's highest-score-first merging follows transformers' merge order."""
    first: dict[str, int] = {}
    for rank, (a, b) in enumerate(merges):
        first.setdefault(a + b, rank)
    unk = src.special_ids.get("unk")
    tokens, types, scores = [], [], []
    for i in range(max(by_id, default=-1) + 1):
        if i not in by_id:
            token, toktype, score = f"[PAD{i}]".encode(), UNUSED, -10000.0
        elif i in src.added:
            token, toktype = _added_entry(by_id[i], bool(src.added[i].get("special")))
            score = -1000.0
        else:
            t = by_id[i]
            token = t.encode("utf-8")
            toktype = BYTE if BYTE_TOKEN.match(t) else UNKNOWN if i == unk else NORMAL
            score = -float(first[t]) if t in first else 0.0
        tokens.append(token)
        types.append(toktype)
        scores.append(score)
    return tokens, types, scores


def _merges_complete(base: dict[str, int], merges: list[tuple[str, str]]) -> tuple[str, str] | None:
    """A pair of vocab tokens that concatenates to a vocab token but is no merge, or None when there is
    none (SentencePiece conversions list every such pair; llama.cpp's SentencePiece tokenizer merges any
    such pair, transformers only merges)."""
    pairs = set(merges)
    for t in base:
        for k in range(1, len(t)):
            a, b = t[:k], t[k:]
            if a in base and b in base and (a, b) not in pairs:
                return a, b
    return None


# --- byte-level BPE --------------------------------------------------------------------------------------
def _byte_level(pre: dict | None) -> bool:
    return any(p.get("type") == "ByteLevel" for p in _parts(pre, "pretokenizers"))


def _byte_level_bpe(src: SourceTokenizer, vocab_size: int) -> Vocab:
    model = src.model
    if model.get("byte_fallback"):
        raise InvalidInput(f"{src.file}: a byte-level BPE with byte_fallback; llama.cpp has no such tokenizer")
    norms = _normalizers(src.pipeline)
    differences = []
    for n in norms:
        if n.get("type") == "NFC":
            # Qwen's tokenizers NFC-normalize; llama.cpp runs no normalizer, and almost all text is NFC already
            differences.append("transformers NFC-normalizes the text first and llama.cpp does not: text not in "
                               "Unicode NFC (decomposed accents) tokenizes differently")
        else:
            raise InvalidInput(f"{src.file}: normalizer {n.get('type')} ({_short(n)}), which llama.cpp does not run "
                               "before a byte-level BPE")
    pre = _identify_pre(src)
    by_id = src.vocab_by_id()
    _check_size(src.file, max(by_id, default=-1) + 1, vocab_size)
    tokens: list[bytes] = []
    types: list[int] = []
    for i in range(max(by_id, default=-1) + 1):
        if i in src.added:
            token, toktype = _added_entry(by_id[i], bool(src.added[i].get("special")), spm=False)
        elif i in by_id:
            token, toktype = by_id[i].encode("utf-8"), NORMAL
        else:
            token, toktype = f"[PAD{i}]".encode(), UNUSED
        tokens.append(token)
        types.append(toktype)
    merges = src.merges()
    if not merges:
        raise InvalidInput(f"{src.file}: byte-level BPE tokenizer without merges")
    return Vocab("gpt2", pre, tokens, types, None, src.file, _gguf_merges(src, merges, raw=False),
                 differences=differences)


def _identify_pre(src: SourceTokenizer) -> str:
    """llama.cpp's name for the source's pre-tokenizer (gguf_pretokenizers.py), or exit 2 naming it."""
    splits = _splits(src)
    ignore = bool(src.model.get("ignore_merges"))
    found = pretok.by_structure(splits, ignore) if splits is not None else None
    ids = src.encoded.get(pretok.CHKTXT)
    digest = pretok.chkhsh(ids) if ids is not None else ""  # None: cannot encode it; structure decides alone
    hashed = pretok.CHKHSH.get(digest)
    if hashed in pretok.NOT_REGEX_ONLY:
        hashed = None
    if found is not None:
        return hashed if hashed in found.names else found.names[0]
    if hashed is not None:
        return hashed
    shown = " then ".join(repr(s[:40] + ("..." if len(s) > 40 else "")) for s in splits) if splits else \
        _short(src.pipeline.get("pre_tokenizer") or {})
    raise InvalidInput(f"{src.file}: pre-tokenizer {shown}{' with ignore_merges' if ignore else ''} is not one "
                       f"llama.cpp implements (by its regexes or llama.cpp's converter hash {digest[:12]})")


def _splits(src: SourceTokenizer) -> tuple[str, ...] | None:
    """The regexes a byte-level pre-tokenizer splits with, in order; None for a step llama.cpp lacks."""
    out = []
    for p in _pre_tokenizers(src.pipeline):
        kind = p.get("type")
        if kind == "Split":
            pattern = p.get("pattern") or {}
            if p.get("behavior") != "Isolated" or p.get("invert"):
                return None
            out.append(pattern["Regex"] if "Regex" in pattern else re.escape(pattern.get("String", "")))
        elif kind == "Digits":
            out.append(r"\p{N}" if p.get("individual_digits") else r"\p{N}+")
        elif kind == "ByteLevel":
            if p.get("add_prefix_space"):
                return None  # llama.cpp adds no space before a byte-level text
            if p.get("use_regex", True):
                out.append(pretok.GPT2_REGEX)
        else:
            return None
    return tuple(out)


def _gguf_merges(src: SourceTokenizer, merges: list[tuple[str, str]], raw: bool) -> list[str]:
    """Merges as GGUF stores them, "a b"; a space inside a byte-level part is written as gguf-py's
    SpecialVocab writes it (U+0120, the byte alphabet's space)."""
    out = []
    for a, b in merges:
        if " " in a or " " in b:
            if raw:
                raise InvalidInput(f"{src.file}: merge {a!r} + {b!r} holds a space, which a GGUF merge cannot")
            a, b = a.replace(" ", "\u0120"), b.replace(" ", "\u0120")
        out.append(f"{a} {b}")
    return out


# --- shared ----------------------------------------------------------------------------------------------
def _chat_template(src: SourceTokenizer) -> str | list | None:
    t = src.chat_template
    if isinstance(t, dict):  # named templates: GGUF keeps "default" as tokenizer.chat_template
        return [{"name": k, "template": v} for k, v in t.items()]
    return t or None


# the tokens llama.cpp's Phi-3 rules name (llama-vocab.cpp, by general.name)
PHI3_TOKENS = ("</s>", "<unk>", "<s>", "<|endoftext|>")


def _phi3_named(name: str) -> bool:
    return "phi-3" in name.lower() or "phi3" in name.lower()


def _llamacpp_strip(vocab: Vocab, tid: int, name: str) -> tuple[bool, bool]:
    """(lstrip, rstrip) llama.cpp gives token `tid` of a GGUF named `name` (llama-vocab.cpp: Phi-3's
    special tokens strip spaces on their right, except <unk>, <s> and <|endoftext|>)."""
    if _phi3_named(name):
        text = vocab.tokens[tid].decode("utf-8", "replace")
        special = vocab.types[tid] in (CONTROL, USER_DEFINED, UNKNOWN) or text == "</s>"
        return False, special and text not in ("<unk>", "<s>", "<|endoftext|>")
    return False, False


def _added_entry(content: str, special: bool, spm: bool = True) -> tuple[bytes, int]:
    if special or _looks_special(content):
        return content.encode("utf-8"), CONTROL
    # llama.cpp matches user-defined tokens against the raw text, where SentencePiece's "▁" is a space
    return (content.replace(SPACE, " ") if spm else content).encode("utf-8"), USER_DEFINED


def _looks_special(content: str) -> bool:
    """Added tokens some models forget to mark special (the converter's `does_token_look_special`)."""
    return (
        content in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
        or (content.startswith("<|") and content.endswith("|>"))
        or (content.startswith("<\uff5c") and content.endswith("\uff5c>"))
        or (content.startswith("<unused") and content.endswith(">"))
    )


def pad(vocab: Vocab, vocab_size: int) -> Vocab:
    """Rows of the embedding past the tokenizer are padding, as the converter writes them."""
    n = len(vocab.tokens)
    vocab.tokens += [f"[PAD{i}]".encode() for i in range(n, vocab_size)]
    vocab.types += [UNUSED] * (vocab_size - n)
    if vocab.scores is not None:
        vocab.scores += [-10000.0] * (vocab_size - n)
    return vocab


def _check_size(path: Path, n_tokens: int, vocab_size: int) -> None:
    if n_tokens > vocab_size:
        raise InvalidInput(
            f"{path}: {n_tokens} tokens but config.json vocab_size is {vocab_size}; llama.cpp needs one "
            "embedding row per token"
        )


def _short(node: dict) -> str:
    return ", ".join(f"{k}={v!r}"[:60] for k, v in node.items() if k != "type") or "no options"

