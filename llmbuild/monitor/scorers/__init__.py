"""Scorers: the probability that a premise supports a claim, by name (a static table, so choosing one
imports only its own dependencies).

    lexical  token overlap, always available, instant; named "lexical" in every report line
    nli      a Hugging Face sequence-classification checker (HHEM-2.1-Open, MiniCheck, DeBERTa NLI)
    judge    any OpenAI-compatible chat endpoint at temperature 0 with a fixed, versioned prompt

Every scorer gives `support(pairs) -> [p, ...]` for (premise, claim) pairs, `chunks(text)` to split a
long passage (the caller takes the max over chunks, as AlignScore and MiniCheck do) and `info`, which
goes into every result: name, threshold, and what pins the scores (the checker's digest, the prompt's
version). Scores of the same pair are computed once per run.
"""

from __future__ import annotations

import importlib
import re

SCORERS = {"lexical": "llmbuild.monitor.scorers.lexical", "nli": "llmbuild.monitor.scorers.nli",
           "judge": "llmbuild.monitor.scorers.judge"}


class Scorer:
    name = ""

    def __init__(self, cfg):
        self.cfg = cfg
        self.threshold = float(cfg.threshold)
        self._cache: dict[tuple[str, str], float] = {}
        self.calls = 0  # pairs actually scored (not cached)

    @property
    def info(self) -> dict:
        return {"name": self.name, "threshold": self.threshold}

    def chunks(self, text: str) -> list[str]:
        return word_chunks(text, self.cfg.chunk_words)

    def support(self, pairs: list[tuple[str, str]]) -> list[float]:
        todo = list(dict.fromkeys(p for p in pairs if p not in self._cache))
        if todo:
            for p, s in zip(todo, self._score(todo)):
                self._cache[p] = float(min(1.0, max(0.0, s)))
            self.calls += len(todo)
        return [self._cache[p] for p in pairs]

    def _score(self, pairs: list[tuple[str, str]]) -> list[float]:
        raise NotImplementedError

    def close(self) -> None:
        pass


_SENT = re.compile(r"(?<=[.!?])\s+|\n+")


def word_chunks(text: str, size: int, count=lambda s: len(s.split())) -> list[str]:
    """Consecutive sentences grouped into chunks of at most `size` units (MiniCheck's chunking); a
    sentence longer than a chunk is cut by words."""
    sents = [s.strip() for s in _SENT.split(text) if s.strip()] or [text.strip()]
    chunks, cur, n = [], [], 0
    for s in sents:
        k = count(s)
        if k > size:
            words = s.split()
            step = max(1, int(len(words) * size / k))
            pieces = [" ".join(words[i:i + step]) for i in range(0, len(words), step)]
        else:
            pieces = [s]
        for piece in pieces:
            k = count(piece)
            if cur and n + k > size:
                chunks.append(" ".join(cur))
                cur, n = [], 0
            cur.append(piece)
            n += k
    if cur:
        chunks.append(" ".join(cur))
    return chunks or [""]


def make_scorer(cfg) -> Scorer:
    from llmbuild.errors import InvalidInput

    if cfg.name not in SCORERS:
        raise InvalidInput(f"scorer.name: unknown scorer {cfg.name!r}; known: {', '.join(SCORERS)}")
    return importlib.import_module(SCORERS[cfg.name]).load(cfg)
