"""llmbuild-monitor as a user runs it: reports, exit codes, sweeps, history across runs, every bad input of
the issue with one line and exit 2, and earlier reports and history left as they were."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time

import pytest

from tests.monitor.helpers import free_port, main, monitor, one_error, proxy_record, write_jsonl

GOOD = "Paris is the capital of France [1]. Madrid is the capital of Spain [2]."
BAD = "Lyon is the capital of France [1]."


def traffic(path, n_good=40, n_bad=0, n_refusal=0, t=None, start=0, **kw):
    t = t or time.time()
    recs = [proxy_record(f"g{start + i}", GOOD, t=t - i, **kw) for i in range(n_good)]
    recs += [proxy_record(f"b{start + i}", BAD, t=t - i, **kw) for i in range(n_bad)]
    recs += [proxy_record(f"r{start + i}", "I'm sorry, I can't help with that.", t=t - i, **kw) for i in range(n_refusal)]
    return write_jsonl(path, recs)


def digest_tree(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def history_rows(path):
    with sqlite3.connect(path) as con:
        return con.execute("SELECT COUNT(*), COUNT(DISTINCT run_id) FROM points").fetchone()


def test_report_history_and_prometheus_textfile(tmp_path):
    log = traffic(tmp_path / "prod.jsonl", n_good=30, n_bad=10, n_refusal=5)
    with open(log, "a") as f:
        f.write("{oops\n")
    p = monitor(["logs=prod.jsonl", "id=run1", "window=0"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert "prod.jsonl:46: not valid JSON" in p.stderr  # never silent
    d = tmp_path / "outputs" / "monitor" / "run1"
    rep = json.loads((d / "report.json").read_text())
    g = rep["groups"]["m @ no build"]
    assert g["counts"]["responses"] == 45 and g["counts"]["refusal"] == 5
    assert g["rates"]["hallucination_rate"]["value"] == pytest.approx(10 / 40)
    assert g["rates"]["refusal_rate"]["value"] == pytest.approx(5 / 45)
    assert rep["skipped"] == {"count": 1, "lines": [["prod.jsonl:46", "not valid JSON (Expecting property name "
                                                                       "enclosed in double quotes at column 2)"]]}
    md = (d / "report.md").read_text()
    assert "| hallucination_rate | 0.250 [" in md and "| lexical |" in md and "Skipped lines: 1" in md
    assert (d / "trend-hallucination_rate.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "outputs" / "monitor" / "latest").resolve() == d
    from prometheus_client.parser import text_string_to_metric_families

    fams = {f.name: f for f in text_string_to_metric_families((d / "metrics.prom").read_text())}
    hall = fams["llmbuild_monitor_hallucination_ratio"].samples[0]
    assert hall.value == pytest.approx(0.25) and hall.labels == {"model": "m", "build": "none", "scorer": "lexical"}
    low = fams["llmbuild_monitor_hallucination_lower_bound_ratio"].samples[0].value
    high = fams["llmbuild_monitor_hallucination_upper_bound_ratio"].samples[0].value
    assert 0 < low < 0.25 < high < 1
    responses = {s.labels["outcome"]: s.value for s in fams["llmbuild_monitor_responses"].samples
                 if s.name == "llmbuild_monitor_responses_total"}
    assert responses == {"answered": 40, "refusal": 5, "no_context": 0, "empty": 0, "error": 0}
    assert {s.value for s in fams["llmbuild_monitor_log_lines_skipped"].samples if s.name.endswith("_total")} == {1}
    for fam in fams.values():  # conventions: ratios in 0-1, counters _total, only low-cardinality labels
        for s in fam.samples:
            assert set(s.labels) <= {"model", "build", "scorer", "outcome", "supported", "metric", "format"}
            if s.name.endswith("_ratio"):
                assert 0.0 <= s.value <= 1.0
        if fam.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in fam.samples)
    # a second run over more traffic adds a point to the same stream: the trend survives restarts
    traffic(tmp_path / "prod.jsonl", n_good=30, n_bad=30, t=time.time() + 7200)
    p = monitor(["logs=prod.jsonl", "id=run2", "name=prod", "window=1h"], tmp_path)
    assert p.returncode == 0, p.stderr
    points, runs = history_rows(tmp_path / "outputs" / "monitor" / "history.sqlite")
    assert runs == 2 and points > 13


def test_breach_exits_5_after_writing_the_report(tmp_path):
    traffic(tmp_path / "prod.jsonl", n_good=20, n_bad=40)
    p = main(["logs=prod.jsonl", "id=bad", "plots=false", "thresholds.budgets.hallucination_rate.max=0.3"], tmp_path)
    assert p.returncode == 5, p.stderr
    line = one_error(p)
    assert "hallucination_rate 0.667" in line and "lower bound" in line and "above the max 0.3" in line
    rep = json.loads((tmp_path / "outputs/monitor/bad/report.json").read_text())
    assert [b["metric"] for b in rep["breaches"]] == ["hallucination_rate"]
    # the same rate on fewer samples than min_samples is not a breach
    p = main(["logs=prod.jsonl", "id=few", "plots=false", "thresholds.budgets.hallucination_rate.max=0.3",
                 "thresholds.min_samples=100"], tmp_path)
    assert p.returncode == 0, p.stderr


def test_sweep_one_report_per_combination(tmp_path):
    traffic(tmp_path / "prod.jsonl", n_good=5, n_bad=5)
    p = main(["-m", "logs=prod.jsonl", "plots=false", "scorer.threshold=0.3,0.9", "thresholds=none"], tmp_path)
    assert p.returncode == 0, p.stderr
    reports = [r for r in (tmp_path / "outputs" / "monitor").glob("*/report.json") if r.parent.name != "latest"]
    assert len(reports) == 2
    thresholds = sorted(json.loads(r.read_text())["scorer"]["threshold"] for r in reports)
    assert thresholds == [0.3, 0.9]


def test_sampling_weights_keep_rates_unbiased(tmp_path):
    traffic(tmp_path / "prod.jsonl", n_good=150, n_bad=50)
    p = main(["logs=prod.jsonl", "id=s", "plots=false", "sample_rate=0.5", "window=0"], tmp_path)
    assert p.returncode == 0, p.stderr
    rep = json.loads((tmp_path / "outputs/monitor/s/report.json").read_text())
    s, g = rep["sampling"], rep["groups"]["m @ no build"]
    assert 70 < s["scored"] < 130 and s["weighted"] == pytest.approx(2 * s["scored"])
    assert g["rates"]["hallucination_rate"]["value"] == pytest.approx(0.25, abs=0.1)
    again = main(["logs=prod.jsonl", "id=s2", "plots=false", "sample_rate=0.5", "window=0"], tmp_path)
    rep2 = json.loads((tmp_path / "outputs/monitor/s2/report.json").read_text())
    assert rep2["sampling"]["scored"] == s["scored"] and again.returncode == 0  # deterministic sample


def test_empty_logs_are_reported_as_empty(tmp_path):
    write_jsonl(tmp_path / "prod.jsonl", ["not json", '{"format": "llmbuild-monitor-proxy/1"}'])
    p = main(["logs=prod.jsonl", "format=proxy", "id=e"], tmp_path)
    assert p.returncode == 0, p.stderr
    rep = json.loads((tmp_path / "outputs/monitor/e/report.json").read_text())
    assert rep["empty"] and rep["skipped"]["count"] == 2 and rep["groups"] == {}
    assert "## Verdict: empty" in (tmp_path / "outputs/monitor/e/report.md").read_text()


@pytest.fixture(scope="module")
def earlier(tmp_path_factory):
    """A good run whose report and history every bad run below must leave as they were."""
    tmp_path = tmp_path_factory.mktemp("earlier")
    traffic(tmp_path / "prod.jsonl", n_good=10, n_bad=2)
    assert main(["logs=prod.jsonl", "id=before", "plots=false"], tmp_path).returncode == 0
    root = tmp_path / "outputs" / "monitor"
    return tmp_path, digest_tree(root), history_rows(root / "history.sqlite")


BAD_INPUTS = [
    (["logs=prod.jsonl", "format=xml"], "format: unknown log format 'xml'; known: auto, proxy, openai, otlp, vllm"),
    (["logs=missing.jsonl"], "logs: missing.jsonl not found"),
    (["logs=garbage.txt"], "logs: cannot tell the format of garbage.txt from its first lines"),
    (["logs=prod.jsonl", "scorer=nli", "scorer.model=no/such/checker"], "scorer.model: no/such/checker not found"),
    (["logs=prod.jsonl", "scorer=nli", "scorer.model=CAUSAL"], "not a sequence-classification model"),
    (["logs=prod.jsonl", "scorer=nli", "scorer.model=CHECKER", "scorer.entailment_label=supported"],
     "scorer.entailment_label: 'supported' names no label of the checker"),
    (["logs=prod.jsonl", "scorer=judge", "scorer.endpoint=UNREACHABLE"], "is unreachable"),
    (["logs=prod.jsonl", "thresholds.budgets.groundedness.min=1.2"], "thresholds.budgets.groundedness.min: 1.2 is outside 0-1"),
    (["logs=prod.jsonl", "+thresholds.budgets.made_up.max=0.1"], "thresholds.budgets.made_up: unknown metric"),
    (["logs=prod.jsonl", "+thresholds.budgets.citation_rate.maximum=0.1"], "give {min: X} and/or {max: X}"),
    (["logs=prod.jsonl", "sample_rate=1.5"], "sample_rate: 1.5 is outside 0-1"),
    (["logs=prod.jsonl", "scorer.threshold=-0.1"], "scorer.threshold: -0.1 is outside 0-1"),
    (["logs=prod.jsonl", "window=soon"], "window: 'soon' is not a duration"),
    (["logs=prod.jsonl", "extraction.citation_patterns=['\\[(\\d+)\\]']"], "has no named group (?P<ids>...)"),
    (["logs=prod.jsonl", "unknown_key=1"], "Key 'unknown_key' not in 'MonitorConfig'"),
    (["logs=prod.jsonl", "scorer=judge"], "scorer.endpoint"),
    (["logs=prod.jsonl", "history=not-a-history.sqlite"], "is not an SQLite file"),
    (["logs=prod.jsonl", "outputs_dir=BUILD"], "is inside the build folder"),
    (["logs=prod.jsonl", "id=before"], "exists already"),
    ([], "logs: required, e.g. `llmbuild-monitor logs=prod.jsonl`"),
]


@pytest.mark.parametrize("args,message", BAD_INPUTS, ids=[m[:40] for _, m in BAD_INPUTS])
def test_bad_input_one_line_exit_2_and_nothing_damaged(earlier, args, message, checker, tiny_models):
    cwd, tree, rows = earlier
    (cwd / "garbage.txt").write_text("hello\n")
    (cwd / "not-a-history.sqlite").write_text("plain text, not a database")
    build = cwd / "b"
    (build / "artifacts").mkdir(parents=True, exist_ok=True)
    (build / "manifest.json").write_text("{}")
    subs = {"CAUSAL": str(tiny_models["LlamaForCausalLM"]), "CHECKER": str(checker), "BUILD": str(build),
            "UNREACHABLE": f"http://127.0.0.1:{free_port()}"}
    for k, v in subs.items():
        args = [a.replace(k, v) for a in args]
    p = main(args, cwd)
    assert p.returncode == 2, p.stderr
    assert message in one_error(p)
    root = cwd / "outputs" / "monitor"
    assert digest_tree(root) == tree  # no earlier report touched, no new one, the history unchanged
    assert history_rows(root / "history.sqlite") == rows
    assert (cwd / "not-a-history.sqlite").read_text() == "plain text, not a database"
