"""Passages, citations and claims from real-shaped requests; ALCE's citation recall and precision, groundedness,
refusals and empty answers, with the lexical scorer (deterministic, so every expected number is exact)."""

from __future__ import annotations

import time

import pytest

from llmbuild.monitor.config import ExtractionConfig, ScorerConfig
from llmbuild.monitor.extraction import Extractor, resolve
from llmbuild.monitor.metrics import METRICS, analyze, by_window, summarize
from llmbuild.monitor.records import Exchange
from llmbuild.monitor.scorers import make_scorer, word_chunks
from tests.monitor.helpers import ALCE_PROMPT

X = Extractor(ExtractionConfig())


def ex(response, messages=None, documents=(), status=200, reference=None, t=None, weight=1.0, rid="r"):
    return Exchange(where="log:1", id=rid, time=t or time.time(), response=response if status < 400 else None,
                    status=status, messages=messages if messages is not None else [{"role": "user", "content": ALCE_PROMPT}],
                    documents=list(documents), reference=reference, weight=weight)


def test_passages_from_documents_tools_and_numbered_text():
    p = X.passages(ex("x"))
    assert [(q.id, q.source) for q in p] == [("1", "user"), ("2", "user"), ("3", "user")]
    assert p[0].text == "Paris is the capital of France. The city has about two million inhabitants."
    assert "Question" not in p[2].text  # a blank line ends the last passage
    docs = X.passages(ex("x", messages=[{"role": "user", "content": "q"}],
                         documents=[{"id": "doc-7", "title": "Peru", "text": "Lima is the capital."}, {"text": "B."}]))
    assert [(q.id, q.aliases) for q in docs] == [("doc-7", ("doc-7", "1")), ("2", ("2",))]
    assert docs[0].text == "Title: Peru\nLima is the capital."
    tools = X.passages(ex("x", messages=[{"role": "user", "content": "Weather?"},
                                         {"role": "tool", "tool_call_id": "call_1", "content": "rainy, 57F"},
                                         {"role": "tool", "content": "[a1] first\n[a2] second"}]))
    assert [(q.id, q.text) for q in tools] == [("call_1", "rainy, 57F"), ("a1", "first"), ("a2", "second")]
    system = X.passages(ex("x", messages=[{"role": "system", "content": "Source 4: the sky is blue.\n\n[doc-5] grass is green"},
                                          {"role": "user", "content": "colours?"}]))
    assert [(q.id, q.text) for q in system] == [("4", "the sky is blue."), ("doc-5", "grass is green")]
    assert X.passages(ex("x", messages=[{"role": "user", "content": "What is 2 + 2?"}])) == []


def test_sentences_citations_and_footnotes():
    s = X.sentences("Paris is the capital of France [1]. Madrid is the capital of Spain. [2]\n"
                    "Lima is in Peru[1, 3][doc-4].\n\n[^1]: Document 1")
    assert [(x.text, x.cited) for x in s] == [("Paris is the capital of France.", ["1"]),
                                              ("Madrid is the capital of Spain.", ["2"]),
                                              ("Lima is in Peru.", ["1", "3", "doc-4"])]
    foot = X.sentences("Paris is the capital[^1].\n\n[^1]: https://example.org")
    assert [(x.text, x.cited) for x in foot] == [("Paris is the capital.", ["1"])]
    assert X.is_refusal("I'm sorry, but I can't assist with that")  # the semantic-conventions example
    assert X.is_refusal("I cannot answer that from the documents given.")
    assert not X.is_refusal("Paris is the capital [1].")


def test_chunks_keep_sentences_and_bound_length():
    text = " ".join(f"Sentence number {i} has five words." for i in range(40))
    chunks = word_chunks(text, 50)
    assert all(len(c.split()) <= 50 for c in chunks) and " ".join(chunks) == text
    assert word_chunks("one " * 120, 50) == [" ".join(["one"] * 50)] * 2 + [" ".join(["one"] * 20)]


@pytest.fixture
def lexical():
    return make_scorer(ScorerConfig(name="lexical", threshold=0.6))


