"""The logging proxy in front of llama-cpp-python's OpenAI-compatible server: responses pass unchanged
(streamed ones chunk by chunk), each exchange is logged as one line, failures answer 502 and are logged."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest

from llmbuild.monitor.readers import Defaults, read_logs
from tests.monitor.helpers import ALCE_PROMPT, env, free_port, main, one_error, post, stop, wait_http


def start_proxy(upstream: str, log, *extra) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llmbuild.monitor.cli", "proxy", f"upstream={upstream}",
                             f"listen=127.0.0.1:{port}", f"log={log}", *extra], env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/v1/models", timeout=60, proc=proc)
    except BaseException:
        stop(proc)
        raise
    return proc, url


def sse_text(url: str, body: dict) -> tuple[str, int]:
    req = urllib.request.Request(url, data=json.dumps({**body, "stream": True}).encode(),
                                 headers={"Content-Type": "application/json"})
    text, events = "", 0
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        for raw in r:
            line = raw.decode().strip()
            if line.startswith("data:") and line != "data: [DONE]":
                events += 1
                delta = json.loads(line[5:])["choices"][0]["delta"]
                text += delta.get("content") or ""
    return text, events


@pytest.fixture(scope="module")
def proxied(llama_server, tiny_build, tmp_path_factory):
    log = tmp_path_factory.mktemp("proxy") / "prod.jsonl"
    proc, url = start_proxy(llama_server, log, f"build={tiny_build}")
    yield url, log
    stop(proc)


def test_responses_pass_through_and_are_logged(proxied, llama_server, tiny_build):
    url, log = proxied
    body = {"messages": [{"role": "user", "content": ALCE_PROMPT}], "max_tokens": 8, "temperature": 0,
            "documents": [{"id": "extra", "text": "An explicit document."}], "metadata": {"reference": "Paris"}}
    status, direct = post(llama_server + "/v1/chat/completions", body)
    assert status == 200
    status, via = post(url + "/v1/chat/completions", body)
    assert status == 200
    direct, via = json.loads(direct), json.loads(via)
    assert via["choices"][0]["message"]["content"] == direct["choices"][0]["message"]["content"]
    streamed, events = sse_text(url + "/v1/chat/completions", body)
    assert events >= 2 and streamed == direct["choices"][0]["message"]["content"]
    with urllib.request.urlopen(url + "/v1/models", timeout=10) as r:  # other paths pass through, unlogged
        assert json.loads(r.read())["data"][0]["id"].endswith(".gguf")
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [(x["stream"], x["status"]) for x in lines] == [(False, 200), (True, 200)]
    build_id = json.loads((tiny_build / "manifest.json").read_text())["build_id"]
    for x in lines:
        assert x["format"] == "llmbuild-monitor-proxy/1" and x["build"] == build_id and x["latency_s"] > 0
        assert x["request"]["metadata"] == {"reference": "Paris"} and x["path"] == "/v1/chat/completions"
        assert x["response"]["choices"][0]["message"]["content"] == direct["choices"][0]["message"]["content"]
    assert lines[1]["ttft_s"] is not None and lines[1]["id"] != lines[0]["id"]
    r = read_logs([str(log)], "auto", Defaults())
    assert [e.build for e in r.exchanges] == [build_id, build_id] and not r.skipped
    assert [p["id"] for p in r.exchanges[0].documents] == ["extra"]


def test_upstream_down_answers_502_and_is_logged(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    log = tmp_path / "prod.jsonl"
    proc, url = start_proxy(dead, log, "check_upstream=false")
    try:
        status, body = post(url + "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})
        assert status == 502 and json.loads(body)["error"]["type"] == "upstream_error"
    finally:
        stop(proc)
    (rec,) = [json.loads(x) for x in log.read_text().splitlines()]
    assert rec["status"] == 502 and rec["response"] is None and "failed" in rec["error"]
    (ex,) = read_logs([str(log)], "proxy", Defaults()).exchanges
    assert ex.failed


def test_proxy_refuses_an_unreachable_upstream_and_a_bad_listen(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    p = main(["proxy", f"upstream={dead}", f"log={tmp_path / 'x.jsonl'}"], tmp_path)
    assert p.returncode == 2 and f"upstream: {dead} is unreachable" in one_error(p)
    p = main(["proxy", f"upstream={dead}", "listen=localhost", f"log={tmp_path / 'x.jsonl'}"], tmp_path)
    assert p.returncode == 2 and "listen: 'localhost' is not host:port" in one_error(p)
    p = main(["proxy", f"upstream={dead}", f"log={tmp_path / 'no' / 'x.jsonl'}"], tmp_path)
    assert p.returncode == 2 and "its folder does not exist" in one_error(p)
    assert not (tmp_path / "x.jsonl").exists()
