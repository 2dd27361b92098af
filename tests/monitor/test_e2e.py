"""End to end, as a user deploys: a GGUF built by llmbuild, served by llama-cpp-python's OpenAI-compatible
server, traffic through `llmbuild-monitor proxy`, the monitor over the captured log (a report, a breach with
exit 5), and follow mode scraped on /metrics while traffic keeps coming. The fast variant serves the tiny
recipe's GGUF; the slow one (-m slow) the demo's fine-tuned model, with the golden regression."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.helpers import latest, run_cli
from tests.monitor.conftest import serve_gguf
from tests.monitor.helpers import ALCE_PROMPT, env, free_port, main, one_error, post, stop, wait_http
from tests.monitor.test_proxy import sse_text, start_proxy


def send_traffic(url: str, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        body = {"messages": [{"role": "system", "content": "Answer with the documents; cite them as [1]."},
                             {"role": "user", "content": ALCE_PROMPT}], "max_tokens": 12, "temperature": 0,
                "seed": i, "metadata": {"reference": "Paris and Madrid"}}
        if i % 4 == 3:
            sse_text(url + "/v1/chat/completions", body)
        elif i % 5 == 4:  # no passages: "ungrounded: no context", never a hallucination
            assert post(url + "/v1/chat/completions", {**body, "messages": [{"role": "user", "content": "Hello?"}]})[0] == 200
        else:
            assert post(url + "/v1/chat/completions", body)[0] == 200


def scrape(url: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as r:
        return {s.name + json.dumps(s.labels, sort_keys=True): s.value
                for f in text_string_to_metric_families(r.read().decode()) for s in f.samples}


def capture_score_scrape(server: str, build, tmp_path, n: int = 12) -> dict:
    log = tmp_path / "prod.jsonl"
    proxy, purl = start_proxy(server, log, f"build={build}")
    try:
        send_traffic(purl, n)
        # score the captured log: a report per model/build, and a budget the random model cannot meet
        p = main([f"logs={log}", f"build={build}", "id=batch", "thresholds=none", "plots=false"], tmp_path)
        assert p.returncode == 0, p.stderr
        rep = json.loads((tmp_path / "outputs/monitor/batch/report.json").read_text())
        build_id = json.loads((build / "manifest.json").read_text())["build_id"]
        (group,) = rep["groups"]
        assert group.endswith(f"@ {build_id}") and rep["groups"][group]["counts"]["responses"] == n
        counts = rep["groups"][group]["counts"]
        assert counts["no_context"] == sum(1 for i in range(n) if i % 4 != 3 and i % 5 == 4)
        assert sum(counts[o] for o in ("answered", "no_context", "refusal", "empty", "error")) == n
        p = main([f"logs={log}", f"build={build}", "id=alert", "plots=false", "thresholds=none", "thresholds.min_samples=1",
                  "+thresholds.budgets.citation_rate.min=0.99", "thresholds.mode=cautious"], tmp_path)
        if counts["answered"]:
            assert p.returncode == 5 and "citation_rate" in one_error(p)
        # follow mode on the growing log, scraped while traffic keeps coming through the proxy
        port = free_port()
        follow = subprocess.Popen([sys.executable, "-m", "llmbuild.monitor.cli", f"logs={log}", f"build={build}",
                                   "--follow", "window=1h", "interval=1s", "ticks=40", "plots=false",
                                   f"metrics_listen=127.0.0.1:{port}", "thresholds=none", "id=live"],
                                  cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_http(f"http://127.0.0.1:{port}/metrics", timeout=60, proc=follow)
            key = "llmbuild_monitor_responses_total"

            def total():
                return sum(v for k, v in scrape(f"http://127.0.0.1:{port}/metrics").items() if k.startswith(key + "{"))

            deadline = time.time() + 60
            while total() < n and time.time() < deadline:
                time.sleep(0.3)
            assert total() == n
            send_traffic(purl, 3, start=n)
            while total() < n + 3 and time.time() < deadline:
                time.sleep(0.3)
            metrics = scrape(f"http://127.0.0.1:{port}/metrics")
            assert total() == n + 3
            labels = {"build": build_id, "model": group.split(" @ ")[0],
                      "scorer": "lexical"}
            assert metrics["llmbuild_monitor_no_context_ratio" + json.dumps(labels, sort_keys=True)] == pytest.approx(
                (counts["no_context"] + 1) / (n + 3))
            assert (tmp_path / "outputs/monitor/live/metrics.prom").is_file()
        finally:
            stop(follow)
        assert follow.returncode in (0, -15), follow.stderr.read()
        return rep
    finally:
        stop(proxy)


def test_capture_score_alert_scrape_tiny(llama_server, tiny_build, tmp_path):
    capture_score_scrape(llama_server, tiny_build, tmp_path)


@pytest.mark.slow
def test_demo_gguf_end_to_end(tmp_path_factory):
    """The demo's fine-tuned model as its GGUF Q8_0 artifact (the ONNX and other GGUF targets are dropped to
    save time), served and monitored; its golden exact match and token F1 through the server match the build's eval.json.
    (`contains` is left out: llama.cpp's tokenizer puts no space after the chat template's BOS where the
    build's HF tokenizer does, which moves 2 of the 38 wrong answers: 0.816 at build time, 0.763 served.)"""
    pytest.importorskip("llama_cpp")
    cwd = tmp_path_factory.mktemp("demo")
    drop = [f"~targets.{t}" for t in ("cpu-onnx", "cpu-onnx-fp16", "cpu-onnx-int4", "cpu-gguf-q4", "cpu-gguf-q4km")]
    proc = run_cli(["recipe=demo", *drop], cwd, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    build = latest(cwd, "demo")
    gguf = next((build / "artifacts" / "cpu-gguf").glob("*.gguf"))
    port = free_port()
    server = serve_gguf(gguf, port)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/v1/models", timeout=120, proc=server)
        p = main(["golden", f"endpoint={url}", f"build={build}", "id=golden", "figures=[exact_match,token_f1]"], cwd)
        assert p.returncode == 0, p.stderr
        rep = json.loads((cwd / "outputs/monitor/golden/report.json").read_text())
        em = {f["figure"]: f for f in rep["figures"]}["exact_match"]
        assert em["build"] > 0.5 and em["deployed"] >= em["build"] - 0.05, rep["examples"]
        capture_score_scrape(url, build, cwd)
    finally:
        stop(server)
