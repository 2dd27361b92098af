"""The contamination index on documents made here: the harness's normalization, n-gram and whole-document
overlap, no overlap across two training documents, hash collisions never counted, chunked training
sets, and the recipe's evaluation sets and fine-tuning data read as documents."""

from __future__ import annotations

import json
import string
from types import SimpleNamespace

import pytest

from llmbuild.config import ContaminationConfig, EvalConfig, McFormat, McTask
from llmbuild.errors import InvalidInput
from llmbuild.evaluation import contamination as ct
from tests.conftest import REPO

WORDS = [f"w{i}" for i in range(400)]


def sentence(seed: int, n: int) -> str:
    import random

    r = random.Random(seed)
    return " ".join(r.choice(WORDS) for _ in range(n))


def test_normalization_is_the_harness_janitor():
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        from lm_eval.decontamination.janitor import Janitor, word_ngrams
    text = "  Hello, World!  It's 3 o'clock:\tThe QUICK brown-fox (jumps)... über café\n" + string.punctuation
    jan = Janitor()
    assert ct.words(text) == jan.normalize_string(text).split()
    ngrams = [" ".join(ct.words(text)[i:i + 3]) for i in range(len(ct.words(text)) - 2)]
    assert ngrams == list(word_ngrams(jan.normalize_string(text), 3))


def analyse(eval_docs, train_docs, **kw):
    sets = [ct.EvalSet("s", "test", eval_docs)]
    train = [ct.TrainDoc(t, f"train.jsonl:{i + 1}") for i, t in enumerate(train_docs)]
    return ct.analyse(sets, train, **kw)["sets"][0]


def test_a_shared_13_gram_is_found_and_quoted():
    clean = [sentence(i, 40) for i in range(20)]
    secret = sentence(99, 30)
    evals = [*clean[:5], "Preamble words here. " + " ".join(secret.split()[5:18]).upper() + "! and more"]
    train = [*clean[10:], f"lots of text before {secret} and after"]
    s = analyse(evals, train)
    assert (s["documents"], s["contaminated"], s["share"]) == (6, 1, pytest.approx(1 / 6))
    ex = s["examples"][0]
    assert ex["doc"] == 5 and ex["training"] == "train.jsonl:11" and ex["ngram"] == " ".join(secret.split()[5:18])


def test_twelve_shared_words_are_not_a_13_gram():
    secret = sentence(7, 30).split()
    evals = ["x " + " ".join(secret[:12]) + " y " * 10]
    train = ["a " + " ".join(secret[:12]) + " b"]
    assert analyse(evals, train)["contaminated"] == 0
    assert analyse(evals, train, n=12)["contaminated"] == 1


def test_no_n_gram_across_two_training_documents():
    words = sentence(3, 26).split()
    evals = [" ".join(words)]
    # the 26 words are split between two consecutive training documents: no single document holds 13
    train = [" ".join(words[:10]), " ".join(words[10:20]), " ".join(words[20:])]
    assert analyse(evals, train)["contaminated"] == 0


def test_short_documents_are_judged_whole_down_to_min_words():
    train = ["User question: what is the capital of france? Paris, of course."]
    evals = ["What is the capital of France? Paris", "capital of France", "what is the capital of spain madrid"]
    s = analyse(evals, train, min_words=5)
    assert (s["contaminated"], s["checked"], s["too_short"]) == (1, 2, 1)
    assert s["examples"][0]["ngram"] == "what is the capital of france paris"
    s8 = analyse(evals, train, min_words=8)
    assert (s8["contaminated"], s8["checked"], s8["too_short"]) == (0, 0, 3)


def test_hash_collisions_never_count(monkeypatch):
    # every window hashes the same: only the word comparison keeps the answer right
    import numpy as np

    monkeypatch.setattr(ct._Flat, "hashes", lambda self, at, k: np.zeros(len(at), dtype=np.uint64))
    evals = [sentence(1, 20), sentence(2, 20)]
    train = [sentence(3, 50), "pre " + evals[1] + " post"]
    s = analyse(evals, train)
    assert s["contaminated"] == 1 and s["examples"][0]["doc"] == 1


def test_training_sets_larger_than_a_chunk(monkeypatch):
    monkeypatch.setattr(ct, "CHUNK_DOCS", 7)
    evals = [sentence(i, 20) for i in range(30)]
    train = [sentence(1000 + i, 25) for i in range(50)]
    for j, i in enumerate((3, 11, 29)):
        train[7 * j + 6] += " " + evals[i]  # at the ends of chunks
    s = analyse(evals, train, examples=5)
    assert s["contaminated"] == 3 and [x["doc"] for x in s["examples"]] == [3, 11, 29]


def test_recipe_sets_and_fine_tuning_records(tmp_path):
    train = tmp_path / "train.jsonl"
    rows = [{"messages": [{"role": "user", "content": "What is the capital of France?"},
                          {"role": "assistant", "content": "Paris"}]},
            {"messages": [{"role": "user", "content": "Name the day after Monday."},
                          {"role": "assistant", "content": "Tuesday"}]}]
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    golden = tmp_path / "golden.jsonl"
    golden.write_text(json.dumps({"prompt": "What is the capital of France?", "answer": "Paris"}) + "\n" +
                      json.dumps({"prompt": "What is the capital of Peru?", "answer": "Lima"}) + "\n")
    held = tmp_path / "held.txt"
    held.write_text("A first paragraph of prose.\n\nName the day after Monday: Tuesday.\n")
    cfg = EvalConfig(golden=str(golden), heldout_text=str(held),
                     tasks=[McTask(name="mc", path=str(REPO / "data" / "eval" / "mmlu-sample.jsonl"),
                                   format=McFormat.mmlu, limit=3)])
    sets = ct.evaluation_sets(cfg)
    assert [(s.name, s.kind, len(s.docs)) for s in sets] == [("mc", "multiple choice", 3), ("golden", "golden set", 2),
                                                            ("heldout_text", "held-out text", 2)]
    docs = ct.training_documents([SimpleNamespace(path=str(train), shape="chat")])
    assert docs[0].text == "What is the capital of France?\nParis" and docs[1].where == "train.jsonl:2"
    rec = ct.analyse(sets, docs, min_words=5)
    by = {s["set"]: s for s in rec["sets"]}
    assert by["golden"]["contaminated"] == 1 and by["golden"]["examples"][0]["training"] == "train.jsonl:1"
    assert by["heldout_text"]["contaminated"] == 1 and by["mc"]["contaminated"] == 0
    gates = ct.gates(rec, 0.25)
    assert [g["passed"] for g in gates] == [True, False, False]
    assert gates[1] == {"gate": "max_overlap", "figure": "contamination.golden.share", "value": 0.5, "limit": 0.25,
                        "passed": False, "key": "eval.contamination.max_overlap"}


@pytest.mark.parametrize(("field", "value", "needle"), [("n", 0, "eval.contamination.n"),
                                                        ("min_words", 0, "eval.contamination.min_words"),
                                                        ("max_overlap", 1.5, "eval.contamination.max_overlap")])
def test_bad_settings(field, value, needle):
    with pytest.raises(InvalidInput, match=needle.replace(".", r"\.")):
        ct.check(ContaminationConfig(**{field: value}))
