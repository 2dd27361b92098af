"""Conformance of the two registries: every backend declares what the rest of llmbuild reads, every family
binds its tiny config and names modules its transformers model has, and every architecture x backend pair
either plans or is refused with a line naming the target and the backends that support the family.
The lists come from the registries (llmbuild.targets.BACKENDS, llmbuild.archs.ARCHS), never from here."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from llmbuild import archs
from llmbuild import targets as registry
from llmbuild.errors import InvalidInput
from llmbuild.stages.verify import GATES
from llmbuild.targets.base import Backend
from tests.conftest import REPO, TINY

BACKENDS = registry.names()
ARCHS = archs.names()


@pytest.mark.parametrize("name", BACKENDS)
def test_backend_declares_its_capabilities(name):
    b = registry.backend(name)
    assert isinstance(b, Backend) and b.name == name
    fields = {f.name: f for f in dataclasses.fields(b.Options)}
    assert fields["backend"].default == name and "gates" in fields
    assert set(b.path_options) <= set(fields), b.path_options
    opts = b.Options()
    b.check_options(opts, f"targets.{name}")  # the defaults are a valid recipe
    assert b.precision(opts) in b.precisions
    gates = b.default_gates(opts)
    assert set(gates) <= set(GATES) and {"min_top1", "max_kld", "max_abs_diff", "max_ppl_ratio"} <= set(gates)
    assert b.tools and b.runtime.dist and b.runtime.module and b.runtime.install
    # it generates, or it says why not
    assert (b.no_generation is None) == (type(b).generate is not Backend.generate)
    assert isinstance(b.quantized(opts), bool)
    for lines in (b.usage("t", {}, []), b.notes({})):
        assert isinstance(lines, list) and all(isinstance(x, str) for x in lines)
    # serving lines by server name, and the client its users run (declared with where its tokenizer comes from)
    serving = b.serving("t", {})
    assert isinstance(serving, dict) and all(isinstance(v, list) and v for v in serving.values())
    if b.client is not None:
        assert b.client.dist and b.client.module and b.client.install and b.client.tokenizer
        assert type(b).open_client is not Backend.open_client and b.no_generation is None


def test_backend_table_rejects_unknown_names():
    with pytest.raises(InvalidInput, match=r"targets\.x\.backend: unknown backend 'tflite'; known: gguf, hf, onnx"):
        registry.backend("tflite", "targets.x.backend")


@pytest.mark.parametrize("name", ARCHS)
def test_family_binds_its_tiny_config(name, tiny_models):
    cls = archs.arch_class(name)
    assert name in cls.hf_names and cls.__module__ == f"llmbuild.archs.{archs.ARCHS[name]}"
    cfg = json.loads((tiny_models[name] / "config.json").read_text())
    arch = archs.for_config(cfg)
    assert type(arch) is cls and arch.name == name
    assert set(cls.required_config) <= set(cfg) and cls.targets <= set(BACKENDS)
    assert len(arch.windows) == arch.layers and arch.rope.dim == arch.head_dim
    # the tensors every target expects are the checkpoint's (the tiny model ties where its config says so)
    from llmbuild.checkpoint import open_checkpoint

    found = set(open_checkpoint(tiny_models[name]).tensor_names)
    required, optional = arch.expected_tensors(arch.tied)
    assert set(required) <= found <= set(required) | set(optional) | {f"{arch.LM_HEAD}.weight"}
    # what LoRA and AWQ name are modules of the family's transformers model
    import torch
    import transformers

    with torch.device("meta"):
        model = getattr(transformers, name)(transformers.AutoConfig.from_pretrained(tiny_models[name]))
    modules = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()} | {n for n, _ in model.named_modules()}
    assert set(cls.lora_modules) | set(cls.lora_extra_modules) <= modules
    for group in arch.linear_groups():
        for m in (group.norm, *group.linears):
            assert m is None or f"model.layers.0.{m}" in modules, m
    assert set(arch.linear_shapes()) == {m for g in arch.linear_groups() for m in g.linears}


@pytest.mark.parametrize("name", ARCHS)
def test_variants_name_registered_architectures(name):
    for variant, (arch, overrides) in archs.arch_class(name).variants.items():
        assert arch in archs.arch_class(name).hf_names and overrides, variant


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ARCHS)
def test_every_architecture_backend_pair_plans_or_is_refused(name, backend, tiny_models):
    from llmbuild.plan import check_family

    cls = archs.arch_class(name)
    b = registry.backend(backend)
    bc = _bc(backend)
    if backend not in cls.targets:
        with pytest.raises(InvalidInput) as e:
            check_family(cls, name, bc)
        assert _names_target_and_supporters(str(e.value), backend, cls)
        return
    check_family(cls, name, bc)
    arch = archs.for_config(json.loads((tiny_models[name] / "config.json").read_text()))
    b.check_model(b.Options(), arch, tiny_models[name], "targets.t")
    ctx, why = b.context_length(b.Options(), arch)
    assert ctx == arch.context and why is None  # the tiny models have no window shorter than their context


def test_a_family_a_backend_does_not_map_is_refused_naming_who_does(monkeypatch):
    from llmbuild.plan import check_family

    cls = archs.arch_class("Qwen2ForCausalLM")
    monkeypatch.setattr(cls, "targets", frozenset({"onnx", "gguf"}))
    with pytest.raises(InvalidInput) as e:
        check_family(cls, "Qwen2ForCausalLM", _bc("tensorrt"))
    assert str(e.value) == ("targets.t.backend: Qwen2ForCausalLM is not supported by the tensorrt backend; "
                            "backends that support it: onnx, gguf")


def _names_target_and_supporters(msg: str, backend: str, cls) -> bool:
    return msg.startswith("targets.t.backend:") and backend in msg and all(t in msg for t in cls.targets)


def _bc(backend: str):
    from types import SimpleNamespace

    from llmbuild.config import Target

    b = registry.backend(backend)
    return SimpleNamespace(targets=[Target("t", backend, b.Options())])


def test_unknown_rope_kind_and_missing_family_key_are_one_line():
    cfg = {"architectures": ["LlamaForCausalLM"], "vocab_size": 512, "rms_norm_eps": 1e-6,
           **TINY["LlamaForCausalLM"]}
    from llmbuild.archs.rope import ROPE_KINDS

    known = ", ".join(ROPE_KINDS)
    with pytest.raises(InvalidInput, match=rf"^c\.json: rope_scaling type 'nonsense' is not one llmbuild maps; "
                                           rf"known: {known}$"):
        archs.for_config({**cfg, "rope_scaling": {"rope_type": "nonsense", "factor": 2.0}}, "c.json")
    with pytest.raises(InvalidInput, match=r"^c\.json: rope_scaling llama3 needs low_freq_factor"):
        archs.for_config({**cfg, "rope_parameters": {"rope_type": "llama3", "factor": 8.0}}, "c.json")
    qwen3 = {**cfg, **TINY["Qwen3ForCausalLM"], "architectures": ["Qwen3ForCausalLM"]}
    archs.for_config(qwen3)
    del qwen3["head_dim"]  # transformers would take 128 whatever the hidden size
    with pytest.raises(InvalidInput, match=r"^c\.json: missing keys head_dim \(Qwen3ForCausalLM needs them\)$"):
        archs.for_config(qwen3, "c.json")


def test_listing_and_checking_import_nothing_heavy(tiny_models):
    """Planning stays light: the registries, binding a config and the recipe and model checks of every
    backend import neither torch, numpy, onnx, onnxruntime, transformers nor llama.cpp."""
    cfg = json.loads((tiny_models["Qwen2ForCausalLM"] / "config.json").read_text())
    code = f"""
