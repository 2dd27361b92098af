"""The lexical scorer: the share of a claim's content words that the premise contains.

Deterministic, offline and fast (hundreds of responses per second on one core), so it always runs; it
cannot see paraphrase or negation, which is why every report line names it. Words are SQuAD-normalized
(lower case, no punctuation or articles), stop words dropped, and a trailing plural "s" stripped on both
sides. Names and numbers are what a hallucination most often gets wrong while keeping the other words,
so a claim whose numbers or capitalized words (a first word only when it is not a stop word) are missing
from the premise has its overlap halved: "The capital of France is Lyon" is not supported by "Paris is
the capital of France" although two of its three content words are there.
"""

from __future__ import annotations

import re

from llmbuild.evaluation.metrics import normalize
from llmbuild.monitor.scorers import Scorer

# a short English stop-word list: function words carry no support
STOP = frozenset("""
a an the and or but if of to in on at by for with from as is are was were be been being it its this that these those
there here which who whom what when where why how not no do does did has have had will would can could should may
might must shall i you he she we they me him her us them my your his our their so than then too very also just only
into over under about after before again further once all any both each few more most other some such own same s t
""".split())  # noqa: SIM905 (a word list reads better as text)


def content_words(text: str) -> set[str]:
    words = set()
    for w in normalize(text).split():
        if w in STOP:
            continue
        words.add(w[:-1] if len(w) > 3 and w.endswith("s") and not w.isdigit() else w)
    return words


def key_words(text: str) -> set[str]:
    """Numbers and capitalized words (the first word only when it is not a stop word): the words a claim
    cannot change and stay true."""
    out = set()
    for i, w in enumerate(re.findall(r"[\w'-]+", text)):
        if w.isdigit() or (w[:1].isupper() and (i > 0 or w.lower() not in STOP)):
            out |= content_words(w)
    return out


class LexicalScorer(Scorer):
    name = "lexical"

    def __init__(self, cfg):
        super().__init__(cfg)
        self._premise_words: dict[str, set[str]] = {}

    def _score(self, pairs):
        out = []
        for premise, claim in pairs:
            pw = self._premise_words.get(premise)
            if pw is None:
                pw = self._premise_words[premise] = content_words(premise)
            cw = content_words(claim)
            score = len(cw & pw) / len(cw) if cw else 1.0
            if key_words(claim) - pw:
                score /= 2
            out.append(score)
        return out

    @property
    def info(self):
        return {"name": self.name, "threshold": self.threshold, "method": "content-word overlap", "version": 2}


def load(cfg) -> LexicalScorer:
    return LexicalScorer(cfg)
