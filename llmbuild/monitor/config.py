"""The monitor's schemas (structured configs registered with Hydra) and the checks that run before any work.

Three primary configs live in conf/monitor/: `monitor.yaml` (score logs), `proxy.yaml` (capture traffic)
and `golden.yaml` (golden set through a live endpoint); `scorer/` and `thresholds/` are config groups.
Hydra rejects unknown keys and wrong types at composition; `check_*` rejects values out of range with
the key's dotted path, so a bad run stops with one line and exit 2 before it reads a log or loads a model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from llmbuild.errors import InvalidInput

FORMATS = ("auto", "proxy", "openai", "otlp", "vllm")
SCORERS = ("lexical", "nli", "judge")


@dataclass
class ExtractionConfig:
    # A passage starts a line with its id: "[1] text", "Document [2](Title: t): text" (ALCE's prompt),
    # "[doc-3] text" or "Source 4: text"; the named group `id` is the id a citation must name.
    # More patterns find more passages and risk taking a list in the prompt for passages.
    passage_patterns: List[str] = field(default_factory=lambda: [
        r"^\s*Document\s*\[(?P<id>[^\]\s]+)\](?:\(Title:[^)]*\))?\s*:?",
        r"^\s*\[(?P<id>[^\]\s^]+)\]\s*:?",
        r"^\s*(?:Source|Passage|Document)\s+(?P<id>[\w.-]+)\s*:",
    ])
    # A citation in the response: "[1]", "[1, 2]", "[doc-3]", a footnote "[^1]". The group `ids` is split on
    # commas. Broader patterns count more brackets as citations (e.g. "[sic]" becomes an invalid citation).
    citation_patterns: List[str] = field(default_factory=lambda: [
        r"\[\^?(?P<ids>[A-Za-z]*[-_]?\d+(?:\s*,\s*[A-Za-z]*[-_]?\d+)*)\]",
    ])
    # A refusal (case-insensitive, searched in the first 200 characters): never a hallucination, never NaN.
    # Broad patterns hide real answers that start politely; narrow ones count refusals as hallucinations.
    refusal_patterns: List[str] = field(default_factory=lambda: [
        r"\bI(?:'m| am) (?:sorry|afraid|unable|not able)\b",
        r"\bI (?:can(?:no|')t|cannot|won't|will not|do not|don't) (?:help|assist|answer|provide|comply|know)\b",
        r"\b(?:cannot|can't|unable to) (?:answer|help with|assist with) (?:that|this)\b",
        r"\b(?:not enough|insufficient|no relevant) (?:information|context)\b",
        r"\bAs an AI\b",
    ])
    max_citations: int = 3  # ALCE's at_most_citations: citations per sentence checked; more costs checker calls
    # where a reference answer is looked up (record top level, then the request's `metadata`)
    reference_keys: List[str] = field(default_factory=lambda: ["reference", "expected_output", "ground_truth"])


@dataclass
class ScorerConfig:
    name: str = "lexical"  # lexical | nli | judge
    threshold: float = 0.5  # support probability at or above which a claim counts as supported
    chunk_words: int = 250  # lexical/judge: passages longer than this are split, max over chunks
    # nli: a Hugging Face sequence-classification checker
    model: Optional[str] = None  # nli: local folder or Hub id; judge: the model name sent (default: the endpoint's first)
    revision: Optional[str] = None  # nli with a Hub id: the commit sha it is pinned to (required)
    entailment_label: str = "entailment"  # the id2label name (any case) or index whose probability is "supported"
    input: str = "pair"  # pair: tokenizer(premise, claim) | joined: premise + eos + claim (MiniCheck) | template
    template: Optional[str] = None  # input=template: a string with {premise} and {hypothesis} (HHEM's prompt)
    tokenizer: Optional[str] = None  # tokenizer folder/id when the checkpoint ships none (HHEM: google/flan-t5-base)
    trust_remote_code: bool = False  # HHEM-2.1-Open needs it; never run shipped code unless asked
    max_length: int = 512  # tokens per (chunk, claim) input: longer inputs are truncated, so chunks must fit
    chunk_tokens: int = 400  # passage chunk size in checker tokens (AlignScore ~350, MiniCheck 400): smaller is faster per call, loses context
    batch_size: int = 16  # inputs per forward pass: larger is faster until memory; results do not depend on it
    threads: int = 1  # torch threads for the checker: more is faster on an idle machine
    dtype: str = "float32"  # float32 | bfloat16: bfloat16 is ~2x faster on CPUs with AMX/AVX512-BF16, scores move ~1e-3
    # judge: any OpenAI-compatible chat endpoint, temperature 0, a fixed prompt (scorers/judge.py)
    endpoint: Optional[str] = None  # base URL, e.g. http://127.0.0.1:8080 (the /v1 prefix is added when missing)
    api_key_env: Optional[str] = None  # name of an environment variable holding the bearer token (never the token)
    concurrency: int = 4  # requests in flight: faster, until the endpoint rate-limits
    timeout_s: float = 60.0  # per request
    max_calls: int = 0  # 0: no cap; else stop with exit 2 before a run would make more calls (cost control)


@dataclass
class Budget:
    min: Optional[float] = None  # breach when the rate is confidently below this (0-1)
    max: Optional[float] = None  # breach when the rate is confidently above this (0-1)


@dataclass
class ThresholdsConfig:
    # fewer samples than this (effective sample size) never breach: small samples give wide intervals
    min_samples: int = 30
    # confident: breach when the whole interval is past the budget (few false alarms, later alerts);
    # cautious: breach when the interval reaches past it (early alerts, more false alarms)
    mode: str = "confident"
    confidence: float = 0.95  # of the Wilson intervals; higher is wider and alerts later
    # {metric: {min: x} | {max: x}}; a free mapping so `+thresholds.budgets.citation_rate.max=0.8` adds one
    # (checked by check_thresholds: known metric, only min/max, values in 0-1)
    budgets: Dict[str, Any] = field(default_factory=dict)


@dataclass
class MonitorConfig:
    logs: Any = MISSING  # a log file or a list of them
    format: str = "auto"  # auto | proxy | openai | otlp | vllm
    build: Optional[str] = None  # a build folder: labels records that carry no build id, and names the history stream
    model: Optional[str] = None  # label for records that carry no model name (vLLM log lines)
    name: Optional[str] = None  # the history stream; default: the build id, else the first log file's name
    id: Optional[str] = None  # report folder name; default: time + digest of the config
    outputs_dir: str = "outputs"  # reports in <outputs_dir>/monitor/<id>/, never inside a build folder
    history: Optional[str] = None  # SQLite file; default <outputs_dir>/monitor/history.sqlite
    window: str = "1h"  # metrics per window of this length ("15m", "1h", "1d"; "0": one window); follow: the sliding window
    sample_rate: float = 1.0  # score this share of records (deterministic by record id), weights keep rates unbiased
    follow: bool = False  # keep reading the growing log(s), recompute every `interval`, serve /metrics
    interval: str = "10s"  # follow: how often the window is recomputed and published
    ticks: int = 0  # follow: stop after this many updates (0: until interrupted)
    metrics_listen: str = "127.0.0.1:9464"  # follow: host:port of the /metrics endpoint ("" turns it off)
    textfile: Optional[str] = None  # Prometheus textfile for node_exporter; default metrics.prom in the report folder
    plots: bool = True  # trend PNG per metric from the history (matplotlib)
    scorer: ScorerConfig = field(default_factory=ScorerConfig)
    thresholds: ThresholdsConfig = field(default_factory=ThresholdsConfig)
    extraction: ExtractionConfig = field(default_factory=ExtractionConfig)


@dataclass
class ProxyConfig:
    upstream: str = MISSING  # the server's base URL, e.g. http://127.0.0.1:8080
    listen: str = "127.0.0.1:9090"  # host:port clients call instead of the server
    log: str = MISSING  # JSONL file the exchanges are appended to
    build: Optional[str] = None  # a build folder: its id goes into every record
    sample_rate: float = 1.0  # log this share of exchanges (by id), each with its weight; lower costs less disk
    timeout_s: float = 600.0  # upstream request timeout: long generations need long timeouts
    check_upstream: bool = True  # refuse to start when the upstream does not answer (exit 2)


@dataclass
class GoldenConfig:
    endpoint: str = MISSING  # the deployed server's base URL
    build: str = MISSING  # the build folder whose eval.json holds the build-time figures
    artifact: str = "auto"  # whose figures to compare; auto: the only artifact with golden figures, or the served file's
    golden: Optional[str] = None  # the golden JSONL; default: eval.json's settings.golden
    api: str = "auto"  # chat | completions | auto (chat when the build's golden prompts used a chat template)
    model: Optional[str] = None  # model name sent; default: the endpoint's first /v1/models id
    tolerance: float = 0.05  # allowed drop of each figure below the build's: smaller catches less drift, flakes more
    figures: List[str] = field(default_factory=lambda: ["exact_match", "token_f1", "contains"])
    max_tokens: int = 0  # 0: eval.json's golden_max_new_tokens, so answers are cut where the build cut them
    # sent with every golden request so the server decodes greedily as the build did: llama-cpp-python's
    # server applies repeat_penalty 1.1 unless told otherwise (vLLM: repetition_penalty). Set {} for a
    # server that rejects fields it does not know; then its own defaults decide.
    extra_body: Dict[str, Any] = field(default_factory=lambda: {
        "repeat_penalty": 1.0, "repetition_penalty": 1.0, "frequency_penalty": 0.0, "presence_penalty": 0.0})
    timeout_s: float = 60.0  # per request
    id: Optional[str] = None  # report folder name; default: time + digest
    outputs_dir: str = "outputs"  # report in <outputs_dir>/monitor/<id>/


def register_schemas() -> None:
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="llmbuild_monitor_schema", node=MonitorConfig)
    cs.store(name="llmbuild_monitor_proxy_schema", node=ProxyConfig)
    cs.store(name="llmbuild_monitor_golden_schema", node=GoldenConfig)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def duration(value: str, key: str) -> float:
    """Seconds in "500ms", "30s", "15m", "1h", "1d" (a bare number is seconds)."""
    m = _DURATION.match(str(value))
    if not m:
        raise InvalidInput(f"{key}: {value!r} is not a duration like 30s, 15m, 1h or 1d")
    return float(m.group(1)) * _UNITS[m.group(2)]


def host_port(value: str, key: str) -> tuple[str, int]:
    host, _, port = str(value).rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise InvalidInput(f"{key}: {value!r} is not host:port (e.g. 127.0.0.1:9090)")
    return host.strip("[]"), int(port)


def log_paths(logs: Any) -> list[str]:
    if isinstance(logs, str):
        return [logs]
    if isinstance(logs, (list, tuple)) and logs and all(isinstance(x, str) for x in logs):
        return list(logs)
    raise InvalidInput("logs: give a log file or a list of them, e.g. logs=prod.jsonl or logs=[a.jsonl,b.jsonl]")


def _unit(value: float, key: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise InvalidInput(f"{key}: {value} is outside 0-1")


def _regexes(patterns: list[str], key: str, group: str) -> None:
    for i, p in enumerate(patterns):
        try:
            rx = re.compile(p)
        except re.error as e:
            raise InvalidInput(f"{key}[{i}]: {p!r} is not a regular expression ({e})") from None
        if group and group not in rx.groupindex:
            raise InvalidInput(f"{key}[{i}]: {p!r} has no named group (?P<{group}>...)")


def check_scorer(s: ScorerConfig, key: str = "scorer") -> None:
    if s.name not in SCORERS:
        raise InvalidInput(f"{key}.name: unknown scorer {s.name!r}; known: {', '.join(SCORERS)}")
    _unit(s.threshold, f"{key}.threshold")
    for name, low in (("chunk_words", 8), ("max_length", 16), ("chunk_tokens", 8), ("batch_size", 1), ("threads", 1),
                      ("concurrency", 1), ("max_calls", 0)):
        if getattr(s, name) < low:
            raise InvalidInput(f"{key}.{name}: {getattr(s, name)} is below {low}")
    if s.timeout_s <= 0:
        raise InvalidInput(f"{key}.timeout_s: {s.timeout_s} must be positive")
    if s.name == "nli":
        if not s.model:
            raise InvalidInput(f"{key}.model: the nli scorer needs a checker: a local folder or a Hub id with {key}.revision")
        if s.input not in ("pair", "joined", "template"):
            raise InvalidInput(f"{key}.input: {s.input!r} is not one of pair, joined, template")
        if s.input == "template" and (not s.template or "{premise}" not in s.template or "{hypothesis}" not in s.template):
            raise InvalidInput(f"{key}.template: input=template needs a template with {{premise}} and {{hypothesis}}")
        if s.dtype not in ("float32", "bfloat16"):
            raise InvalidInput(f"{key}.dtype: {s.dtype!r} is not one of float32, bfloat16")
        if s.chunk_tokens >= s.max_length:
            raise InvalidInput(f"{key}.chunk_tokens: {s.chunk_tokens} leaves no room for the claim within "
                               f"{key}.max_length={s.max_length}")
    if s.name == "judge" and not s.endpoint:
        raise InvalidInput(f"{key}.endpoint: the judge scorer needs an OpenAI-compatible endpoint URL")


def check_thresholds(t: ThresholdsConfig, metric_names: tuple[str, ...], key: str = "thresholds") -> None:
    if t.mode not in ("confident", "cautious"):
        raise InvalidInput(f"{key}.mode: {t.mode!r} is not one of confident, cautious")
    if t.min_samples < 1:
        raise InvalidInput(f"{key}.min_samples: {t.min_samples} is below 1")
    if not 0.5 <= t.confidence < 1.0:
        raise InvalidInput(f"{key}.confidence: {t.confidence} is outside [0.5, 1)")
    for name, b in list(t.budgets.items()):
        if name not in metric_names:
            raise InvalidInput(f"{key}.budgets.{name}: unknown metric; known: {', '.join(metric_names)}")
        if isinstance(b, Budget):
            continue
        if not isinstance(b, dict) or not b or set(b) - {"min", "max"}:
            raise InvalidInput(f"{key}.budgets.{name}: give {{min: X}} and/or {{max: X}}, not {b!r}")
        for side, v in b.items():
            if v is not None:
                _unit(v, f"{key}.budgets.{name}.{side}")
        if b.get("min") is None and b.get("max") is None:
            raise InvalidInput(f"{key}.budgets.{name}: give min or max")
        t.budgets[name] = Budget(min=b.get("min"), max=b.get("max"))


def check_monitor(cfg: MonitorConfig, metric_names: tuple[str, ...]) -> None:
    log_paths(cfg.logs)
    if cfg.format not in FORMATS:
        raise InvalidInput(f"format: unknown log format {cfg.format!r}; known: {', '.join(FORMATS)}")
    _unit(cfg.sample_rate, "sample_rate")
    if cfg.sample_rate == 0:
        raise InvalidInput("sample_rate: 0 would score nothing; give a share in (0, 1]")
    duration(cfg.window, "window")
    if cfg.follow:
        if duration(cfg.interval, "interval") <= 0:
            raise InvalidInput("interval: must be positive")
        if duration(cfg.window, "window") <= 0:
            raise InvalidInput("window: follow mode needs a window length, e.g. window=15m")
        if cfg.metrics_listen:
            host_port(cfg.metrics_listen, "metrics_listen")
    if cfg.ticks < 0:
        raise InvalidInput(f"ticks: {cfg.ticks} is negative")
    check_scorer(cfg.scorer)
    check_thresholds(cfg.thresholds, metric_names)
    e = cfg.extraction
    _regexes(e.passage_patterns, "extraction.passage_patterns", "id")
    _regexes(e.citation_patterns, "extraction.citation_patterns", "ids")
    _regexes(e.refusal_patterns, "extraction.refusal_patterns", "")
    if e.max_citations < 1:
        raise InvalidInput(f"extraction.max_citations: {e.max_citations} is below 1")


def check_proxy(cfg: ProxyConfig) -> None:
    host_port(cfg.listen, "listen")
    if not str(cfg.upstream).startswith(("http://", "https://")):
        raise InvalidInput(f"upstream: {cfg.upstream!r} is not an http(s) URL")
    _unit(cfg.sample_rate, "sample_rate")
    if cfg.sample_rate == 0:
        raise InvalidInput("sample_rate: 0 would log nothing; give a share in (0, 1]")
    if cfg.timeout_s <= 0:
        raise InvalidInput(f"timeout_s: {cfg.timeout_s} must be positive")


def check_golden(cfg: GoldenConfig) -> None:
    if not str(cfg.endpoint).startswith(("http://", "https://")):
        raise InvalidInput(f"endpoint: {cfg.endpoint!r} is not an http(s) URL")
    _unit(cfg.tolerance, "tolerance")
    if cfg.api not in ("auto", "chat", "completions"):
        raise InvalidInput(f"api: {cfg.api!r} is not one of auto, chat, completions")
    known = ("exact_match", "token_f1", "contains")
    for f in cfg.figures:
        if f not in known:
            raise InvalidInput(f"figures: unknown figure {f!r}; known: {', '.join(known)}")
    if cfg.max_tokens < 0:
        raise InvalidInput(f"max_tokens: {cfg.max_tokens} is negative")
