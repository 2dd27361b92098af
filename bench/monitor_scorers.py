"""Responses per second of the monitor's scorers on one core, beside the anchors' way of doing the same.

    .venv/bin/python bench/monitor_scorers.py [--responses 200] [--nli-responses 6] [--threads 1]

Responses of a realistic RAG shape: two passages of ~300 checker tokens (sentences of
data/tokenizer_corpus.txt), an answer of 3 claims, each citing a passage, every third claim unsupported.
Each row runs the monitor's whole analysis (extraction, groundedness with max over chunks, ALCE citation
recall and precision) through `llmbuild.monitor.metrics.analyze`:
- lexical: the lexical scorer; beside it, the anchor way of a lexical support check: rouge-score's
  ROUGE-1 precision of each claim against each passage (the n-gram check SelfCheckGPT and ALCE build on).
- nli: a DeBERTa-v3-small-sized checker (hidden 768, 6 layers, 12 heads, intermediate 3072, 128,100-word
  embedding, 256 position buckets: microsoft/deberta-v3-small's config.json) with random weights, saved as a
  checkpoint and loaded by the nli scorer; fp32 and bfloat16; beside it, transformers' text-classification
  pipeline on the same pairs (what TruLens' NLI groundedness calls), one pair at a time.
- the aim's unit: seconds per 2,048-token passage-claim pair, chunked by the scorer into 400-token chunks
  (max over chunks, as AlignScore/MiniCheck do), and unchunked (one 2,048-token input, as HHEM reads it).
Timings are best of 3 after a warm-up; the machine is shared, so compare rows of one run (the ratios).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / ".work" / "monitor"
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

DEBERTA_V3_SMALL = dict(hidden=768, layers=6, num_attention_heads=12, intermediate_size=3072, vocab_size=128100,
                        position_buckets=256, max_position_embeddings=512, norm_rel_ebd="layer_norm",
                        share_att_key=True, max_relative_positions=-1, position_biased_input=False)


def sentences() -> list[str]:
    text = (REPO / "data" / "tokenizer_corpus.txt").read_text()
    return [s.strip() + "." for s in text.replace("\n", " ").split(". ") if 30 < len(s) < 200]


def make_responses(n: int, count_tokens, seed: int = 0):
    from llmbuild.monitor.records import Exchange

    rng = random.Random(seed)
    sents = sentences()
    out = []
    for i in range(n):
        passages = []
        for _ in range(2):
            p, k = [], 0
            while k < 300:
                s = rng.choice(sents)
                p.append(s)
                k += count_tokens(s)
            passages.append(" ".join(p))
        claims = []
        for j in range(3):
            src = rng.randrange(2)
            s = rng.choice(passages[src].split(". ")) if j != 2 else rng.choice(sents)
            claims.append(f"{s.rstrip('.')} [{src + 1}].")
        prompt = "\n".join(f"Document [{k + 1}](Title: t{k}): {p}" for k, p in enumerate(passages)) + "\n\nQuestion: ?"
        out.append(Exchange(where=f"bench:{i}", id=f"r{i}", time=time.time(), messages=[{"role": "user", "content": prompt}],
                            response=" ".join(claims)))
    return out


def best(fn, repeat=3):
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def nli_rows(checker: Path, dtype: str, args, x) -> list[tuple]:
    """The nli scorer's full analysis, and one 2,048-token pair chunked and whole, in one precision."""
    from llmbuild.monitor.config import ScorerConfig
    from llmbuild.monitor.metrics import analyze
    from llmbuild.monitor.scorers import make_scorer

    nli = make_scorer(ScorerConfig(name="nli", model=str(checker), threads=args.threads, dtype=dtype, batch_size=8))
    responses = make_responses(args.nli_responses, nli._count, seed=1)

    def run_nli():
        nli._cache.clear()
        analyze(responses, nli, x, 3)

    t = best(run_nli, repeat=2)
    rows = [(f"nli {dtype} (llmbuild, full analysis, {nli.calls // 3} pairs/run)", args.nli_responses / t, None)]
    ids = nli.tok(" ".join(sentences()), add_special_tokens=False).input_ids[:2040]
    premise, claim = nli.tok.decode(ids), "The river runs through the old town."

    def chunked():
        nli._cache.clear()
        nli.support([(c, claim) for c in nli.chunks(premise)])

    big = make_scorer(ScorerConfig(name="nli", model=str(checker), threads=args.threads, dtype=dtype,
                                   max_length=2048, chunk_tokens=2040))

    def whole():
        big._cache.clear()
        big.support([(premise, claim)])

    rows.append((f"  2,048-token pair, {dtype}: 400-token chunks | one input", None, (best(chunked, 2), best(whole, 2))))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--responses", type=int, default=200)
    ap.add_argument("--nli-responses", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from rouge_score import rouge_scorer

    from llmbuild.monitor.config import ExtractionConfig, ScorerConfig
    from llmbuild.monitor.extraction import Extractor
    from llmbuild.monitor.metrics import analyze
    from llmbuild.monitor.scorers import make_scorer
    from tests.monitor.helpers import make_checker

    checker = WORK / "deberta-v3-small-random"
    if not (checker / "config.json").exists():
        make_checker(checker, **DEBERTA_V3_SMALL)
    x = Extractor(ExtractionConfig())
    rows = []

    lex = make_scorer(ScorerConfig(name="lexical", threshold=0.6))
    responses = make_responses(args.responses, lambda s: len(s.split()) * 4 // 3)

    def run_lexical():
        lex._cache.clear()
        lex._premise_words.clear()
        analyze(responses, lex, x, 3)

    t = best(run_lexical)
    rows.append(("lexical (llmbuild, full analysis)", args.responses / t, None))
    rouge = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)

    def run_rouge():  # the same claims against the same passages, ROUGE-1 precision per pair, no extraction
        for ex in responses:
            ps = [p.text for p in x.passages(ex)]
            for s in x.sentences(ex.response):
                max(rouge.score(s.text, p)["rouge1"].precision for p in ps)

    t_rouge = best(run_rouge)
    rows.append(("anchor: rouge-score ROUGE-1 precision per pair", args.responses / t_rouge, None))

    for dtype in ("float32", "bfloat16"):
        rows += nli_rows(checker, dtype, args, x)

    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    pipe = pipeline("text-classification", model=AutoModelForSequenceClassification.from_pretrained(checker),
                    tokenizer=AutoTokenizer.from_pretrained(checker), device="cpu", top_k=None)
    nli = make_scorer(ScorerConfig(name="nli", model=str(checker), threads=args.threads))
    nli_responses = make_responses(args.nli_responses, nli._count, seed=1)
    pairs = []
    for ex in nli_responses:
        ps = [c for p in x.passages(ex) for c in nli.chunks(p.text)]
        pairs += [(c, s.text) for s in x.sentences(ex.response) for c in ps]

    def run_pipe():
        for p, h in pairs:
            pipe({"text": p, "text_pair": h}, truncation="only_first", max_length=512)

    t = best(run_pipe, repeat=1)
    rows.append((f"anchor: transformers pipeline, same groundedness pairs only ({len(pairs)})", args.nli_responses / t, None))

    print(f"threads {args.threads}, torch {torch.__version__}, {os.cpu_count()} CPUs visible, load {os.getloadavg()[0]:.2f}")
    print(f"{'row':78s} {'responses/s':>12s}")
    for name, rps, pair in rows:
        if pair:
            print(f"{name:78s} {pair[0]:8.3f} s | {pair[1]:.3f} s")
        else:
            print(f"{name:78s} {rps:12.2f}")
    lexical, anchor = rows[0][1], rows[1][1]
    print(f"lexical / rouge-score: {lexical / anchor:.2f}x; aim >= 200 responses/s: {'met' if lexical >= 200 else 'missed'}")


if __name__ == "__main__":
    main()
