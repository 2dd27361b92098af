"""Multiple choice as lm-evaluation-harness scores it (0-shot), for any runtime that returns logits.

The prompts are lm-evaluation-harness's task configs (lm_eval/tasks/mmlu/default/_default_template_yaml
with its per-subject description; lm_eval/tasks/hellaswag/{hellaswag.yaml,utils.py}); each choice is a
(context, " " + choice) log-likelihood request tokenized like its HFLM does (`_encode_pair`: trailing
spaces of the context move to the continuation, the pair is encoded whole and the context's tokens
cut off, the tokenizer's own special tokens kept); `acc` picks the highest summed log-probability of
the continuation's tokens and `acc_norm` the highest divided by the choice's length in characters.
tests/evaluation/test_lm_eval.py runs lm-evaluation-harness itself on the same model and files and
checks the numbers agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TARGET_DELIMITER = " "  # lm-evaluation-harness's default between context and choice


@dataclass
class Doc:
    context: str
    choices: list[str]  # what acc_norm measures the length of
    gold: int


def mmlu_doc(rec: dict) -> Doc:
    subject = rec.get("subject") or ""
    description = (f"The following are multiple choice questions (with answers) about "
                   f"{subject.replace('_', ' ')}.\n\n" if subject else "")
    c = rec["choices"]
    text = (f"{rec['question'].strip()}\nA. {c[0]}\nB. {c[1]}\nC. {c[2]}\nD. {c[3]}\nAnswer:")
    return Doc(description + text, ["A", "B", "C", "D"], rec["answer"])


def _hellaswag_preprocess(text: str) -> str:
    text = text.strip()
    # brackets are artifacts of the WikiHow part of HellaSwag
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def hellaswag_doc(rec: dict) -> Doc:
    ctx = rec["ctx_a"] + " " + rec["ctx_b"].capitalize()
    return Doc(_hellaswag_preprocess(rec["activity_label"] + ": " + ctx),
               [_hellaswag_preprocess(e) for e in rec["endings"]], int(rec["label"]))


DOCS = {"mmlu": mmlu_doc, "hellaswag": hellaswag_doc}


def encode_pair(tok, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-evaluation-harness's HFLM._encode_pair for a causal model with add_bos_token unset."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = list(tok.encode(context + continuation))
    ctx = list(tok.encode(context))
    return ctx, whole[len(ctx):]


def requests(doc: Doc, tok, max_length: int) -> list[dict]:
    """One request per choice: the token ids a runtime is fed and which of them are scored."""
    out = []
    for choice in doc.choices:
        ctx, cont = encode_pair(tok, doc.context, TARGET_DELIMITER + choice)
        # the harness feeds (context + continuation)[-(max_length + 1):][:-1]; the runtimes here get the
        # same window with its last token, whose logits are simply not read
        ids = (ctx + cont)[-(max_length + 1):]
        out.append({"ids": ids, "n_cont": len(cont)})
    return out


def loglikelihood(logits, ids: list[int], n_cont: int) -> float:
    """Sum of log-probabilities of the last n_cont tokens of `ids` under `logits` [len(ids), vocab]."""
    import numpy as np

    lg = np.asarray(logits[len(ids) - n_cont - 1: len(ids) - 1], dtype=np.float64)
    lp = lg - np.logaddexp.reduce(lg, axis=-1, keepdims=True)
    return float(lp[np.arange(n_cont), ids[len(ids) - n_cont:]].sum())


def score(doc: Doc, lls: list[float]) -> dict:
    import numpy as np

    lls = np.asarray(lls)
    lengths = np.array([float(len(c)) for c in doc.choices])
    pred, pred_norm = int(np.argmax(lls)), int(np.argmax(lls / lengths))
    return {"pred": pred, "pred_norm": pred_norm, "acc": float(pred == doc.gold),
            "acc_norm": float(pred_norm == doc.gold)}
