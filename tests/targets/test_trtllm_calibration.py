"""The trtllm calibration pass streams each dense decoder layer's weights module by module (one linear
resident at a time; a linear over CHUNK_BYTES computed by row blocks of its weight, one block resident)
and must give exactly the statistics of loading the whole layer: the same FP8 input amax and the same AWQ
scales, alphas and losses, on every family (Qwen3's q/k norms, Gemma's four norms, Phi-3's fused qkv and
gate_up, Qwen2's biases, the mixtures of experts' whole-layer path). A layer that reads a parameter
outside its owner's forward falls back to the whole layer, with the same result.
"""

from __future__ import annotations

import math

import pytest

from llmbuild.checkpoint import open_checkpoint
from llmbuild.targets import trtllm as T
from tests.conftest import CORPUS, TINY

QUANTS = {
    "fp8": {"quant": "fp8", "calibration_text": str(CORPUS), "calibration_tokens": 256},
    "int4_awq": {"quant": "int4_awq", "awq_group_size": 64, "calibration_text": str(CORPUS),
                 "calibration_tokens": 256},
}


def _calibrate(model_dir, quant: str, stream: bool):
    ckpt = open_checkpoint(model_dir)
    opts = T.Options(**QUANTS[quant])
    return T._calibrate(ckpt, opts, T._layout(ckpt.arch), T._calibration_batches(ckpt, opts), lambda *a: None,
                        stream=stream)


def _assert_identical(a: dict, b: dict) -> None:
    import torch

    assert a.keys() == b.keys()
    for i in a:
        assert a[i].keys() == b[i].keys()
        for name in a[i]:
            if name == "experts":
                continue  # trtllm_moe.expert_stats of the same loaded layer: the whole-layer path on both sides
            x, y = a[i][name], b[i][name]
            assert x.keys() == y.keys()
            for k in x:
                if isinstance(x[k], torch.Tensor):
                    assert torch.equal(x[k], y[k]), (i, name, k)
                else:
                    assert x[k] == y[k], (i, name, k)


# a block small enough that every tiny linear (16 KB q_proj, 32 KB gate/up/down) is computed in 2-8
# row blocks, as a large model's are at the default 16 MB
SMALL_BLOCK = 8192


def _spy_rows(monkeypatch) -> list:
    """(name, rows) of every row block read from the checkpoint."""
    reads = []
    real = T._Source.rows
    monkeypatch.setattr(T._Source, "rows", lambda self, n, a, b: reads.append((n, b - a)) or real(self, n, a, b))
    return reads


@pytest.mark.parametrize("block", ["default", "small"])
@pytest.mark.parametrize("quant", list(QUANTS))
@pytest.mark.parametrize("arch", list(TINY))
def test_streamed_layers_give_the_whole_layers_statistics(tiny_models, arch, quant, block, monkeypatch):
    whole = _calibrate(tiny_models[arch], quant, stream=False)
    loads = []
    real = T._load_layer
    monkeypatch.setattr(T, "_load_layer", lambda *a: loads.append(a[2]) or real(*a))
    if block == "small":
        monkeypatch.setattr(T, "CHUNK_BYTES", SMALL_BLOCK)
    reads = _spy_rows(monkeypatch)
    streamed = _calibrate(tiny_models[arch], quant, stream=True)
    n = len(whole)
    moe = open_checkpoint(tiny_models[arch]).arch.mixture_of_experts
    # dense layers never load whole; mixtures of experts always do
    assert loads == (list(range(n)) if moe else [])
    # tiny linears fit a default block (loaded whole); small blocks slice every dense linear's weight
    assert bool(reads) == (block == "small" and not moe)
    _assert_blocks(tiny_models[arch], reads)
    _assert_identical(streamed, whole)
    some = next(v for k, v in streamed[0].items() if k != "experts")
    assert ("amax" in some and some["amax"] > 0) if quant == "fp8" else some["scale"].numel() > 0


def _assert_blocks(model_dir, reads) -> None:
    """Every block read is within SMALL_BLOCK float32 bytes, and each weight read in blocks took several."""
    shapes = open_checkpoint(model_dir).tensor_shapes()
    for name, rows in reads:
        shape = shapes[name][0]
        assert rows * math.prod(shape[1:]) * 4 <= SMALL_BLOCK, (name, rows)
    per = {}
    for name, rows in reads:
        per.setdefault(name, []).append(rows)
    assert all(len(v) >= 2 for n, v in per.items() if n.endswith(".weight")), per


