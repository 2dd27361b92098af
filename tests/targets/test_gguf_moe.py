"""The GGUF writer's streaming of a mixture of experts: a layer's experts are read and written one matrix at a time,
never all at once; large matrices go in row blocks; llama.cpp's C block quantizers and gguf-py's make the same
file; and the stacked tensors are exactly the experts, in order."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llmbuild.checkpoint import open_checkpoint
from llmbuild.targets import ggml_quant
from llmbuild.targets import gguf as G
from llmbuild.targets.common import ArtifactMeta

META = ArtifactMeta(name="moe")
MIXTRAL = "MixtralForCausalLM"


def export(model, out, **options):
    out.mkdir()
    return G.export(open_checkpoint(model), G.Options(**options), out, META, lambda *a: None)


def tensors(path):
    import gguf

    return {t.name: (t.tensor_type.name, bytes(t.data)) for t in gguf.GGUFReader(path).tensors}


@pytest.mark.skipif(not ggml_quant.available(), reason="llama-cpp-python is not installed")
@pytest.mark.parametrize("quant", ["f16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1"])
def test_c_quantizers_make_gguf_pys_bytes(tiny_models, tmp_path, quant):
    a = export(tiny_models[MIXTRAL], tmp_path / "c", quant=quant)
    b = export(tiny_models[MIXTRAL], tmp_path / "py", quant=quant, quantizer="gguf-py")
    c_name = "ggml_cpu_fp32_to_fp16" if quant == "f16" else "ggml_quantize_chunk"
    assert a["quantizer"]["name"].startswith(f"llama.cpp {c_name}") and b["quantizer"]["name"] == "gguf-py"
    assert tensors(tmp_path / "c" / a["file"]) == tensors(tmp_path / "py" / b["file"])


def test_stacked_experts_are_the_experts_in_order(tiny_models, tmp_path):
    import gguf

    rec = export(tiny_models[MIXTRAL], tmp_path / "f32", quant="f32")
    ckpt = open_checkpoint(tiny_models[MIXTRAL])
    got = {t.name: t for t in gguf.GGUFReader(tmp_path / "f32" / rec["file"]).tensors}
    for proj, kind in enumerate(("gate", "up", "down")):
        t = got[f"blk.1.ffn_{kind}_exps.weight"]
        data = np.asarray(t.data).reshape(4, *np.asarray(t.data).shape[-2:])
        for e in range(4):
            src = ckpt.get_tensor(f"model.layers.1.block_sparse_moe.experts.{e}.{('w1', 'w3', 'w2')[proj]}.weight")
            np.testing.assert_array_equal(data[e], src.float().numpy())


def test_a_layers_experts_are_never_all_in_memory(tiny_models, tmp_path, monkeypatch):
    """Slices read but not yet written stay at most half of a layer's experts (+1 being read), on one thread
    or several: each stacked tensor is written while its experts are read."""
    from llmbuild.targets import safetensors_np

    live = {"now": 0, "max": 0, "stacked": False}
    reader_rows, write_array = safetensors_np.Reader.rows, G._write_array

    def rows(self, name, first, stop):
        if ".experts." in name:
            live["now"] += 1
            live["max"] = max(live["max"], live["now"])
        return reader_rows(self, name, first, stop)

    def written(f, arr):
        if live["now"]:
            live["now"] -= 1
        return write_array(f, arr)

    monkeypatch.setattr(safetensors_np.Reader, "rows", rows)
    monkeypatch.setattr(G, "_write_array", written)
    for threads in (1, 4):
        live.update(now=0, max=0)
        export(tiny_models[MIXTRAL], tmp_path / f"t{threads}", quant="q8_0", threads=threads)
        assert 1 <= live["max"] <= 4 // 2 + 1, (threads, live)  # tiny Mixtral: 4 experts


@pytest.mark.parametrize("quant", ["q8_0", "f16"])
def test_threads_write_the_serial_bytes(tiny_models, tmp_path, monkeypatch, quant):
    """The thread pool converts tensors, experts and row blocks out of order; the file is the one-thread file."""
    monkeypatch.setattr(G, "ROW_BLOCK_BYTES", 64 * 64 * 4)  # the embedding and output in 8 blocks each
    files = []
    for threads in (1, 2, 4):
        rec = export(tiny_models[MIXTRAL], tmp_path / f"t{threads}", quant=quant, threads=threads)
        files.append((tmp_path / f"t{threads}" / rec["file"]).read_bytes())
    assert files[0] == files[1] == files[2]


def test_large_matrices_stream_in_row_blocks_to_the_same_bytes(tiny_models, tmp_path, monkeypatch):
    a = export(tiny_models[MIXTRAL], tmp_path / "whole", quant="q8_0")
    blocks = []
    rows = G.safetensors_np.Reader.rows
    monkeypatch.setattr(G, "ROW_BLOCK_BYTES", 64 * 64 * 4)  # 64 rows of the 512 x 64 embedding
    monkeypatch.setattr(G.safetensors_np.Reader, "rows",
                        lambda self, n, f, s: blocks.append((n, f, s)) or rows(self, n, f, s))
    b = export(tiny_models[MIXTRAL], tmp_path / "blocks", quant="q8_0")
    assert [(f, s) for n, f, s in blocks if n == "model.embed_tokens.weight"] == [(r, r + 64) for r in range(0, 512, 64)]
    assert tensors(tmp_path / "whole" / a["file"]) == tensors(tmp_path / "blocks" / b["file"])


def test_bf16_checkpoint_is_widened_exactly(tmp_path):
    """safetensors_np returns bfloat16 as its bits; widened it is torch's float32 of the same tensor."""
    import torch
    from safetensors.torch import save_file

    from llmbuild.targets import safetensors_np

    x = torch.randn(33, 17).to(torch.bfloat16)
    save_file({"x": x, "y": torch.arange(6, dtype=torch.float16).reshape(2, 3)}, tmp_path / "m.safetensors")
    r = safetensors_np.Reader({"x": tmp_path / "m.safetensors", "y": tmp_path / "m.safetensors"})
    np.testing.assert_array_equal(safetensors_np.widen(r("x")), x.float().numpy())
    np.testing.assert_array_equal(safetensors_np.widen(r.rows("x", 5, 9)), x[5:9].float().numpy())
    np.testing.assert_array_equal(r("y"), np.arange(6, dtype=np.float16).reshape(2, 3))


