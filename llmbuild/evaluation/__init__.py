"""Evaluation of built artifacts through their own runtimes, against the source model.

- data.py              the evaluation files (texts, multiple-choice sets in MMLU and HellaSwag formats,
                       golden sets), read with file:line errors at plan time
- multiple_choice.py   lm-evaluation-harness's MMLU/HellaSwag prompts, tokenization and acc/acc_norm,
                       reimplemented so that any runtime that returns logits can be scored; kept beside
                       the harness because its per-document records (agreement with the source, the
                       min_acc gate) come from token ids cached once; tests show it gives the harness's
                       numbers, from the harness itself and through the adapters below
- harness.py           lm-evaluation-harness tasks in a build: plan-time checks, content keys, runs, gates
- harness_lm.py        the lm_eval model (TemplateLM) over any runtime, after the harness's own hf model
- contamination.py     n-gram overlap of the fine-tuning data with every evaluation set (hashed index)
- metrics.py           rolling windows, KL divergence/top-1/perplexity (llama-perplexity's figures),
                       exact match, token F1 and contains
- torch_runtime.py     the source model in PyTorch: logits and greedy generation with its KV cache
- onnx_runtime.py      greedy generation through an ONNX graph's past_key_values inputs
- runtimes.py          which generation function serves which backend; `Runtime`, the small interface
                       (logits, greedy generation) the harness adapter needs, built for each artifact

The stage that runs all this is llmbuild/stages/evaluate.py.
"""