@pytest.mark.parametrize("block", ["default", "small"])
def test_streamed_forward_holds_one_module_at_a_time(tiny_models, block, monkeypatch):
    """While any module computes, only its own parameters are resident: every other weight-bearing module
    of the layer holds its empty placeholder. With small blocks a linear holds none either: it reads its
    weight a row block at a time."""
    ckpt = open_checkpoint(tiny_models["Qwen3ForCausalLM"])
    if block == "small":
        monkeypatch.setattr(T, "CHUNK_BYTES", SMALL_BLOCK)
    reads = _spy_rows(monkeypatch)
    seen = []
    real = T._streamed_forward

    def spy(layer, source, prefix, forward):
        owners = [m for m in layer.modules() if list(m.parameters(recurse=False))]

        def check(m, args):
            resident = [o for o in owners if any(p.numel() for p in o.parameters(recurse=False))]
            seen.append(len(resident))

        for o in owners:
            o.register_forward_hook(lambda m, a, out: check(m, a))
        return real(layer, source, prefix, forward)

    monkeypatch.setattr(T, "_streamed_forward", spy)
    opts = T.Options(**QUANTS["fp8"])
    T._calibrate(ckpt, opts, T._layout(ckpt.arch), T._calibration_batches(ckpt, opts), lambda *a: None)
    # hooks registered before the streaming ones run first: each sees its module loaded and no other;
    # with small blocks the linears (7 per layer) compute with none loaded whole, the 4 norms with theirs
    if block == "default":
        assert seen and set(seen) == {1} and not reads
    else:
        assert seen.count(0) == 7 * ckpt.config["num_hidden_layers"] and set(seen) == {0, 1}
        _assert_blocks(tiny_models["Qwen3ForCausalLM"], reads)


def test_a_parameter_read_outside_its_module_falls_back_to_the_whole_layer(tiny_models, monkeypatch):
    """An MLP that reads up_proj's weight itself, not through up_proj's forward: the streamed forward meets
    the empty placeholder, the layer is loaded whole, and the statistics are those of the whole layer."""
    import torch
    from transformers.models.llama import modeling_llama

    def forward(self, x):
        up = torch.nn.functional.linear(x, self.up_proj.weight)
        return self.down_proj(self.act_fn(self.gate_proj(x)) * up)

    monkeypatch.setattr(modeling_llama.LlamaMLP, "forward", forward)
    whole = _calibrate(tiny_models["LlamaForCausalLM"], "fp8", stream=False)
    loads = []
    real = T._load_layer
    monkeypatch.setattr(T, "_load_layer", lambda *a: loads.append(a[2]) or real(*a))
    streamed = _calibrate(tiny_models["LlamaForCausalLM"], "fp8", stream=True)
    assert loads == list(range(len(whole)))
    _assert_identical(streamed, whole)


def test_bench_sized_linears_in_default_blocks_give_the_whole_layers_statistics(tmp_path, monkeypatch):
    """One decoder layer of bench/make_models.py's 1b model (hidden 2048, intermediate 5888: gate, up and
    down 48 MB of float32, each computed in three 16 MB blocks): the blocks' sums are the whole matrix's,
    so the statistics are identical at the block size the export uses. About 5 s: 190 MB of weights."""
    from tests.conftest import make_tiny

    src = make_tiny(tmp_path / "src", "LlamaForCausalLM", hidden_size=2048, intermediate_size=5888,
                    num_attention_heads=16, num_key_value_heads=4, head_dim=128, num_hidden_layers=1)
    whole = _calibrate(src, "fp8", stream=False)
    reads = _spy_rows(monkeypatch)
    streamed = _calibrate(src, "fp8", stream=True)
    blocks = {n: sum(1 for m, _ in reads if m == n) for n, _ in reads}
    assert blocks == {f"model.layers.0.mlp.{p}.weight": 3 for p in ("gate_proj", "up_proj", "down_proj")}
    _assert_identical(streamed, whole)
