"""The GGUF backend on the tiny models: what the file says (read back with gguf-py), what llama.cpp
computes from it (against transformers); how it tokenizes is tested in tests/tokenizers/."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from llmbuild import archs
from llmbuild.checkpoint import open_checkpoint
from llmbuild.errors import InvalidInput
from llmbuild.stages.verify import compare
from llmbuild.targets import gguf as G
from llmbuild.targets import source_tokenizer
from llmbuild.targets.common import ArtifactMeta
from tests.conftest import CORPUS, TINY, make_tiny

ARCHS = archs.names()
QUANTS = ["f32", "f16", "q8_0", "q4_0"]
META = ArtifactMeta(
    name="acme/Tiny Model", license_id="other", license_name="acme-license",
    license_link="https://example.com/LICENSE", base_model="acme/tiny-base",
    base_model_url="https://huggingface.co/acme/tiny-base", base_model_organization="acme",
    quantized_by="llmbuild test",
)


def export(model_dir: Path, out: Path, quant: str, allow_pickle: bool = False) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    calls = []
    rec = G.export(open_checkpoint(model_dir, allow_pickle=allow_pickle), G.Options(quant=quant), out, META,
                   lambda *a: calls.append(a))
    assert calls and calls[-1][0] == calls[-1][1] == rec["tensors"]
    return rec


@pytest.fixture(scope="module")
def exports(tiny_models, tmp_path_factory):
    """(arch, quant) -> (out dir, record), each exported once per module."""
    root = tmp_path_factory.mktemp("gguf")
    done = {}

    def get(arch: str, quant: str):
        if (arch, quant) not in done:
            out = root / arch / quant
            done[arch, quant] = out, export(tiny_models[arch], out, quant)
        return done[arch, quant]

    return get


@pytest.fixture(scope="module")
def reference(tiny_models):
    """arch -> (probe token ids, transformers fp32 logits)."""
    import torch
    from transformers import AutoModelForCausalLM

    rng = np.random.default_rng(0)
    probes = [[1, *rng.integers(3, 512, n).tolist()] for n in (15, 31, 47)]
    out = {}
    for arch in ARCHS:
        model = AutoModelForCausalLM.from_pretrained(tiny_models[arch], dtype=torch.float32).eval()
        with torch.no_grad():
            out[arch] = probes, [model(torch.tensor([p])).logits[0].numpy() for p in probes]
    return out


def fields(path: Path) -> tuple[dict, dict]:
    """(metadata key -> value, tensor name -> GGML type name) as gguf-py reads the file back."""
    import gguf

    reader = gguf.GGUFReader(path)
    return {k: f.contents() for k, f in reader.fields.items()}, {t.name: t.tensor_type.name for t in reader.tensors}


@pytest.mark.parametrize("quant", QUANTS)
@pytest.mark.parametrize("arch", ARCHS)
def test_export_reads_back(exports, tiny_models, arch, quant):
    import gguf

    out, rec = exports(arch, quant)
    assert [p.name for p in out.iterdir()] == [f"acme-Tiny-Model-{quant}.gguf"] == [rec["file"]]
    kv, types = fields(out / rec["file"])
    cfg = json.loads((tiny_models[arch] / "config.json").read_text())
    family = archs.arch_class(arch)
    bound = archs.for_config(cfg)
    a = family.gguf_arch
    head_dim = bound.head_dim
    # transformers 5 loads any qwen2 folder with Qwen2Tokenizer, a byte-level BPE over this SentencePiece
    # vocab plus <|endoftext|>: the GGUF carries that tokenizer (tests/tokenizers holds each form to llama.cpp)
    byte_level = source_tokenizer.load(tiny_models[arch]).class_name == "Qwen2Tokenizer"
    n_vocab = cfg["vocab_size"]
    expected = {
        "general.architecture": a, "general.name": "acme/Tiny Model", "general.license": "other",
        "general.license.name": "acme-license", "general.license.link": "https://example.com/LICENSE",
        "general.base_model.count": 1, "general.base_model.0.name": "tiny-base",
        "general.base_model.0.organization": "acme",
        "general.base_model.0.repo_url": "https://huggingface.co/acme/tiny-base",
        "general.quantized_by": "llmbuild test",
        "general.file_type": int(gguf.LlamaFileType["ALL_F32" if quant == "f32" else f"MOSTLY_{quant.upper()}"]),
        f"{a}.context_length": 256, f"{a}.embedding_length": 64, f"{a}.block_count": bound.layers,
        f"{a}.feed_forward_length": 128, f"{a}.attention.head_count": 4,
        f"{a}.attention.head_count_kv": bound.kv_heads, f"{a}.rope.freq_base": bound.rope.theta,
        f"{a}.vocab_size": n_vocab, f"{a}.rope.dimension_count": bound.rope.dim,
        # llama.cpp's key/value lengths, written where config.json states head_dim (the converter's rule)
        f"{a}.attention.key_length": head_dim if cfg.get("head_dim") else None,
        f"{a}.attention.value_length": head_dim if cfg.get("head_dim") else None,
        "tokenizer.ggml.model": "gpt2" if byte_level else "llama",
        "tokenizer.ggml.pre": "qwen2" if byte_level else "default",
        "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2, "tokenizer.ggml.unknown_token_id": 0,
        "tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.add_eos_token": False,
    }
    assert {k: kv.get(k) for k in expected} == expected
    assert kv[f"{a}.attention.layer_norm_rms_epsilon"] == pytest.approx(cfg["rms_norm_eps"])
    assert len(kv["tokenizer.ggml.tokens"]) == len(kv["tokenizer.ggml.token_type"]) == n_vocab
    assert kv["tokenizer.ggml.tokens"][:3] == ["<unk>", "<s>", "</s>"]
    # unknown, control, control, byte; in a byte-level vocab <unk> is an added token like the others
    assert kv["tokenizer.ggml.token_type"][:4] == ([3, 3, 3, 1] if byte_level else [2, 3, 3, 6])
    # every checkpoint tensor is in the file, under llama.cpp's name, with llama.cpp's type choice; a
    # mixture of experts' expert matrices as three stacked tensors per layer
    computed = bound.rope.kind.gguf_tensors(bound.rope)  # rope tensors made from the config
    stacked = len(bound.expert_sources())
    n_src = len(open_checkpoint(tiny_models[arch]).tensor_names)
    assert len(types) == n_src - stacked + (3 * bound.layers if stacked else 0) + len(computed) == rec["tensors"]
    assert ("blk.1.ffn_down_exps.weight" if stacked else "blk.1.ffn_down.weight") in types
    assert "output_norm.weight" in types
    assert ("blk.0.attn_q.bias" in types) == family.qkv_bias
    assert ("blk.0.attn_q_norm.weight" in types) == ("blk.1.attn_k_norm.weight" in types) == family.qk_norm
    tied = bound.tied
    assert ("output.weight" in types) == (not tied)  # the tiny models that tie have no output matrix
    base = {"f32": "F32", "f16": "F16", "q8_0": "Q8_0", "q4_0": "Q4_0"}[quant]
    out_matrix = "token_embd.weight" if tied else "output.weight"
    for name, t in types.items():
        if name.endswith(("_norm.weight", ".bias", "ffn_gate_inp.weight", "ffn_gate_inp_shexp.weight")):
            assert t == "F32", name  # norms, biases and expert routers (both llama.cpp tools)
        elif name == out_matrix and quant == "q4_0":
            assert t == "Q8_0", name
        else:
            assert t == base, name
    assert rec["tensor_types"] == {t: list(types.values()).count(t) for t in set(types.values())}


@pytest.mark.llamacpp
@pytest.mark.parametrize("quant", QUANTS)
@pytest.mark.parametrize("arch", ARCHS)
def test_llamacpp_logits_match_transformers(exports, reference, arch, quant):
    pytest.importorskip("llama_cpp")
    out, rec = exports(arch, quant)
    probes, ref = reference[arch]
    logits = G.run_logits(out, rec, probes)
    full = compare(ref, logits)
    kv = compare(ref, [G.run_logits(out, rec, [p], split=len(p) // 2)[0] for p in probes])
    gates = G.default_gates(G.Options(quant=quant))
    for m in (full, kv):
        assert m["kld_mean"] <= gates["max_kld"], m
        assert m["max_abs_diff"] <= gates["max_abs_diff"], m
    if G.BACKEND.quantized(G.Options(quant=quant)):
        assert full["top1"] >= gates["min_top1"] and kv["top1"] >= gates["min_top1"], (full, kv)
    else:
        # a conversion agrees wherever top-1 is decided: positions whose source top-2 gap is wider than
        # twice the largest logit error cannot flip; the others are near-ties of random weights (the
        # tiny Qwen2-MoE has 3 of 96 at f16)
        r, a = np.concatenate(ref), np.concatenate(logits)
        top2 = np.sort(r, axis=-1)[:, -2:]
        decided = top2[:, 1] - top2[:, 0] > 2 * full["max_abs_diff"]
        assert decided.mean() > 0.9 and (r.argmax(-1) == a.argmax(-1))[decided].all(), full
    if quant == "f32":
        # measured 1.5e-4 .. 1.8e-4 on logits below 1 (llama.cpp's converter: 0.033 at q8_0 on the 19M
        # model); Gemma's and Phi-3's tiny models have logits up to ~10: 2e-3 .. 4e-3 there, the same
        # relative error
        scale = max(1.0, float(np.abs(np.concatenate(ref)).max()))
        assert full["max_abs_diff"] < 1e-3 * scale and full["top1"] == 1.0, full
    # one token at a time takes other kernels: KLDs agree to 1e-6, or to 1% where the logits are ~10x larger
    assert abs(full["kld_mean"] - kv["kld_mean"]) < max(1e-6, 0.01 * full["kld_mean"])



@pytest.mark.parametrize("rope", [
    {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
     "high_freq_factor": 4.0, "original_max_position_embeddings": 32},
    {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0},
], ids=["llama3", "linear"])
@pytest.mark.llamacpp
def test_rope_scaling(tmp_path, rope):
    pytest.importorskip("llama_cpp")
    import torch
    from transformers import AutoModelForCausalLM

    d = make_tiny(tmp_path / "m", "LlamaForCausalLM", rope_parameters=rope)
    rec = export(d, tmp_path / "out", "f32")
    kv, types = fields(tmp_path / "out" / rec["file"])
    assert ("rope_freqs.weight" in types) == (rope["rope_type"] == "llama3")
    assert kv.get("llama.rope.scaling.type") == ("linear" if rope["rope_type"] == "linear" else None)
    ids = [list(range(1, 200, 3))]  # 67 positions, past original_max_position_embeddings
    with torch.no_grad():
        ref = AutoModelForCausalLM.from_pretrained(d).eval()(torch.tensor(ids)).logits[0].numpy()
    m = compare([ref], G.run_logits(tmp_path / "out", rec, ids))
    assert m["max_abs_diff"] < 1e-3 and m["top1"] == 1.0, m


@pytest.fixture(scope="module")
def odd_rows(tmp_path_factory):
    """A q8_0 export of a model with 48-wide rows, which are not whole 32-element blocks."""
    root = tmp_path_factory.mktemp("odd")
    d = make_tiny(root / "m", "LlamaForCausalLM", hidden_size=48, intermediate_size=96)
    return root / "out", export(d, root / "out", "q8_0")


def test_rows_not_whole_blocks_fall_back_to_f16(odd_rows):
    out, rec = odd_rows
    _, types = fields(out / rec["file"])
    assert types["blk.0.attn_q.weight"] == "F16"  # rows of 48
    assert types["blk.0.ffn_down.weight"] == "Q8_0"  # rows of 96


@pytest.mark.llamacpp
def test_llamacpp_runs_the_f16_fallback(odd_rows):
    pytest.importorskip("llama_cpp")
    out, rec = odd_rows
    logits = G.run_logits(out, rec, [[1, 5, 9, 20]])[0]
    assert logits.shape == (4, 512) and np.isfinite(logits).all()


def test_pickle_checkpoint_gives_the_same_file(tiny_models, tmp_path):
    import torch
    from safetensors.torch import load_file

    src = tiny_models["Qwen2ForCausalLM"]
    d = tmp_path / "bin"
    shutil.copytree(src, d, ignore=shutil.ignore_patterns("*.safetensors"))
    torch.save(load_file(src / "model.safetensors"), d / "pytorch_model.bin")
    a = export(src, tmp_path / "a", "q4_0")
    b = export(d, tmp_path / "b", "q4_0", allow_pickle=True)
    assert (tmp_path / "a" / a["file"]).read_bytes() == (tmp_path / "b" / b["file"]).read_bytes()


def test_quant_table_matches_gguf():
    import gguf

    for quant, (ggml_type, ftype) in G.QUANTS.items():
        assert gguf.GGMLQuantizationType[ggml_type].name == quant.upper()
        assert ftype == gguf.LlamaFileType["ALL_F32" if quant == "f32" else f"MOSTLY_{quant.upper()}"]
    for quant, ftype in G.LLAMA_CPP_QUANTS.items():
        assert ftype == gguf.LlamaFileType[f"MOSTLY_{quant.upper()}"], quant
    for quant in [*G.QUANTS, *G.LLAMA_CPP_QUANTS]:
        assert set(G.default_gates(G.Options(quant=quant))) == {"min_top1", "max_kld", "max_abs_diff", "max_ppl_ratio"}


@pytest.mark.parametrize("quant, words", [
    ("q3_x", ["targets.g.quant", "unknown", "q8_0", "q4_k_m"]),
    ("iq2_xxs", ["targets.g.quant", "does not offer it"]),
    ("Q8_0", ["targets.g.quant", "unknown"]),
])
def test_check_rejects_quants(quant, words):
    with pytest.raises(InvalidInput) as e:
        G.check(G.Options(quant=quant), CFG, "targets.g")
    assert all(w in str(e.value) for w in words) and "\n" not in str(e.value)


def cfg(arch: str = "LlamaForCausalLM", **changes) -> dict:
    return {"architectures": [arch], "vocab_size": 512, "rms_norm_eps": 1e-6, **TINY.get(arch, TINY["LlamaForCausalLM"]),
            "max_position_embeddings": 64, **changes}


CFG = cfg()


def test_k_quant_without_llama_cpp_tells_how_to_install(monkeypatch):
    monkeypatch.setattr(G, "llama_cpp_quantizer_available", lambda: False)
    with pytest.raises(InvalidInput) as e:
        G.check(G.Options(quant="q4_k_m"), CFG, "targets.g")
    msg = str(e.value)
    assert msg.startswith("targets.g.quant:") and "pip install 'llmbuild[llamacpp]'" in msg and "LLAMACPP=1" in msg
    G.check(G.Options(quant="q4_0"), CFG, "targets.g")  # gguf-py's types need no llama.cpp


@pytest.mark.parametrize("case", ["missing", "empty"])
def test_calibration_file_missing_or_empty(tmp_path, case):
    pytest.importorskip("llama_cpp")
    f = tmp_path / "calib.txt"
    if case == "empty":
        f.write_text(" \n\n")
    with pytest.raises(InvalidInput, match=rf"targets\.g\.imatrix: {f} (not found|is empty)"):
        G.check(G.Options(quant="q4_k_m", imatrix=str(f)), CFG, "targets.g")


def test_check_rejects_quantizer_mismatches(tmp_path):
    with pytest.raises(InvalidInput, match=r"targets\.g\.quantizer: gguf-py cannot make 'q4_k_m'"):
        G.check(G.Options(quant="q4_k_m", quantizer="gguf-py"), CFG, "targets.g")
    with pytest.raises(InvalidInput, match=r"targets\.g\.quantizer: unknown quantizer 'numpy'"):
        G.check(G.Options(quantizer="numpy"), CFG, "targets.g")
    (tmp_path / "c.txt").write_text("some text")
    with pytest.raises(InvalidInput, match=r"targets\.g\.imatrix: an importance matrix has no effect on q8_0"):
        G.check(G.Options(quant="q8_0", imatrix=str(tmp_path / "c.txt")), CFG, "targets.g")


def test_check_rejects_architecture_and_rope():
    with pytest.raises(InvalidInput, match=r"architecture 'GPT2LMHeadModel'.*LlamaForCausalLM"):
        G.check(G.Options(), cfg("GPT2LMHeadModel"), "targets.g")
    yarn = cfg("Qwen2ForCausalLM", rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32})
    with pytest.raises(InvalidInput, match=r"config.json: rope_scaling type 'yarn'"):
        G.check(G.Options(), yarn, "targets.g")
    with pytest.raises(InvalidInput, match=r"targets\.g: config.json hidden_act 'gelu', but llama.cpp's llama"):
        G.check(G.Options(), cfg(hidden_act="gelu"), "targets.g")
    G.check(G.Options(quant="q5_1"), cfg("MistralForCausalLM"), "t")


def test_no_tokenizer_names_the_folder(tiny_models, tmp_path):
    """The tokenizer forms and their refusals are tested in tests/tokenizers/."""
    d = tmp_path / "m"
    shutil.copytree(tiny_models["LlamaForCausalLM"], d)
    (d / "tokenizer.model").unlink()
    (d / "tokenizer.json").unlink()
    with pytest.raises(InvalidInput, match="no tokenizer.model or tokenizer.json"):
        export(d, tmp_path / "out", "f16")
    assert not list((tmp_path / "out").iterdir())  # failed before writing anything


# --- llama.cpp's quantizer: K-quants, i-quants, the importance matrix ------------------------------------
# rows of 256: every K-quant block applies (64-wide rows would all fall back to Q5_0/Q8_0)
KQ_SHAPE = dict(hidden_size=256, intermediate_size=512)


@pytest.fixture(scope="module")
def kq_model(tmp_path_factory):
    """A tiny Llama whose matrices are whole K-quant blocks, with probes and its transformers logits."""
    import torch
    from transformers import AutoModelForCausalLM

    d = make_tiny(tmp_path_factory.mktemp("kq") / "m", "LlamaForCausalLM", **KQ_SHAPE)
    rng = np.random.default_rng(1)
    probes = [[1, *rng.integers(3, 512, n).tolist()] for n in (31, 47)]
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    with torch.no_grad():
        ref = [model(torch.tensor([p])).logits[0].numpy() for p in probes]
    return d, probes, ref


@pytest.mark.llamacpp
@pytest.mark.parametrize("quant", sorted(G.LLAMA_CPP_QUANTS))
def test_llama_cpp_quants_run_within_gates(kq_model, tmp_path, quant):
    pytest.importorskip("llama_cpp")
    d, probes, ref = kq_model
    rec = export(d, tmp_path, quant)
    assert sorted(p.name for p in tmp_path.iterdir()) == [rec["file"]]  # the float intermediate is gone
    assert rec["quantizer"]["name"].startswith("llama.cpp") and rec["quantized_from"] == "f32"
    kv, types = fields(tmp_path / rec["file"])
    assert kv["general.file_type"] == G.LLAMA_CPP_QUANTS[quant]
    assert kv["general.name"] == "acme/Tiny Model" and kv["general.license"] == "other"  # metadata survives
    main = quant.upper() if quant.startswith("iq") else quant[:2].upper() + "_K"  # q4_k_m -> Q4_K
    assert main in set(types.values()) and types["blk.0.attn_norm.weight"] == "F32", types
    assert not rec["fallbacks"], rec["fallbacks"]
    # bits per weight as llama.cpp counts it: tensor bytes * 8 / parameters, below f16's for every type
    assert rec["bits_per_weight"] == pytest.approx(rec["tensor_bytes"] * 8 / rec["params"], rel=1e-3)
    assert 2 < rec["bits_per_weight"] < 9
    gates = G.default_gates(G.Options(quant=quant))
    for m in (compare(ref, G.run_logits(tmp_path, rec, probes)),
              compare(ref, [G.run_logits(tmp_path, rec, [p], split=len(p) // 2)[0] for p in probes])):
        assert m["top1"] >= gates["min_top1"] and m["kld_mean"] <= gates["max_kld"], (quant, m)
        assert m["max_abs_diff"] <= gates["max_abs_diff"], (quant, m)


@pytest.mark.llamacpp
def test_q4_k_m_mix_gives_sensitive_layers_more_bits(kq_model, tmp_path):
    pytest.importorskip("llama_cpp")
    rec = export(kq_model[0], tmp_path, "q4_k_m")
    _, types = fields(tmp_path / rec["file"])
    # llama.cpp's Q4_K_M: output.weight and half of attn_v/ffn_down in Q6_K, the rest Q4_K
    assert types["output.weight"] == "Q6_K" and types["blk.0.attn_q.weight"] == "Q4_K"
    assert "Q6_K" in {types["blk.1.attn_v.weight"], types["blk.1.ffn_down.weight"]}


@pytest.mark.llamacpp
@pytest.mark.parametrize("quant", ["q8_0", "q4_0"])
def test_gguf_py_quants_are_byte_identical_to_llama_cpp(tiny_models, tmp_path, quant):
    """The numpy quantizer and llama.cpp's make the same bytes for every tensor of the same type, so
    the gguf-py path is llama.cpp's quantization, not an approximation of it."""
    pytest.importorskip("llama_cpp")
    import gguf

    a = export(tiny_models["LlamaForCausalLM"], tmp_path / "py", quant)
    b_dir = tmp_path / "cpp"
    b_dir.mkdir()
    b = G.export(open_checkpoint(tiny_models["LlamaForCausalLM"]), G.Options(quant=quant, quantizer="llama.cpp"),
                 b_dir, META, lambda *x: None)
    ta = {t.name: t for t in gguf.GGUFReader(tmp_path / "py" / a["file"]).tensors}
    tb = {t.name: t for t in gguf.GGUFReader(b_dir / b["file"]).tensors}
    assert set(ta) == set(tb)
    compared = 0
    for name in ta:
        if ta[name].tensor_type == tb[name].tensor_type:
            assert bytes(ta[name].data) == bytes(tb[name].data), name
            compared += ta[name].tensor_type.name == quant.upper()
    assert compared >= 14  # all but output.weight (llama.cpp: Q6_K when its rows allow, else Q8_0)


