"""The evaluation files (format errors name file and line), the windows and figures, the gate table."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llmbuild.errors import InvalidInput
from llmbuild.evaluation import data, metrics
from llmbuild.evaluation import multiple_choice as mc
from llmbuild.stages import evaluate
from tests.conftest import REPO

SAMPLES = REPO / "data" / "eval"


def test_shipped_samples_read():
    mmlu = data.read_mc(SAMPLES / "mmlu-sample.jsonl", "mmlu", "eval.tasks[0]")
    hs = data.read_mc(SAMPLES / "hellaswag-sample.jsonl", "hellaswag", "eval.tasks[1]")
    assert len(mmlu) == 12 and len(hs) == 10
    assert data.read_mc(SAMPLES / "mmlu-sample.jsonl", "mmlu", "k", limit=3) == mmlu[:3]
    assert data.read_text(SAMPLES / "parity.txt", "eval.text").strip()


@pytest.mark.parametrize("fmt, line, words", [
    ("mmlu", '{"question": "Q?", "choices": ["a", "b", "c"], "answer": 0}', ["'choices' (4 strings)"]),
    ("mmlu", '{"question": "Q?", "choices": ["a", "b", "c", "d"], "answer": 7}', ["'answer' must be 0-3 or A-D"]),
    ("mmlu", '{"question": "Q?", "choices": ["a", "b", "c", "d"], "answer": 1', ["not valid JSON"]),
    ("hellaswag", '{"activity_label": "x", "ctx_a": "a", "endings": ["e1", "e2"], "label": "0"}', ["missing ctx_b"]),
    ("hellaswag", '{"activity_label": "x", "ctx_a": "a", "ctx_b": "b", "endings": ["e1", "e2"], "label": "5"}',
     ["'label' must index 'endings'"]),
])
def test_wrong_format_names_file_and_line(tmp_path, fmt, line, words):
    f = tmp_path / "bad.jsonl"
    good = SAMPLES / f"{fmt}-sample.jsonl"
    f.write_text(good.read_text().splitlines()[0] + "\n\n" + line + "\n")
    with pytest.raises(InvalidInput) as e:
        data.read_mc(f, fmt, "eval.tasks[0]")
    msg = str(e.value)
    assert msg.startswith(f"eval.tasks[0].path: {f}:3: ") and "\n" not in msg
    assert all(w in msg for w in words), msg


def test_golden_and_text_errors(tmp_path):
    f = tmp_path / "g.jsonl"
    f.write_text('{"prompt": "a", "answer": "b"}\n{"prompt": "a"}\n')
    with pytest.raises(InvalidInput, match=rf"eval\.golden: {f}:2: a golden record needs"):
        data.read_golden(f, "eval.golden")
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(InvalidInput, match=r"eval\.text: .*empty\.txt is empty"):
        data.read_text(tmp_path / "empty.txt", "eval.text")
    with pytest.raises(InvalidInput, match=r"eval\.text: .*nope\.txt not found"):
        data.read_text(tmp_path / "nope.txt", "eval.text")


def test_windows_follow_llama_perplexity():
    ids = list(range(10, 40))  # 30 tokens
    w = metrics.windows(ids, 8, bos=1, max_windows=0)
    assert len(w) == 3 and all(len(c) == 8 and c[0] == 1 for c in w)  # partial last chunk dropped
    assert w[1][1:] == ids[9:16]
    assert metrics.windows(ids, 100, bos=None, max_windows=4) == [ids]  # shorter than a window: one chunk
    assert len(metrics.windows(ids, 8, bos=1, max_windows=2)) == 2
    # rows first..n-2 predict tokens first+1..n-1: the second half of the window
    lg = np.arange(8)[:, None] * np.ones((1, 3))
    assert metrics.scored_rows(lg, 8)[:, 0].tolist() == [4, 5, 6]


def test_nll_and_perplexity():
    rows = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]))
    nll = metrics.nll(rows, [0, 2])
    np.testing.assert_allclose(nll, [np.log(2), -np.log(0.8)])
    assert metrics.perplexity(nll) == pytest.approx(np.exp(nll.mean()))


def test_golden_scores():
    s = metrics.golden_scores(["Paris", " the Paris.", "Lyon"], ["Paris", "Paris", "Paris"])
    assert s == {"n": 3, "exact_match": round(1 / 3, 4), "token_f1": round(2 / 3, 4), "contains": round(2 / 3, 4)}
    assert metrics.token_f1("New York City", "new york") == pytest.approx(0.8)


def test_mc_prompts_are_lm_eval_s():
    rec = {"question": " What is 2+2? ", "choices": ["1", "2", "3", "4"], "answer": 3, "subject": "elementary_mathematics"}
    d = mc.mmlu_doc(rec)
    assert d.context == ("The following are multiple choice questions (with answers) about elementary mathematics.\n\n"
                         "What is 2+2?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:")
    assert d.choices == ["A", "B", "C", "D"] and d.gold == 3
    h = mc.hellaswag_doc({"activity_label": "Cooking", "ctx_a": "[header] Boil water.", "ctx_b": "then",
                          "endings": [" pour  it [title] out.", "x"], "label": "1"})
    assert h.context == "Cooking: Boil water. Then" and h.choices == ["pour it. out.", "x"] and h.gold == 1
    s = mc.score(mc.Doc("c", ["a", "bbbb"], 1), [-2.0, -4.0])
    assert s == {"pred": 0, "pred_norm": 1, "acc": 0.0, "acc_norm": 1.0}  # -2/1 < -4/4


def test_gate_table_covers_every_gate_and_figure():
    from llmbuild.stages.verify import GATES
    from llmbuild.targets.common import Gates

    assert set(GATES) == set(Gates.__dataclass_fields__)
    rec = {"parity": {"kld_mean": 0.2, "top1": 0.9, "ppl_ratio": 1.01, "text": "t.txt"},
           "perplexity": {"ratio": 1.3, "ppl": 9.0},
           "tasks": {"mmlu": {"acc": 0.4, "acc_norm": 0.5}, "hs": {"acc": 0.2, "acc_norm": 0.3}},
           "golden": {"exact_match": 0.5, "status": "x"}}
    res = evaluate.apply_gates(rec, {"max_kld": 0.1, "max_ppl_ratio": 1.2, "min_acc": 0.3, "min_golden_em": 0.5,
                                     "max_abs_diff": 1.0, "min_top1": None})
    failed = {(r["gate"], r["figure"]) for r in res if not r["passed"]}
    assert failed == {("max_kld", "parity.kld_mean"), ("max_ppl_ratio", "perplexity.ratio"), ("min_acc", "tasks.hs.acc")}
    assert {r["figure"] for r in res} == {"parity.kld_mean", "parity.ppl_ratio", "perplexity.ratio", "tasks.mmlu.acc",
                                          "tasks.hs.acc", "golden.exact_match"}


def test_check_rejects_bad_settings(tmp_path):
    from llmbuild.config import EvalConfig, McFormat, McTask

    cfg = EvalConfig(tasks=[McTask(name="a", path=str(SAMPLES / "mmlu-sample.jsonl"), format=McFormat.mmlu),
                            McTask(name="a", path=str(SAMPLES / "mmlu-sample.jsonl"), format=McFormat.mmlu)])
    with pytest.raises(InvalidInput, match=r"eval\.tasks\[1\]\.name: task name 'a' is used twice"):
        evaluate.check(cfg)
    with pytest.raises(InvalidInput, match=r"eval\.golden_prompt"):
        evaluate.check(EvalConfig(golden_prompt="markdown"))
    with pytest.raises(InvalidInput, match=r"eval\.tasks\[0\]\.path: .*hellaswag-sample\.jsonl:1: an mmlu record"):
        evaluate.check(EvalConfig(tasks=[McTask(name="x", path=str(SAMPLES / "hellaswag-sample.jsonl"))]))
    assert not evaluate.enabled(EvalConfig()) and evaluate.enabled(EvalConfig(text="t.txt"))
    json.dumps(evaluate.key_parts(EvalConfig(text=str(SAMPLES / "parity.txt")), lambda p: "d" * 64))
