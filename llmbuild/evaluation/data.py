"""The evaluation files, read and checked: a wrong file fails the plan with its path and line.

Formats (one JSON object per line):
- mmlu       {"question": str, "choices": [4 str], "answer": 0-3 or "A"-"D", "subject"?: str}
             (cais/mmlu's fields; `subject` picks lm-evaluation-harness's per-subject description)
- hellaswag  {"activity_label": str, "ctx_a": str, "ctx_b": str, "endings": [str, ...], "label": int or
             digit string} (Rowan/hellaswag's fields)
- golden     {"prompt": str, "answer": str}
Texts are UTF-8 files that must hold some text.
"""

from __future__ import annotations

import json
from pathlib import Path

from llmbuild.errors import InvalidInput

FORMATS = ("mmlu", "hellaswag")
LETTERS = "ABCD"


def read_text(path: str | Path, key: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise InvalidInput(f"{key}: {p} not found")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InvalidInput(f"{key}: {p} is not UTF-8 text (byte {e.start})") from None
    if not text.strip():
        raise InvalidInput(f"{key}: {p} is empty")
    return text


def _jsonl(path: Path, key: str):
    if not path.is_file():
        raise InvalidInput(f"{key}: {path} not found")
    n_records = 0
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise InvalidInput(f"{key}: {path}:{n}: not valid JSON ({e.msg} at column {e.colno})") from None
                if not isinstance(rec, dict):
                    raise InvalidInput(f"{key}: {path}:{n}: a record must be a JSON object")
                n_records += 1
                yield n, rec
    except UnicodeDecodeError as e:
        raise InvalidInput(f"{key}: {path} is not UTF-8 text (byte {e.start})") from None
    if not n_records:
        raise InvalidInput(f"{key}: {path} has no records")


def _str_list(v, n: int | None = None) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v) and (len(v) == n if n else len(v) >= 2)


def _mmlu(rec: dict, where: str) -> dict:
    if not isinstance(rec.get("question"), str) or not _str_list(rec.get("choices"), 4):
        raise InvalidInput(f"{where}: an mmlu record needs 'question' (string) and 'choices' (4 strings)")
    ans = rec.get("answer")
    if isinstance(ans, str) and ans in LETTERS:
        ans = LETTERS.index(ans)
    if isinstance(ans, bool) or not isinstance(ans, int) or not 0 <= ans < 4:
        raise InvalidInput(f"{where}: an mmlu record's 'answer' must be 0-3 or A-D, not {rec.get('answer')!r}")
    subject = rec.get("subject", "")
    if not isinstance(subject, str):
        raise InvalidInput(f"{where}: an mmlu record's 'subject' must be a string")
    return {"question": rec["question"], "choices": rec["choices"], "answer": ans, "subject": subject}


def _hellaswag(rec: dict, where: str) -> dict:
    missing = [k for k in ("activity_label", "ctx_a", "ctx_b") if not isinstance(rec.get(k), str)]
    if missing or not _str_list(rec.get("endings")):
        raise InvalidInput(f"{where}: a hellaswag record needs string 'activity_label', 'ctx_a', 'ctx_b' and "
                           f"'endings' (2 or more strings)" + (f"; missing {', '.join(missing)}" if missing else ""))
    label = rec.get("label")
    try:
        label = int(label)
    except (TypeError, ValueError):
        label = None
    if label is None or isinstance(rec.get("label"), bool) or not 0 <= label < len(rec["endings"]):
        raise InvalidInput(f"{where}: a hellaswag record's 'label' must index 'endings', not {rec.get('label')!r}")
    return {k: rec[k] for k in ("activity_label", "ctx_a", "ctx_b", "endings")} | {"label": label}


def read_mc(path: str | Path, fmt: str, key: str, limit: int = 0) -> list[dict]:
    """The records of a multiple-choice file, checked against its format; the first `limit` if > 0."""
    if fmt not in FORMATS:
        raise InvalidInput(f"{key}.format: unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    check = _mmlu if fmt == "mmlu" else _hellaswag
    p = Path(path)
    out = []
    for n, rec in _jsonl(p, f"{key}.path"):
        out.append(check(rec, f"{key}.path: {p}:{n}"))
        if limit and len(out) >= limit:
            break
    return out


def read_golden(path: str | Path, key: str) -> list[dict]:
    p = Path(path)
    out = []
    for n, rec in _jsonl(p, key):
        if not all(isinstance(rec.get(k), str) for k in ("prompt", "answer")):
            raise InvalidInput(f"{key}: {p}:{n}: a golden record needs string fields 'prompt' and 'answer'")
        out.append({"prompt": rec["prompt"], "answer": rec["answer"]})
    return out
