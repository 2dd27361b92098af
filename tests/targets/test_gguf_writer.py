"""The GGUF writer's fast paths make gguf-py's bytes: metadata arrays packed in one call
(llmbuild/targets/gguf_writer.py) and F16 through libggml-cpu (ggml_quant.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llmbuild.targets import ggml_quant


def _packed(writer, *args):
    """The bytes, or the error gguf-py raises for the value (ours must raise it too)."""
    try:
        return writer._pack_val(*args)
    except (ValueError, TypeError) as e:
        return type(e), str(e)


def test_metadata_arrays_pack_as_gguf_py_packs_them(tiny_models):
    import gguf
    from gguf import GGUFValueType as T

    from llmbuild.targets.gguf_vocab import read_vocab
    from llmbuild.targets.gguf_writer import GGUFWriter

    cases = [(["a", "é", "<s>", b"\x00x", ""], None), ([1.5, -2.0, 3.25e-30], None), ([1, -2, 2**31 - 1], None),
             ([True, False, True], None), ([1, 2], T.UINT32), ([7], T.UINT8), ([[1, 2], [3]], None),
             ([1, 2.0], None), ([np.float32(1.0)], None)]
    ours, theirs = GGUFWriter(None, "llama"), gguf.GGUFWriter(None, "llama")
    for val, sub in cases:
        for add_vtype in (True, False):
            assert _packed(ours, val, T.ARRAY, add_vtype, sub) == _packed(theirs, val, T.ARRAY, add_vtype, sub), val
    assert _packed(ours, [], T.ARRAY, True) == _packed(theirs, [], T.ARRAY, True)  # gguf-py's error: empty
    # a real vocabulary's keys, written whole by both writers
    for arch in ("LlamaForCausalLM", "Qwen2ForCausalLM"):
        cfg = json.loads((tiny_models[arch] / "config.json").read_text())
        vocab = read_vocab(tiny_models[arch], cfg["vocab_size"], "match")
        headers = []
        for cls in (GGUFWriter, gguf.GGUFWriter):
            w = cls(None, "llama")
            vocab.add_to(w)
            headers.append(b"".join(w._pack_val(v.value, v.type, True, v.sub_type) for v in w.kv_data[0].values()))
        assert headers[0] == headers[1], arch


@pytest.mark.skipif(not ggml_quant.available(), reason="llama-cpp-python is not installed")
def test_f16_through_ggml_is_numpys_cast():
    from gguf import GGMLQuantizationType

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(100_003).astype(np.float32) * s for s in (1e-6, 0.05, 3e4)])
    special = [np.inf, -np.inf, 0.0, -0.0, 65504, 65519.99, 65520, -1e9, 6e-8, 3e-8, 1e-45, np.nan]
    x = np.concatenate([np.array(special, dtype=np.float32), x]).reshape(3, -1)
    with np.errstate(over="ignore"):
        want = x.astype(np.float16)
    got = ggml_quant.quantize(x, GGMLQuantizationType.F16)
    assert got.shape == x.shape and got.dtype == np.float16
    finite = ~np.isnan(want)
    assert np.array_equal(got.view(np.uint16)[finite], want.view(np.uint16)[finite])
    assert np.isnan(got[~finite]).all()
