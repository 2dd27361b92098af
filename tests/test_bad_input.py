"""Bad input, one test each: one line naming the key or file, the documented exit code, no traceback,
and earlier outputs untouched (a good build is made first and checked after every bad one)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import make_tiny
from tests.helpers import corpus_override, one_line_error, run_cli


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A workspace holding one finished build (gguf only, fast) whose files must never change."""
    cwd = tmp_path_factory.mktemp("bad")
    proc = run_cli(["recipe=tiny", corpus_override(), "~targets.onnx32"], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd


def snapshot(cwd: Path) -> dict:
    out = {}
    for p in sorted((cwd / "outputs").rglob("*")):
        if p.is_file() and ".cache/tmp" not in str(p) and "statcache" not in p.name:
            out[str(p.relative_to(cwd))] = p.stat().st_mtime_ns
    out["latest"] = str((cwd / "outputs" / "tiny" / "latest").resolve())
    return out


def assert_bad(ws: Path, args: list[str], code: int, *needles: str, env: dict | None = None) -> str:
    before = snapshot(ws)
    proc = run_cli(args, ws, env=env)
    assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
    line = one_line_error(proc)
    for n in needles:
        assert n in line, line
    after = snapshot(ws)
    assert {k: v for k, v in after.items() if k in before} == before, "earlier outputs changed"
    return line


def local_model(ws: Path, name: str, **kw) -> Path:
    d = ws / "models" / name
    if d.exists():
        shutil.rmtree(d)
    return make_tiny(d, **kw)


def test_unknown_key(ws):
    assert_bad(ws, ["recipe=tiny", "+model.colour=red"], 2, "colour")


def test_unknown_key_in_recipe_file(ws, tmp_path):
    (tmp_path / "typo.yaml").write_text("defaults:\n  - base\n  - _self_\nmodel:\n  sourse: init\n")
    assert_bad(ws, [f"recipe={tmp_path / 'typo.yaml'}"], 2, "sourse")


def test_wrong_type(ws):
    assert_bad(ws, ["recipe=tiny", "model.seed=abc"], 2, "model.seed")


def test_wrong_enum_value(ws):
    assert_bad(ws, ["recipe=tiny", "model.source=ftp"], 2, "model.source")


def test_recipe_naming_no_file(ws):
    assert_bad(ws, ["recipe=no-such-recipe"], 2, "recipe=no-such-recipe")


def test_no_recipe(ws):
    assert_bad(ws, [], 2, "recipe")


def test_model_path_missing(ws):
    assert_bad(ws, ["recipe=tiny", "model.source=local", f"model.path={ws / 'nowhere'}"], 2, "model.path",
               "nowhere")


def test_not_safetensors(ws):
    d = local_model(ws, "garbage")
    (d / "model.safetensors").write_bytes(b"this is not a safetensors file at all" * 10)
    assert_bad(ws, ["recipe=tiny", "model.source=local", f"model.path={d}"], 2, "model.safetensors",
               "not a safetensors file")


def test_truncated_safetensors(ws):
    d = local_model(ws, "truncated")
    f = d / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    assert_bad(ws, ["recipe=tiny", "model.source=local", f"model.path={d}"], 2, "model.safetensors", "truncated")


def test_no_config_json(ws):
    d = local_model(ws, "noconfig")
    (d / "config.json").unlink()
    assert_bad(ws, ["recipe=tiny", "model.source=local", f"model.path={d}"], 2, "config.json")


def test_pickle_needs_allow_pickle(ws):
    import torch
    from safetensors.torch import load_file

    d = local_model(ws, "pickled")
    torch.save(load_file(d / "model.safetensors"), d / "pytorch_model.bin")
    (d / "model.safetensors").unlink()
    assert_bad(ws, ["recipe=tiny", "model.source=local", f"model.path={d}"], 2, "allow_pickle")


def test_unknown_backend(ws):
    assert_bad(ws, ["recipe=tiny", "targets.gguf8.backend=tensorflow"], 2, "targets.gguf8.backend", "tensorflow")


def test_unknown_target_option(ws):
    assert_bad(ws, ["recipe=tiny", "+targets.gguf8.colour=red"], 2, "targets.gguf8", "colour")


def test_unknown_quantization(ws):
    assert_bad(ws, ["recipe=tiny", "targets.gguf8.quant=q9_9"], 2, "targets.gguf8.quant", "q9_9")


def test_unsupported_architecture(ws):
    d = local_model(ws, "gpt2ish")
    cfg = json.loads((d / "config.json").read_text())
    cfg["architectures"] = ["GPT2LMHeadModel"]
    (d / "config.json").write_text(json.dumps(cfg))
    line = assert_bad(ws, ["recipe=tiny", "model.source=local", f"model.path={d}"], 2, "GPT2LMHeadModel")
    assert "LlamaForCausalLM" in line  # names the supported ones


def test_hub_revision_absent_offline(ws, tmp_path):
    from tests.test_acquire_hub import lay_out_hub_cache

    hf_home = tmp_path / "hf"
    lay_out_hub_cache(hf_home, "acme/tiny-llama", make_tiny(tmp_path / "src"))
    assert_bad(ws, ["recipe=tiny", "model.source=hub", "model.repo_id=acme/tiny-llama", "model.revision=v9.9"],
               2, "model.revision", "v9.9", env={"HF_HOME": str(hf_home)})


def test_waiver_without_reason(ws):
    assert_bad(ws, ["recipe=tiny", "+license.waivers=[{clause: 'apache-2.0:redistribution', approved_by: me}]"],
               2, "license.waivers")


def test_unknown_license_id(ws):
    line = assert_bad(ws, ["recipe=tiny", "license.id=llama-3.7-super"], 2, "llama-3.7-super")
    assert "llama" in line  # the closest known ids are suggested


def test_unknown_policy(ws):
    assert_bad(ws, ["recipe=tiny", "license/policy=anything-goes"], 2, "anything-goes")
