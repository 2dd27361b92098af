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


# -- recipe files -------------------------------------------------------------------------------------
def test_recipe_yaml_that_does_not_parse(ws, tmp_path):
    f = tmp_path / "broken.yaml"
    f.write_text("defaults:\n  - base\n  - _self_\nmodel:\n  seed: [1, 2\n")
    line = assert_bad(ws, [f"recipe={f}"], 2, str(f), "YAML does not parse")
    assert f"{f}:6:1" in line  # line and column of the problem


def test_recipe_that_is_not_a_mapping(ws, tmp_path):
    f = tmp_path / "alist.yaml"
    f.write_text("- base\n- model\n")
    assert_bad(ws, [f"recipe={f}"], 2, str(f), "must be a YAML mapping", "a list")


def test_defaults_entry_naming_no_config(ws, tmp_path):
    f = tmp_path / "nodefault.yaml"
    f.write_text("defaults:\n  - base\n  - finetune: lorra\n  - _self_\n")
    assert_bad(ws, [f"recipe={f}"], 2, str(f), "finetune/lorra", "names no config", "lora")


def test_override_naming_no_config(ws):
    assert_bad(ws, ["recipe=tiny", "finetune=lorra"], 2, "finetune=lorra", "available", "lora")


def test_interpolation_to_a_missing_key(ws, tmp_path):
    f = tmp_path / "interp.yaml"
    f.write_text("defaults:\n  - base\n  - _self_\nbuild:\n  model_name: ${model.colour}\n"
                 "targets:\n  g:\n    backend: gguf\n")
    assert_bad(ws, [f"recipe={f}"], 2, "build.model_name", "model.colour", "not found")


def test_override_that_does_not_parse(ws):
    assert_bad(ws, ["recipe=tiny", "model.seed=[1"], 2, "model.seed=[1", "not a valid override")


# -- checkpoint folders -------------------------------------------------------------------------------
def local_args(d: Path, *more: str) -> list[str]:
    return ["recipe=tiny", "model.source=local", f"model.path={d}", "~targets.onnx32", *more]


def test_model_path_naming_a_file(ws):
    d = local_model(ws, "afile")
    assert_bad(ws, local_args(d / "model.safetensors"), 2, "model.path", "model.safetensors", "is a file")


def shard(d: Path) -> dict:
    """Split a tiny checkpoint into two shards with an index, as save_pretrained(max_shard_size=...) does."""
    from safetensors.torch import load_file, save_file

    state = load_file(d / "model.safetensors")
    names = sorted(state)
    half = len(names) // 2
    wmap = {}
    for i, part in enumerate((names[:half], names[half:]), 1):
        fname = f"model-0000{i}-of-00002.safetensors"
        save_file({n: state[n] for n in part}, d / fname, metadata={"format": "pt"})
        wmap.update({n: fname for n in part})
    (d / "model.safetensors").unlink()
    index = {"metadata": {}, "weight_map": wmap}
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    return index


def test_sharded_index_naming_a_missing_shard(ws):
    d = local_model(ws, "shardmissing")
    shard(d)
    (d / "model-00002-of-00002.safetensors").unlink()
    assert_bad(ws, local_args(d), 2, "model-00002-of-00002.safetensors", "is missing")


@pytest.mark.parametrize("where", ["../outside.safetensors", "/etc/hostname"])
def test_index_naming_a_file_outside_the_folder(ws, where):
    d = local_model(ws, "shardescape")
    index = shard(d)
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = where
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    assert_bad(ws, local_args(d), 2, "model.safetensors.index.json", "weight_map", where, "leads out of the model folder")


def test_tokenizer_config_naming_a_file_outside_the_folder(ws):
    d = local_model(ws, "tokescape")
    tc = json.loads((d / "tokenizer_config.json").read_text())
    tc["fast_tokenizer_files"] = ["../../elsewhere/tokenizer.9.9.json"]
    (d / "tokenizer_config.json").write_text(json.dumps(tc))
    assert_bad(ws, local_args(d), 2, "tokenizer_config.json", "fast_tokenizer_files", "leads out of the model folder")


def test_config_json_that_is_not_json(ws):
    d = local_model(ws, "badjson")
    (d / "config.json").write_text('{"architectures": ["LlamaForCausalLM"],')
    assert_bad(ws, local_args(d), 2, "config.json", "not valid JSON")


