"""The facts Gemma 2, Gemma 3 and Phi-3 add, beyond the family matrix (tests/test_families.py):

- each quirk of a family's tiny model moves transformers' logits past every fp32 gate, so an artifact that
  passes its gates computes the quirk (soft-capping, the window, the two rope bases, LongRoPE's factors);
- the ONNX graph switches LongRoPE's factors within one forward pass as transformers does, full and through
  the KV cache;
- AWQ's smoothing scale folds into Gemma's (1 + w) norms exactly, and Phi-3's fused projections are quantized
  as one linear each;
- transformers 4 configs (rope_theta + rope_local_base_freq, sliding_window_pattern, rope_scaling type "su")
  bind to the same facts as the transformers 5 configs the tests write;
- what llama.cpp hard-codes differently is refused by the GGUF backend in one line, at plan time.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from llmbuild import archs
from llmbuild.errors import InvalidInput
from llmbuild.stages.verify import compare
from tests.conftest import CORPUS, TINY, make_tiny

RNG = np.random.default_rng(11)
PROBE = [1, *RNG.integers(3, 512, 46).tolist()]  # 47 tokens: past the tiny models' windows (16)


def _logits(arch: str, overrides: dict, ids=PROBE):
    import torch
    import transformers

    cls = getattr(transformers, arch)
    cfg = cls.config_class(**{**TINY[arch], "vocab_size": 512, **overrides})
    torch.manual_seed(0)
    model = cls(cfg).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


# (architecture, what the quirk is, the config without it)
QUIRKS = [
    ("Gemma2ForCausalLM", "attention soft-capping", {"attn_logit_softcapping": None}),
    ("Gemma2ForCausalLM", "final logit soft-capping", {"final_logit_softcapping": None}),
    ("Gemma2ForCausalLM", "the sliding window", {"sliding_window": 256}),
    ("Gemma2ForCausalLM", "query_pre_attn_scalar", {"query_pre_attn_scalar": 64}),
    ("Gemma3ForCausalLM", "the local rope base", {"rope_parameters": {
        **TINY["Gemma3ForCausalLM"]["rope_parameters"],
        "sliding_attention": {"rope_type": "default", "rope_theta": 1_000_000.0}}}),
    ("Gemma3ForCausalLM", "the global rope scaling", {"rope_parameters": {
        **TINY["Gemma3ForCausalLM"]["rope_parameters"],
        "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0}}}),
]


@pytest.mark.parametrize("arch, quirk, without", QUIRKS, ids=[f"{a}-{q}" for a, q, _ in QUIRKS])
def test_each_quirk_moves_the_logits_past_the_gates(arch, quirk, without):
    m = compare([_logits(arch, {})], [_logits(arch, without)])
    assert m["max_abs_diff"] > 0.05, (quirk, m)  # above the fp32/f32 gates' max_abs_diff (0.01, 0.05)


def test_longrope_long_factors_matter():
    from llmbuild.archs.phi3 import Phi3

    _, phi4 = Phi3.variants["phi4-mini"]
    short = {**phi4, "rope_parameters": {**phi4["rope_parameters"],
                                         "long_factor": phi4["rope_parameters"]["short_factor"]}}
    m = compare([_logits("Phi3ForCausalLM", phi4)], [_logits("Phi3ForCausalLM", short)])
    assert m["max_abs_diff"] > 0.05, m


def test_onnx_switches_longrope_factors_within_a_pass_as_transformers(tmp_path):
    """Original context 16 between the probes' lengths: a 10-token pass keeps the short factors, a 40-token
    one takes the long; through the KV cache the first 16 positions were computed short and the later ones
    long, exactly as transformers' own cache does (which then differs from its full pass)."""
    import torch
    from transformers import AutoModelForCausalLM

    from llmbuild.archs.phi3 import _longrope
    from llmbuild.checkpoint import open_checkpoint
    from llmbuild.targets import onnx
    from llmbuild.targets.common import ArtifactMeta

    d = make_tiny(tmp_path / "m", "Phi3ForCausalLM", original_max_position_embeddings=16,
                  rope_parameters=_longrope(8, 16))
    rec = onnx.export(open_checkpoint(d), onnx.Options(), tmp_path, ArtifactMeta(name="t"), lambda *a: None)
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    short, long_ = PROBE[:10], PROBE[:40]
    with torch.no_grad():
        full = [model(torch.tensor([p])).logits[0].numpy() for p in (short, long_)]
        out = model(torch.tensor([long_[:8]]), use_cache=True)
        parts, cache = [out.logits[0]], out.cache
        for t in long_[8:]:
            out = model(torch.tensor([[t]]), cache=cache, use_cache=True)
            parts.append(out.logits[0])
            cache = out.cache
        kv_ref = torch.cat(parts).numpy()
    got = onnx.run_logits(tmp_path, rec, [short, long_])
    for a, b in zip(got, full):
        np.testing.assert_allclose(a, b, atol=1e-4)
    kv = onnx.run_logits(tmp_path, rec, [long_], split=8)[0]
    np.testing.assert_allclose(kv, kv_ref, atol=1e-4)
    assert np.abs(kv_ref - full[1]).max() > 1e-2  # the switch is visible: transformers' cache keeps short keys


