"""The figures: rolling windows with llama-perplexity's scoring, distribution parity, golden-set scores.

Windows follow `llama-perplexity`: the text's tokens are cut into consecutive chunks of `window`
tokens (a partial last chunk is dropped; a text shorter than one window is one chunk), the first
token of each chunk is replaced by BOS when the vocabulary adds one, and only the second half of each
chunk is scored, so every scored token has at least half a window of context. KL divergence, top-1
agreement and the perplexity ratio are taken over those positions, as `--kl-divergence` does.
"""

from __future__ import annotations

import re
import string
from collections import Counter

MIN_WINDOW = 4


def windows(ids: list[int], window: int, bos: int | None, max_windows: int) -> list[list[int]]:
    if len(ids) <= window:
        chunks = [list(ids)]
    else:
        chunks = [list(ids[i:i + window]) for i in range(0, len(ids) - window + 1, window)]
    chunks = chunks[:max_windows] if max_windows > 0 else chunks
    for c in chunks:
        if bos is not None:
            c[0] = bos
    return [c for c in chunks if len(c) >= MIN_WINDOW]


def first_scored(n: int) -> int:
    """Index of the first logits row that is scored in a window of n tokens (it predicts token first+1)."""
    return n // 2


def scored_rows(logits, n: int):
    """The logits rows that predict the scored tokens of a window of n tokens."""
    return logits[first_scored(n): n - 1]


def nll(rows, targets: list[int]):
    """Negative log-likelihood of each target under its logits row (float64)."""
    import numpy as np

    lg = np.asarray(rows, dtype=np.float64)
    lp = lg - np.logaddexp.reduce(lg, axis=-1, keepdims=True)
    return -lp[np.arange(len(targets)), targets]


def perplexity(nlls) -> float:
    import numpy as np

    return float(np.exp(np.mean(nlls)))


# --- golden sets: SQuAD's answer normalization for F1 and contains; exact match is strict ------------
_PUNCT = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize(text: str) -> str:
    """SQuAD's answer normalization: lower case, no punctuation, no articles, single spaces."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def token_f1(prediction: str, answer: str) -> float:
    p, a = normalize(prediction).split(), normalize(answer).split()
    if not p or not a:
        return float(p == a)
    common = sum((Counter(p) & Counter(a)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(a)
    return 2 * precision * recall / (precision + recall)


def golden_scores(outputs: list[str], answers: list[str]) -> dict:
    """exact_match: the output equals the answer after stripping surrounding whitespace (the fine-tuning
    stage's figure); token_f1 and contains compare SQuAD-normalized text."""
    n = len(answers)
    em = sum(o.strip() == a.strip() for o, a in zip(outputs, answers))
    f1 = sum(token_f1(o, a) for o, a in zip(outputs, answers))
    contains = sum(bool(normalize(a)) and normalize(a) in normalize(o) for o, a in zip(outputs, answers))
    return {"n": n, "exact_match": round(em / n, 4), "token_f1": round(f1 / n, 4), "contains": round(contains / n, 4)}