@pytest.mark.llamacpp
def test_imatrix_reaches_llama_cpp(kq_model, tmp_path):
    pytest.importorskip("llama_cpp")
    import gguf
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmbuild.targets import gguf_imatrix

    d, probes, ref = kq_model
    calib = tmp_path / "calib.txt"
    calib.write_text(CORPUS.read_text()[:6000])
    with_im = tmp_path / "im"
    with_im.mkdir()
    rec = G.export(open_checkpoint(d), G.Options(quant="q4_k_m", imatrix=str(calib), imatrix_chunk=64), with_im,
                   META, lambda *x: None)
    plain = export(d, tmp_path / "plain", "q4_k_m")
    im = rec["imatrix"]
    assert im["file"] == "imatrix.gguf" and im["chunk_size"] == 64 and im["tokens"] == 64 * im["chunks"] > 0
    assert im["entries"] == 2 * 7  # every linear layer but the output, as llama-imatrix collects them

    # the file says so, as llama-quantize's output does
    kv, _ = fields(with_im / rec["file"])
    assert kv["quantize.imatrix.entries_count"] == 14 and kv["quantize.imatrix.chunks_count"] == im["chunks"]
    assert kv["quantize.imatrix.dataset"] == "calib.txt"
    # the imatrix changed the quantization of the matrices it covers, not of the others
    ta = {t.name: bytes(t.data) for t in gguf.GGUFReader(with_im / rec["file"]).tensors}
    tb = {t.name: bytes(t.data) for t in gguf.GGUFReader(tmp_path / "plain" / plain["file"]).tensors}
    assert ta["blk.0.attn_q.weight"] != tb["blk.0.attn_q.weight"]
    assert ta["output.weight"] == tb["output.weight"] and ta["blk.0.attn_norm.weight"] == tb["blk.0.attn_norm.weight"]

    # llama.cpp's GGUF imatrix format, and its sums are the squared inputs of the layer: for attn_q, the
    # first layer's normalized hidden states, summed over the calibration chunks (BOS first in each)
    r = gguf.GGUFReader(with_im / "imatrix.gguf")
    meta = {k: f.contents() for k, f in r.fields.items()}
    assert meta["general.type"] == "imatrix" and meta["imatrix.chunk_size"] == 64
    assert meta["imatrix.chunk_count"] == im["chunks"] and meta["imatrix.datasets"] == ["calib.txt"]
    t = {x.name: np.array(x.data) for x in r.tensors}
    tok = AutoTokenizer.from_pretrained(d)
    ids = tok(calib.read_text(), add_special_tokens=False).input_ids
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    seen = []
    h = model.model.layers[0].input_layernorm.register_forward_hook(lambda m, a, out: seen.append(out[0]))
    with torch.no_grad():
        for c in range(im["chunks"]):
            model(torch.tensor([[tok.bos_token_id, *ids[c * 64 + 1:(c + 1) * 64]]]))
    h.remove()
    x = torch.cat(seen).double()
    np.testing.assert_allclose(t["blk.0.attn_q.weight.in_sum2"].ravel(), (x * x).sum(0).numpy(), rtol=1e-4)
    assert t["blk.0.attn_q.weight.counts"].ravel().tolist() == [64 * im["chunks"]]
    assert gguf_imatrix.Imatrix(sums={"a": np.ones(3) * 6}, counts={"a": 3}).values()["a"].tolist() == [2.0] * 3


