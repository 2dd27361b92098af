"""Evaluation of built artifacts through their own runtimes, against the source model.

- data.py              the evaluation files (texts, multiple-choice sets in MMLU and HellaSwag formats,
                       golden sets), read with file:line errors at plan time
- multiple_choice.py   lm-evaluation-harness's prompts, tokenization and acc/acc_norm, reimplemented so
                       that any runtime that returns logits can be scored (tests compare it with
                       lm-evaluation-harness itself)
- metrics.py           rolling windows, KL divergence/top-1/perplexity (llama-perplexity's figures),
                       exact match, token F1 and contains
- torch_runtime.py     the source model in PyTorch: logits and greedy generation with its KV cache
- onnx_runtime.py      greedy generation through an ONNX graph's past_key_values inputs
- runtimes.py          which generation function serves which backend

The stage that runs all this is llmbuild/stages/evaluate.py.
"""
