"""The evaluate stage on a tiny model: the source side once, then artifacts through llama.cpp and
onnxruntime (fp32 and int4), and a backend with no generation. A lossless artifact must reproduce the
source's figures; generation through each runtime's KV cache must give the source's greedy tokens."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from llmbuild.checkpoint import open_checkpoint
from llmbuild.config import EvalConfig, McFormat, McTask
from llmbuild.stages import evaluate
from llmbuild.targets.common import ArtifactMeta
from tests.conftest import REPO

SAMPLES = REPO / "data" / "eval"


@pytest.fixture(scope="module")
def setup(tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    golden = root / "golden.jsonl"
    golden.write_text("".join(json.dumps({"prompt": p, "answer": "Paris"}) + "\n"
                              for p in ("What is the capital of France?", "Name a city.", "one, two, three")))
    cfg = EvalConfig(text=str(SAMPLES / "parity.txt"), heldout_text=str(SAMPLES / "heldout.txt"), window=64,
                     max_windows=3, golden=str(golden), golden_max_new_tokens=6, speed_prompt_tokens=16,
                     speed_new_tokens=4, speed_repeats=1,
                     tasks=[McTask(name="mmlu", path=str(SAMPLES / "mmlu-sample.jsonl"), format=McFormat.mmlu, limit=4),
                            McTask(name="hs", path=str(SAMPLES / "hellaswag-sample.jsonl"), format=McFormat.hellaswag,
                                   limit=3)])
    model = tiny_models["LlamaForCausalLM"]
    ref_out = root / "ref"
    ref_out.mkdir()
    summary = evaluate.prepare(model, cfg, "auto", False, ref_out)
    return SimpleNamespace(root=root, cfg=cfg, model=model, ref_out=ref_out, summary=summary)


def export(backend, model: Path, out: Path, **options) -> dict:
    out.mkdir(parents=True)
    return backend.export(open_checkpoint(model), backend.Options(**options), out, ArtifactMeta(name="t"),
                          lambda *a: None)


def run(setup, backend, name, out, rec):
    return evaluate.run(backend, name, out, rec, setup.ref_out, setup.summary, setup.model, setup.cfg, False)


def test_source_side(setup):
    s = setup.summary
    assert s["window"] == 64 and s["parity"]["windows"] == 3 and s["parity"]["tokens"] == 3 * 31
    assert s["tasks"]["mmlu"]["n"] == 4 and s["tasks"]["hs"]["n"] == 3 and s["golden"]["n"] == 3
    assert s["speed"]["prompt_tokens"] == 16 and s["speed"]["gen_tokens_per_s"] > 0


@pytest.mark.llamacpp
def test_gguf_f32_reproduces_the_source(setup):
    pytest.importorskip("llama_cpp")
    from llmbuild.targets import gguf

    out = setup.root / "gguf-f32"
    rec = run(setup, gguf.BACKEND, "gguf", out, export(gguf, setup.model, out, quant="f32"))
    p = rec["parity"]
    assert p["top1"] == 1.0 and p["kld_mean"] < 1e-8 and p["ppl_ratio"] == pytest.approx(1, abs=1e-4)
    assert rec["perplexity"]["ratio"] == pytest.approx(1, abs=1e-4)
    for t in ("mmlu", "hs"):
        assert rec["tasks"][t]["agreement_with_source"] == 1.0 and rec["tasks"][t]["acc"] == rec["tasks"][t]["acc_source"]
    g = rec["golden"]
    assert (g["exact_match"], g["token_f1"], g["contains"]) == (g["exact_match_source"], g["token_f1_source"],
                                                               g["contains_source"])
    assert len(g["examples"]) == 3 and rec["speed"]["gen_tokens_per_s"] > 0 and rec["speed"]["gen_tokens_vs_torch"] > 0
    assert all(r["passed"] for r in evaluate.apply_gates(rec, gguf.default_gates(gguf.Options(quant="f32"))))


def test_onnx_fp32_and_int4(setup):
    from llmbuild.evaluation import onnx_runtime
    from llmbuild.evaluation.torch_runtime import TorchModel
    from llmbuild.targets import onnx, onnx_quant

    out = setup.root / "onnx32"
    rec32 = export(onnx, setup.model, out)
    ev = run(setup, onnx.BACKEND, "onnx", out, rec32)
    assert ev["parity"]["kld_mean"] < 1e-8 and ev["golden"]["exact_match"] == ev["golden"]["exact_match_source"]
    prompt = json.loads((setup.ref_out / "evalref.json").read_text())["golden"]["prompts"][0]
    assert onnx_runtime.generate(out, rec32, prompt, 8, None) == TorchModel(setup.model).generate(prompt, 8, None)

    q4 = setup.root / "onnx-int4"
    shutil.copytree(out, q4)
    # the quantizer runs inside the export on the graph before the clients' layout moves it under onnx/
    (q4 / rec32["file"]).replace(q4 / "model.onnx")
    rec4 = onnx_quant.apply(q4, SimpleNamespace(quant="int4", dtype="fp32", block_size=32, accuracy_level=4),
                            {**rec32, "file": "model.onnx"})
    ev4 = run(setup, onnx.BACKEND, "onnx", q4, rec4)
    gates = onnx_quant.DEFAULT_GATES["int4"]
    assert all(r["passed"] for r in evaluate.apply_gates(ev4, gates)), evaluate.apply_gates(ev4, gates)
    assert ev4["parity"]["kld_mean"] > 0 and ev4["speed"]["gen_tokens_per_s"] > 0


def test_backend_without_generation_skips_golden_and_speed(setup):
    from llmbuild.targets import onnx, tensorrt

    out = setup.root / "onnx32"
    # scores like onnx, cannot generate, as the tensorrt backend declares
    fake = SimpleNamespace(run_logits=onnx.run_logits, runtime=tensorrt.BACKEND.runtime,
                           no_generation=tensorrt.BACKEND.no_generation, no_speed=None)
    rec = run(setup, fake, "tensorrt", out, {"execution_provider": "cpu", "file": "onnx/model.onnx"})
    assert rec["parity"]["top1"] == 1.0 and rec["tasks"]["mmlu"]["n"] == 4
    for part in ("golden", "speed"):
        assert rec[part]["status"] == "skipped" and "GPU" in rec[part]["reason"]


def test_trtllm_answers_golden_through_its_loader_and_skips_speed(setup):
    """A trtllm checkpoint generates through its verifying loader (ModelOpt's FP8 modules, KV cache);
    its CPU speed is no serving figure and is skipped with the reason."""
    from llmbuild.targets import trtllm

    out = setup.root / "trtllm-fp8pc"
    rec = export(trtllm, setup.model, out, quant="fp8", fp8_weight_scales="per_channel", fp8_activation_scales="dynamic")
    ev = run(setup, trtllm.BACKEND, "trtllm", out, rec)
    assert ev["golden"]["n"] == 3 and len(ev["golden"]["examples"]) == 3
    assert ev["speed"]["status"] == "skipped" and "CUDA kernels" in ev["speed"]["reason"]
    prompt = json.loads((setup.ref_out / "evalref.json").read_text())["golden"]["prompts"][0]
    mine = trtllm.generate(out, rec, prompt, 8, None)
    assert len(mine) == 8
    # the loader's model, stepped through the KV cache, gives what its full-sequence logits give
    full = trtllm.run_logits(out, rec, [prompt + mine[:-1]])[0]
    assert [int(t) for t in full[len(prompt) - 1:].argmax(-1)] == mine
