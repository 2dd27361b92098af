"""Contamination: which evaluation documents share word n-grams with the fine-tuning data.

The method is lm-evaluation-harness's decontamination (lm_eval/decontamination, after GPT-3's,
Brown et al. 2020, appendix C): text is lower-cased with punctuation deleted (the harness's Janitor
translation table), split on whitespace, and an evaluation document counts as contaminated when one
of its n-grams of words (13 by default) appears in a training document. A document shorter than n
words is checked whole (contaminated when all its words appear in that order in one training
document) down to `min_words`; shorter ones are too generic to judge and are counted apart.

Speed: every word gets an integer id, each n-gram a 64-bit polynomial hash computed for all positions
of a batch of training documents at once in numpy, and the hashes are looked up in the sorted hashes
of the evaluation documents (the index: small, since evaluation sets are). Hash hits are confirmed by
comparing the words, so a collision never counts. bench/contamination.py times it on 100k training
documents beside the harness's own code.

The sets come from the recipe: each harness task's evaluated documents (the harness's own
decontamination query where the task defines one, else prompt and gold answer), each `eval.tasks`
file (question and gold answer), the golden set (prompt and answer) and the held-out text (one
document per paragraph). The training documents are `finetune.datasets`, every record as its text.
"""

from __future__ import annotations

import itertools
import json
import string
from dataclasses import dataclass
from pathlib import Path

from llmbuild.errors import InvalidInput

# lm_eval/decontamination/janitor.py (Janitor.__init__ with delete_chars=string.punctuation): copied,
# three lines, so that the analysis runs without the harness installed; tests check it against Janitor
_TABLE = str.maketrans(string.ascii_lowercase + string.ascii_uppercase, string.ascii_lowercase * 2,
                       string.punctuation)
_BASE = 0x9E3779B97F4A7C15  # odd 64-bit multiplier of the polynomial hash (numpy wraps mod 2**64)
TOOLS = ("numpy",)  # distributions whose versions enter the stage's key
CHUNK_DOCS = 20000  # training documents hashed per numpy batch: bounds memory at large corpora
SNIPPET = 240  # characters of a contaminated document quoted as an example


def words(text: str) -> list[str]:
    """The harness's normalization: Janitor.normalize_string, then whitespace split (word_ngrams)."""
    return text.translate(_TABLE).split()


@dataclass
class EvalSet:
    name: str  # as the card and eval.json call it
    kind: str  # harness task | multiple choice | golden set | held-out text
    docs: list[str]
    source: str = ""  # the file or task it came from


@dataclass
class TrainDoc:
    text: str
    where: str  # file:line


def check(cfg, key: str = "eval.contamination") -> None:
    if cfg.n < 1:
        raise InvalidInput(f"{key}.n: {cfg.n}; an n-gram needs at least 1 word (13 is the harness's)")
    if cfg.min_words < 1:
        raise InvalidInput(f"{key}.min_words: {cfg.min_words} is below 1")
    if cfg.examples < 0:
        raise InvalidInput(f"{key}.examples: {cfg.examples} is negative")
    if cfg.max_overlap is not None and not 0 <= cfg.max_overlap <= 1:
        raise InvalidInput(f"{key}.max_overlap: {cfg.max_overlap} is not a share between 0 and 1")


# -- the documents -----------------------------------------------------------------------------------
def record_text(rec: dict, shape: str) -> str:
    """A fine-tuning record as the text the model saw (without the chat template's markup)."""
    if shape == "text":
        return rec.get("text", "")
    if shape == "instruction":
        return "\n".join(str(rec.get(k) or "") for k in ("instruction", "input", "output"))
    return "\n".join(str(m.get("content", "")) for m in rec.get("messages", []))


