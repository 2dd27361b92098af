"""The source model's tokenizer as transformers runs it: what every target's tokenizer must reproduce.

The reference logits, the evaluation's token ids and a user's `AutoTokenizer.from_pretrained` all come
from transformers, so it, not any one file, defines the source tokenization. The files alone do not
say what it does: transformers 5 rebuilds a `LlamaTokenizer`'s pre-tokenizer from the class and its
`legacy` flag whatever tokenizer.json holds (a tokenizer.json with Metaspace prepend_scheme "always"
loads as "first"), and whether BOS/EOS are added comes from a post-processor, tokenizer_config.json's
add_bos_token or the class. So the tokenizer is loaded once with transformers, and what it runs is
read back from it: the pipeline (`backend_tokenizer.to_str()`, tokenizer.json's format), the added
tokens with their flags, and the special tokens it actually adds, found by tokenizing a probe.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from llmbuild.errors import InvalidInput

# files whose content decides the tokenizer: a change to any of them reloads it
TOKENIZER_INPUTS = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                    "added_tokens.json", "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json",
                    "config.json")
PROBE = "Hello world"  # a text every tokenizer encodes without special tokens of its own


@dataclass
class SourceTokenizer:
    """What the source tokenizer computes, in the terms a target's tokenizer is written in."""

    dir: Path
    file: Path  # the file a message names: tokenizer.json, else tokenizer.model
    tok: object  # the transformers tokenizer
    pipeline: dict  # tokenizer.json as transformers runs it: normalizer, pre_tokenizer, model, added_tokens
    added: dict[int, dict] = field(default_factory=dict)  # id -> added token (content, special, lstrip, rstrip...)
    add_bos: bool = False  # tok(text) starts with bos_id
    add_eos: bool = False  # tok(text) ends with eos_id
    other_added: list[int] = field(default_factory=list)  # any other token tok(text) adds around the text
    special_ids: dict[str, int] = field(default_factory=dict)  # bos/eos/unk/pad -> id, where the tokenizer has one
    chat_template: str | dict | None = None

    @property
    def model(self) -> dict:
        return self.pipeline.get("model") or {}

    def vocab_by_id(self) -> dict[int, str]:
        """Every token the tokenizer knows, by id: the model's vocab, then the added tokens over it."""
        by_id = {i: s for s, i in (self.model.get("vocab") or {}).items()} if isinstance(
            self.model.get("vocab"), dict) else {}
        by_id.update({i: t["content"] for i, t in self.added.items()})
        return by_id

    def merges(self) -> list[tuple[str, str]]:
        """The BPE merges in rank order; tokenizer.json holds "a b" strings or (since tokenizers 0.20) pairs."""
        out = []
        for m in self.model.get("merges") or []:
            if isinstance(m, str):
                a, _, b = m.partition(" ")
                out.append((a, b))
            else:
                out.append((m[0], m[1]))
        return out


_CACHE: dict[tuple, SourceTokenizer] = {}


def load(model_dir: Path) -> SourceTokenizer:
    """The checkpoint folder's tokenizer, loaded by transformers once per content of its files."""
    model_dir = Path(model_dir)
    stamp = tuple((n, p.stat().st_mtime_ns, p.stat().st_size) for n in TOKENIZER_INPUTS
                  if (p := model_dir / n).is_file())
    key = (str(model_dir.resolve()), stamp)
    if key not in _CACHE:
        if len(_CACHE) > 4:
            _CACHE.clear()  # a build looks at one or two folders; do not hold every vocab ever read
        _CACHE[key] = _load(model_dir)
    return _CACHE[key]


def _load(model_dir: Path) -> SourceTokenizer:
    tj, spm = model_dir / "tokenizer.json", model_dir / "tokenizer.model"
    if not tj.is_file() and not spm.is_file():
        raise InvalidInput(f"{model_dir}: no tokenizer.model or tokenizer.json; every artifact ships the "
                           "model's tokenizer")
    file = tj if tj.is_file() else spm
    if remote_code(model_dir):
        raise InvalidInput(f"{model_dir / 'tokenizer_config.json'}: the tokenizer is the model's own Python code "
                           "(auto_map), which no runtime's tokenizer can follow")
    from transformers import AutoTokenizer

    try:
        # trust_remote_code stays off: a tokenizer written in the model's own Python has no description
        # a runtime could follow
        tok = AutoTokenizer.from_pretrained(str(model_dir))
    except Exception as e:  # transformers raises anything from OSError to ValueError for a bad folder
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise InvalidInput(f"{file}: transformers cannot load this tokenizer ({first})") from None
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise InvalidInput(f"{file}: transformers loads it as {type(tok).__name__}, a tokenizer with no "
                           "tokenizers pipeline (tokenizer.json) that a runtime could follow")
    pipeline = json.loads(backend.to_str())
    added = {int(t["id"]): t for t in pipeline.get("added_tokens") or []}
    src = SourceTokenizer(model_dir, file, tok, pipeline, added, chat_template=tok.chat_template or None)
    for name in ("bos", "eos", "unk", "pad"):
        tid = getattr(tok, f"{name}_token_id", None)
        if isinstance(tid, int):
            src.special_ids[name] = tid
    _probe_specials(src)
    return src


def remote_code(model_dir: Path) -> bool:
    """Whether tokenizer_config.json points AutoTokenizer at Python code shipped with the model."""
    cfg = Path(model_dir) / "tokenizer_config.json"
    try:
        return "auto_map" in json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def _probe_specials(src: SourceTokenizer) -> None:
    """Which special tokens tok(text) puts around the text: the behaviour a GGUF's add_bos/add_eos
    must copy, whatever flag or post-processor produced it."""
    tok = src.tok
    full = list(tok(PROBE).input_ids)
    bare = list(tok(PROBE, add_special_tokens=False).input_ids)
    start = next((i for i in range(len(full) - len(bare) + 1) if full[i:i + len(bare)] == bare), None)
    if start is None:
        raise InvalidInput(f"{src.file}: adding special tokens changes how {PROBE!r} itself is tokenized")
    before, after = full[:start], full[start + len(bare):]
    bos, eos = src.special_ids.get("bos"), src.special_ids.get("eos")
    if before[:1] == [bos] and bos is not None:
        src.add_bos, before = True, before[1:]
    if after[-1:] == [eos] and eos is not None:
        src.add_eos, after = True, after[:-1]
    src.other_added = before + after
