"""trtllm's mixtures of experts held to NVIDIA ModelOpt 0.47 itself: ModelOpt's PTQ + export_hf_checkpoint of the
same tiny model (its fused-expert quantizers) gives the checkpoint layout ours must have, the per-expert scales
ours must hold, and the logits our loader must reproduce from ModelOpt's own export. The default run takes
Qwen2-MoE (experts, a shared expert and its gate); the other families are slow-marked."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llmbuild.checkpoint import open_checkpoint
from llmbuild.stages.verify import compare
from llmbuild.targets import modelopt_loader
from llmbuild.targets import trtllm as T
from llmbuild.targets.common import ArtifactMeta
from tests.conftest import CORPUS, make_tiny
from tests.targets.test_trtllm import _tensor_specs

HAS_MODELOPT = modelopt_loader.available()
RNG = np.random.default_rng(11)
PROBES = [[1, *RNG.integers(3, 512, n).tolist()] for n in (20, 33)]
FAMILIES = [pytest.param("Qwen2MoeForCausalLM"),
            pytest.param("MixtralForCausalLM", marks=pytest.mark.slow),
            pytest.param("Qwen3MoeForCausalLM", marks=pytest.mark.slow)]
CASES = {"fp8": {"quant": "fp8", "calibration_text": str(CORPUS), "calibration_tokens": 256},
         "fp8-pc": {"quant": "fp8", "fp8_weight_scales": "per_channel", "fp8_activation_scales": "dynamic"}}
pytestmark = pytest.mark.skipif(not HAS_MODELOPT, reason="nvidia-modelopt is not installed")


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    """(family, case) -> (our checkpoint, ModelOpt's checkpoint, ModelOpt's fake-quantized logits, source
    logits): both made from the same source with the same calibration token ids."""
    import contextlib
    import io
    import warnings

    import torch
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("trtllm-moe")
    done: dict = {}

    def get(family: str, case: str):
        if (family, case) in done:
            return done[family, case]
        src = root / family
        if not src.exists():
            make_tiny(src, family)
        opts = T.Options(**CASES[case])
        ckpt = open_checkpoint(src)
        T.check(opts, ckpt.config, "targets.t")
        ours = root / f"{family}-{case}-ours"
        ours.mkdir()
        rec = T.export(ckpt, opts, ours, ArtifactMeta(name="moe-test"), lambda *a: None)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            import modelopt.torch.quantization as mtq
            from modelopt.torch.export import export_hf_checkpoint

            model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
            with torch.no_grad():
                source = [model(torch.tensor([p])).logits[0].numpy() for p in PROBES]
            batches = T._calibration_batches(ckpt, opts) if T.needs_calibration(opts) else None
            with torch.no_grad():
                mtq.quantize(model, modelopt_loader.modelopt_config(T.quant_algo(opts)),
                             (lambda m: [m(row[None]) for row in batches]) if batches is not None else None)
                if case == "fp8-pc":
                    modelopt_loader.per_token_inputs(model)
                fake = [model(torch.tensor([p])).logits[0].float().numpy() for p in PROBES]
            theirs = root / f"{family}-{case}-modelopt"
            export_hf_checkpoint(model, export_dir=str(theirs))
        done[family, case] = ours, rec, theirs, fake, source
        return done[family, case]

    return get


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("family", FAMILIES)
def test_expert_checkpoint_has_modelopts_layout_and_scales(twins, family, case):
    """Same tensor names and shapes as ModelOpt's export, FP8 for every expert and shared-expert linear, the
    routers (and Qwen2-MoE's shared-expert gate) unquantized and excluded by name in both quantization
    configs, and the same scales: per-tensor weight scales exactly (gate and up of an expert share one),
    input scales shared by the experts, equal to ModelOpt's calibrated ones to float rounding."""
    import torch

    ours, rec, theirs, _, _ = twins(family, case)
    assert T.check_schema(ours) == []
    a, b = _tensor_specs(ours), _tensor_specs(theirs)
    assert {n: s for n, (_, s) in a.items()} == {n: s for n, (_, s) in b.items()}
    quantized = {n for n in a if n.endswith(".weight_scale")}
    assert any(".experts." in n for n in quantized)
    assert {n: a[n][0] for n in quantized} == {n: b[n][0] for n in quantized}
    assert all(a[n[: -len("_scale")]][0] == "F8_E4M3" for n in quantized)
    legacy = [json.loads((d / "hf_quant_config.json").read_text())["quantization"] for d in (ours, theirs)]
    assert sorted(legacy[0]["exclude_modules"]) == sorted(legacy[1]["exclude_modules"])
    assert any(m.endswith("gate") for m in legacy[0]["exclude_modules"])
    mine, theirs_t = T._read_all(ours), T._read_all(theirs)
    for n in quantized:
        if case == "fp8-pc" or ".experts." in n:  # weight scales need no calibration
            assert torch.equal(mine[n], theirs_t[n]), n
            w = n[: -len("_scale")]
            assert torch.equal(mine[w].view(torch.uint8), theirs_t[w].view(torch.uint8)), w
    for n in (n for n in mine if n.endswith(".input_scale")):
        assert torch.allclose(mine[n], theirs_t[n], rtol=1e-5), (n, mine[n], theirs_t[n])
    assert rec["loader"]["third_party"] is True


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("family", FAMILIES)
def test_loader_reads_modelopts_moe_export_to_modelopts_logits(twins, family, case):
    """ModelOpt's own export through our loader computes what ModelOpt's quantized model computed, far
    closer than the quantization error, and our own checkpoint is no further from the source than ModelOpt's."""

    ours, rec, theirs, fake, source = twins(family, case)
    got = T.run_logits(theirs, rec, PROBES)
    same, quant_error = compare(fake, got), compare(source, fake)
    assert same["top1"] == 1.0 and same["kld_mean"] < max(quant_error["kld_mean"] / 50, 1e-9), (same, quant_error)
    mine = compare(source, T.run_logits(ours, rec, PROBES))
    assert mine["kld_mean"] <= 1.25 * quant_error["kld_mean"] + 1e-9, (mine, quant_error)
