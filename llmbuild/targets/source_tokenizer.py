"""The source model's tokenizer as transformers runs it: what every target's tokenizer must reproduce.

The reference logits, the evaluation's token ids and a user's `AutoTokenizer.from_pretrained` all come
from transformers, so it, not any one file, defines the source tokenization. The files alone do not
say what it does: transformers 5 rebuilds a `LlamaTokenizer`'s pre-tokenizer from the class and its
`legacy` flag whatever tokenizer.json holds (a tokenizer.json with Metaspace prepend_scheme "always"
loads as "first"), and whether BOS/EOS are added comes from a post-processor, tokenizer_config.json's
add_bos_token or the class. So the tokenizer is loaded once with transformers, and what it runs is
read back from it: the pipeline (`backend_tokenizer.to_str()`, tokenizer.json's format), the added
tokens with their flags, and the special tokens it actually adds, found by tokenizing a probe.

What the targets need is read back as plain data (no tokenizer object outlives the load), so a process
that has not imported torch can load it in a child interpreter where torch is hidden: transformers
supports installs without torch for its tokenizers ("only tokenizers, configuration and file/data
utilities can be used"), but with torch installed, transformers 5 imports it for any tokenizer (its config
modules do), 2 s and 250 MB before the first tensor of a GGUF export that never needs torch. A process
that already has torch (a build, which computes the reference logits) loads it in process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llmbuild.errors import InvalidInput

# files whose content decides the tokenizer: a change to any of them reloads it
TOKENIZER_INPUTS = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                    "added_tokens.json", "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json",
                    "config.json")
PROBE = "Hello world"  # a text every tokenizer encodes without special tokens of its own


def encoded_texts() -> tuple[str, ...]:
    """Texts a target needs encoded by the source tokenizer (special tokens added), read back at load:
    llama.cpp's converter identifies a pre-tokenizer by the ids of its CHKTXT."""
    from llmbuild.targets.gguf_pretokenizers import CHKTXT

    return (CHKTXT,)


@dataclass
class SourceTokenizer:
    """What the source tokenizer computes, in the terms a target's tokenizer is written in."""

    dir: Path
    file: Path  # the file a message names: tokenizer.json, else tokenizer.model
    class_name: str  # the transformers class it loads as
    pipeline: dict  # tokenizer.json as transformers runs it: normalizer, pre_tokenizer, model, added_tokens
    added: dict[int, dict] = field(default_factory=dict)  # id -> added token (content, special, lstrip, rstrip...)
    add_bos: bool = False  # tok(text) starts with bos_id
    add_eos: bool = False  # tok(text) ends with eos_id
    other_added: list[int] = field(default_factory=list)  # any other token tok(text) adds around the text
    special_ids: dict[str, int] = field(default_factory=dict)  # bos/eos/unk/pad -> id, where the tokenizer has one
    chat_template: str | dict | None = None
    token_names: dict[int, str] = field(default_factory=dict)  # id -> token text, for other_added (messages)
    normalized: dict[str, str] = field(default_factory=dict)  # added token marked normalized -> its normalized form
    encoded: dict[str, list[int] | None] = field(default_factory=dict)  # encoded_texts() -> ids; None: cannot encode

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
# where the facts are remembered across processes, by the content of the tokenizer's files and the
# versions that read them (a build points it into its cache: an unchanged rebuild then loads no
# tokenizer); None: nowhere. `_MEMO_WRITE` false: read only (a dry run writes nothing)
_MEMO: Path | None = None
_MEMO_WRITE = False
FACTS_VERSION = 1  # bump when SourceTokenizer's fields or what _load reads back change


def remember_in(folder: Path | None, write: bool = True) -> None:
    global _MEMO, _MEMO_WRITE
    _MEMO, _MEMO_WRITE = (Path(folder) if folder else None), write


def load(model_dir: Path) -> SourceTokenizer:
    """The checkpoint folder's tokenizer, loaded by transformers once per content of its files."""
    model_dir = Path(model_dir)
    stamp = tuple((n, p.stat().st_mtime_ns, p.stat().st_size) for n in TOKENIZER_INPUTS
                  if (p := model_dir / n).is_file())
    key = (str(model_dir.resolve()), stamp)
    if key not in _CACHE:
        if len(_CACHE) > 4:
            _CACHE.clear()  # a build looks at one or two folders; do not hold every vocab ever read
        _CACHE[key] = _remembered(model_dir)
    return _CACHE[key]


