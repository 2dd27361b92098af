"""The trtllm backend: bf16, FP8 (per-tensor and per-channel) and INT4-AWQ checkpoints of a tiny Llama,
checked against the ModelOpt unified-format schema and loaded by the loader the record names (transformers,
ModelOpt's own quantized modules, or the fallback reader that follows vLLM/TensorRT-LLM), compared with the
source under the backend's default gates; plus the AWQ search itself and the plan-time rejections.

The model is trained for 150 steps on the shipped corpus (a few seconds): a random-weight model's next-token
distribution is nearly flat, so top-1 agreement would measure ties, not the checkpoint.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

from llmbuild.checkpoint import open_checkpoint
from llmbuild.errors import InvalidInput
from llmbuild.stages import reference
from llmbuild.stages.verify import apply_gates, compare
from llmbuild.targets import modelopt_loader
from llmbuild.targets import trtllm as T
from llmbuild.targets.common import ArtifactMeta
from tests.conftest import CORPUS, make_tiny

META = ArtifactMeta(name="tiny-trtllm")
PROBES = ["The quick brown fox jumps over the lazy dog.", "Licensed under the Apache License, Version 2.0",
          "one, two, three, four, five, six"]
CASES = {
    "bf16": {},
    "fp16": {"dtype": "fp16"},
    "fp8": {"quant": "fp8", "calibration_text": str(CORPUS), "calibration_tokens": 256},
    "fp8-pc": {"quant": "fp8", "fp8_weight_scales": "per_channel", "fp8_activation_scales": "dynamic"},
    "awq": {"quant": "int4_awq", "awq_group_size": 64, "calibration_text": str(CORPUS), "calibration_tokens": 256},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(model dir, probe token ids, reference logits) of a tiny Llama trained briefly on the corpus."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("trtllm")
    src = make_tiny(root / "src", "LlamaForCausalLM")
    ids = torch.tensor(AutoTokenizer.from_pretrained(src)(CORPUS.read_text()).input_ids)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rows = ids[: (len(ids) // 64) * 64].reshape(-1, 64)
    for _ in range(150):
        batch = rows[torch.randint(0, len(rows), (8,))]
        model(batch, labels=batch).loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(src)
    (root / "ref").mkdir()
    reference.run(src, PROBES, 24, "auto", False, root / "ref")
    token_ids, logits = reference.load(root / "ref" / "reference.npz")
    return src, token_ids, logits


@pytest.fixture(scope="module")
def built(trained, tmp_path_factory):
    """case -> (out dir, record), each exported once."""
    root = tmp_path_factory.mktemp("trtllm-out")
    done = {}

    def get(case: str):
        if case not in done:
            out = root / case
            out.mkdir()
            opts = T.Options(**CASES[case])
            ckpt = open_checkpoint(trained[0])
            T.check(opts, ckpt.config, f"targets.{case}")
            calls = []
            rec = T.export(ckpt, opts, out, META, lambda *a: calls.append(a))
            assert calls and calls[-1][0] == calls[-1][1]
            done[case] = out, rec, opts
        return done[case]

    return get


@pytest.mark.parametrize("case", list(CASES))
def test_checkpoint_passes_schema_loader_and_default_gates(built, trained, case):
    out, rec, opts = built(case)
    assert T.check_schema(out) == []
    json.dumps(rec)  # the record goes into the cache and the manifest
    _, token_ids, ref = trained
    full = T.run_logits(out, rec, token_ids)
    kv = [T.run_logits(out, rec, [ids], split=len(ids) // 2)[0] for ids in token_ids]
    record = {"metrics": compare(ref, full), "kv_metrics": compare(ref, kv)}
    results = apply_gates(record, T.default_gates(opts))
    assert all(r["passed"] for r in results), (case, record)
    assert (out / "SERVE.md").read_text().count("trtllm-serve . --backend pytorch") == 1
    assert "max_batch_size: 64" in (out / "extra_llm_api_options.yaml").read_text()
    assert (out / "tokenizer.json").exists() and (out / "generation_config.json").exists()


@pytest.mark.parametrize("case", ["fp8", "awq"])
def test_qwen2_biases_and_tied_embeddings(tiny_models, tmp_path, case):
    """Qwen2: q/k/v biases beside quantized weights, lm_head tied to the embedding (absent from the files).
    Random weights: KLD and max |dlogit| gates only (see the module docstring about top-1)."""
    src = tiny_models["Qwen2ForCausalLM"]
    (tmp_path / "ref").mkdir()
    reference.run(src, PROBES, 16, "auto", False, tmp_path / "ref")
    ids, ref = reference.load(tmp_path / "ref" / "reference.npz")
    opts = T.Options(**CASES[case])
    rec = T.export(open_checkpoint(src), opts, tmp_path, META)
    assert T.check_schema(tmp_path) == []
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"]
    assert "model.layers.0.self_attn.q_proj.bias" in index and "lm_head.weight" not in index
    gates = {k: v for k, v in T.default_gates(opts).items() if k != "min_top1"}
    results = apply_gates({"metrics": compare(ref, T.run_logits(tmp_path, rec, ids))}, gates)
    assert all(r["passed"] for r in results), results


HAS_MODELOPT = importlib.util.find_spec("modelopt") is not None


def test_loaders_are_named_honestly(built):
    assert built("bf16")[1]["loader"]["third_party"] is True
    for case in ("fp8", "fp8-pc", "awq"):
        loader = built(case)[1]["loader"]
        assert loader["third_party"] is HAS_MODELOPT
        if HAS_MODELOPT:
            assert loader["name"].startswith("nvidia-modelopt") and "CUDA kernels" in loader["not_run"]
        else:
            assert loader["warning"].startswith("NOT a third-party loader")


@pytest.mark.parametrize("case", ["fp8", "fp8-pc", "awq"])
def test_own_reader_agrees_with_modelopt(built, trained, case, monkeypatch):
    """Without nvidia-modelopt the fallback reader verifies; it must compute what ModelOpt computes, up
    to float rounding (ModelOpt fake-quantizes with x * (448 / amax), vLLM's kernels with x / (amax / 448))."""
    out, rec, _ = built(case)
    token_ids = trained[1]
    own = T.run_logits(out, {**rec, "loader": {"third_party": False}}, token_ids)
    if HAS_MODELOPT:
        mo = T.run_logits(out, rec, token_ids)
        same = compare(mo, own)
        assert same["top1"] == 1.0 and same["kld_mean"] < 1e-5, same
    monkeypatch.setattr(T.modelopt_loader, "available", lambda: False)
    assert T.loader_for(built(case)[2])["third_party"] is False


def test_quant_configs_follow_modelopt(built, trained):
    out, rec, _ = built("awq")
    excluded = ["lm_head", "model.embed_tokens"]  # ModelOpt's default configs never quantize these
    assert list(open_checkpoint(trained[0]).arch.unquantized_modules) == excluded
    legacy = json.loads((out / "hf_quant_config.json").read_text())["quantization"]
    assert legacy == {"quant_algo": "W4A16_AWQ", "kv_cache_quant_algo": None, "exclude_modules": excluded,
                      "group_size": 64, "has_zero_point": False, "pre_quant_scale": True}
    inline = json.loads((out / "config.json").read_text())["quantization_config"]
    assert inline["quant_method"] == "modelopt" and inline["ignore"] == excluded
    assert rec["serve"]["vllm"] is None and "W4A16_AWQ" in rec["serve"]["vllm_unsupported"]
    fp8 = json.loads((built("fp8")[0] / "config.json").read_text())["quantization_config"]
    assert fp8["quant_algo"] == "FP8" and fp8["config_groups"]["group_0"]["input_activations"]["num_bits"] == 8
    assert "--quantization modelopt" in built("fp8")[1]["serve"]["vllm"]


@pytest.mark.skipif(importlib.util.find_spec("modelopt") is None, reason="nvidia-modelopt is not installed")
def test_int4_packing_is_modelopts(built):
    """Re-pack the dequantized weights with ModelOpt's own packer: the bytes must be the ones written."""
    import torch
    from modelopt.torch.export.quant_utils import pack_int4_in_uint8
    from safetensors import safe_open

    out = built("awq")[0]
    index = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    name = "model.layers.1.mlp.down_proj"
    with safe_open(str(out / index[f"{name}.weight"]), framework="pt") as st:
        packed, scale = st.get_tensor(f"{name}.weight"), st.get_tensor(f"{name}.weight_scale")
    w = T.dequantize_int4(packed, scale, 64)
    assert torch.equal(pack_int4_in_uint8(w, scale, 64), packed)


def test_schema_catches_a_missing_scale(built, tmp_path):
    import shutil

    out = tmp_path / "broken"
    shutil.copytree(built("fp8")[0], out)
    q = json.loads((out / "hf_quant_config.json").read_text())
    q["quantization"]["exclude_modules"] = ["lm_head"]  # the embedding check is the config agreement
    (out / "hf_quant_config.json").write_text(json.dumps(q))
    assert any("ignore" in p for p in T.check_schema(out))


def test_shards_stream_and_index(trained, tmp_path, monkeypatch):
    """Several shards (a small shard unit) and row-block conversion of large matrices (a small block):
    each shard readable by safetensors, the index covering all, the values the source's in bf16."""
    import torch
    from safetensors import safe_open

    monkeypatch.setattr(T, "SHARD_UNIT", 1 << 15)
    monkeypatch.setattr(T, "CHUNK_BYTES", 5000)
    ckpt = open_checkpoint(trained[0])
    rec = T.export(ckpt, T.Options(shard_size_mb=2), tmp_path, META)
    assert len(rec["shards"]) > 3 and T.check_schema(tmp_path) == []
    assert rec["largest_shard_bytes"] < 4 * (1 << 15) + 65536 + 4096  # a shard, or one embedding-sized tensor
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"]
    for name in ("model.embed_tokens.weight", "lm_head.weight", "model.layers.0.mlp.down_proj.weight"):
        with safe_open(str(tmp_path / index[name]), framework="pt") as st:
            assert torch.equal(st.get_tensor(name), ckpt.get_tensor(name).to(torch.bfloat16)), name


def _as_bf16(src, out):
    """A copy of the checkpoint folder with its float tensors stored in bfloat16."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, out)
    for f in out.glob("*.safetensors"):
        state = {n: t.to(torch.bfloat16) if t.is_floating_point() else t for n, t in load_file(f).items()}
        save_file(state, f, metadata={"format": "pt"})
    return out


@pytest.mark.parametrize("source", ["float32", "bfloat16"])
@pytest.mark.parametrize("case", ["fp8", "fp8-pc"])
def test_fp8_row_blocks_are_the_whole_tensors_bytes(tiny_models, tmp_path, monkeypatch, case, source):
    """FP8 linears read from the checkpoint, quantized and written a row block at a time (a small block:
    up to 4 per linear; per tensor read twice, amax first) hold the bytes of whole-tensor arithmetic: every
    shard byte for byte the export that quantizes each tensor in memory (the numpy reader switched off),
    and each weight and scale ModelOpt's formula (_export_quantized_weight) on the whole source tensor."""
    import torch
    from safetensors import safe_open

    src = tiny_models["LlamaForCausalLM"]
    if source == "bfloat16":
        src = _as_bf16(src, tmp_path / "bf16")
    opts = T.Options(**CASES[case])
    monkeypatch.setattr(T, "CHUNK_BYTES", 8192)
    blocks = []
    real = T._Source.rows
    monkeypatch.setattr(T._Source, "rows", lambda self, n, a, b: blocks.append(n) or real(self, n, a, b))
    for d in ("rows", "whole"):
        (tmp_path / d).mkdir()
    T.export(open_checkpoint(src), opts, tmp_path / "rows", META)
    counts = {n: blocks.count(n) for n in set(blocks)}
    # every linear read by rows: the 32 KB MLP ones in 4 blocks (twice over per tensor), the 8 KB k/v in one
    assert len(counts) == 7 * 2 and all(c >= 4 for n, c in counts.items() if ".mlp." in n), counts
    monkeypatch.setattr(T._Source, "readable", lambda self, n: False)
    T.export(open_checkpoint(src), opts, tmp_path / "whole", META)
    shards = sorted(p.name for p in (tmp_path / "rows").glob("*.safetensors"))
    assert shards == sorted(p.name for p in (tmp_path / "whole").glob("*.safetensors"))
    for name in shards:
        assert (tmp_path / "rows" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    ckpt, got = open_checkpoint(src), T._read_all(tmp_path / "rows")
    linears = [n[: -len(".weight_scale")] for n in got if n.endswith(".weight_scale")]
    assert len(linears) == 7 * ckpt.config["num_hidden_layers"]
    for mod in linears:
        w = ckpt.get_tensor(f"{mod}.weight").float()
        if case == "fp8":
            scale = torch.tensor(float(w.abs().max()) / 448)
            q = (w / scale).clamp(-448, 448).to(torch.float8_e4m3fn)
        else:
            scale = w.abs().amax(dim=1).clamp(min=1e-12) / 448
            q = (w / scale[:, None]).clamp(-448, 448).to(torch.float8_e4m3fn)
        assert torch.equal(got[f"{mod}.weight_scale"], scale), mod
        assert torch.equal(got[f"{mod}.weight"].view(torch.uint8), q.view(torch.uint8)), mod
    with safe_open(str(tmp_path / "rows" / shards[0]), framework="pt") as st:
        assert st.metadata() == {"format": "pt"}


def test_fake_quantize_is_the_pack_unpack_round_trip():
    import torch

    torch.manual_seed(0)
    w = torch.randn(64, 256) * torch.rand(1, 256) * 3
    w[:, :64] = 0  # an all-zero group takes scale 1, as ModelOpt's export does
    assert torch.equal(T.fake_quantize_int4(w, 64), T.dequantize_int4(*T.quantize_int4(w, 64), 64))


def test_awq_search_finds_salient_channels():
    """Inputs with a few large channels: AWQ picks alpha > 0 and beats round-to-nearest (alpha = 0)."""
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 128, generator=g)
    x[:, :4] *= 30.0  # the outlier channels AWQ protects
    w = torch.randn(64, 128, generator=g) * 0.02
    scale, alpha, loss = T.awq_search(x, [w], 64)
    packed, s = T.quantize_int4(w, 64)
    rtn = float(((x @ T.dequantize_int4(packed, s, 64).T - x @ w.T) ** 2).mean())
    assert alpha > 0 and loss < 0.8 * rtn
    assert torch.all(scale[:4] > scale[4:].max())


def _cfg(**kw) -> dict:
    base = {"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_attention_heads": 4,
            "num_key_value_heads": 2, "intermediate_size": 128, "num_hidden_layers": 2, "vocab_size": 512,
            "rms_norm_eps": 1e-5, "max_position_embeddings": 256}
    return {**base, **kw}


@pytest.mark.parametrize("opts, cfg, key", [
    ({"quant": "fp8", "calibration_text": str(CORPUS)}, _cfg(architectures=["GPT2LMHeadModel"]),
     "config.json architectures:"),
    ({"quant": "int4_awq", "awq_group_size": 64, "calibration_text": str(CORPUS)}, _cfg(intermediate_size=160),
     "targets.t.awq_group_size:"),
    ({"quant": "fp8", "calibration_text": str(CORPUS)}, _cfg(intermediate_size=120), "targets.t.quant:"),
    ({"quant": "int4_awq", "awq_group_size": 32, "calibration_text": str(CORPUS)}, _cfg(), "targets.t.awq_group_size:"),
    ({"quant": "fp8", "calibration_text": "no/such/file.txt"}, _cfg(), "targets.t.calibration_text:"),
    ({"quant": "int4_awq", "awq_group_size": 64}, _cfg(), "targets.t.calibration_text:"),
    ({"quant": "fp8", "fp8_weight_scales": "per_tensor", "fp8_activation_scales": "dynamic"}, _cfg(),
     "targets.t.fp8_activation_scales:"),
])
def test_bad_input_is_one_line_naming_the_key(opts, cfg, key):
    with pytest.raises(InvalidInput) as e:
        T.check(T.Options(**opts), cfg, "targets.t")
    msg = str(e.value)
    assert msg.startswith(key) and "\n" not in msg and e.value.exit_code == 2


def test_calibration_text_too_short(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("only a few words here")
    with pytest.raises(InvalidInput, match=r"^targets\.t\.calibration_text: .* too short: 5 words"):
        T.check(T.Options(quant="int4_awq", awq_group_size=64, calibration_text=str(short)), _cfg(), "targets.t")


def test_key_extra_follows_the_calibration_text(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("a " * 600)
    opts = T.Options(quant="fp8", calibration_text=str(f))
    before = T.key_extra(opts)
    f.write_text("b " * 600)
    assert T.key_extra(opts) != before and T.key_extra(T.Options()) == {"writer": T.WRITER_REVISION}


# -- ModelOpt's own PTQ and export of the same model: the loader and the writer checked against it -------

QUANTIZED = ["fp8", "fp8-pc", "awq"]


@pytest.fixture(scope="module")
def modelopt_twin(trained, built, tmp_path_factory):
    """case -> (ModelOpt's export dir, ModelOpt's fake-quantized logits on the probes): ModelOpt 0.47's
    mtq.quantize on the same source and calibration tokens as `built(case)`, then export_hf_checkpoint.
    The logits are taken after requantize_resmooth_fused_llm_layers (which export runs: AWQ's q/k/v and
    gate/up scales are averaged and folded into the norm), so they are what the export holds."""
    import copy
    import warnings

    import torch
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("modelopt")
    done = {}

    def get(case: str):
        if case in done:
            return done[case]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import modelopt.torch.quantization as mtq
            from modelopt.torch.export import export_hf_checkpoint
            from modelopt.torch.export.unified_export_hf import requantize_resmooth_fused_llm_layers
        src, token_ids, _ = trained
        opts = built(case)[2]
        cfg = modelopt_loader.modelopt_config(T.quant_algo(opts), opts.awq_group_size)
        batches = T._calibration_batches(open_checkpoint(src), opts) if T.needs_calibration(opts) else None
        model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
        with torch.no_grad():
            mtq.quantize(model, cfg, (lambda m: [m(row[None]) for row in batches]) if batches is not None else None)
            shadow = copy.deepcopy(model)
            requantize_resmooth_fused_llm_layers(shadow)
            if case == "fp8-pc":  # per token, as the runtimes and the loader scale (see per_token_inputs)
                modelopt_loader.per_token_inputs(shadow)
            fake = [shadow(torch.tensor([ids])).logits[0].float().numpy() for ids in token_ids]
        out = root / case
        export_hf_checkpoint(model, export_dir=str(out))
        done[case] = out, fake
        return done[case]

    return get


def _tensor_specs(d):
    from safetensors import safe_open

    specs = {}
    for f in sorted(d.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            for name in st.keys():  # noqa: SIM118
                t = st.get_slice(name)
                specs[name] = (t.get_dtype(), tuple(t.get_shape()))
    return specs


@pytest.mark.skipif(not HAS_MODELOPT, reason="nvidia-modelopt is not installed")
@pytest.mark.parametrize("case", QUANTIZED)
def test_loader_reads_modelopts_export_to_modelopts_logits(modelopt_twin, trained, built, case):
    """The loader that verifies our checkpoints, given ModelOpt's own export, computes what ModelOpt's
    quantized model computed before exporting it: the loader reads the format as ModelOpt means it.
    Not bit-exact: ModelOpt's fake quantization multiplies by 448/amax where its export divides by
    amax/448, which moves a few FP8 roundings; the gap must be far below the quantization error."""
    out, fake = modelopt_twin(case)
    rec = {"quant_algo": T.quant_algo(built(case)[2]), "loader": {"third_party": True}}
    got = T.run_logits(out, rec, trained[1])
    same, quant_error = compare(fake, got), compare(trained[2], fake)
    assert same["top1"] == 1.0 and same["kld_mean"] < quant_error["kld_mean"] / 100, (same, quant_error)


@pytest.mark.skipif(not HAS_MODELOPT, reason="nvidia-modelopt is not installed")
@pytest.mark.parametrize("case", QUANTIZED)
def test_checkpoint_has_modelopts_layout(modelopt_twin, built, case):
    """Same tensor names and shapes as ModelOpt's export of the same model, the same dtypes for every
    quantized weight and scale (ModelOpt keeps the rest in the source's dtype), and the same quantization
    section in hf_quant_config.json and config.json, apart from who produced them."""
    ours, theirs = built(case)[0], modelopt_twin(case)[0]
    a, b = _tensor_specs(ours), _tensor_specs(theirs)
    assert {n: s for n, (_, s) in a.items()} == {n: s for n, (_, s) in b.items()}
    # pre_quant_scale is in the model's dtype in both (ModelOpt's twin here is float32, ours bf16)
    scaled = {n for n in a if n.endswith((".weight_scale", ".input_scale"))}
    scaled |= {n[: -len("_scale")] for n in a if n.endswith(".weight_scale")}
    assert scaled and {n: a[n][0] for n in scaled} == {n: b[n][0] for n in scaled}
    legacy = [json.loads((d / "hf_quant_config.json").read_text())["quantization"] for d in (ours, theirs)]
    assert legacy[0] == legacy[1]
    # config.json: every key ModelOpt writes, with its value; ours adds config_groups (ModelOpt's
    # _quant_algo_to_group_config) and AWQ's group_size where ModelOpt 0.47 writes them only for FP8
    inline = [json.loads((d / "config.json").read_text())["quantization_config"] for d in (ours, theirs)]
    assert {k: inline[0].get(k) for k in inline[1] if k != "producer"} == \
        {k: v for k, v in inline[1].items() if k != "producer"}
    assert "lm_head" in json.loads((theirs / "hf_quant_config.json").read_text())["quantization"]["exclude_modules"]


@pytest.mark.skipif(not HAS_MODELOPT, reason="nvidia-modelopt is not installed")
def test_fp8_per_channel_weights_are_modelopts_bytes(modelopt_twin, built):
    """No calibration in this format: ModelOpt's export and ours must hold the same bytes."""
    import torch

    ours, theirs = (T._read_all(d) for d in (built("fp8-pc")[0], modelopt_twin("fp8-pc")[0]))
    names = [n for n in ours if n.endswith(".weight_scale")]
    assert names
    for n in names:
        w = n[: -len("_scale")]
        assert torch.equal(ours[n], theirs[n]), n
        assert torch.equal(ours[w].view(torch.uint8), theirs[w].view(torch.uint8)), w


@pytest.mark.skipif(not HAS_MODELOPT, reason="nvidia-modelopt is not installed")
@pytest.mark.parametrize("case", ["fp8", "awq"])
def test_calibrated_checkpoint_is_as_close_to_the_source_as_modelopts(modelopt_twin, trained, built, case):
    """Both checkpoints through the same loader against the source model: ours is no further away."""
    _, token_ids, ref = trained
    out, rec, _ = built(case)
    ours = compare(ref, T.run_logits(out, rec, token_ids))
    theirs = compare(ref, T.run_logits(modelopt_twin(case)[0], rec, token_ids))
    assert ours["kld_mean"] <= 1.25 * theirs["kld_mean"], (ours, theirs)


@pytest.mark.skipif(not HAS_MODELOPT, reason="nvidia-modelopt is not installed")
@pytest.mark.parametrize("case", ["fp8", "fp8-pc"])
def test_fp8_bytes_through_torch_scaled_mm_match_the_loader(built, trained, case):
    """The FP8 GEMM op serving runtimes dispatch to (torch._scaled_mm: tensor-wise scales for per-tensor
    FP8, row-wise with per-token activation scales for per-channel, as vLLM's Fp8LinearOp does), fed the
    checkpoint's own bytes, gives what the verifying loader's ModelOpt modules give, for every linear."""
    import torch

    out, rec, _ = built(case)
    model, tensors = T._load(out, rec), T._read_all(out)
    inputs = {}
    hooks = [mod.register_forward_pre_hook(lambda m, a, n=n: inputs.__setitem__(n, a[0].reshape(-1, a[0].shape[-1])))
             for n, mod in model.named_modules() if f"{n}.weight_scale" in tensors]
    with torch.no_grad():
        model(torch.tensor([trained[1][0]]))
    for h in hooks:
        h.remove()
    assert len(inputs) == 2 * 7
    for name, x in inputs.items():
        w8, ws = tensors[f"{name}.weight"], tensors[f"{name}.weight_scale"].float()
        if case == "fp8":
            xs, ws = tensors[f"{name}.input_scale"].float().reshape(()), ws.reshape(())
        else:
            xs, ws = (x.abs().amax(dim=-1, keepdim=True) / 448).clamp(min=1e-12), ws.reshape(1, -1)
        x8 = (x / xs).clamp(-448, 448).to(torch.float8_e4m3fn)
        y = torch._scaled_mm(x8, w8.t(), scale_a=xs, scale_b=ws, out_dtype=torch.bfloat16).float()
        with torch.no_grad():
            ref = model.get_submodule(name)(x)
        assert float((y - ref).norm() / ref.norm()) < 5e-3, name  # bf16 output rounding