def test_alce_recall_and_precision(lexical):
    """Sentence by sentence: joint support for recall; a citation is imprecise when the others suffice."""
    text = ("Paris is the capital of France and Madrid is the capital of Spain [1][2]. "  # recalled, both needed
            "Paris is the capital of France [1][3]. "  # recalled, [3] is not needed: imprecise
            "Lyon is the capital of France [3]. "  # supported by no passage: not recalled
            "Madrid lies on the river Manzanares [7]. "  # [7] names no passage
            "Paris has about two million inhabitants.")  # no citation
    (a,) = analyze([ex(text)], lexical, X, max_citations=3)
    assert a.outcome == "answered" and a.sentences == 5
    assert a.recalled == 2
    assert (a.precise, a.prec_total) == (3, 5)  # [1][2] precise, [1] precise, [3] imprecise twice (overcite; unsupported)
    assert (a.valid_ids, a.cited_ids) == (5, 6)
    assert (a.supported, a.claims) == (4, 5)  # only the Lyon claim: the first needs two passages and has them
    rates = summarize([a], 0.95)["rates"]
    assert rates["citation_recall"].value == pytest.approx(2 / 5)
    assert rates["citation_precision"].value == pytest.approx(3 / 5)
    assert rates["hallucination_rate"].value == 1.0 and rates["groundedness"].value == pytest.approx(0.8)


def test_outcomes_are_exclusive_and_never_nan(lexical):
    exchanges = [ex("Paris is the capital of France [1].", rid="ok"),
                 ex("I'm sorry, I cannot answer that.", rid="refusal"),
                 ex("   ", rid="empty"),
                 ex("Four.", messages=[{"role": "user", "content": "What is 2 + 2?"}], rid="nocontext"),
                 ex(None, status=502, rid="error")]
    out = analyze(exchanges, lexical, X, 3)
    assert [a.outcome for a in out] == ["answered", "refusal", "empty", "no_context", "error"]
    s = summarize(out, 0.95)
    r = s["rates"]
    assert r["hallucination_rate"].value == 0.0 and r["hallucination_rate"].n == 1  # refusals never count
    assert r["refusal_rate"].value == r["empty_rate"].value == r["no_context_rate"].value == 0.25
    assert r["error_rate"].value == 0.2
    assert r["exact_match"].value is None and r["exact_match"].n == 0  # no reference: "no data", not NaN
    assert s["counts"] | {} == {**s["counts"], "answered": 1, "refusal": 1, "empty": 1, "no_context": 1, "error": 1}
    assert set(r) == set(METRICS)


def test_consistency_against_references(lexical):
    out = analyze([ex("Paris [1].", reference="Paris"), ex("The capital is Paris.", reference="Paris", rid="b"),
                   ex("I'm sorry, I can't help.", reference="Madrid", rid="c")], lexical, X, 3)
    r = summarize(out, 0.95)["rates"]
    assert r["exact_match"].value == pytest.approx(1 / 3)  # citations are stripped before comparing
    assert r["token_f1"].value == pytest.approx((1 + 0.5 + 0) / 3)
    assert 0 < r["rouge_l"].value < r["token_f1"].value + 0.2


def test_windows_keep_empty_ones(lexical):
    t0 = 1_764_576_000.0  # an hour boundary
    out = analyze([ex("Paris is the capital of France [1].", t=t0 + 10, rid="a"),
                   ex("Paris is the capital of France [1].", t=t0 + 2 * 3600 + 5, rid="b")], lexical, X, 3)
    w = by_window(out, 3600)
    assert [(s - t0, len(v)) for s, _, v in w] == [(0, 1), (3600, 0), (7200, 1)]
    assert by_window(out, 0)[0][2] == out


def test_resolve_positional_aliases():
    p = X.passages(ex("x", messages=[{"role": "user", "content": "q"}],
                      documents=[{"id": "doc-7", "text": "a"}, {"id": "doc-9", "text": "b"}]))
    assert [q.id if q else None for q in resolve(["2", "doc-7", "5"], p)] == ["doc-9", "doc-7", None]