def training_documents(datasets) -> list[TrainDoc]:
    """Every record of every fine-tuning dataset ({path, shape}), with its file and line."""
    out = []
    for i, d in enumerate(datasets):
        path, shape = Path(d.path), getattr(d.shape, "value", d.shape)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise InvalidInput(f"finetune.datasets[{i}].path: cannot read {path} ({e})") from None
        for n, line in enumerate(lines, 1):
            if line.strip():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    raise InvalidInput(f"finetune.datasets[{i}].path: {path}:{n}: not valid JSON") from None
                out.append(TrainDoc(record_text(rec, shape), f"{path.name}:{n}"))
    return out


def paragraphs(text: str) -> list[str]:
    """A text's documents: its paragraphs (blank-line separated), else its lines."""
    parts = [p.strip() for p in text.split("\n\n") if p.strip()]
    if len(parts) <= 1:
        parts = [line.strip() for line in text.splitlines() if line.strip()]
    return parts


def evaluation_sets(cfg, harness_tasks: dict | None = None) -> list[EvalSet]:
    """Every evaluation set of the recipe's `eval` block as documents."""
    from llmbuild.evaluation import data
    from llmbuild.evaluation import harness as h

    sets = []
    for name, task in sorted((harness_tasks or {}).items()):
        sets.append(EvalSet(name, "harness task", h.documents(task, cfg.harness.limit), f"lm-eval task {name}"))
    for i, t in enumerate(cfg.tasks):
        recs = data.read_mc(t.path, t.format.value, f"eval.tasks[{i}]", t.limit)
        sets.append(EvalSet(t.name, "multiple choice", [_mc_text(r, t.format.value) for r in recs], Path(t.path).name))
    if cfg.golden:
        gold = data.read_golden(cfg.golden, "eval.golden")
        sets.append(EvalSet("golden", "golden set", [f"{g['prompt']} {g['answer']}" for g in gold],
                            Path(cfg.golden).name))
    if cfg.heldout_text:
        sets.append(EvalSet("heldout_text", "held-out text",
                            paragraphs(data.read_text(cfg.heldout_text, "eval.heldout_text")),
                            Path(cfg.heldout_text).name))
    return sets


def _mc_text(rec: dict, fmt: str) -> str:
    if fmt == "mmlu":
        return f"{rec['question']} {rec['choices'][rec['answer']]}"
    return f"{rec['activity_label']}: {rec['ctx_a']} {rec['ctx_b']} {rec['endings'][rec['label']]}"


# -- the index ---------------------------------------------------------------------------------------
_BTABLE = bytes.maketrans(string.ascii_uppercase.encode(), string.ascii_lowercase.encode())
_BDELETE = string.punctuation.encode()
_INV = pow(_BASE, -1, 1 << 64)  # the multiplier's inverse mod 2**64: it exists, the multiplier is odd
FILTER_BITS = 24  # a 16 MB table of the evaluation hashes' top bits screens the training windows


def _tokens(text: str) -> list[bytes]:
    """`words(text)` as UTF-8 bytes; ASCII text takes bytes.translate, several times faster and the same
    (the table touches ASCII only, and ASCII whitespace is all str.split splits such text on)."""
    if text.isascii():
        return text.encode().translate(_BTABLE, _BDELETE).split()
    return [w.encode() for w in words(text)]


