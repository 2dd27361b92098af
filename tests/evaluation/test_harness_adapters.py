"""Every runtime's lm-evaluation-harness adapter gives the harness's own numbers: tasks defined in YAML
written here (multiple choice, generation with stop strings, rolling perplexity; local JSONL, offline)
are scored by `lm_eval.simple_evaluate` through llmbuild's adapter over torch, onnxruntime (fp32),
llama.cpp (f32) and the trtllm checkpoint's loader, and by the harness's own `hf` model on the same
checkpoint. fp32 artifacts must agree request by request to 1e-6 (relative), generated text exactly;
with the chat template applied as the harness applies it, too."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from llmbuild.checkpoint import open_checkpoint
from llmbuild.config import HarnessConfig
from llmbuild.targets.common import ArtifactMeta
from tests.evaluation import harness_tasks

lm_eval = pytest.importorskip("lm_eval")

TASKS = ["t_mc", "t_gen", "t_roll"]


@pytest.fixture(scope="module")
def env(tiny_models, tmp_path_factory):
    from transformers import AutoTokenizer

    from llmbuild.finetune.data import DEFAULT_CHAT_TEMPLATE

    root = tmp_path_factory.mktemp("harness")
    model = root / "model"
    shutil.copytree(tiny_models["LlamaForCausalLM"], model)
    tok = AutoTokenizer.from_pretrained(model)
    tok.chat_template = DEFAULT_CHAT_TEMPLATE  # the fine-tuning stage's template for models without one
    tok.save_pretrained(model)
    return {"root": root, "model": model, "tasks": harness_tasks.write(root / "tasks")}


def cfg(env, **kw) -> HarnessConfig:
    return HarnessConfig(tasks=kw.pop("tasks", TASKS), include_path=str(env["tasks"]), bootstrap_iters=10, **kw)


def reference(env, c: HarnessConfig) -> dict:
    """The harness's own hf model on the source checkpoint."""
    from llmbuild.evaluation import harness

    with harness.quiet_offline():
        return lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={env['model']},dtype=float32",
                                       tasks=c.tasks, task_manager=harness.task_manager(c), batch_size=1,
                                       device="cpu", log_samples=True, bootstrap_iters=c.bootstrap_iters,
                                       apply_chat_template=c.apply_chat_template)


@pytest.fixture(scope="module")
def references(env):
    return {chat: reference(env, cfg(env, apply_chat_template=chat)) for chat in (False, True)}


def ours(env, runtime, c: HarnessConfig) -> dict:
    from llmbuild.evaluation import harness

    return harness.evaluate(harness.make_lm(runtime, env["model"], c), c, log_samples=True)


def assert_same(mine: dict, theirs: dict, rel: float, request_rel: float | None = None) -> float:
    """Request by request (log-likelihoods to `request_rel`, default `rel`; the same generated text),
    then every aggregate metric to `rel`. Returns the largest relative difference of a request."""
    from llmbuild.evaluation import harness

    request_rel = request_rel or rel
    worst = 0.0
    for task, samples in theirs["samples"].items():
        a = {s["doc_id"]: s for s in mine["samples"][task]}
        assert sorted(a) == sorted(s["doc_id"] for s in samples)
        for s in samples:
            assert a[s["doc_id"]]["arguments"] == s["arguments"], task  # the same prompts
            for x, y in zip(a[s["doc_id"]]["resps"], s["resps"]):
                if isinstance(y[0], str):  # generated text
                    assert x == y, task
                    continue
                if isinstance(y[0], tuple):  # loglikelihood: (logprob, is_greedy)
                    assert x[0][1] == y[0][1], task
                    x, y = x[0][0], y[0][0]
                else:  # rolling loglikelihood
                    x, y = x[0], y[0]
                worst = max(worst, abs(x - y) / abs(y))
                assert x == pytest.approx(y, rel=request_rel), task
    want = harness.results(theirs)
    for task, t in want.items():
        got = mine["tasks"][task]
        assert (got["num_fewshot"], got["n"]) == (t["num_fewshot"], t["n"])
        for metric, m in t["metrics"].items():
            value, want_value = got["metrics"][metric]["value"], m["value"]
            if "perplexity" in metric:
                # exp(-log-likelihood / words): compare what it is made of, not its exponential
                value, want_value = math.log(value), math.log(want_value)
            assert value == pytest.approx(want_value, rel=rel), (task, metric)
    return worst


@pytest.mark.parametrize("chat", [False, True], ids=["plain", "chat-template"])
def test_torch_source_matches_hf(env, references, chat):
    from llmbuild.evaluation.runtimes import source_runtime
    from llmbuild.evaluation.torch_runtime import TorchModel

    c = cfg(env, apply_chat_template=chat)
    mine = ours(env, source_runtime(TorchModel(env["model"]), 2), c)
    assert_same(mine, references[chat], rel=1e-6)
    from llmbuild.evaluation import harness

    assert mine["runtime"] == "torch float32" and mine["lm_eval"] == harness.version() == "0.4.13"
    if chat:  # the template reached the prompts
        assert all(s["arguments"][0][0].startswith("<s>User:") for s in mine["samples"]["t_mc"])


