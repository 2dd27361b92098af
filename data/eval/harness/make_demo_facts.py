"""Write demo-facts.jsonl: the demo's held-out fact questions as a four-way multiple-choice task.

    python data/eval/harness/make_demo_facts.py      # rewrites demo-facts.jsonl next to this file

Each record is one question of data/finetune/facts-eval.jsonl (a phrasing the demo's fine-tuning never
trains on, of a fact it does train on) with its answer and three distractors of the same kind (other
capitals, days, months, ...), in an order fixed by a seeded shuffle. demo_facts.yaml scores it by
log-likelihood, demo_facts_gen.yaml by greedy generation. Written by the llmbuild authors for the
demo; released under CC0-1.0. The output is a function of this file and facts-eval.jsonl only.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "finetune"))

import make_demo_data as demo  # noqa: E402  (the facts and phrasings the fine-tuning data is made of)


def main() -> None:
    rnd = random.Random(0)
    answers: dict[str, list[str]] = {}
    for kind, _, answer in demo.facts():
        answers.setdefault(kind, [])
        if answer not in answers[kind]:
            answers[kind].append(answer)
    held = [json.loads(line) for line in (HERE.parents[1] / "finetune" / "facts-eval.jsonl").open(encoding="utf-8")]
    asked = {m["messages"][0]["content"]: m["messages"][1]["content"] for m in held}
    rows = []
    for kind, subject, answer in demo.facts():
        question = demo.PHRASINGS[kind][2].format(subject)  # the held-out phrasing (make_demo_data.main)
        if asked.get(question) != answer:
            continue
        choices = [answer, *rnd.sample([a for a in answers[kind] if a != answer], 3)]
        rnd.shuffle(choices)
        rows.append({"question": question, "choices": choices, "answer": choices.index(answer), "kind": kind})
    with open(HERE / "demo-facts.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    print(f"demo-facts.jsonl: {len(rows)} records")


if __name__ == "__main__":
    main()