class _Flat:
    """Documents' word ids end to end, with what makes the hash of any window a constant-time lookup:
    prefix sums of id * B**position, and B**-position (all mod 2**64; numpy's uint64 wraps)."""

    def __init__(self, docs: list[list[bytes]], ids_of):
        """`ids_of(words) -> iterator of int ids` (for the training side, a C-level map over a dict)."""
        import numpy as np

        self.lens = np.fromiter(map(len, docs), dtype=np.int64, count=len(docs))
        total = int(self.lens.sum())
        self.ids = np.fromiter(ids_of(itertools.chain.from_iterable(docs)), dtype=np.int64, count=total)
        self.doc_of = np.repeat(np.arange(len(docs)), self.lens)
        self.starts = np.concatenate([[0], np.cumsum(self.lens)[:-1]]).astype(np.int64)
        # ids < 0 are words no evaluation document has: a window holding one cannot match
        self.unknown = np.concatenate([[0], np.cumsum(self.ids < 0)])
        with np.errstate(over="ignore"):
            powers = np.full(total, _BASE, dtype=np.uint64)
            inverse = np.full(total, _INV, dtype=np.uint64)
            if total:
                powers[0] = inverse[0] = 1
            powers = np.cumprod(powers, dtype=np.uint64)
            self.inverse = np.cumprod(inverse, dtype=np.uint64)
            x = (self.ids + 1).astype(np.uint64) * powers
            self.prefix = np.concatenate([np.zeros(1, np.uint64), np.cumsum(x, dtype=np.uint64)])

    def hashes(self, at, k: int):
        """The hash of the k words from each position in `at`: sum of (id + 1) * B**offset."""
        import numpy as np

        with np.errstate(over="ignore"):
            return (self.prefix[at + k] - self.prefix[at]) * self.inverse[at]

    def windows(self, k: int):
        """Start positions of the k-word windows that lie inside one document and hold known words only."""
        import numpy as np

        m = len(self.ids) - k + 1
        if m <= 0:
            return np.zeros(0, dtype=np.int64)
        ok = (self.doc_of[:m] == self.doc_of[k - 1:]) & (self.unknown[k:] - self.unknown[:m] == 0)
        return np.flatnonzero(ok)


def analyse(sets: list[EvalSet], train: list[TrainDoc], n: int = 13, min_words: int = 8,
            examples: int = 3) -> dict:
    """Per evaluation set: documents, how many were checked, how many are contaminated, examples."""
    import time

    import numpy as np

    t0 = time.perf_counter()
    low = min(min_words, n)
    eval_tokens = [_tokens(d) for s in sets for d in s.docs]
    vocab: dict[bytes, int] = {}
    ev = _Flat(eval_tokens, lambda ws: (vocab.setdefault(w, len(vocab)) for w in ws))
    # the index: per gram length k, the sorted hashes of the evaluation grams and where each starts.
    # Documents of n words or more give every n-gram; shorter ones (down to `low`) give themselves.
    index: dict[int, tuple] = {}
    long_docs = ev.lens >= n
    pos = ev.windows(n)
    pos = pos[long_docs[ev.doc_of[pos]]] if len(pos) else pos
    grams = {n: pos} if len(pos) else {}
    for k in sorted(set(ev.lens[(ev.lens >= low) & (ev.lens < n)].tolist())):
        grams[k] = ev.starts[ev.lens == k]
    screen = np.zeros(1 << FILTER_BITS, dtype=bool)
    for k, at in grams.items():
        h = ev.hashes(at, k)
        order = np.argsort(h, kind="stable")
        index[k] = (h[order], at[order])
        screen[h >> np.uint64(64 - FILTER_BITS)] = True
    hits: dict[int, tuple[str, str]] = {}  # evaluation document -> (the shared words, training doc)
    n_train_words = 0
    for begin in range(0, len(train), CHUNK_DOCS):
        chunk = train[begin:begin + CHUNK_DOCS]
        tr = _Flat([_tokens(d.text) for d in chunk], lambda ws: map(vocab.get, ws, itertools.repeat(-1)))
        n_train_words += len(tr.ids)
        for k, (eh, eat) in index.items():
            at = tr.windows(k)
            if not len(at):
                continue
            h = tr.hashes(at, k)
            cand = screen[h >> np.uint64(64 - FILTER_BITS)]  # a table lookup drops nearly every window
            at, h = at[cand], h[cand]
            j = np.minimum(np.searchsorted(eh, h), len(eh) - 1)
            found = eh[j] == h
            for p, hv in zip(at[found].tolist(), h[found].tolist()):
                window = tr.ids[p:p + k]
                lo, hi = np.searchsorted(eh, np.uint64(hv), "left"), np.searchsorted(eh, np.uint64(hv), "right")
                for e in eat[lo:hi].tolist():
                    d = int(ev.doc_of[e])
                    # the words themselves, not only their hash: a collision never counts
                    if d not in hits and np.array_equal(ev.ids[e:e + k], window):
                        off = e - int(ev.starts[d])
                        shared = b" ".join(eval_tokens[d][off:off + k]).decode("utf-8", "replace")
                        hits[d] = (shared, chunk[int(tr.doc_of[p])].where)
    out_sets, first = [], 0
    for s in sets:
        lens = ev.lens[first:first + len(s.docs)].tolist()
        found_docs = sorted(d - first for d in hits if first <= d < first + len(s.docs))
        n_docs = len(s.docs)
        out_sets.append({
            "set": s.name, "kind": s.kind, "source": s.source, "documents": n_docs,
            "checked": sum(x >= low for x in lens), "too_short": sum(x < low for x in lens),
            "contaminated": len(found_docs), "share": len(found_docs) / n_docs if n_docs else 0.0,
            "examples": [{"doc": d, "text": _snippet(s.docs[d]), "ngram": hits[first + d][0],
                          "training": hits[first + d][1]} for d in found_docs[:examples]]})
        first += n_docs
    return {"n": n, "min_words": low, "training_documents": len(train), "training_words": n_train_words,
            "sets": out_sets, "seconds": round(time.perf_counter() - t0, 3)}