@pytest.mark.llamacpp
def test_generate_uses_the_kv_cache_like_transformers(kq_model, tmp_path):
    """Greedy tokens from llama.cpp's KV-cache loop match transformers' greedy continuation (f32)."""
    pytest.importorskip("llama_cpp")
    from llmbuild.evaluation.torch_runtime import TorchModel

    d, probes, _ = kq_model
    rec = export(d, tmp_path, "f32")
    timings = {}
    got = G.generate(tmp_path, rec, probes[0], 12, eos_id=None, timings=timings)
    assert got == TorchModel(d).generate(probes[0], 12, None)
    assert timings["decode_steps"] == 11 and timings["prompt_seconds"] > 0


@pytest.mark.llamacpp
def test_k_quant_fallbacks_are_recorded(tiny_models, tmp_path):
    """64-wide rows are not whole 256-element K blocks: llama.cpp stores them in another type, and the
    record (hence the card) says which."""
    pytest.importorskip("llama_cpp")
    rec = export(tiny_models["LlamaForCausalLM"], tmp_path, "q4_k_m")
    _, types = fields(tmp_path / rec["file"])
    fb = {f["tensor"]: f for f in rec["fallbacks"]}
    assert fb["blk.0.attn_q.weight"] == {"tensor": "blk.0.attn_q.weight", "wanted": "q4_k", "used": "q5_0"}
    assert types["blk.0.attn_q.weight"] == "Q5_0"
    assert all(types[name] == f["used"].upper() for name, f in fb.items())


