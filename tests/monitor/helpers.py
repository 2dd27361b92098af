"""Shared pieces of the monitor tests: records shaped as each format's spec writes them, the CLI as a
user runs it, a tiny NLI checker, servers on free loopback ports."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "data" / "tokenizer_corpus.txt"

# an ALCE-style prompt: numbered documents in the user message
DOCS = [("France", "Paris is the capital of France. The city has about two million inhabitants."),
        ("Spain", "Madrid is the capital of Spain. It lies on the river Manzanares."),
        ("Peru", "Lima is the capital of Peru and its largest city.")]
ALCE_PROMPT = ("Answer the question with the documents below and cite them as [1], [2].\n\n"
               + "\n".join(f"Document [{i}](Title: {t}): {x}" for i, (t, x) in enumerate(DOCS, 1))
               + "\n\nQuestion: What are the capitals of France and Spain?")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict:
    e = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "OMP_WAIT_POLICY": "PASSIVE"}
    e.pop("LLMBUILD_CACHE", None)
    return e


def monitor(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmbuild.monitor.cli", *args], cwd=cwd, env=env(),
                          capture_output=True, text=True, timeout=timeout)


def main(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """llmbuild-monitor in this process (the console script's own main), for speed: exit code and stderr."""
    import contextlib
    import io

    from llmbuild.monitor.cli import main as cli_main

    err, out = io.StringIO(), io.StringIO()
    old = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                cli_main(args)
                code = 0
            except SystemExit as e:
                code = int(e.code or 0)
    finally:
        os.chdir(old)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def one_error(proc: subprocess.CompletedProcess) -> str:
    """The one error line a user sees; no traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("llmbuild-monitor: error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def chat_response(rid: str, text: str, model: str = "m", created: int | None = None) -> dict:
    """A chat.completion as the OpenAI API returns it."""
    return {"id": rid, "object": "chat.completion", "created": created or int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 12, "total_tokens": 62}}


def proxy_record(rid: str, text: str, *, t: float | None = None, messages=None, model="m", build=None, weight=1.0,
                 reference=None, status=200) -> dict:
    req = {"model": model, "messages": messages or [{"role": "user", "content": ALCE_PROMPT}], "temperature": 0}
    if reference:
        req["metadata"] = {"reference": reference}
    return {"format": "llmbuild-monitor-proxy/1", "id": rid,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t or time.time())) + ".000+00:00",
            "latency_s": 0.05, "ttft_s": None, "status": status, "stream": False, "path": "/v1/chat/completions",
            "upstream": "http://127.0.0.1:8080", "model": model, "build": build, "sample_weight": weight,
            "request": req, "response": chat_response(rid, text, model) if status < 400 else None,
            "error": None if status < 400 else "upstream failed"}


def write_jsonl(path: Path, records) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers: up
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(url)


def post(url: str, body: dict, timeout: float = 60.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def make_checker(out: Path, *, labels=("entailment", "neutral", "contradiction"), seed: int = 0,
                 hidden: int = 32, layers: int = 2, **config) -> Path:
    """A tiny DeBERTa-v2 sequence-classification checker (random weights from the seed) with a WordPiece
    tokenizer trained on the shipped corpus, saved as a Hugging Face checkpoint: the loading, label mapping,
    batching and digest code of the nli scorer runs on it as on HHEM, MiniCheck or a DeBERTa NLI model.
    `config` overrides DebertaV2Config fields (the benchmark makes a DeBERTa-v3-small-sized one)."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification, PreTrainedTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    tk = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.train([str(CORPUS)], trainers.WordPieceTrainer(vocab_size=600, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"]))
    cls, sep = tk.token_to_id("[CLS]"), tk.token_to_id("[SEP]")
    tk.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                      special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                  sep_token="[SEP]", model_max_length=512)
    tok.save_pretrained(out)
    torch.manual_seed(seed)
    fields = dict(vocab_size=tk.get_vocab_size(), hidden_size=hidden, num_hidden_layers=layers,
                  num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=512,
                  relative_attention=True, position_buckets=32, pos_att_type=["p2c", "c2p"], type_vocab_size=0)
    cfg = DebertaV2Config(**{**fields, **config}, num_labels=len(labels), id2label=dict(enumerate(labels)),
                          label2id={n: i for i, n in enumerate(labels)})
    model = DebertaV2ForSequenceClassification(cfg)
    model.save_pretrained(out)
    return out
