"""The ONNX backend on the tiny models: onnxruntime's logits against transformers (fp32 to 1e-4, fp16
within its default gates), the KV-cache path, left padding in a batch, rope scaling and sliding
windows, the file's layout and metadata, and the plan-time checks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llmbuild import archs
from llmbuild.checkpoint import open_checkpoint
from llmbuild.errors import InvalidInput
from llmbuild.stages.verify import compare
from llmbuild.targets import onnx as O
from llmbuild.targets.common import ArtifactMeta
from tests.conftest import CORPUS, REPO, TINY, make_tiny

ARCHS = archs.names()
META = ArtifactMeta(
    name="acme/Tiny Model", license_id="other", license_name="acme-license",
    license_link="https://example.com/LICENSE", base_model="acme/tiny-base",
    base_model_url="https://huggingface.co/acme/tiny-base", quantized_by="llmbuild test",
)
RNG = np.random.default_rng(0)
PROBES = [[1, *RNG.integers(3, 512, n).tolist()] for n in (15, 31, 47)]


def export(model_dir: Path, out: Path, **options) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    calls = []
    rec = O.export(open_checkpoint(model_dir), O.Options(**options), out, META, lambda *a: calls.append(a))
    assert calls and calls[-1][0] == calls[-1][1] == len(calls)  # one call per tensor, the last says done
    return rec


def hf_logits(model_dir: Path, probes=PROBES) -> list[np.ndarray]:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return [model(torch.tensor([p])).logits[0].numpy() for p in probes]


@pytest.fixture(scope="module")
def reference(tiny_models):
    return {arch: hf_logits(tiny_models[arch]) for arch in ARCHS}


@pytest.fixture(scope="module")
def exports(tiny_models, tmp_path_factory):
    """(arch, options...) -> (out dir, record), each exported once per module."""
    root = tmp_path_factory.mktemp("onnx")
    done = {}

    def get(arch: str, **options):
        key = (arch, *sorted(options.items()))
        if key not in done:
            out = root / f"{arch}-{len(done)}"
            done[key] = out, export(tiny_models[arch], out, **options)
        return done[key]

    return get


@pytest.mark.parametrize("arch", ARCHS)
def test_fp32_matches_transformers(arch, exports, reference):
    out, rec = exports(arch)
    got = O.run_logits(out, rec, PROBES)
    for p, ref, art in zip(PROBES, reference[arch], got):
        assert art.shape == ref.shape == (len(p), ref.shape[1]) and art.dtype == np.float32
        assert np.abs(ref - art).max() < 1e-4
        assert (ref.argmax(-1) == art.argmax(-1)).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_kv_cache_path_matches_full(arch, exports):
    out, rec = exports(arch)
    full = O.run_logits(out, rec, PROBES)
    for p, f in zip(PROBES, full):
        for split in (1, len(p) // 2, len(p) - 1):
            np.testing.assert_allclose(O.run_logits(out, rec, [p], split=split)[0], f, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_fp16_within_default_gates(arch, exports, reference):
    import onnx

    out, rec = exports(arch, dtype="fp16")
    gates = O.default_gates(O.Options(dtype="fp16"))
    for split in (None, 20):
        got = [O.run_logits(out, rec, [p], split=split)[0] for p in PROBES]
        m = compare(reference[arch], got)
        assert m["top1"] >= gates["min_top1"], m
        assert m["kld_mean"] <= gates["max_kld"], m
        assert m["max_abs_diff"] <= gates["max_abs_diff"], m
    g = onnx.load(str(out / rec["file"]), load_external_data=False).graph
    types = {i.name: i.type.tensor_type.elem_type for i in [*g.input, *g.output]}
    assert types["past_key_values.0.key"] == types["present.1.value"] == onnx.TensorProto.FLOAT16
    assert types["logits"] == onnx.TensorProto.FLOAT
    assert {t.data_type for t in g.initializer if t.name.startswith("model.")} == {onnx.TensorProto.FLOAT16}
    assert rec["bits_per_weight"] == 16 and rec["precision"] == "fp16"


def test_record_files_and_tied_embeddings(exports, tiny_models):
    """Qwen2: biases, and tied embeddings stored once; export writes only the files it lists."""
    import onnx
    import torch
    from transformers import AutoModelForCausalLM

    out, rec = exports("Qwen2ForCausalLM")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == sorted(rec["files"])
    assert {"onnx/model.onnx", "config.json", "genai_config.json", "tokenizer.model",
            "tokenizer_config.json"} <= set(rec["files"])
    assert rec["format"] == "onnx" and rec["opset"] == 23 and rec["external_data"] is False
    assert rec["inputs"][:3] == ["input_ids", "attention_mask", "position_ids"]
    assert rec["inputs"][3:5] == ["past_key_values.0.key", "past_key_values.0.value"]
    assert rec["outputs"][:3] == ["logits", "present.0.key", "present.0.value"]
    assert len(rec["outputs"]) == 1 + 2 * TINY["Qwen2ForCausalLM"]["num_hidden_layers"]
    hf = AutoModelForCausalLM.from_pretrained(tiny_models["Qwen2ForCausalLM"], dtype=torch.float32)
    assert rec["num_parameters"] == hf.num_parameters() and rec["bits_per_weight"] == 32
    json.dumps(rec)
    names = {t.name for t in onnx.load(str(out / rec["file"]), load_external_data=False).graph.initializer}
    assert "lm_head.weight" not in names and "model.layers.0.self_attn.q_proj.bias" in names


def test_metadata_props(exports):
    import onnx

    out, rec = exports("LlamaForCausalLM", dtype="fp16")
    props = {p.key: p.value for p in onnx.load(str(out / rec["file"]), load_external_data=False).metadata_props}
    assert props["llmbuild.name"] == META.name and props["license"] == "other"
    assert props["license_name"] == "acme-license" and props["license_link"] == META.license_link
    assert props["base_model"] == "acme/tiny-base" and props["quantized_by"] == "llmbuild test"
    assert props["llmbuild.precision"] == "fp16" and props["llmbuild.version"]
    assert all(props.values())  # unset facts (description) are left out, not written empty


def test_streamed_file_is_valid_onnx_with_the_checkpoint_weights(exports, tiny_models):
    """The self-contained file is protobuf written by hand while streaming: onnx must read it back whole."""
    import onnx
    from onnx import numpy_helper

    out, rec = exports("Qwen2ForCausalLM")
    onnx.checker.check_model(str(out / rec["file"]), full_check=True)
    inits = {t.name: t for t in onnx.load(str(out / rec["file"])).graph.initializer}
    ckpt = open_checkpoint(tiny_models["Qwen2ForCausalLM"])
    for name, x in ckpt.iter_tensors():
        np.testing.assert_array_equal(numpy_helper.to_array(inits[name]), x.numpy())


def test_external_data_always(exports):
    import onnx

    out, rec = exports("MistralForCausalLM", external_data="always")
    # transformers.js' name for the weights beside onnx/model.onnx, which config.json announces
    assert rec["external_data"] is True and "onnx/model.onnx_data" in rec["files"]
    assert (out / rec["file"]).stat().st_size < 100_000 < (out / "onnx/model.onnx_data").stat().st_size
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["transformers.js_config"] == {"use_external_data_format": {"model.onnx": 1}}
    onnx.checker.check_model(str(out / rec["file"]), full_check=True)
    m = onnx.load(str(out / rec["file"]), load_external_data=False)
    weights = [t for t in m.graph.initializer if t.name.startswith("model.")]
    assert weights and all(t.data_location == onnx.TensorProto.EXTERNAL for t in weights)
    embedded_out, embedded = exports("MistralForCausalLM")
    for a, b in zip(O.run_logits(out, rec, PROBES), O.run_logits(embedded_out, embedded, PROBES)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_opset_24(exports, reference):
    out, rec = exports("LlamaForCausalLM", opset=24)
    assert rec["opset"] == 24
    for ref, art in zip(reference["LlamaForCausalLM"], O.run_logits(out, rec, PROBES)):
        assert np.abs(ref - art).max() < 1e-4


def test_left_padded_batch_matches_single_runs(exports):
    """A batch of two prompts, the shorter left-padded, then one decode step through the cache: the
    real tokens get the logits they get alone."""
    import onnxruntime as ort

    out, rec = exports("LlamaForCausalLM")
    sess = ort.InferenceSession(str(out / rec["file"]), providers=["CPUExecutionProvider"])
    a, b = PROBES[1][:12], PROBES[2][:7]
    pad = len(a) - len(b)
    mask = np.array([[1] * len(a), [0] * pad + [1] * len(b)], np.int64)
    pos = np.maximum(mask.cumsum(-1) - 1, 0)
    past = {i.name: np.zeros((2, i.shape[1], 0, i.shape[3]), np.float32) for i in sess.get_inputs()
            if i.name.startswith("past_key_values.")}
    names = [o.name for o in sess.get_outputs()]
    outs = dict(zip(names, sess.run(names, {"input_ids": np.array([a, [0] * pad + b]), "attention_mask": mask,
                                            "position_ids": pos, **past})))
    alone_a, alone_b = O.run_logits(out, rec, [a + [5], b + [9]])
    np.testing.assert_allclose(outs["logits"][0], alone_a[:-1], atol=1e-5)
    np.testing.assert_allclose(outs["logits"][1, pad:], alone_b[:-1], atol=1e-5)
    past = {n.replace("present.", "past_key_values."): v for n, v in outs.items() if n.startswith("present.")}
    step = sess.run(["logits"], {"input_ids": np.array([[5], [9]]),
                                 "attention_mask": np.concatenate([mask, np.ones((2, 1), np.int64)], 1),
                                 "position_ids": np.array([[len(a)], [len(b)]]), **past})[0]
    np.testing.assert_allclose(step[0, 0], alone_a[-1], atol=1e-5)
    np.testing.assert_allclose(step[1, 0], alone_b[-1], atol=1e-5)


VARIANTS = {
    "llama3-rope": ("LlamaForCausalLM", {"rope_parameters": {
        "rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 64}}),
    "linear-rope": ("LlamaForCausalLM", {"rope_parameters": {"rope_type": "linear", "rope_theta": 10000.0,
                                                             "factor": 4.0}}),
    "mistral-window": ("MistralForCausalLM", {"sliding_window": 8}),
    # transformers 5 writes layer_types: layer 0 full attention, layer 1 a window of 8
    "qwen2-window": ("Qwen2ForCausalLM", {"use_sliding_window": True, "sliding_window": 8, "max_window_layers": 1}),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_rope_scaling_and_sliding_window(variant, tmp_path, reference):
    arch, overrides = VARIANTS[variant]
    model = make_tiny(tmp_path / "model", arch, **overrides)
    ref = hf_logits(model)
    # same seed, same weights: the variant changes what the model computes, well beyond the tolerance
    assert max(np.abs(r - b).max() for r, b in zip(ref, reference[arch])) > 1e-3
    rec = export(model, tmp_path / "onnx")
    full = O.run_logits(tmp_path / "onnx", rec, PROBES)
    for p, r, f in zip(PROBES, ref, full):
        assert np.abs(r - f).max() < 1e-4
        np.testing.assert_allclose(O.run_logits(tmp_path / "onnx", rec, [p], split=10)[0], f, atol=1e-5)


def test_bf16_checkpoint(tmp_path):
    from llmbuild.synth import create_model

    model = create_model(tmp_path / "model", "LlamaForCausalLM", TINY["LlamaForCausalLM"], seed=1,
                         train_text=CORPUS, vocab_size=512, dtype="bfloat16")
    ref = hf_logits(model, PROBES[:1])[0]  # transformers widens bf16 to float32 exactly, as the export does
    for dtype, tol in (("fp32", 1e-4), ("fp16", 0.05)):
        rec = export(model, tmp_path / dtype, dtype=dtype)
        assert np.abs(O.run_logits(tmp_path / dtype, rec, PROBES[:1])[0] - ref).max() < tol


def test_unmapped_or_missing_tensors_fail_before_writing(tmp_path, tiny_models):
    from safetensors.torch import load_file, save_file

    for change, needle in (("extra", "self_attn.qkv_proj.weight"), ("missing", "model.norm.weight")):
        model = tmp_path / change
        shutil.copytree(tiny_models["LlamaForCausalLM"], model)
        state = load_file(model / "model.safetensors")
        if change == "extra":
            state["model.layers.0.self_attn.qkv_proj.weight"] = state["model.layers.0.self_attn.q_proj.weight"].clone()
        else:
            del state["model.norm.weight"]
        save_file(state, model / "model.safetensors", metadata={"format": "pt"})
        with pytest.raises(InvalidInput, match=needle):
            export(model, tmp_path / f"{change}-out")
        assert not (tmp_path / f"{change}-out" / "onnx").exists()


def config(arch: str = "LlamaForCausalLM", **changes) -> dict:
    cfg = {"architectures": [arch], "vocab_size": 512, "rms_norm_eps": 1e-6, **TINY.get(arch, TINY["LlamaForCausalLM"])}
    return {**cfg, **changes}


@pytest.mark.parametrize("options, cfg, needle", [
    (O.Options(dtype="int3"), config(), "targets.x.dtype"),
    (O.Options(external_data="maybe"), config(), "targets.x.external_data"),
    (O.Options(execution_provider="tpu"), config(), "targets.x.execution_provider"),
    (O.Options(opset=17), config(), "targets.x.opset"),
    (O.Options(), config("GPT2LMHeadModel"), "GPT2LMHeadModel"),
    (O.Options(), config(rope_parameters={"rope_type": "yarn", "factor": 4.0}), "rope_scaling type 'yarn'"),
    (O.Options(), config(rope_scaling={"type": "dynamic", "factor": 2.0}), "rope_scaling type 'dynamic'"),
    (O.Options(), config(hidden_act="gelu"), "hidden_act 'gelu'"),
    # Llama 3.1 8B's shape: 16 GB in fp32, which one protobuf cannot hold
    (O.Options(external_data="never"), config(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                                              num_key_value_heads=8, intermediate_size=14336, vocab_size=128256),
     "targets.x.external_data"),
])
def test_check_rejects(options, cfg, needle):
    with pytest.raises(InvalidInput, match=needle.replace(".", r"\.")) as e:
        O.check(options, cfg, "targets.x")
    assert "\n" not in str(e.value)
    if "GPT2" in needle:
        assert all(a in str(e.value) for a in archs.names())


def test_check_cuda_needs_the_cuda_provider():
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(InvalidInput, match=r"targets\.x\.execution_provider: cuda"):
        O.check(O.Options(execution_provider="cuda"), config(), "targets.x")


def test_check_accepts_the_tiny_models(tiny_models):
    for model in tiny_models.values():
        cfg = json.loads((model / "config.json").read_text())
        for dtype in O.DTYPES:
            O.check(O.Options(dtype=dtype, external_data="never"), cfg, "targets.x")


def test_planning_imports_no_heavy_module():
    cfg = config()
    code = (f"import sys, llmbuild.targets.onnx as m; m.check(m.Options(), {cfg!r}, 'k'); "
            "heavy = {'torch', 'onnx', 'onnxruntime', 'numpy', 'transformers'} & set(sys.modules); "
            "assert not heavy, heavy")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_pickled_checkpoint_gives_the_same_graph(tmp_path, tiny_models, exports):
    import torch
    from safetensors.torch import load_file

    src = tiny_models["Qwen2ForCausalLM"]
    model = tmp_path / "bin"
    shutil.copytree(src, model, ignore=shutil.ignore_patterns("*.safetensors"))
    torch.save(load_file(src / "model.safetensors"), model / "pytorch_model.bin")
    out = tmp_path / "out"
    out.mkdir()
    rec = O.export(open_checkpoint(model, allow_pickle=True), O.Options(), out, META, lambda *a: None)
    safetensors_out, safetensors_rec = exports("Qwen2ForCausalLM")
    for a, b in zip(O.run_logits(out, rec, PROBES), O.run_logits(safetensors_out, safetensors_rec, PROBES)):
        np.testing.assert_array_equal(a, b)