def test_awq_scale_folds_into_offset_norms(tmp_path, monkeypatch):
    """With a given smoothing scale s, Gemma's folded norm computes (1 + w) / s: stored as (1 + w) / s - 1."""
    import torch
    from safetensors import safe_open

    from llmbuild.checkpoint import open_checkpoint
    from llmbuild.targets import trtllm
    from llmbuild.targets.common import ArtifactMeta

    d = make_tiny(tmp_path / "m", "Gemma2ForCausalLM")
    s = torch.linspace(0.5, 2.0, 64)
    monkeypatch.setattr(trtllm, "awq_search", lambda x, ws, g: (torch.linspace(0.5, 2.0, x.shape[-1]), 0.5, 0.0))
    opts = trtllm.Options(quant="int4_awq", awq_group_size=64, calibration_text=str(CORPUS), calibration_tokens=128)
    out = tmp_path / "out"
    out.mkdir()
    trtllm.export(open_checkpoint(d), opts, out, ArtifactMeta(name="t"), lambda *a: None)
    src = open_checkpoint(d)
    for norm in ("input_layernorm", "pre_feedforward_layernorm"):
        name = f"model.layers.0.{norm}.weight"
        shard = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"][name]
        with safe_open(str(out / shard), framework="pt") as f:
            folded = f.get_tensor(name).float()
        torch.testing.assert_close((1 + folded) * s, 1 + src.get_tensor(name).float(), rtol=1e-2, atol=1e-2)


def test_fused_projections_are_one_quantized_linear(tmp_path):
    from llmbuild.checkpoint import open_checkpoint, safetensors_header
    from llmbuild.targets import trtllm
    from llmbuild.targets.common import ArtifactMeta

    d = make_tiny(tmp_path / "m", "Phi3ForCausalLM")
    opts = trtllm.Options(quant="fp8", calibration_text=str(CORPUS), calibration_tokens=128)
    trtllm.check_model(opts, open_checkpoint(d).arch, "t")
    out = tmp_path / "out"
    out.mkdir()
    trtllm.export(open_checkpoint(d), opts, out, ArtifactMeta(name="t"), lambda *a: None)  # schema-checked
    names = {n for f in out.glob("*.safetensors") for n in safetensors_header(f) if n != "__metadata__"}
    for mod in ("self_attn.qkv_proj", "mlp.gate_up_proj", "self_attn.o_proj", "mlp.down_proj"):
        assert {f"model.layers.1.{mod}.weight_scale", f"model.layers.1.{mod}.input_scale"} <= names, mod
    assert not any(".q_proj." in n or ".gate_proj." in n for n in names)


@pytest.mark.slow
@pytest.mark.parametrize("arch, variant", [("Gemma2ForCausalLM", None), ("Phi3ForCausalLM", "phi4-mini")])
def test_awq_passes_its_gates(arch, variant, tmp_path, variant_models, tiny_models):
    """INT4-AWQ of the fused (Phi-4-mini) and offset-norm (Gemma 2) layouts, through ModelOpt's loader."""
    from transformers import AutoModelForCausalLM

    from llmbuild.checkpoint import open_checkpoint
    from llmbuild.stages.verify import apply_gates
    from llmbuild.targets import trtllm
    from llmbuild.targets.common import ArtifactMeta

    d = variant_models(variant) if variant else tiny_models[arch]
    opts = trtllm.Options(quant="int4_awq", awq_group_size=64, calibration_text=str(CORPUS), calibration_tokens=256)
    rec = trtllm.export(open_checkpoint(d), opts, tmp_path, ArtifactMeta(name="t"), lambda *a: None)
    import torch

    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    with torch.no_grad():
        ref = [model(torch.tensor([PROBE])).logits[0].numpy()]
    m = compare(ref, trtllm.run_logits(tmp_path, rec, [PROBE]))
    gates = trtllm.default_gates(opts)
    gates.pop("min_top1")  # random weights: near-tied logits
    assert all(r["passed"] for r in apply_gates({"metrics": m}, gates)), m


