"""The logging proxy's added latency per request, against llama-cpp-python's server alone.

    .venv/bin/python bench/monitor_proxy.py [--requests 200] [--gguf FILE]

Serves a GGUF (by default the tiny test recipe's, built once into bench/.work/monitor/) with
`python -m llama_cpp.server`, puts `llmbuild-monitor proxy` in front of it (logging every exchange to
bench/.work/monitor/proxy.jsonl), and sends the same chat request (max_tokens 1, temperature 0: the
server's own time stays small, so the proxy's share shows) alternately straight to the server and through
the proxy, on one keep-alive connection each, non-streamed and streamed. It prints p50/p90 latency per
path and the p50 difference: the proxy's overhead. Aim (issue 12): <= 2 ms at p50.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / ".work" / "monitor"
sys.path.insert(0, str(REPO))


def tiny_gguf() -> Path:
    out = WORK / "build"
    found = sorted(out.glob("outputs/tiny/latest/artifacts/gguf8/*.gguf"))
    if found:
        return found[0]
    from tests.helpers import run_cli
    from tests.monitor.conftest import TINY_GGUF

    out.mkdir(parents=True, exist_ok=True)
    p = run_cli(TINY_GGUF, out)
    if p.returncode:
        sys.exit(f"the tiny build failed: {p.stderr[-2000:]}")
    return sorted(out.glob("outputs/tiny/latest/artifacts/gguf8/*.gguf"))[0]


def timed(conn: http.client.HTTPConnection, body: bytes, stream: bool) -> float:
    t = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    dt = time.perf_counter() - t
    assert r.status == 200 and (b"data:" in data if stream else b"choices" in data), data[:200]
    return dt


def main():
    from tests.monitor.helpers import env, free_port, stop, wait_http

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--gguf", type=Path)
    args = ap.parse_args()
    gguf = args.gguf or tiny_gguf()
    sport, pport = free_port(), free_port()
    server = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
                               "--port", str(sport), "--n_ctx", "512", "--n_threads", "1", "--verbose", "false"],
                              env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = WORK / "proxy.jsonl"
    log.unlink(missing_ok=True)
    proxy = None
    try:
        wait_http(f"http://127.0.0.1:{sport}/v1/models", 120, server)
        proxy = subprocess.Popen([sys.executable, "-m", "llmbuild.monitor.cli", "proxy", f"upstream=http://127.0.0.1:{sport}",
                                  f"listen=127.0.0.1:{pport}", f"log={log}"], env=env(),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(f"http://127.0.0.1:{pport}/v1/models", 60, proxy)
        results = {}
        for stream in (False, True):
            body = json.dumps({"messages": [{"role": "user", "content": "What is the capital of France?"}],
                               "max_tokens": 1, "temperature": 0, "stream": stream}).encode()
            direct = http.client.HTTPConnection("127.0.0.1", sport, timeout=60)
            via = http.client.HTTPConnection("127.0.0.1", pport, timeout=60)
            for _ in range(10):  # warm-up: connections, the server's prompt cache
                timed(direct, body, stream), timed(via, body, stream)
            d, v = [], []
            for i in range(args.requests):  # alternate, so drift and neighbours' load hit both alike
                if i % 2:
                    d.append(timed(direct, body, stream)), v.append(timed(via, body, stream))
                else:
                    v.append(timed(via, body, stream)), d.append(timed(direct, body, stream))
            results[stream] = (d, v)
        logged = len(log.read_text().splitlines())
        print(f"{args.requests} requests per path and mode, {os.cpu_count()} CPUs visible, load {os.getloadavg()[0]:.2f};"
              f" {logged} exchanges logged")
        print(f"{'mode':10s} {'server p50 ms':>14s} {'proxy p50 ms':>13s} {'server p90':>11s} {'proxy p90':>10s} "
              f"{'overhead p50 ms':>16s} {'paired median ms':>17s}")
        for stream, (d, v) in results.items():
            q = lambda xs, f: statistics.quantiles(xs, n=10)[8] if f == 90 else statistics.median(xs)  # noqa: E731
            paired = statistics.median([b - a for a, b in zip(d, v)])
            print(f"{'stream' if stream else 'json':10s} {1e3 * q(d, 50):14.2f} {1e3 * q(v, 50):13.2f} {1e3 * q(d, 90):11.2f} "
                  f"{1e3 * q(v, 90):10.2f} {1e3 * (q(v, 50) - q(d, 50)):16.2f} {1e3 * paired:17.2f}")
    finally:
        if proxy:
            stop(proxy)
        stop(server)


if __name__ == "__main__":
    main()
