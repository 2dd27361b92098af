"""Checks split by what they need, through the CLI: an option error the recipe alone shows stops before the
model is acquired, a model the targets cannot map stops right after (a header read), each with one line
naming the key or file, exit 2, and nothing in the cache."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import make_tiny
from tests.helpers import REPO, corpus_override, one_line_error, run_cli


def cache_entries(cwd: Path) -> list[Path]:
    stages = cwd / "outputs" / ".cache"
    return [p for p in stages.glob("stages-*/*/*/*") if p.is_dir()] if stages.exists() else []


def assert_refused(cwd: Path, args: list[str], *needles: str, env: dict | None = None) -> str:
    proc = run_cli(args, cwd, env=env)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    line = one_line_error(proc)
    for n in needles:
        assert n in line, line
    assert cache_entries(cwd) == [], "a refused build wrote to the cache"
    assert "[acquire] running" not in proc.stderr
    return line


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"llama": make_tiny(root / "llama"), "qwen2": make_tiny(root / "qwen2", "Qwen2ForCausalLM"),
            "qwen3": make_tiny(root / "qwen3", "Qwen3ForCausalLM"), "gemma2": make_tiny(root / "gemma2", "Gemma2ForCausalLM"),
            "phi3": make_tiny(root / "phi3", "Phi3ForCausalLM")}


def local(tmp_path: Path, src: Path, config_change=None) -> Path:
    d = tmp_path / "model"
    shutil.copytree(src, d)
    if config_change:
        cfg = json.loads((d / "config.json").read_text())
        config_change(cfg)
        (d / "config.json").write_text(json.dumps(cfg))
    return d


def test_option_error_stops_before_acquisition(tmp_path):
    """Reported before the Hub is asked: this repo is in no cache and the machine is offline."""
    assert_refused(tmp_path, ["recipe=tiny", "model.source=hub", "model.repo_id=acme/not-downloaded",
                              "targets.gguf8.quant=q9_9"], "targets.gguf8.quant", "q9_9")


@pytest.mark.parametrize("model, key", [("llama", "rms_norm_eps"), ("qwen3", "head_dim"),
                                        ("gemma2", "query_pre_attn_scalar")])
def test_family_key_missing(tmp_path, models, model, key):
    d = local(tmp_path, models[model], lambda c: c.pop(key))
    arch = json.loads((models[model] / "config.json").read_text())["architectures"][0]
    assert_refused(tmp_path, ["recipe=tiny", "model.source=local", f"model.path={d}"], "config.json",
                   f"missing keys {key}", arch)


def test_unknown_rope_scaling_type(tmp_path, models):
    d = local(tmp_path, models["llama"],
              lambda c: c.update(rope_parameters={"rope_type": "sparkle", "rope_theta": 10000.0, "factor": 2.0}))
    assert_refused(tmp_path, ["recipe=tiny", "model.source=local", f"model.path={d}"], "config.json",
                   "rope_scaling type 'sparkle'", "known: default, linear, llama3")


def test_longrope_without_its_factors(tmp_path, models):
    """Phi-3's LongRoPE lacking long_factor: transformers would fail at load; llmbuild names the key."""
    d = local(tmp_path, models["phi3"], lambda c: c.update(rope_parameters={
        "rope_type": "longrope", "rope_theta": 10000.0, "short_factor": [1.0] * 8,
        "original_max_position_embeddings": 64}))
    assert_refused(tmp_path, ["recipe=tiny", "model.source=local", f"model.path={d}"], "config.json",
                   "rope_scaling longrope needs long_factor")


def test_tokenizer_no_target_can_map_stops_before_export(tmp_path, models):
    from tests.tokenizers.helpers import train_wordpiece

    d = local(tmp_path, models["llama"])
    for name in ("tokenizer.model", "tokenizer.json", "tokenizer_config.json"):
        (d / name).unlink()
    for f in train_wordpiece(tmp_path / "wordpiece").iterdir():
        shutil.copy(f, d / f.name)
    assert_refused(tmp_path, ["recipe=tiny", "model.source=local", f"model.path={d}"], "targets.gguf8",
                   "tokenizer.json", "WordPiece")


@pytest.mark.parametrize("source", ["init", "local"])
def test_family_a_target_does_not_support(tmp_path, models, source):
    """No shipped family is refused by a backend today: this one is told it is, as a new family whose module
    leaves a backend out would be. The line names the target and the backends that support the family."""
    args = ["recipe=tiny", "+targets.trt.backend=tensorrt"]
    if source == "init":
        args += [corpus_override(), "model.architecture=Qwen2ForCausalLM"]
    else:
        args += ["model.source=local", f"model.path={models['qwen2']}"]
    script = ("import sys; from llmbuild.archs import arch_class; "
              "arch_class('Qwen2ForCausalLM').targets = frozenset({'onnx', 'gguf', 'trtllm'}); "
              "from llmbuild import cli; cli.main(sys.argv[1:])")
    proc = _run_python(script, args, tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = one_line_error(proc)
    assert line == ("llmbuild: error: targets.trt.backend: Qwen2ForCausalLM is not supported by the tensorrt "
                    "backend; backends that support it: onnx, gguf, trtllm"), line
    assert cache_entries(tmp_path) == [] and "[acquire] running" not in proc.stderr


def _run_python(code: str, args: list[str], cwd: Path):
    import os
    import subprocess

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LLMBUILD_RECIPES": str(REPO / "tests" / "recipes"),
           "PYTHONPATH": str(REPO)}
    env.pop("LLMBUILD_CACHE", None)
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