def _config(arch: str, **over) -> dict:
    return {"architectures": [arch], "vocab_size": 512, "rms_norm_eps": 1e-6, **TINY[arch], **over}


def test_transformers_4_configs_bind_to_the_same_facts():
    new = archs.for_config(_config("Gemma3ForCausalLM", layer_types=None))
    old = archs.for_config({k: v for k, v in _config(
        "Gemma3ForCausalLM", rope_theta=1_000_000.0, rope_local_base_freq=10_000.0, sliding_window_pattern=6,
        rope_scaling={"rope_type": "linear", "factor": 8.0}).items() if k != "rope_parameters"})
    assert old.windows == new.windows == [16] * 5 + [None]
    for i in range(6):
        a, b = old.layer_rope(i), new.layer_rope(i)
        assert (a.kind.name, a.theta) == (b.kind.name, b.theta)
        np.testing.assert_array_equal(a.inv_freq(), b.inv_freq())
    assert new.layer_rope(0).theta == 10_000.0 and new.layer_rope(5).kind.name == "linear"

    from llmbuild.archs.phi3 import Phi3

    _, phi = Phi3.variants["phi3.5-mini"]
    rp = phi["rope_parameters"]
    su = archs.for_config(_config("Phi3ForCausalLM", **{**phi, "rope_parameters": None},
                                  rope_scaling={"type": "su", "short_factor": rp["short_factor"],
                                                "long_factor": rp["long_factor"]}))
    assert su.rope.kind.name == "su" and su.rope.longer()[0] == 256
    assert math.isclose(su.rope.attention_factor(), math.sqrt(1 + math.log(2) / math.log(256)))


BAD = [
    ("Gemma2ForCausalLM", {"query_pre_attn_scalar": 144},
     "query_pre_attn_scalar 144, but llama.cpp's gemma2 architecture scales attention by 1/sqrt(16)"),
    ("Gemma2ForCausalLM", {"tie_word_embeddings": False},
     "tie_word_embeddings is false, but llama.cpp's gemma2 architecture reads the embedding as its output layer"),
    ("Gemma2ForCausalLM", {"final_logit_softcapping": None}, "which llama.cpp's gemma2 architecture always applies"),
    ("Gemma3ForCausalLM", {"attn_logit_softcapping": 50.0}, "llama.cpp's gemma3 architecture does not soft-cap"),
    ("Phi3ForCausalLM", {"head_dim": 32}, "head_dim 32 x 4 heads is not hidden_size 64"),
]


@pytest.mark.parametrize("arch, over, needle", BAD, ids=[f"{a}-{next(iter(o))}" for a, o, _ in BAD])
def test_gguf_refuses_what_llama_cpp_computes_otherwise(arch, over, needle):
    from llmbuild.targets import gguf

    bound = archs.for_config(_config(arch, **over))
    with pytest.raises(InvalidInput) as e:
        gguf.check_model(gguf.Options(), bound, None, "targets.g")
    assert str(e.value).startswith("targets.g: ") and needle in str(e.value) and "\n" not in str(e.value)
    gguf.check_model(gguf.Options(), archs.for_config(_config(arch)), None, "targets.g")  # the tiny config maps


def test_longrope_factors_of_the_wrong_length_are_one_line():
    from llmbuild.archs.phi3 import _longrope

    with pytest.raises(InvalidInput, match=r"^c\.json: rope_scaling longrope short_factor has 6 entries; the "
                                           r"rotary's 16 dimensions need 8$"):
        archs.for_config(_config("Phi3ForCausalLM", rope_parameters=_longrope(6, 8)), "c.json")