import sys
from llmbuild import archs, targets
cfg = {cfg!r}
for name in archs.names():
    archs.arch_class(name)
arch = archs.for_config(cfg)
for name in targets.names():
    b = targets.backend(name)
    b.check_options(b.Options(), "t")
    b.check_model(b.Options(), arch, None, "t")
    b.context_length(b.Options(), arch)
heavy = {{'torch', 'numpy', 'onnx', 'onnxruntime', 'transformers', 'llama_cpp', 'gguf'}} & set(sys.modules)
assert not heavy, heavy
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_extension_points_reach_the_targets(tiny_models):
    """The facts families add reach the targets without naming a family: a norm offset is added on the way
    into the GGUF (as llama.cpp's Gemma converter adds 1), q/k rows are interleaved only where llama.cpp's
    rope needs it, and the ONNX graph takes the norm offset and soft-capping as facts it computes."""
    import numpy as np

    from llmbuild.archs.base import interleave_rotary
    from llmbuild.targets import onnx

    cfg = json.loads((tiny_models["LlamaForCausalLM"] / "config.json").read_text())
    llama = archs.for_config(cfg)
    x = np.arange(16 * 64, dtype=np.float32).reshape(64, 16)
    np.testing.assert_array_equal(llama.gguf_transform("blk.0.attn_q.weight")(x), interleave_rotary(x, llama.heads))
    assert llama.gguf_transform("blk.0.attn_norm.weight") is None

    class Offset(type(llama)):
        norm_offset = 1.0
        attn_softcap = 50.0

    arch = Offset(cfg, "LlamaForCausalLM")
    w = np.ones(64, np.float32)
    np.testing.assert_array_equal(arch.gguf_transform("blk.0.attn_norm.weight")(w), w + 1)
    onnx.check_model(onnx.Options(), arch, "targets.t")  # computed, not refused
    nodes = onnx._graph(arch, 1, {n: n for n in arch.expected_tensors(False)[0]}).node
    assert {"RMSNormalization", "Add"} <= {n.op_type for n in nodes}
    caps = [a.f for n in nodes if n.op_type == "Attention" for a in n.attribute if a.name == "softcap"]
    assert caps == [50.0] * arch.layers
    with pytest.raises(InvalidInput, match=r"^targets\.t: model config hidden_act 'relu' is not supported by the "
                                           r"onnx backend"):
        onnx.check_model(onnx.Options(), archs.for_config({**cfg, "hidden_act": "relu"}), "targets.t")
