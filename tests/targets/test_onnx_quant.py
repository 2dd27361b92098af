"""ONNX int8 (dynamic) and int4 (MatMulNBits) quantization of the onnx target's graph: the Gemm to
MatMul rewrite is exact, the quantized graphs run in onnxruntime (whole and through the KV cache) within
their gates, and the record says what was done."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from llmbuild.checkpoint import open_checkpoint
from llmbuild.errors import InvalidInput
from llmbuild.stages.verify import compare
from llmbuild.targets import onnx as O
from llmbuild.targets import onnx_quant as Q
from llmbuild.targets.common import ArtifactMeta
from tests.conftest import make_tiny


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    """(model dir, fp32 export dir, record, probes, transformers logits) for a tiny Qwen2 (q/k/v bias,
    tied embeddings: both special cases of the rewrite) with rows of 128, so that every block size up
    to 128 fits a row."""
    import torch
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("onnxq")
    d = make_tiny(root / "m", "Qwen2ForCausalLM", hidden_size=128, intermediate_size=256)
    out = root / "fp32"
    out.mkdir()
    rec = O.export(open_checkpoint(d), O.Options(), out, ArtifactMeta(name="t"), lambda *a: None)
    # the quantizer runs inside the export, on the graph before the clients' layout moves it to onnx/
    (out / rec["file"]).replace(out / "model.onnx")
    rec = {**rec, "file": "model.onnx"}
    rng = np.random.default_rng(0)
    probes = [[1, *rng.integers(3, 512, n).tolist()] for n in (15, 31)]
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    with torch.no_grad():
        ref = [model(torch.tensor([p])).logits[0].numpy() for p in probes]
    return d, out, rec, probes, ref


def opts(quant, **kw):
    return SimpleNamespace(quant=quant, dtype=kw.pop("dtype", "fp32"), block_size=kw.pop("block_size", 32),
                           accuracy_level=kw.pop("accuracy_level", 4))


def test_gemm_to_matmul_is_exact(fp32, tmp_path):
    import onnx

    _, out, rec, probes, ref = fp32
    model = onnx.load(out / "model.onnx")
    n_gemm = sum(node.op_type == "Gemm" for node in model.graph.node)
    assert Q.gemm_to_matmul(model) == n_gemm > 0
    assert not any(node.op_type == "Gemm" for node in model.graph.node)
    shutil.copytree(out, tmp_path / "mm")
    onnx.save(model, tmp_path / "mm" / "model.onnx")
    a, b = O.run_logits(out, rec, probes), O.run_logits(tmp_path / "mm", rec, probes)
    assert max(np.abs(x - y).max() for x, y in zip(a, b)) < 1e-4


@pytest.mark.parametrize("quant", ["int8", "int4"])
def test_quantized_graph_runs_within_gates(fp32, tmp_path, quant):
    import onnx

    _, out, rec, probes, ref = fp32
    q = tmp_path / quant
    shutil.copytree(out, q)
    rq = Q.apply(q, opts(quant), rec)
    assert rq["precision"] == quant and rq["quant"]["gemm_rewritten"] > 0
    assert rq["bits_per_weight"] < 16 and rq["bytes"] == (q / "model.onnx").stat().st_size
    ops = {n.op_type for n in onnx.load(q / "model.onnx").graph.node}
    assert ("MatMulNBits" if quant == "int4" else "MatMulInteger") in ops and "Gemm" not in ops
    gates = Q.DEFAULT_GATES[quant]
    full = compare(ref, O.run_logits(q, rq, probes))
    kv = compare(ref, [O.run_logits(q, rq, [p], split=len(p) // 2)[0] for p in probes])
    for m in (full, kv):
        assert m["top1"] >= gates["min_top1"] and m["kld_mean"] <= gates["max_kld"], m
        assert m["max_abs_diff"] <= gates["max_abs_diff"], m
    assert full["kld_mean"] > 0


def test_block_size_is_recorded_and_matters(fp32, tmp_path):
    _, out, rec, probes, ref = fp32
    sizes = {}
    for bs in (16, 128):
        q = tmp_path / str(bs)
        shutil.copytree(out, q)
        r = Q.apply(q, opts("int4", block_size=bs), rec)
        assert r["quant"]["block_size"] == bs
        sizes[bs] = r["bytes"]
    assert sizes[16] > sizes[128]  # one scale per 16 weights costs more than one per 128


def test_check():
    Q.check(opts("int4"), "targets.o")
    Q.check(SimpleNamespace(dtype="fp16"), "targets.o")  # no quant option: nothing to check
    for o, words in [(opts("int3"), "targets.o.quant: unknown quant 'int3'"),
                     (opts("int8", dtype="fp16"), "targets.o.quant: int8 quantizes the fp32 graph"),
                     (opts("int4", block_size=48), "targets.o.block_size: 48"),
                     (opts("int4", accuracy_level=7), "targets.o.accuracy_level: 7")]:
        with pytest.raises(InvalidInput, match=words):
            Q.check(o, "targets.o")
    assert Q.precision(opts("none")) == "fp32" and Q.precision(opts("int4")) == "int4"
