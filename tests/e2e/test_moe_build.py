"""End to end: a tiny Qwen2-MoE (experts, a shared expert and its gate) built by the CLI into ONNX, GGUF, a trtllm
FP8 checkpoint and the tensorrt graph; every artifact passes its gates in its own runtime, the card reports
each one's routing agreement with the source (or why its runtime does not show it), and a rebuild reuses every
stage."""

from __future__ import annotations

import pytest

from tests.conftest import CORPUS
from tests.helpers import corpus_override, latest, manifest, run_cli

ARGS = ["recipe=tiny", "build.model_name=tiny-test-moe", "model.architecture=Qwen2MoeForCausalLM",
        "+model.config.num_experts=4", "+model.config.num_experts_per_tok=2", "+model.config.moe_intermediate_size=32",
        "+model.config.shared_expert_intermediate_size=64", "eval.text=null", "eval.tasks=[]", "eval.golden=null",
        "+targets.fp8.backend=trtllm", "+targets.fp8.quant=fp8", f"+targets.fp8.calibration_text={CORPUS}",
        "+targets.fp8.calibration_tokens=128", "+targets.trt.backend=tensorrt"]


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("e2e-moe")
    proc = run_cli([*ARGS, corpus_override()], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd, proc


@pytest.mark.slow
def test_moe_builds_through_every_target_with_routing_in_the_card(build):
    cwd, _ = build
    d = latest(cwd)
    m = manifest(d)
    arts = {a["target"]: a for a in m["artifacts"]}
    assert set(arts) == {"onnx32", "gguf8", "fp8", "trt"}
    for name, a in arts.items():
        assert a["verification"]["status"] == "passed", (name, a["verification"])
    for name in ("onnx32", "gguf8", "fp8"):
        ro = arts[name]["verification"]["routing"]
        assert ro["status"] == "measured" and ro["layers"] == 2 and ro["top_k"] == 2, ro
        assert ro["agreement"] >= (0.99 if name == "onnx32" else 0.6), (name, ro)
    assert arts["trt"]["verification"]["routing"]["status"] == "not observable"
    card = (d / "README.md").read_text()
    assert "Routing (mixture of experts)" in card and "| `trt` | not observable:" in card
    # the GGUF is llama.cpp's qwen2moe with its expert metadata
    import gguf

    f = next((d / "artifacts" / "gguf8").glob("*.gguf"))
    r = gguf.GGUFReader(f)
    keys = {k: r.fields[k].contents() for k in ("qwen2moe.expert_count", "qwen2moe.expert_used_count",
                                                 "qwen2moe.expert_feed_forward_length",
                                                 "qwen2moe.expert_shared_feed_forward_length")}
    assert keys == {"qwen2moe.expert_count": 4, "qwen2moe.expert_used_count": 2,
                    "qwen2moe.expert_feed_forward_length": 32, "qwen2moe.expert_shared_feed_forward_length": 64}
    shapes = {t.name: tuple(int(x) for x in t.shape) for t in r.tensors}
    assert shapes["blk.0.ffn_gate_exps.weight"] == (64, 32, 4)  # GGUF order: cols, rows, experts
    assert {t.name: t.tensor_type.name for t in r.tensors}["blk.0.ffn_gate_inp.weight"] == "F32"


@pytest.mark.slow
def test_moe_rebuild_reuses_every_stage(build):
    cwd, _ = build
    proc = run_cli([*ARGS, corpus_override()], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stages = manifest(latest(cwd))["stages"]
    assert not [s["stage"] for s in stages if s["status"] == "run"], stages
