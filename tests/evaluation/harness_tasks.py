"""Harness task YAML files and their local JSONL data, written into a test's folder: one task per
request type (multiple choice by log-likelihood, greedy generation with stop strings, rolling
log-likelihood for perplexity), offline, with the datasets cache in the same folder."""

from __future__ import annotations

import json
from pathlib import Path

QUESTIONS = [
    ("What is the capital of France?", ["Paris", "Berlin", "Rome", "Madrid"], 0),
    ("What day comes after Monday?", ["Sunday", "Tuesday", "Friday", "May"], 1),
    ("What is the opposite of hot?", ["warm", "big", "cold", "up"], 2),
    ("What colour is grass?", ["red", "blue", "white", "green"], 3),
    ("Name the month after April.", ["May", "June", "March", "July"], 0),
    ("Which number follows seven?", ["eight", "six", "nine", "ten"], 0),
]
TEXTS = ["The quick brown fox jumps over the lazy dog. " * 12,
         "A build system for open-weight language models reads a recipe and writes artifacts.",
         "Licensed under the Apache License, Version 2.0; you may not use this file except in compliance."]


def write(root: Path) -> Path:
    """The task folder (an eval.harness.include_path) with tasks t_mc, t_gen and t_roll."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "mc.jsonl", "w") as f:
        f.writelines(json.dumps({"question": q, "choices": c, "answer": a}) + "\n" for q, c, a in QUESTIONS)
    with open(root / "text.jsonl", "w") as f:
        f.writelines(json.dumps({"text": t}) + "\n" for t in TEXTS)
    cache = root / "datasets"

    def data(name, file):
        return (f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  cache_dir: {cache}\n  data_files:\n"
                f"    test: {root / file}\ntest_split: test\n")

    (root / "t_mc.yaml").write_text(data("t_mc", "mc.jsonl") + """output_type: multiple_choice
doc_to_text: "Question: {{question}}\\nAnswer:"
doc_to_choice: "{{choices}}"
doc_to_target: answer
metric_list:
  - {metric: acc, aggregation: mean, higher_is_better: true}
  - {metric: acc_norm, aggregation: mean, higher_is_better: true}
""")
    (root / "t_gen.yaml").write_text(data("t_gen", "mc.jsonl") + """output_type: generate_until
doc_to_text: "Question: {{question}}\\nAnswer:"
doc_to_target: " {{choices[answer]}}"
generation_kwargs: {until: ["\\n", "."], max_gen_toks: 6, do_sample: false}
metric_list:
  - {metric: exact_match, aggregation: mean, higher_is_better: true}
""")
    (root / "t_roll.yaml").write_text(data("t_roll", "text.jsonl") + """output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{text}}"
metric_list:
  - {metric: word_perplexity}
  - {metric: byte_perplexity}
  - {metric: bits_per_byte}
""")
    return root