def export(backend, env, name, **options) -> tuple[Path, dict]:
    out = env["root"] / name
    if not out.exists():
        out.mkdir()
        rec = backend.export(open_checkpoint(env["model"]), backend.Options(**options), out, ArtifactMeta(name="t"),
                             lambda *a: None)
        (out / "record.json").write_text(json.dumps(rec))
    return out, json.loads((out / "record.json").read_text())


@pytest.mark.parametrize("chat", [False, True], ids=["plain", "chat-template"])
def test_onnx_fp32_matches_hf(env, references, chat):
    from llmbuild.evaluation.runtimes import artifact_runtime
    from llmbuild.targets import onnx

    out, rec = export(onnx, env, "onnx32")
    runtime = artifact_runtime(onnx.BACKEND, out, rec, threads=2)
    assert runtime.batched
    assert_same(ours(env, runtime, cfg(env, apply_chat_template=chat)), references[chat], rel=1e-6)


@pytest.mark.llamacpp
@pytest.mark.parametrize("chat", [False, True], ids=["plain", "chat-template"])
def test_gguf_f32_matches_hf(env, references, chat):
    pytest.importorskip("llama_cpp")
    from llmbuild.evaluation.runtimes import artifact_runtime
    from llmbuild.targets import gguf

    out, rec = export(gguf, env, "gguf-f32", quant="f32")
    runtime = artifact_runtime(gguf.BACKEND, out, rec, threads=2)
    assert not runtime.batched
    # llama.cpp's f32 kernels round differently from torch's (logits differ by ~1e-4, each token's
    # log-probability by up to ~1e-4): a request's summed log-likelihood agrees to ~1e-6 relative
    # and within 1e-5; every metric, and every generated text, to 1e-6 / exactly
    assert_same(ours(env, runtime, cfg(env, apply_chat_template=chat)), references[chat], rel=1e-6, request_rel=1e-5)


def test_trtllm_checkpoint_through_its_loader(env, references):
    """A bf16 checkpoint read by its verifying loader: every request type runs; log-likelihoods are the
    source's to bf16's precision."""
    from llmbuild.evaluation.runtimes import artifact_runtime
    from llmbuild.targets import trtllm

    out, rec = export(trtllm, env, "trtllm-bf16", dtype="bf16")
    mine = ours(env, artifact_runtime(trtllm.BACKEND, out, rec, threads=2), cfg(env))
    theirs = references[False]
    assert set(mine["tasks"]) == set(TASKS) and not mine["skipped"]
    def value(resp):
        return resp[0][0] if isinstance(resp[0], tuple) else resp[0]

    for task in ("t_mc", "t_roll"):
        a = {s["doc_id"]: s for s in mine["samples"][task]}
        for s in theirs["samples"][task]:
            for x, y in zip(a[s["doc_id"]]["resps"], s["resps"]):
                assert value(x) == pytest.approx(value(y), rel=0.05)
    assert len(mine["samples"]["t_gen"]) == len(harness_tasks.QUESTIONS)


def test_a_runtime_that_cannot_generate_skips_generative_tasks(env, references):
    from llmbuild.evaluation.runtimes import Runtime
    from llmbuild.evaluation.torch_runtime import TorchModel

    model = TorchModel(env["model"])
    runtime = Runtime(name="scorer", logits=model.logits, no_generation="no KV cache here")
    mine = ours(env, runtime, cfg(env))
    assert mine["skipped"] == {"t_gen": "no KV cache here"} and set(mine["tasks"]) == {"t_mc", "t_roll"}
    assert mine["tasks"]["t_mc"]["metrics"]["acc"]["value"] == pytest.approx(
        references[False]["results"]["t_mc"]["acc,none"])


def test_batching_and_the_logits_budget_change_no_number(env, references, monkeypatch):
    """Batches of 3 in torch, and a memory budget that splits every batch into single sequences."""
    from llmbuild.evaluation import harness_lm
    from llmbuild.evaluation.runtimes import source_runtime
    from llmbuild.evaluation.torch_runtime import TorchModel

    calls = []
    model = TorchModel(env["model"])
    runtime = source_runtime(model, 2)
    logits = runtime.logits
    runtime.logits = lambda seqs: calls.append(len(seqs)) or logits(seqs)
    assert_same(ours(env, runtime, cfg(env, batch_size=3, tasks=["t_mc", "t_roll"])), reference(
        env, cfg(env, tasks=["t_mc", "t_roll"])), rel=1e-6)
    assert max(calls) == 3
    calls.clear()
    monkeypatch.setattr(harness_lm, "LOGITS_BUDGET", 1)
    ours(env, runtime, cfg(env, batch_size=3, tasks=["t_mc"]))
    assert set(calls) == {1}
