"""llmbuild-monitor: how a deployed artifact behaves on its real traffic.

The data flow, one module per step:
  capture   proxy.py       an OpenAI-compatible logging proxy in front of any server (streaming included)
  read      readers.py     our proxy's JSONL, OpenAI request/response JSONL, OTLP/JSON GenAI spans, vLLM log lines
            records.py     -> Exchange, one per request/response; bad lines reported with file:line
  sample    sampling.py    a deterministic sample with the weights that keep rates unbiased
  extract   extraction.py  passages (documents, tool messages, numbered passages), citations, claims, refusals
  score     scorers/       lexical | nli (a Hugging Face checker) | judge (an OpenAI-compatible endpoint)
  measure   metrics.py     per response: citations (ALCE), groundedness, hallucination, consistency, refusals
            intervals.py   rates with counts and Wilson 95% intervals, weighted and clustered
  decide    thresholds.py  a breach is an interval bound past its budget with enough samples: exit 5
  publish   report.py (Markdown + JSON), history.py (SQLite), plots.py (trend PNGs), prometheus.py
  run       cli.py (Hydra; schemas and checks in config.py), pipeline.py (one pass), follow.py (a growing log,
            a window, /metrics), golden.py (the golden set through a live endpoint vs eval.json)
  helpers   endpoints.py (OpenAI-compatible clients), builds.py (what a build folder says)
"""