@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "Qwen3ForCausalLM", "Gemma2ForCausalLM"])
def test_rotary_rows_stream_in_blocks_of_whole_heads(tiny_models, tmp_path, monkeypatch, arch):
    """q/k projections, whose rows llama.cpp's rope wants interleaved within each head, stream in blocks of
    whole heads (a block smaller than a head rounds up to one) and make the whole tensor's bytes."""
    from llmbuild.archs import for_config

    a = export(tiny_models[arch], tmp_path / "whole", quant="f32")
    cfg = json.loads((tiny_models[arch] / "config.json").read_text())
    arch_ = for_config(cfg)
    # the families whose rope llama.cpp runs on interleaved rows; the others' rows stay independent
    step = arch_.head_dim if arch_.gguf_permute_qk else 3
    blocks = []
    rows = G.safetensors_np.Reader.rows
    monkeypatch.setattr(G, "ROW_BLOCK_BYTES", cfg["hidden_size"] * 4 * 3)  # 3 rows: less than one head
    monkeypatch.setattr(G.safetensors_np.Reader, "rows",
                        lambda self, n, f, s: blocks.append((n, f, s)) or rows(self, n, f, s))
    b = export(tiny_models[arch], tmp_path / "blocks", quant="f32")
    q = [(f, s) for n, f, s in blocks if n == "model.layers.0.self_attn.q_proj.weight"]
    assert q and all(s - f == step for f, s in q), q
    assert tensors(tmp_path / "whole" / a["file"]) == tensors(tmp_path / "blocks" / b["file"])