def _remembered(model_dir: Path) -> SourceTokenizer:
    memo = _MEMO / f"{_content_digest(model_dir)}.json" if _MEMO else None
    if memo is not None:
        try:
            facts = json.loads(memo.read_text(encoding="utf-8"))
            # the same files in another folder (a copy, a new snapshot path): this folder's paths
            return from_json({**facts, "dir": str(model_dir), "file": str(model_dir / Path(facts["file"]).name)})
        except (OSError, ValueError, KeyError, TypeError):
            pass  # not remembered yet, or unreadable: load it
    src = _load(model_dir) if "torch" in sys.modules else _load_without_torch(model_dir)
    if memo is not None and _MEMO_WRITE:
        from llmbuild.cache import write_json_atomic

        try:
            memo.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            return src  # only costs a load next time
        write_json_atomic(memo, to_json(src))
    return src


def _content_digest(model_dir: Path) -> str:
    """What the facts depend on: the tokenizer files' bytes and the versions of what reads them."""
    import hashlib
    from importlib.metadata import version

    h = hashlib.sha256(f"{FACTS_VERSION} transformers {version('transformers')} tokenizers "
                       f"{version('tokenizers')}".encode())
    for n in TOKENIZER_INPUTS:
        p = model_dir / n
        if p.is_file():
            h.update(f"\0{n}\0".encode())
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


# run by _load_without_torch: torch looks uninstalled (importlib.util.find_spec("torch") is None when
# sys.modules holds None for it), so transformers takes its tokenizer-only path
_CHILD = """
import json, sys
sys.modules["torch"] = None
from pathlib import Path
from llmbuild.errors import InvalidInput
from llmbuild.targets import source_tokenizer
try:
    out = {"facts": source_tokenizer.to_json(source_tokenizer._load(Path(sys.argv[1])))}
except InvalidInput as e:
    out = {"invalid": str(e)}
sys.stdout.write(json.dumps(out))
"""


def _load_without_torch(model_dir: Path) -> SourceTokenizer:
    """_load in a child interpreter that cannot import torch; the same facts (tests/tokenizers/
    test_without_torch.py compares the two on every tokenizer kind the targets map)."""
    # the child finds this llmbuild even where it is on sys.path only (a checkout, not installed)
    here = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join([here, *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "PYTHONPATH": path, "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}  # no "PyTorch was not found"
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(model_dir)], capture_output=True, text=True, env=env,
                          check=False)
    if proc.stderr:
        sys.stderr.write(proc.stderr)  # transformers' own warnings about the tokenizer, as in process
    if proc.returncode != 0:
        raise RuntimeError(f"loading the tokenizer of {model_dir} without torch failed (exit {proc.returncode})")
    out = json.loads(proc.stdout)
    if "invalid" in out:
        raise InvalidInput(out["invalid"])
    return from_json(out["facts"])


def to_json(src: SourceTokenizer) -> dict:
    return {**asdict(src), "dir": str(src.dir), "file": str(src.file)}


def from_json(d: dict) -> SourceTokenizer:
    """to_json's inverse (JSON object keys are strings: the id-keyed maps get their ints back)."""
    return SourceTokenizer(**{**d, "dir": Path(d["dir"]), "file": Path(d["file"]),
                              "added": {int(k): v for k, v in d["added"].items()},
                              "token_names": {int(k): v for k, v in d["token_names"].items()}})


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
    src = SourceTokenizer(model_dir, file, type(tok).__name__, pipeline, added, chat_template=tok.chat_template or None)
    for name in ("bos", "eos", "unk", "pad"):
        tid = getattr(tok, f"{name}_token_id", None)
        if isinstance(tid, int):
            src.special_ids[name] = tid
    _probe_specials(src, tok)
    src.token_names = {i: tok.convert_ids_to_tokens(i) for i in src.other_added}
    norm = backend.normalizer
    src.normalized = {t["content"]: norm.normalize_str(t["content"]) if norm is not None else t["content"]
                      for t in added.values() if t.get("normalized")}
    for text in encoded_texts():
        try:
            src.encoded[text] = list(tok.encode(text))
        except Exception:  # a tokenizer that cannot encode it: the target decides without it
            src.encoded[text] = None
    return src


def remote_code(model_dir: Path) -> bool:
    """Whether tokenizer_config.json points AutoTokenizer at Python code shipped with the model."""
    cfg = Path(model_dir) / "tokenizer_config.json"
    try:
        return "auto_map" in json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def _probe_specials(src: SourceTokenizer, tok) -> None:
    """Which special tokens tok(text) puts around the text: the behaviour a GGUF's add_bos/add_eos
    must copy, whatever flag or post-processor produced it."""
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
