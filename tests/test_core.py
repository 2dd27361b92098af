"""Unit tests of the engine's pieces: the architecture table, checkpoint reading, hashing, the cache."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from llmbuild.archs import arch_class, names
from llmbuild.cache import Cache
from llmbuild.checkpoint import open_checkpoint, safetensors_header
from llmbuild.errors import InvalidInput
from llmbuild.hashing import StatCache, sha256_file, sha256_json
from tests.conftest import TINY, make_tiny

# what llama.cpp's converter does with each architecture, as a table (conversion/__init__.py's
# TEXT_MODEL_MAP -> the class's model_arch and undo_permute; the transformers modules for the biases):
# (HF name, gguf arch, permute q/k, qkv bias, q/k norm)
ARCH_ROWS = [
    ("LlamaForCausalLM", "llama", True, False, False),
    ("MistralForCausalLM", "llama", True, False, False),
    ("Qwen2ForCausalLM", "qwen2", False, True, False),
    ("MixtralForCausalLM", "llama", True, False, False),  # LlamaModel, experts stacked
    ("Qwen2MoeForCausalLM", "qwen2moe", False, True, False),  # Qwen2MoeModel
    ("Qwen3MoeForCausalLM", "qwen3moe", False, False, True),  # Qwen3MoeModel
    ("Qwen3ForCausalLM", "qwen3", False, False, True),
    ("Gemma2ForCausalLM", "gemma2", False, False, False),
    ("Gemma3ForCausalLM", "gemma3", False, False, True),
    ("Phi3ForCausalLM", "phi3", False, False, False),
]


@pytest.mark.parametrize("name,gguf_arch,permute,bias,qk_norm", ARCH_ROWS)
def test_arch_rows(name, gguf_arch, permute, bias, qk_norm):
    a = arch_class(name)
    assert (a.gguf_arch, a.gguf_permute_qk, a.qkv_bias, a.qk_norm) == (gguf_arch, permute, bias, qk_norm)


def test_arch_table_is_complete():
    assert set(names()) == {r[0] for r in ARCH_ROWS} == set(TINY)


def test_unknown_arch_names_supported_ones():
    with pytest.raises(InvalidInput, match="GPT2LMHeadModel.*LlamaForCausalLM"):
        arch_class("GPT2LMHeadModel")


def test_checkpoint_streams_every_tensor(tiny_models):
    for arch, d in tiny_models.items():
        ck = open_checkpoint(d)
        names = [n for n, _ in ck.iter_tensors()]
        assert sorted(names) == sorted(ck.tensor_names)
        assert ck.param_count() == sum(t.numel() for _, t in ck.iter_tensors())
        if arch == "Qwen2ForCausalLM":
            assert "lm_head.weight" not in names and any(n.endswith("q_proj.bias") for n in names)


def test_sharded_checkpoint(tmp_path, tiny_models):
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(tiny_models["LlamaForCausalLM"])
    m.save_pretrained(tmp_path, max_shard_size="50KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    ck = open_checkpoint(tmp_path)
    assert len(ck.weight_files) > 1
    assert ck.param_count() == sum(p.numel() for p in m.parameters())


def test_safetensors_header_checks(tmp_path, tiny_models):
    src = tiny_models["LlamaForCausalLM"] / "model.safetensors"
    assert "model.embed_tokens.weight" in safetensors_header(src)
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(src.read_bytes()[:-10])
    with pytest.raises(InvalidInput, match="truncated"):
        safetensors_header(bad)
    bad.write_bytes(b"\x00" * 4)
    with pytest.raises(InvalidInput, match="not a safetensors"):
        safetensors_header(bad)


def test_init_is_deterministic(tmp_path):
    a = make_tiny(tmp_path / "a", seed=3)
    b = make_tiny(tmp_path / "b", seed=3)
    c = make_tiny(tmp_path / "c", seed=4)
    assert sha256_file(a / "model.safetensors") == sha256_file(b / "model.safetensors")
    assert sha256_file(a / "model.safetensors") != sha256_file(c / "model.safetensors")
    assert sha256_file(a / "tokenizer.model") == sha256_file(b / "tokenizer.model")


def test_json_key_is_order_independent():
    assert sha256_json({"a": 1, "b": [1, 2]}) == sha256_json({"b": [1, 2], "a": 1})
    assert sha256_json({"a": 1}) != sha256_json({"a": 2})


def test_stat_cache_rehashes_changed_files(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"one")
    sc = StatCache(tmp_path / "sc.json")
    d1 = sc.digest(f)
    sc.save()
    f.write_bytes(b"two!")
    assert StatCache(tmp_path / "sc.json").digest(f) != d1


def test_cache_commits_atomically(tmp_path):
    cache = Cache(tmp_path)

    def ok(out):
        (out / "a.txt").write_text("x")
        return {"n": 1}

    e = cache.run("kind", "k" * 64, ok)
    assert cache.lookup("kind", "k" * 64).record["n"] == 1
    assert e.files["a.txt"]["size"] == 1

    def boom(out):
        (out / "half.txt").write_text("partial")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        cache.run("kind", "b" * 64, boom)
    assert cache.lookup("kind", "b" * 64) is None
    assert not any((tmp_path / "tmp").iterdir())


def test_kill_9_leaves_no_entry(tmp_path):
    """A process killed in the middle of a stage leaves nothing a later build could mistake for a result."""
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(os.getcwd())!r})
        from llmbuild.cache import Cache
        def slow(out):
            (out / "part").write_text("x")
            print("started", flush=True)
            time.sleep(60)
        Cache({str(tmp_path)!r}).run("kind", "c" * 64, slow)
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "started"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    cache = Cache(tmp_path)  # a new build sweeps the dead build's tmp folder
    assert cache.lookup("kind", "c" * 64) is None
    assert not any((tmp_path / "tmp").iterdir())


def test_bad_config_json(tmp_path, tiny_models):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(tiny_models["LlamaForCausalLM"], d)
    (d / "config.json").write_text("{not json")
    with pytest.raises(InvalidInput, match="config.json.*not valid JSON"):
        open_checkpoint(d)
    cfg = json.loads((tiny_models["LlamaForCausalLM"] / "config.json").read_text())
    del cfg["hidden_size"]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InvalidInput, match="hidden_size"):
        open_checkpoint(d)
