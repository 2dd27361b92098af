"""Contamination analysis on 100k synthetic training documents, beside lm-evaluation-harness's own code.

    .venv/bin/python bench/contamination.py                  # 100k training documents, 3 evaluation sets
    .venv/bin/python bench/contamination.py --train 20000    # smaller
    .venv/bin/python bench/contamination.py --no-harness     # llmbuild's index only

The data (made here, seeded): training documents of 20-120 words drawn from a Zipf-like vocabulary of
30,000 made-up words, written as a `text`-shape JSONL file as a fine-tuning dataset is; three
evaluation sets of 2,000 documents each (MMLU-like 15-40 words, paragraphs of 60-150 words, golden-like
6-12 words), of which a known share copies a span of a training document (13 to 40 words, with its case
and punctuation changed) into an otherwise new document.

Rows (each one process, one run; times on a shared 2-core machine are noisy, so compare the ratio):
- llmbuild: `llmbuild.evaluation.contamination` reading the JSONL and analysing all sets
  (`training_documents` + `analyse`, the contamination stage's work).
- harness: lm-evaluation-harness 0.4.13's decontamination as its README describes it: the training
  set's 13-grams written with its Janitor's normalization and word_ngrams as sorted `ngram doc_id`
  lines in a zstd file (what scripts/clean_training_data makes for the Pile; that script is not in
  the wheel, so the same steps are done here with the harness's functions), then
  `lm_eval.decontamination.decontaminate.get_train_overlap`, which indexes the evaluation documents
  and scans that file. It needs `zstandard`, `jsonlines` (pip) and the `zstd` program; without them the
  row is skipped with the reason.
Both must find the planted documents of 13 words or more; llmbuild also judges the shorter ones whole
(the harness has no rule for them), which is counted apart.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETS = (("mmlu-like", 15, 40), ("paragraphs", 60, 150), ("golden-like", 6, 12))


def make_data(n_train: int, n_eval: int, share: float, seed: int = 0):
    rnd = random.Random(seed)
    vocab = ["".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 9))) for _ in range(30000)]
    cum, total = [], 0.0
    for i in range(len(vocab)):  # Zipf: a few words are everywhere, as in text
        total += 1 / (i + 1)
        cum.append(total)

    def words(n):
        return rnd.choices(vocab, cum_weights=cum, k=n)

    train = [" ".join(words(rnd.randint(20, 120))) for _ in range(n_train)]
    sets, planted = [], []
    for name, lo, hi in SETS:
        docs, mark = [], set()
        for i in range(n_eval):
            n = rnd.randint(lo, hi)
            if rnd.random() < share:
                src = rnd.choice(train).split()
                k = min(len(src), n, rnd.randint(13, 40))
                start = rnd.randint(0, len(src) - k)
                span = [w.upper() if rnd.random() < 0.3 else w for w in src[start:start + k]]
                span = [w + rnd.choice(",.;:!?") if rnd.random() < 0.2 else w for w in span]
                doc = words(rnd.randint(0, max(0, n - k)) // 2) + span + words(max(0, n - k) // 2)
                if k >= 13 or len(doc) == k:
                    mark.add(i)
            else:
                doc = words(n)
            docs.append(" ".join(doc))
        sets.append((name, docs))
        planted.append(mark)
    return train, sets, planted


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_llmbuild(train_file: Path, sets) -> tuple[float, dict]:
    from llmbuild.evaluation import contamination as ct

    t0 = time.perf_counter()
    train = ct.training_documents([SimpleNamespace(path=str(train_file), shape="text")])
    rec = ct.analyse([ct.EvalSet(name, "bench", docs) for name, docs in sets], train, n=13, min_words=8)
    return time.perf_counter() - t0, {s["set"]: s for s in rec["sets"]}


def run_harness(train: list[str], sets, work: Path) -> tuple[float, float, dict]:
    """(seconds to write the training 13-grams, seconds of get_train_overlap, contaminated ids per set)"""
    import zstandard

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        from lm_eval.decontamination.decontaminate import get_train_overlap
        from lm_eval.decontamination.janitor import Janitor, word_ngrams
    ngrams = work / "ngrams"
    ngrams.mkdir()
    t0 = time.perf_counter()
    jan = Janitor()
    lines = [f"{g} {i}" for i, doc in enumerate(train) for g in word_ngrams(jan.normalize_string(doc), 13)]
    lines.sort()
    with open(ngrams / "ngrams_0.bkt.txt.sorted.zst", "wb") as f, \
            zstandard.ZstdCompressor(level=3).stream_writer(f) as z:
        for line in lines:
            z.write(line.encode() + b"\n")
    (ngrams / "info.json").write_text(json.dumps({"ngram_size": 13}))
    del lines
    t1 = time.perf_counter()
    cwd = os.getcwd()
    os.chdir(work)  # it keeps its lookups under ./data/<task>/
    saved = os.dup(2)
    try:
        os.mkdir("data")
        # its reader runs `zstd -d` in a shell, which reports on file descriptor 2
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            found = get_train_overlap({(name, "test"): docs for name, docs in sets}, str(ngrams), limit=0)
    finally:
        os.dup2(saved, 2)
        os.chdir(cwd)
    return t1 - t0, time.perf_counter() - t1, found


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", type=int, default=100_000, help="training documents")
    ap.add_argument("--eval", type=int, default=2000, help="documents per evaluation set")
    ap.add_argument("--share", type=float, default=0.05, help="share of evaluation documents with a copied span")
    ap.add_argument("--no-harness", action="store_true", help="skip lm-evaluation-harness's row")
    a = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="llmbuild-contamination-bench-"))
    try:
        t = time.perf_counter()
        train, sets, planted = make_data(a.train, a.eval, a.share)
        train_file = work / "train.jsonl"
        with open(train_file, "w") as f:
            f.writelines(json.dumps({"text": d}) + "\n" for d in train)
        n_words = sum(len(d.split()) for d in train)
        print(f"data: {len(train):,} training documents ({n_words:,} words), {len(sets)} evaluation sets of "
              f"{a.eval:,} documents, {a.share:.0%} with a copied span; made in {time.perf_counter() - t:.1f} s")
        ours_s, ours = run_llmbuild(train_file, sets)
        print(f"llmbuild   index + scan {ours_s:7.2f} s   peak RSS {peak_mb():,.0f} MB")
        for (name, docs), mark in zip(sets, planted):
            s = ours[name]
            long_found = {x for x in mark if len(docs[x].split()) >= 13}
            print(f"  {name:12s} {s['contaminated']:5d} of {s['documents']} contaminated ({s['share']:.2%}); "
                  f"planted {len(mark)}, {s['too_short']} too short to judge")
            ex = s["examples"][0] if s["examples"] else None
            if ex:
                print(f"               e.g. doc {ex['doc']} shares \"{ex['ngram'][:60]}\" with {ex['training']}")
            assert s["contaminated"] >= len(long_found), (name, s["contaminated"], len(long_found))
        if a.no_harness:
            return 0
        try:
            import jsonlines  # noqa: F401  (imported by the harness's archiver)
            import zstandard  # noqa: F401
        except ImportError as e:
            print(f"harness    skipped: {e.name} is not installed (pip install zstandard jsonlines)")
            return 0
        if not shutil.which("zstd"):
            print("harness    skipped: the zstd program is not installed (the harness's reader runs `zstd -d`)")
            return 0
        gen_s, scan_s, found = run_harness(train, sets, work)
        total = gen_s + scan_s
        print(f"harness    13-gram file {gen_s:7.2f} s + get_train_overlap {scan_s:7.2f} s = {total:7.2f} s")
        agree = True
        for name, docs in sets:
            theirs = set(found.get(name, set()))
            mine = {e for e in range(len(docs)) if len(docs[e].split()) >= 13} & set(_ids(ours[name], docs, work))
            same = theirs == mine
            agree &= same
            print(f"  {name:12s} harness {len(theirs):5d} contaminated (documents of 13+ words); llmbuild "
                  f"{len(mine):5d} of those: {'same documents' if same else 'DIFFERENT'}")
        print(f"ratio      harness / llmbuild = {total / ours_s:.1f}x (get_train_overlap alone: {scan_s / ours_s:.1f}x)")
        return 0 if agree else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _ids(rec: dict, docs: list[str], work: Path) -> list[int]:
    """Every contaminated document id of one set (the record quotes only a few): rerun with all examples."""
    from llmbuild.evaluation import contamination as ct

    train = ct.training_documents([SimpleNamespace(path=str(work / "train.jsonl"), shape="text")])
    full = ct.analyse([ct.EvalSet(rec["set"], "bench", docs)], train, n=13, min_words=13, examples=len(docs))
    return [x["doc"] for x in full["sets"][0]["examples"]]


if __name__ == "__main__":
    sys.exit(main())