def test_the_imatrix_check_reads_the_bindings_without_importing_llama_cpp(tmp_path):
    """check_options asks llama-cpp-python's bindings for the imatrix struct from their source, so a plan
    check does not load libllama; the answer is the one the imported module gives."""
    pytest.importorskip("llama_cpp")
    import subprocess
    import sys

    (tmp_path / "c.txt").write_text("some calibration text")
    code = ("import sys; from llmbuild.targets import gguf as G; "
            f"G.check_options(G.Options(quant='q4_k_m', imatrix={str(tmp_path / 'c.txt')!r}), 'targets.g'); "
            "print('llama_cpp' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    import llama_cpp

    for name in ("llama_model_imatrix_data", "llama_model_quantize", "llama_model_kv_override",
                 "LLAMA_FTYPE_MOSTLY_Q4_K_M", "llama_model_quantize_def", "llama_no_such_symbol"):
        assert G.llama_cpp_binds(name) == hasattr(llama_cpp, name), name


def test_an_old_llama_cpp_without_the_imatrix_struct_says_upgrade(tmp_path, monkeypatch):
    (tmp_path / "c.txt").write_text("some calibration text")
    monkeypatch.setattr(G, "llama_cpp_quantizer_available", lambda: True)
    monkeypatch.setattr(G, "llama_cpp_binds", lambda name: name != "llama_model_imatrix_data")
    with pytest.raises(InvalidInput, match=r"targets\.g\.imatrix: this llama-cpp-python cannot pass an importance "
                                           r"matrix .* predates llama_model_imatrix_data\); upgrade it"):
        G.check_options(G.Options(quant="q4_k_m", imatrix=str(tmp_path / "c.txt")), "targets.g")
