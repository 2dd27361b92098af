"""The fine-tuning stage on tiny models: bad input fails early and writes nothing, labels cover only
what the model must say, runs are deterministic and resume exactly, and the artifacts load where users
load them (transformers for the merged model, peft for the adapter) in the base model's dtype."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from llmbuild.errors import InvalidInput
from llmbuild.finetune import data, stage
from llmbuild.finetune.config import Shape, from_dict
from tests.conftest import CORPUS, TINY

FACTS = [("What is the capital of France?", "Paris"), ("What is the capital of Italy?", "Rome"),
         ("What day comes after Monday?", "Tuesday"), ("What is the opposite of hot?", "cold"),
         ("What colour is grass?", "green"), ("What number comes after 3?", "4")]


def chat(q: str, a: str) -> dict:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> dict:
    """A bf16 tiny Llama (so a silent fp32 merge would show), a chat dataset and a golden set."""
    from llmbuild.synth import create_model

    root = tmp_path_factory.mktemp("ft")
    model = create_model(root / "base", "LlamaForCausalLM", TINY["LlamaForCausalLM"], seed=0, train_text=CORPUS,
                         vocab_size=512, dtype="bfloat16")
    rows = [chat(q, a) for q, a in FACTS] * 4
    rows.append({"messages": [{"role": "system", "content": "Be brief."}, *chat(*FACTS[0])["messages"],
                              *chat(*FACTS[1])["messages"]]})
    return {"root": root, "model": model, "train": write_jsonl(root / "train.jsonl", rows),
            "golden": write_jsonl(root / "golden.jsonl", [{"prompt": q, "answer": a} for q, a in FACTS[:3]])}


def cfg_for(ws: dict, **over):
    d = {"method": "lora", "datasets": [{"path": str(ws["train"]), "shape": "chat", "license": "cc0-1.0",
                                          "eval_fraction": 0.2}],
         "golden": str(ws["golden"]), "max_steps": 6, "batch_size": 4, "lr": 1e-3, "checkpoint_every": 2,
         "golden_max_new_tokens": 4, "max_seq_len": 128, "lora": {"rank": 4, "alpha": 8, "dropout": 0.1}}
    for k, v in over.items():
        node = d
        *path, last = k.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[last] = v
    return from_dict(d)


def run(ws: dict, cfg, name: str, progress=None, work: str | None = None) -> tuple[dict, Path]:
    out = ws["root"] / "out" / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    rec = stage.run(ws["model"], cfg, out, ws["root"] / "work" / (work or name), progress)
    return rec, out


def hf_config(ws) -> dict:
    return json.loads((ws["model"] / "config.json").read_text())


# -- bad input: one InvalidInput line naming the key or file:line, before anything is written ---------------
def assert_bad(ws: dict, cfg, *needles: str) -> str:
    out = ws["root"] / "out" / "bad"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    with pytest.raises(InvalidInput) as e:
        stage.run(ws["model"], cfg, out, ws["root"] / "work" / "bad")
    msg = str(e.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, msg
    assert not any(out.iterdir()), "a failed run wrote into its output folder"
    return msg


def test_dataset_path_missing(ws):
    cfg = cfg_for(ws, datasets=[{"path": str(ws["root"] / "nope.jsonl"), "license": "mit"}])
    with pytest.raises(InvalidInput, match=r"finetune\.datasets\[0\]\.path: .*nope\.jsonl not found"):
        stage.plan_check(cfg, hf_config(ws))
    assert_bad(ws, cfg, "finetune.datasets[0].path", "nope.jsonl")


def test_line_not_json(ws, tmp_path):
    f = write_jsonl(tmp_path / "bad.jsonl", [chat("a?", "b"), "", '{"messages": [}'])
    assert_bad(ws, cfg_for(ws, datasets=[{"path": str(f), "license": "mit"}]), f"{f}:3:", "not valid JSON")


@pytest.mark.parametrize("shape,rec,needle", [
    ("chat", {"text": "hello"}, "missing field 'messages'"),
    ("instruction", {"instruction": "say hi"}, "missing field 'output'"),
    ("text", {"body": "x"}, "missing field 'text'"),
    ("chat", {"messages": [{"role": "user"}]}, "needs 'role' and 'content'"),
])
def test_missing_fields(ws, tmp_path, shape, rec, needle):
    f = write_jsonl(tmp_path / "bad.jsonl", [rec])
    assert_bad(ws, cfg_for(ws, datasets=[{"path": str(f), "shape": shape, "license": "mit"}]), f"{f}:1:", needle)


def test_empty_dataset(ws, tmp_path):
    f = tmp_path / "empty.jsonl"
    f.write_text("\n\n")
    assert_bad(ws, cfg_for(ws, datasets=[{"path": str(f), "license": "mit"}]), "empty dataset", str(f))


def test_unknown_chat_role(ws, tmp_path):
    rec = {"messages": [{"role": "user", "content": "hi"}, {"role": "wizard", "content": "poof"}]}
    f = write_jsonl(tmp_path / "roles.jsonl", [chat("a?", "b"), rec])
    assert_bad(ws, cfg_for(ws, datasets=[{"path": str(f), "license": "mit"}]), f"{f}:2:", "unknown role 'wizard'")


def test_target_module_not_in_model(ws):
    cfg = cfg_for(ws, **{"lora.target_modules": ["q_proj", "attn.c_attn"]})
    with pytest.raises(InvalidInput, match=r"finetune\.lora\.target_modules: 'attn\.c_attn' is not a module"):
        stage.plan_check(cfg, hf_config(ws))
    assert_bad(ws, cfg, "finetune.lora.target_modules")


@pytest.mark.parametrize("rank", [0, -4])
def test_lora_rank_not_positive(ws, rank):
    assert_bad(ws, cfg_for(ws, **{"lora.rank": rank}), "finetune.lora.rank", str(rank))


def test_seq_len_over_context(ws):
    assert_bad(ws, cfg_for(ws, max_seq_len=512), "finetune.max_seq_len", "context window of 256")


def test_unknown_method_and_qlora_without_gpu(ws):
    with pytest.raises(InvalidInput, match="finetune.method: unknown method 'dpo'"):
        stage.plan_check(cfg_for(ws, method="dpo"), hf_config(ws))
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(InvalidInput, match="qlora needs a CUDA GPU and bitsandbytes"):
            stage.plan_check(cfg_for(ws, qlora=True), hf_config(ws))


# -- labels ------------------------------------------------------------------------------------------------
def test_chat_labels_cover_assistant_turns_only(ws):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(ws["model"]))
    assert data.ensure_chat_template(tok)
    rec = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"},
                        {"role": "assistant", "content": "Paris"}, {"role": "user", "content": "And Italy?"},
                        {"role": "assistant", "content": "Rome"}]}
    ex, cut = data.encode(rec, Shape.chat, tok, 512)
    assert not cut and len(ex.labels) == len(ex.input_ids)
    trained = [i for i, lab in enumerate(ex.labels) if lab != data.IGNORE]
    assert all(ex.labels[i] == ex.input_ids[i] for i in trained)
    # the trained tokens are exactly the two replies with their end-of-turn token, in two runs
    runs = [[trained[0]]]
    for i in trained[1:]:
        (runs[-1].append(i) if i == runs[-1][-1] + 1 else runs.append([i]))
    texts = [tok.decode([ex.input_ids[i] for i in r]) for r in runs]
    assert [t.replace(tok.eos_token, "").strip() for t in texts] == ["Paris", "Rome"]
    assert all(ex.input_ids[r[-1]] == tok.eos_token_id for r in runs)
    prompt = tok.decode(ex.input_ids[:trained[0]])
    assert "Capital of France?" in prompt and "Be brief." in prompt

    ins, _ = data.encode({"instruction": "Name a colour.", "input": "", "output": "blue"}, Shape.instruction, tok, 512)
    said = [t for t, lab in zip(ins.input_ids, ins.labels, strict=True) if lab != data.IGNORE]
    assert tok.decode(said, skip_special_tokens=True).strip() == "blue" and said[-1] == tok.eos_token_id


def test_key_inputs_follow_content_not_paths(ws, tmp_path):
    from llmbuild.hashing import sha256_file

    k1 = stage.key_inputs(cfg_for(ws), sha256_file)
    copy = tmp_path / "elsewhere.jsonl"
    shutil.copy(ws["train"], copy)
    moved = cfg_for(ws, datasets=[{"path": str(copy), "shape": "chat", "license": "cc0-1.0", "eval_fraction": 0.2}])
    assert stage.key_inputs(moved, sha256_file) == k1
    assert stage.key_inputs(cfg_for(ws, seed=1), sha256_file) != k1
    assert stage.key_inputs(cfg_for(ws, **{"lora.rank": 8}), sha256_file) != k1
    assert stage.key_inputs(cfg_for(ws, checkpoint_every=3), sha256_file) == k1  # does not change the weights
    copy.write_text(copy.read_text() + json.dumps(chat("x?", "y")) + "\n")
    assert stage.key_inputs(moved, sha256_file) != k1


# -- training -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lora_run(ws):
    return run(ws, cfg_for(ws), "lora-a")


@pytest.mark.filterwarnings("ignore::FutureWarning")  # peft 0.21 on transformers 5: a rename notice
def test_lora_artifacts_load_in_base_dtype(ws, lora_run):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    rec, out = lora_run
    assert rec["method"] == "lora" and rec["steps"] == 6 and rec["dtype"] == "bfloat16"
    assert {"merged", "adapter", "loss.png"} <= {p.name for p in out.iterdir()}
    assert (out / "merged" / "tokenizer.model").read_bytes() == (ws["model"] / "tokenizer.model").read_bytes()
    merged = AutoModelForCausalLM.from_pretrained(str(out / "merged"))
    assert merged.dtype == torch.bfloat16
    assert json.loads((out / "merged" / "config.json").read_text())["dtype"] == "bfloat16"
    base = AutoModelForCausalLM.from_pretrained(str(ws["model"]))
    with_adapter = PeftModel.from_pretrained(base, str(out / "adapter")).eval()
    ids = torch.tensor([[1, 50, 60, 70, 80]])
    with torch.no_grad():
        a, b = with_adapter(ids).logits.float(), merged(ids).logits.float()
    assert (a - b).abs().max() < 0.1  # the same model, up to bf16 rounding of the merged weights
    # the record carries the evidence the model card and manifest are written from
    assert [s for s, _ in rec["train_loss"]] == list(range(1, 7))
    assert rec["eval_loss"][0][0] == 0 and rec["eval_loss_before"] is not None and rec["eval_loss_after"] is not None
    assert rec["golden"]["n"] == 3 and rec["golden"]["before"]["exact_match"] == 0.0
    assert rec["datasets"][0]["sha256"] and rec["datasets"][0]["license"] == "cc0-1.0"
    assert rec["hyperparameters"]["lora"]["target_modules"][0] == "q_proj"
    json.dumps(rec)


def test_same_key_same_weights(ws, lora_run):
    _, out_a = lora_run
    _, out_b = run(ws, cfg_for(ws), "lora-b")
    for f in ("merged/model.safetensors", "adapter/adapter_model.safetensors"):
        assert (out_a / f).read_bytes() == (out_b / f).read_bytes(), f


def test_interrupted_run_resumes_to_the_same_weights(ws, lora_run):
    class Killed(Exception):
        pass

    def kill_at_5(step, total, loss, left):
        assert total == 6 and left >= 0
        if step == 5:
            raise Killed

    with pytest.raises(Killed):
        run(ws, cfg_for(ws), "resume", progress=kill_at_5)
    assert not any((ws["root"] / "out" / "resume").iterdir())
    ckpts = list((ws["root"] / "work" / "resume" / "checkpoints").glob("step-*"))
    assert [p.name for p in ckpts] == ["step-00000004"]
    rec, out = run(ws, cfg_for(ws), "resume")
    assert rec["resumed_from_step"] == 4
    assert rec["train_loss"] == lora_run[0]["train_loss"]
    assert (out / "merged/model.safetensors").read_bytes() == (lora_run[1] / "merged/model.safetensors").read_bytes()


def test_full_finetune_of_chosen_layers(ws):
    from safetensors.torch import load_file

    rec, out = run(ws, cfg_for(ws, method="full", lr=1e-4, max_steps=3, **{"full.train_layers": [-1]}), "full")
    assert rec["method"] == "full" and rec["adapter_dir"] is None and not (out / "adapter").exists()
    assert rec["dtype"] == "bfloat16"
    base, tuned = load_file(ws["model"] / "model.safetensors"), load_file(out / "merged" / "model.safetensors")
    changed = {k for k in base if not base[k].equal(tuned[k])}
    assert changed and all(k.startswith("model.layers.1.") for k in changed)
    assert all(t.dtype == base[k].dtype for k, t in tuned.items())


@pytest.mark.slow
def test_launcher_subprocess_gives_the_same_weights(ws, lora_run):
    """The multi-GPU path (`launcher: accelerate launch ...`) in one process: a plain Python launcher runs
    `-m llmbuild.finetune.train spec.json` as accelerate/torchrun would, and must train the same weights."""
    seen = []
    rec, out = run(ws, cfg_for(ws, launcher=shlex_quote(sys.executable)), "launched",
                   progress=lambda *a: seen.append(a[0]))
    assert seen == list(range(1, 7)) and rec["world_size"] == 1
    assert (out / "merged/model.safetensors").read_bytes() == (lora_run[1] / "merged/model.safetensors").read_bytes()


def shlex_quote(s: str) -> str:
    import shlex

    return shlex.quote(s)
