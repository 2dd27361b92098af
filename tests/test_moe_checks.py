"""A mixture of experts' bad input, through the CLI: an expert count that does not match the tensors, more experts
per token than there are, a router tensor missing, a quantization a target cannot apply to experts. Each is one
line, exit 2, before any export (at plan time where the recipe alone tells), and nothing in the cache."""

from __future__ import annotations

import json

import pytest

from tests.conftest import make_tiny
from tests.helpers import corpus_override
from tests.test_plan_checks import assert_refused, local

MIXTRAL = "MixtralForCausalLM"


@pytest.fixture(scope="module")
def moe(tmp_path_factory):
    root = tmp_path_factory.mktemp("moe-models")
    return {"mixtral": make_tiny(root / "mixtral", MIXTRAL), "qwen3": make_tiny(root / "qwen3", "Qwen3MoeForCausalLM")}


def local_args(d) -> list[str]:
    return ["recipe=tiny", "model.source=local", f"model.path={d}"]


def test_expert_count_not_the_tensors_found(tmp_path, moe):
    d = local(tmp_path, moe["mixtral"], lambda c: c.update(num_local_experts=8))
    assert_refused(tmp_path, local_args(d), "model.safetensors: layer 0 has 4 experts",
                   "block_sparse_moe.experts.N: 0-3", "config.json num_local_experts says 8")


def test_more_experts_per_token_than_experts(tmp_path, moe):
    d = local(tmp_path, moe["qwen3"], lambda c: c.update(num_experts_per_tok=5))
    assert_refused(tmp_path, local_args(d), "config.json", "num_experts_per_tok 5 is more than the 4 experts")


def test_more_experts_per_token_than_experts_in_an_init_recipe(tmp_path):
    """Known from the recipe alone: refused at plan time (transformers' default of 8 experts for Mixtral)."""
    assert_refused(tmp_path, ["recipe=tiny", corpus_override(), f"model.architecture={MIXTRAL}",
                              "+model.config.num_experts_per_tok=9"],
                   "model.config: num_experts_per_tok 9 is more than the 8 experts (num_local_experts)")


def test_router_tensor_missing(tmp_path, moe):
    from safetensors.torch import load_file, save_file

    d = local(tmp_path, moe["mixtral"])
    state = load_file(d / "model.safetensors")
    del state["model.layers.1.block_sparse_moe.gate.weight"]
    save_file(state, d / "model.safetensors", metadata={"format": "pt"})
    assert_refused(tmp_path, local_args(d),
                   "model.safetensors: router tensor model.layers.1.block_sparse_moe.gate.weight is missing")


@pytest.mark.parametrize("target, needles", [
    (["+targets.awq.backend=trtllm", "+targets.awq.quant=int4_awq", "+targets.awq.calibration_text=" + "{corpus}"],
     ["targets.awq.quant: int4_awq is not applied to the experts", "use quant fp8 or none"]),
    (["+targets.i8.backend=onnx", "+targets.i8.quant=int8"],
     ["targets.i8.quant: int8 is not applied to the experts", "int4 (onnxruntime's QMoE)"]),
    (["targets.gguf8.quant=q4_k_m", "+targets.gguf8.imatrix={corpus}"],
     ["targets.gguf8.imatrix: an importance matrix is not computed for the experts"]),
], ids=["trtllm-int4_awq", "onnx-int8", "gguf-imatrix"])
def test_quantization_a_target_cannot_apply_to_experts(tmp_path, target, needles):
    """An init recipe: refused at plan time, before the model is made."""
    from tests.conftest import CORPUS

    args = ["recipe=tiny", corpus_override(), f"model.architecture={MIXTRAL}", "+model.config.num_local_experts=4"]
    assert_refused(tmp_path, args + [t.format(corpus=CORPUS) for t in target], *needles)


def test_gguf_refuses_a_renormalization_llamacpp_does_not_compute(tmp_path, moe):
    """Qwen3-MoE's llama.cpp graph always renormalizes the top-k weights: a config that does not is refused."""
    d = local(tmp_path, moe["qwen3"], lambda c: c.update(norm_topk_prob=False))
    line = assert_refused(tmp_path, local_args(d), "targets.gguf8: config.json norm_topk_prob is false",
                          "qwen3moe graph always renormalizes")
    assert json.loads((d / "config.json").read_text())["norm_topk_prob"] is False, line
