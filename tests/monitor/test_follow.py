"""Follow mode's pieces: a growing file read line by line across partial writes, truncation and rotation;
a bounded follow run publishes the window, counts each response once and exits 5 on a breach."""

from __future__ import annotations

import json
import os
import time

from llmbuild.monitor.follow import Tail
from llmbuild.monitor.readers import Defaults
from tests.monitor.helpers import main, one_error, proxy_record


def line(rid, text="Paris is the capital of France [1].", **kw):
    return json.dumps(proxy_record(rid, text, **kw)) + "\n"


def test_tail_reads_complete_lines_across_truncation_and_rotation(tmp_path):
    log = tmp_path / "prod.jsonl"
    log.write_text(line("a"))
    t = Tail(log, "auto", Defaults())
    assert [e.id for e in t.poll()[0]] == ["a"]
    whole = line("b")
    with open(log, "a") as f:
        f.write(whole[:40])  # a writer in the middle of a line
    assert t.poll() == ([], [])
    with open(log, "a") as f:
        f.write(whole[40:] + "oops\n")
    got, skipped = t.poll()
    assert [e.id for e in got] == ["b"] and skipped == [("prod.jsonl:3", "not valid JSON (Expecting value at column 1)")]
    log.write_text(line("c"))  # truncated and rewritten: read from the start
    assert [e.id for e in t.poll()[0]] == ["c"]
    os.rename(log, tmp_path / "prod.jsonl.1")  # rotated: the new file is read from its start
    log.write_text(line("d") + line("e"))
    assert [e.id for e in t.poll()[0]] == ["d", "e"]
    assert t.stats["skipped"] == 1


def test_bounded_follow_run_publishes_and_exits_5_on_breach(tmp_path):
    now = time.time()
    log = tmp_path / "prod.jsonl"
    log.write_text("".join(line(f"b{i}", "Lyon is the capital of France [1].", t=now) for i in range(40))
                   + line("old", t=now - 7200))  # outside the window
    p = main(["logs=prod.jsonl", "--follow", "window=1h", "interval=0.1s", "ticks=2", "metrics_listen=", "id=live",
              "plots=false", "thresholds.budgets.hallucination_rate.max=0.2"], tmp_path)
    assert p.returncode == 5, p.stderr
    assert "hallucination_rate 1.000" in one_error(p)
    d = tmp_path / "outputs" / "monitor" / "live"
    rep = json.loads((d / "report.json").read_text())
    assert rep["kind"] == "follow" and rep["sampling"]["read"] == 41 and rep["sampling"]["scored"] == 40
    prom = (d / "metrics.prom").read_text()
    assert 'llmbuild_monitor_responses_total{build="none",model="m",outcome="answered"} 40.0' in prom  # counted once
    assert 'llmbuild_monitor_threshold_breached{build="none",metric="hallucination_rate",model="m",scorer="lexical"} 1.0' in prom
    import sqlite3

    with sqlite3.connect(tmp_path / "outputs" / "monitor" / "history.sqlite") as con:
        ticks = con.execute("SELECT COUNT(DISTINCT run_id) FROM points").fetchone()[0]
    assert ticks == 2  # a point per update: the trend survives a restart
