"""The metrics: each response analysed once, then rates per window and per model/build with intervals.

Every response gets one outcome, so the rates add up and nothing is NaN:
  error       the request failed (HTTP >= 400, no response)          -> error_rate only
  empty       the response has no text                                -> empty_rate
  refusal     it matches a refusal pattern                            -> refusal_rate; never a hallucination
  no_context  no passages in the request: "ungrounded: no context"    -> no_context_rate; never a hallucination
  answered    passages and an answer: claims are checked              -> the grounding and citation metrics
Factual consistency (exact_match, token_f1, rouge_l) is computed for every non-error response whose
log carries a reference answer, refusals included (a refusal is not the reference answer).

Grounding: a claim (sentence) is supported when some chunk of the passages (concatenated in order, then
chunked) supports it: AlignScore's and MiniCheck's max over chunks of the context; groundedness = supported claims / claims; hallucination_rate = answered
responses with at least one unsupported claim / answered responses with claims.
Citations, as ALCE defines them (princeton-nlp/ALCE eval.py, compute_autoais): a sentence is recalled
when the concatenation of its first `max_citations` cited passages supports it (no citation, or one that
names no passage: not recalled); for a recalled sentence with several citations, a citation is imprecise
when its passage alone does not support the sentence and the other cited passages still do; a sentence
that is not recalled makes its citations imprecise. citation_rate = answered responses citing at least
one id; citation_validity = cited ids that name a passage / cited ids. Rates here pool the units
(sentences, citations) over responses, with intervals that account for the pooling (intervals.py);
ALCE's own per-response average is in the JSON report as `alce_macro`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmbuild.evaluation.metrics import normalize, token_f1
from llmbuild.monitor.extraction import Extractor, Passage, resolve
from llmbuild.monitor.intervals import estimate
from llmbuild.monitor.records import Exchange

METRICS = {
    "hallucination_rate": "answered responses with at least one unsupported claim",
    "groundedness": "claims supported by the passages",
    "citation_rate": "answered responses that cite at least one passage",
    "citation_validity": "cited ids that name a passage",
    "citation_recall": "sentences supported by their cited passages together (ALCE)",
    "citation_precision": "citations that are needed (ALCE)",
    "exact_match": "responses equal to the reference answer (SQuAD-normalized)",
    "token_f1": "token F1 against the reference answer (SQuAD)",
    "rouge_l": "ROUGE-L F-measure against the reference answer (rouge-score, stemmed)",
    "refusal_rate": "responses that refuse",
    "empty_rate": "responses with no text",
    "no_context_rate": "responses to requests without passages (ungrounded: no context)",
    "error_rate": "requests that failed",
}
OUTCOMES = ("answered", "no_context", "refusal", "empty", "error")


@dataclass
class Analysis:
    ex: Exchange
    outcome: str
    passages: int = 0
    claims: int = 0
    supported: int = 0
    sentences: int = 0
    recalled: int = 0
    cited_ids: int = 0
    valid_ids: int = 0
    prec_total: int = 0
    precise: int = 0
    consistency: dict | None = None
    details: list[dict] = field(default_factory=list)


def _rouge():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def analyze(exchanges: list[Exchange], scorer, extractor: Extractor, max_citations: int) -> list[Analysis]:
    """One Analysis per exchange; the scorer is called twice, on every pair each phase needs, batched."""
    out: list[Analysis] = []
    work = []  # (analysis, passages, sentences)
    rouge = None
    for ex in exchanges:
        if ex.failed:
            out.append(Analysis(ex, "error"))
            continue
        text = ex.response or ""
        a = Analysis(ex, "answered")
        if ex.reference is not None:
            rouge = rouge or _rouge()
            plain = extractor.strip_citations(text)
            a.consistency = {"exact_match": float(normalize(plain) == normalize(ex.reference)),
                             "token_f1": token_f1(plain, ex.reference),
                             "rouge_l": rouge.score(ex.reference, plain)["rougeL"].fmeasure}
        passages = extractor.passages(ex)
        a.passages = len(passages)
        if not text.strip():
            a.outcome = "empty"
        elif extractor.is_refusal(text):
            a.outcome = "refusal"
        elif not passages:
            a.outcome = "no_context"
        else:
            sents = extractor.sentences(text)
            work.append((a, passages, sents))
        out.append(a)

    def joint(ps: list[Passage]) -> list[str]:
        return scorer.chunks("\n".join(p.text for p in ps))

    # phase 1: every claim against every passage chunk, and against its cited passages together
    pairs: list[tuple[str, str]] = []
    plan = []
    for a, passages, sents in work:
        all_chunks = joint(passages)  # the whole context, chunked: a claim may need two short passages
        for s in sents:
            refs = resolve(s.cited, passages)
            usable = refs[:max_citations] if s.cited and all(r is not None for r in refs) else None
            joint_chunks = joint(usable) if usable else []
            plan.append((a, s, refs, usable, all_chunks, joint_chunks))
            pairs.extend((c, s.text) for c in all_chunks)
            pairs.extend((c, s.text) for c in joint_chunks)
    scores = dict(zip(pairs, scorer.support(pairs))) if pairs else {}
    th = scorer.threshold

    def supports(chunks: list[str], claim: str) -> tuple[bool, float]:
        best = max((scores[(c, claim)] for c in chunks), default=0.0)
        return best >= th, best

    # phase 2 (ALCE precision): single and leave-one-out passages of recalled multi-citation sentences
    pairs2 = []
    for _a, s, _refs, usable, _, joint_chunks in plan:
        if usable and len(usable) > 1 and supports(joint_chunks, s.text)[0]:
            for i, p in enumerate(usable):
                pairs2.extend((c, s.text) for c in scorer.chunks(p.text))
                pairs2.extend((c, s.text) for c in joint(usable[:i] + usable[i + 1:]))
    if pairs2:
        scores.update(zip(pairs2, scorer.support(pairs2)))

    for a, s, refs, usable, all_chunks, joint_chunks in plan:
        ok, best = supports(all_chunks, s.text)
        a.claims += 1
        a.supported += ok
        a.sentences += 1
        a.cited_ids += len(s.cited)
        a.valid_ids += sum(r is not None for r in refs)
        recalled = bool(usable) and supports(joint_chunks, s.text)[0]
        a.recalled += recalled
        if usable:
            a.prec_total += len(usable)
            if recalled and len(usable) > 1:
                for i, p in enumerate(usable):
                    alone = supports(scorer.chunks(p.text), s.text)[0]
                    rest = supports(joint(usable[:i] + usable[i + 1:]), s.text)[0]
                    a.precise += alone or not rest
            elif recalled:
                a.precise += 1
        if len(a.details) < 8:
            a.details.append({"claim": s.text, "support": round(best, 4), "supported": ok, "cited": s.cited,
                              "recalled": recalled})
    return out


def units(a: Analysis, metric: str) -> tuple[float, float] | None:
    """(successes, units) this response contributes to a metric, or None when it does not apply."""
    o = a.outcome
    if metric == "error_rate":
        return float(o == "error"), 1.0
    if o == "error":
        return None
    if metric in ("refusal_rate", "empty_rate", "no_context_rate"):
        return float(o == metric[: -len("_rate")]), 1.0
    if metric in ("exact_match", "token_f1", "rouge_l"):
        return (a.consistency[metric], 1.0) if a.consistency else None
    if o != "answered":
        return None
    if metric == "citation_rate":
        return float(a.cited_ids > 0), 1.0
    if metric == "citation_validity":
        return (float(a.valid_ids), float(a.cited_ids)) if a.cited_ids else None
    if metric == "citation_recall":
        return (float(a.recalled), float(a.sentences)) if a.sentences else None
    if metric == "citation_precision":
        return (float(a.precise), float(a.prec_total)) if a.prec_total else None
    if metric == "groundedness":
        return (float(a.supported), float(a.claims)) if a.claims else None
    if metric == "hallucination_rate":
        return (float(a.supported < a.claims), 1.0) if a.claims else None
    raise KeyError(metric)


def summarize(analyses: list[Analysis], confidence: float) -> dict:
    """Every metric's Estimate, the outcome counts, and ALCE's per-response averages, for one set of responses."""
    rates = {}
    for m in METRICS:
        us = []
        for a in analyses:
            u = units(a, m)
            if u is not None:
                us.append((u[0], u[1], a.ex.weight))
        rates[m] = estimate(us, confidence)
    counts = {o: sum(a.outcome == o for a in analyses) for o in OUTCOMES}
    counts["responses"] = len(analyses)
    counts["claims"] = sum(a.claims for a in analyses)
    counts["supported_claims"] = sum(a.supported for a in analyses)
    counts["citations"] = sum(a.cited_ids for a in analyses)
    counts["weighted_responses"] = round(sum(a.ex.weight for a in analyses), 3)
    answered = [a for a in analyses if a.outcome == "answered" and a.sentences]
    macro = {}
    if answered:
        macro["citation_recall"] = round(sum(a.recalled / a.sentences for a in answered) / len(answered), 6)
        macro["citation_precision"] = round(sum(a.precise / a.prec_total if a.prec_total else 0.0
                                                for a in answered) / len(answered), 6)
    return {"rates": rates, "counts": counts, "alce_macro": macro}


def group_of(a: Analysis) -> str:
    return f"{a.ex.model or 'unknown'} @ {a.ex.build or 'no build'}"


def by_group(analyses: list[Analysis]) -> dict[str, list[Analysis]]:
    """Responses per model/build, and "all" of them when there are several."""
    groups: dict[str, list[Analysis]] = {}
    for a in analyses:
        groups.setdefault(group_of(a), []).append(a)
    if len(groups) > 1:
        groups["all"] = list(analyses)
    return groups


def by_window(analyses: list[Analysis], window_s: float) -> list[tuple[float, float, list[Analysis]]]:
    """Consecutive windows [start, end) of `window_s` seconds aligned to the epoch (one window when 0),
    with the empty ones between busy ones kept, so a quiet hour is shown as empty, not skipped."""
    if not analyses:
        return []
    times = [a.ex.time for a in analyses]
    if window_s <= 0:
        return [(min(times), max(times), list(analyses))]
    first, last = int(min(times) // window_s), int(max(times) // window_s)
    if last - first > 10000:  # a stray timestamp must not make ten thousand windows
        first = last - 10000
    buckets: dict[int, list[Analysis]] = {k: [] for k in range(first, last + 1)}
    for a in analyses:
        k = int(a.ex.time // window_s)
        if k in buckets:
            buckets[k].append(a)
    return [(k * window_s, (k + 1) * window_s, v) for k, v in sorted(buckets.items())]


def plain(summary: dict) -> dict:
    return {"rates": {m: e.as_dict() for m, e in summary["rates"].items()}, "counts": summary["counts"],
            "alce_macro": summary["alce_macro"]}