def test_weights_holding_nan(ws):
    from safetensors.torch import load_file, save_file

    d = local_model(ws, "nan")
    state = load_file(d / "model.safetensors")
    state["model.layers.1.mlp.down_proj.weight"][3, 5] = float("nan")
    state["model.layers.1.mlp.down_proj.weight"][0, 0] = float("inf")
    save_file(state, d / "model.safetensors", metadata={"format": "pt"})
    assert_bad(ws, local_args(d), 2, "model.safetensors", "model.layers.1.mlp.down_proj.weight", "1 NaN and 1 Inf")


def test_tokenizer_json_that_does_not_parse(ws):
    d = local_model(ws, "badtok")
    text = (d / "tokenizer.json").read_text()
    (d / "tokenizer.json").write_text(text[: len(text) // 2])
    assert_bad(ws, local_args(d), 2, "tokenizer.json", "not valid JSON")


def test_tokenizer_json_of_the_wrong_shape(ws):
    d = local_model(ws, "badtok2")
    (d / "tokenizer.json").write_text(json.dumps({"model": {"type": "NoSuchModel"}}))
    assert_bad(ws, local_args(d), 2, "tokenizer.json", "not a tokenizer")


def test_vocabulary_larger_than_the_embedding(ws):
    d = local_model(ws, "bigvocab")
    tok = json.loads((d / "tokenizer.json").read_text())
    tok["added_tokens"].append({"id": 600, "content": "<extra_600>", "single_word": False, "lstrip": False,
                                "rstrip": False, "normalized": False, "special": True})
    (d / "tokenizer.json").write_text(json.dumps(tok))
    # tokenizers numbers an added token after the last one: id 512, one past the embedding's rows
    assert_bad(ws, local_args(d), 2, "tokenizer.json", "model.embed_tokens.weight", "512 rows", "id 512")


def test_auto_map_needing_remote_code(ws):
    d = local_model(ws, "remote")
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = "acme_llama"
    cfg["auto_map"] = {"AutoConfig": "configuration_acme.AcmeConfig",
                       "AutoModelForCausalLM": "modeling_acme.AcmeForCausalLM"}
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "modeling_acme.py").write_text("raise SystemExit('remote code ran')\n")
    assert_bad(ws, local_args(d), 2, "config.json", "modeling_acme.AcmeForCausalLM", "trust_remote_code",
               "run that code")


# -- the Hub ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("repo_id", ["just-a-name", "acme/tiny/llama", "acme/../etc", "acme/tiny llama"])
def test_repo_id_that_is_not_owner_name(ws, repo_id):
    assert_bad(ws, ["recipe=tiny", "model.source=hub", f"model.repo_id='{repo_id}'"], 2, "model.repo_id",
               "owner/name")


# -- gates and evaluation -----------------------------------------------------------------------------
@pytest.mark.parametrize("gate,value,span", [("min_top1", "2", "0 to 1"), ("max_kld", "-0.1", "0 or more"),
                                             ("max_ppl_ratio", "0.5", "1 or more"), ("min_golden_em", "nan", "0 to 1")])
def test_gate_outside_its_range(ws, gate, value, span):
    assert_bad(ws, ["recipe=tiny", f"+targets.gguf8.gates.{gate}={value}"], 2, f"targets.gguf8.gates.{gate}", span)


def test_empty_golden_set(ws, tmp_path):
    f = tmp_path / "golden.jsonl"
    f.write_text("\n")
    assert_bad(ws, ["recipe=tiny", f"eval.golden={f}"], 2, "eval.golden", str(f), "no records")


@pytest.mark.slow  # the fine-tuning stage reads its data first: ~10 s
def test_empty_finetune_golden_set(ws, tmp_path):
    from tests.helpers import REPO

    f = tmp_path / "golden.jsonl"
    f.write_text("")
    data = REPO / "data" / "finetune" / "facts-train.jsonl"
    assert_bad(ws, ["recipe=tiny", "finetune=lora", f"finetune.datasets=[{{path: {data}, shape: chat, license: cc0-1.0}}]",
                    f"finetune.golden={f}"], 2, "finetune.golden", str(f))


# -- code execution -----------------------------------------------------------------------------------
def test_chat_template_trying_to_leave_the_sandbox(ws, tmp_path):
    d = local_model(ws, "ssti")
    flag = tmp_path / "template-ran"
    (d / "chat_template.jinja").write_text(
        "{% for m in messages %}{{ m['content'] }}{% endfor %}"
        f"{{{{ cycler.__init__.__globals__.os.system('touch {flag}') }}}}")
    assert_bad(ws, local_args(d), 2, "chat_template.jinja", "tries to leave the Jinja sandbox", "reads attribute")
    assert not flag.exists()