def _snippet(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SNIPPET else text[:SNIPPET - 1] + "…"


# -- the stage -----------------------------------------------------------------------------------------
def enabled(eval_cfg, finetune_cfg) -> bool:
    from llmbuild.stages import evaluate

    c = eval_cfg.contamination
    return bool(c.enabled and finetune_cfg.method != "none" and finetune_cfg.datasets and
                (evaluate.enabled(eval_cfg)))


def key_parts(eval_cfg, finetune_cfg, digest) -> dict:
    """The stage's key: the training data and evaluation sets by content, and the settings."""
    from llmbuild.evaluation import harness

    def file(p):
        return {"name": Path(p).name, "sha256": digest(Path(p))} if p else None

    c = eval_cfg.contamination
    return {"n": c.n, "min_words": c.min_words, "examples": c.examples,
            "train": [{"file": file(d.path), "shape": getattr(d.shape, "value", d.shape)} for d in finetune_cfg.datasets],
            "tasks": [{"name": t.name, "format": t.format.value, "limit": t.limit, "file": file(t.path)}
                      for t in eval_cfg.tasks],
            "golden": file(eval_cfg.golden), "heldout_text": file(eval_cfg.heldout_text),
            "harness": harness.key_parts(eval_cfg.harness, digest)}


def run(eval_cfg, finetune_cfg, out: Path) -> dict:
    from llmbuild.evaluation import harness

    tasks = harness.load(eval_cfg.harness) if harness.enabled(eval_cfg.harness) else {}
    c = eval_cfg.contamination
    rec = analyse(evaluation_sets(eval_cfg, tasks), training_documents(finetune_cfg.datasets), c.n, c.min_words,
                  c.examples)
    rec["training_files"] = [Path(d.path).name for d in finetune_cfg.datasets]
    (out / "contamination.json").write_text(json.dumps(rec, indent=2))
    return rec


def report(record: dict, max_overlap: float | None) -> tuple[dict, str, list[dict]]:
    """(the stage's record with its gates, the console line, the failed gates) for the engine."""
    rec = {k: v for k, v in record.items() if k not in ("out_files", "outputs_digest", "kind", "key", "created")}
    rec["gates"] = gates(rec, max_overlap)
    worst = max(rec["sets"], key=lambda s: s["share"], default=None)
    line = (f"{len(rec['sets'])} evaluation set(s) against {rec['training_documents']} training documents"
            + (f"; highest overlap: {worst['set']} {worst['share']:.1%}" if worst else ""))
    return rec, line, [g for g in rec["gates"] if not g["passed"]]


def gates(rec: dict, max_overlap: float | None, key: str = "eval.contamination.max_overlap") -> list[dict]:
    if max_overlap is None:
        return []
    return [{"gate": "max_overlap", "figure": f"contamination.{s['set']}.share", "value": s["share"],
             "limit": max_overlap, "passed": bool(s["share"] <= max_overlap), "key": key} for s in rec["sets"]]
