"""The fine-tuning stage as the engine sees it: plan-time checks, the cache-key inputs, and `run`.

    check(cfg)                          before any stage (the planner): the recipe's files, licenses,
                                        ranges and this machine, one InvalidInput line (exit 2) naming the key
    check_model(cfg, hf_config)         right after acquisition: what needs the model's config.json
                                        (context window, LoRA modules, layers); plan_check runs both
    key_inputs(cfg, stat_digest)        what enters the stage's cache key besides the model digest
    run(model_dir, cfg, out, resume_dir, progress) -> record
                                        check and load the data, golden set before, train (resuming
                                        from resume_dir), merge, eval and golden set on the merged
                                        model, loss plot; writes out/merged, out/adapter (LoRA),
                                        out/loss.png

`run` writes nothing into `out` until the data has been checked and training has finished, and the
engine commits `out` to the cache by atomic rename only when `run` returns, so a bad dataset or a
killed run leaves no entry. Training state lives in `resume_dir`, which the engine keeps outside the
output folder (keyed like the stage) so a rerun continues where a killed one stopped.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from llmbuild.errors import InvalidInput
from llmbuild.finetune.config import (
    METHODS,
    FinetuneConfig,
    Precision,
    coerce,
    to_dict,
)

# distributions whose versions enter the stage's cache key
TOOLS = ("torch", "transformers", "peft", "accelerate", "datasets", "tokenizers", "safetensors")

# a Hub dataset id: owner/name or a canonical name (huggingface_hub's repo id rules: letters, digits, -_.)
HUB_DATASET_ID = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")

STAGE_VERSION = 1  # the engine's STAGE_VERSIONS["finetune"]: bump when outputs change meaning

Progress = Callable[[int, int, float, float], None]


def tools(cfg: FinetuneConfig) -> tuple[str, ...]:
    """TOOLS, plus bitsandbytes when the base is quantized by it."""
    return TOOLS + (("bitsandbytes",) if cfg.qlora else ())


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def target_modules(cfg: FinetuneConfig, hf_config: dict, key: str = "finetune") -> list[str]:
    """The LoRA target modules: the recipe's, checked against the architecture, or its default row."""
    from llmbuild.archs import ARCHS, arch_class, architecture_of

    arch = architecture_of(hf_config)
    mods = cfg.lora.target_modules
    family = arch_class(arch) if arch in ARCHS else None  # the family's lora_modules / lora_extra_modules
    if mods is None:
        if family is None:
            raise InvalidInput(f"{key}.lora.target_modules: no default for architecture {arch}; list the module "
                               f"names to adapt (e.g. q_proj, v_proj)")
        return list(family.lora_modules)
    if not mods:
        raise InvalidInput(f"{key}.lora.target_modules: empty; leave it null for the architecture's default")
    known = {*family.lora_modules, *family.lora_extra_modules} if family else None
    if known is not None:
        for m in mods:
            if m not in known:
                raise InvalidInput(f"{key}.lora.target_modules: {m!r} is not a module of {arch}; known: "
                                   f"{', '.join(sorted(known))}")
    by_param = [m for m in mods if m in (getattr(family, "lora_parameters", None) or {})]
    if by_param and cfg.lora.dropout:
        # PEFT adapts fused expert parameters with its ParamWrapper, which cannot apply dropout to the input
        raise InvalidInput(f"{key}.lora.dropout: {cfg.lora.dropout}, but LoRA on {', '.join(by_param)} (PEFT's "
                           "target_parameters) takes no dropout; set lora.dropout=0")
    return list(mods)


def plan_check(cfg: FinetuneConfig, hf_config: dict, key: str = "finetune") -> None:
    """Every finetune error knowable before training, as one InvalidInput line naming the key."""
    check(cfg, key)
    check_model(cfg, hf_config, key)


def check(cfg: FinetuneConfig, key: str = "finetune") -> None:
    """The checks the recipe alone allows (its files, licenses, ranges, this machine): run by the planner
    before any stage, so a bad setting never waits for an acquisition."""
    if cfg.method not in METHODS:
        raise InvalidInput(f"{key}.method: unknown method {cfg.method!r}; known: {', '.join(METHODS)}")
    if cfg.method == "none":
        return
    cfg = coerce(cfg)
    if not cfg.datasets:
        raise InvalidInput(f"{key}.datasets: {cfg.method} fine-tuning needs at least one dataset")
    for i, d in enumerate(cfg.datasets):
        dk = f"{key}.datasets[{i}]"
        if not _is_file(d.path):
            raise InvalidInput(f"{dk}.path: {d.path} not found")
        if d.eval_path and not _is_file(d.eval_path):
            raise InvalidInput(f"{dk}.eval_path: {d.eval_path} not found")
        if not d.license.strip():
            raise InvalidInput(f"{dk}.license: required: the SPDX id of the data's license (e.g. cc-by-4.0)")
        if not 0 <= d.eval_fraction < 1:
            raise InvalidInput(f"{dk}.eval_fraction: {d.eval_fraction} must be in [0, 1)")
        if d.hub_id is not None and (not HUB_DATASET_ID.fullmatch(d.hub_id) or Path(d.hub_id).exists()
                                     or d.hub_id.endswith((".jsonl", ".json", ".csv", ".parquet", ".txt"))):
            raise InvalidInput(f"{dk}.hub_id: {d.hub_id!r} is not a Hub dataset id (owner/name, or a canonical "
                               "name such as squad); a local path belongs in path")
    if cfg.golden and not _is_file(cfg.golden):
        raise InvalidInput(f"{key}.golden: {cfg.golden} not found")
    for name, ok, need in (
        ("lr", cfg.lr > 0, "> 0"), ("batch_size", cfg.batch_size >= 1, ">= 1"),
        ("grad_accum", cfg.grad_accum >= 1, ">= 1"), ("epochs", cfg.epochs >= 1, ">= 1"),
        ("max_steps", cfg.max_steps is None or cfg.max_steps >= 1, ">= 1 or null"),
        ("warmup_steps", cfg.warmup_steps >= 0, ">= 0"), ("weight_decay", cfg.weight_decay >= 0, ">= 0"),
        ("max_seq_len", cfg.max_seq_len >= 2, ">= 2"), ("max_grad_norm", cfg.max_grad_norm >= 0, ">= 0 (0: off)"),
        ("eval_every", cfg.eval_every >= 0, ">= 0"), ("checkpoint_every", cfg.checkpoint_every >= 0, ">= 0 (0: off)"),
        ("golden_max_new_tokens", cfg.golden_max_new_tokens >= 1, ">= 1"),
    ):
        if not ok:
            raise InvalidInput(f"{key}.{name}: {getattr(cfg, name)} must be {need}")
    if cfg.method == "lora":
        if cfg.lora.rank <= 0:
            raise InvalidInput(f"{key}.lora.rank: {cfg.lora.rank} must be a positive integer")
        if cfg.lora.alpha <= 0:
            raise InvalidInput(f"{key}.lora.alpha: {cfg.lora.alpha} must be > 0")
        if not 0 <= cfg.lora.dropout < 1:
            raise InvalidInput(f"{key}.lora.dropout: {cfg.lora.dropout} must be in [0, 1)")
        if cfg.lora.target_modules is not None and not cfg.lora.target_modules:
            raise InvalidInput(f"{key}.lora.target_modules: empty; leave it null for the architecture's default")
    elif cfg.full.train_layers is not None and not cfg.full.train_layers:
        raise InvalidInput(f"{key}.full.train_layers: empty; leave it null to train every layer")
    if cfg.qlora:
        if cfg.method != "lora":
            raise InvalidInput(f"{key}.qlora: QLoRA is a LoRA option; set {key}.method=lora")
        if not _cuda() or importlib.util.find_spec("bitsandbytes") is None:
            raise InvalidInput(f"{key}.qlora: qlora needs a CUDA GPU and bitsandbytes "
                               f"({'no CUDA GPU here' if not _cuda() else 'pip install bitsandbytes'})")
    if cfg.precision is Precision.fp16 and not _cuda():
        raise InvalidInput(f"{key}.precision: fp16 needs a CUDA GPU; use bf16 or fp32 on CPU")
    if cfg.launcher:
        launcher_argv(cfg.launcher, key)


def check_model(cfg: FinetuneConfig, hf_config: dict, key: str = "finetune") -> None:
    """The checks that need the model's config.json: right after acquisition, before the license gate."""
    if cfg.method == "none":
        return
    cfg = coerce(cfg)
    ctx = hf_config.get("max_position_embeddings")
    if ctx and cfg.max_seq_len > ctx:
        raise InvalidInput(f"{key}.max_seq_len: {cfg.max_seq_len} is over the model's context window of {ctx} "
                           f"tokens (max_position_embeddings)")
    if cfg.method == "lora":
        target_modules(cfg, hf_config, key)
    else:
        n = hf_config.get("num_hidden_layers")
        for i in cfg.full.train_layers or []:
            if n is not None and not -n <= i < n:
                raise InvalidInput(f"{key}.full.train_layers: layer {i} does not exist (the model has {n} layers)")


def _is_file(path: str) -> bool:
    try:
        return Path(path).is_file()
    except (OSError, ValueError):  # a name the OS cannot hold (a NUL byte, too long) names no file
        return False


def launcher_argv(launcher: str, key: str = "finetune") -> list[str]:
    """The launcher command as argv, its program found on PATH or beside this Python (an unactivated venv)."""
    try:
        argv = shlex.split(launcher)
    except ValueError:
        argv = []
    if not argv:
        raise InvalidInput(f"{key}.launcher: cannot parse {launcher!r}")
    exe = shutil.which(argv[0]) or shutil.which(argv[0], path=str(Path(sys.executable).parent))
    if exe is None:
        raise InvalidInput(f"{key}.launcher: {argv[0]} not found on PATH or in {Path(sys.executable).parent}")
    return [exe, *argv[1:]]


def hyperparameters(cfg: FinetuneConfig) -> dict:
    """The knobs that shape the weights (not the data files, not where checkpoints go)."""
    hp = to_dict(cfg)
    for k in ("datasets", "golden", "checkpoint_every"):
        hp.pop(k)
    hp.pop("lora" if cfg.method != "lora" else "full")
    return hp


def key_inputs(cfg: FinetuneConfig, stat_digest) -> dict:
    """What enters the cache key (with the model digest and TOOLS, which the engine adds): the data by
    content, the hyperparameters, the seed. `stat_digest(path) -> sha256` (the engine's stat cache)."""
    cfg = coerce(cfg)
    return {
        "method": cfg.method,
        "datasets": [{"sha256": stat_digest(Path(d.path)), "shape": d.shape.value, "license": d.license,
                      "eval_sha256": stat_digest(Path(d.eval_path)) if d.eval_path else None,
                      "eval_fraction": None if d.eval_path else d.eval_fraction} for d in cfg.datasets],
        "golden": stat_digest(Path(cfg.golden)) if cfg.golden else None,
        "hyperparameters": hyperparameters(cfg),
        "seed": cfg.seed,
    }


def dataset_licenses(cfg: FinetuneConfig) -> list[dict]:
    """[{"path", "license"}] for the license stage."""
    return [{"path": d.path, "license": d.license} for d in cfg.datasets] if cfg.method != "none" else []


def _fingerprint(cfg: FinetuneConfig, model_dir: Path) -> str:
    """Which run a work folder's checkpoints belong to: the key inputs plus the model's identity."""
    from llmbuild.hashing import sha256_file, sha256_json

    weights = {p.name: p.stat().st_size for p in sorted(model_dir.glob("*.safetensors"))}
    return sha256_json({"key": key_inputs(cfg, sha256_file), "config": sha256_file(model_dir / "config.json"),
                        "weights": weights, "stage_version": STAGE_VERSION})


def run(model_dir: Path, cfg: FinetuneConfig, out: Path, resume_dir: Path, progress: Progress | None = None) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from llmbuild.finetune import data, golden, merge, plot, train

    hf_logging.disable_progress_bar()  # the stage reports its own progress
    t_start = time.monotonic()
    model_dir, out, work = Path(model_dir), Path(out), Path(resume_dir)
    cfg = coerce(cfg)
    if cfg.method == "none":
        raise ValueError("finetune.run called with method none")
    hf_config = json.loads((model_dir / "config.json").read_text())
    plan_check(cfg, hf_config)
    mods = target_modules(cfg, hf_config) if cfg.method == "lora" else None

    # everything that can be wrong with the data fails here, before training and before `out` is touched
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    work.mkdir(parents=True, exist_ok=True)
    prep = data.prepare(cfg, tok, work / "datasets-cache")
    gold = data.read_golden(Path(cfg.golden), "finetune.golden") if cfg.golden else None
    shape0 = cfg.datasets[0].shape
    template = data.DEFAULT_CHAT_TEMPLATE if prep.chat_template_added else None
    # padded positions are masked, so any id the embedding has will do; a tokenizer may bring a pad token
    # past the model's vocabulary (transformers gives a Qwen2 config's tokenizer Qwen's <|endoftext|>)
    vocab = hf_config.get("vocab_size") or len(tok)
    pad_id = next(i for i in (tok.pad_token_id, tok.eos_token_id, 0) if i is not None and i < vocab)
    fp = _fingerprint(cfg, model_dir)

    g_before = (golden.exact_match(model_dir, gold, shape0, cfg.golden_max_new_tokens, prep.chat_template_added)
                if gold else None)
    res = train.finished(work, fp)
    if res is None:
        if cfg.launcher:
            res = _launch(cfg, model_dir, work, fp, pad_id, mods, progress)
        else:
            res = train.Trainer(model_dir, cfg, prep.train, prep.eval, pad_id, mods, work, fp, progress).run()

    final = train.final_dir(work)
    if cfg.method == "lora":
        dtype = merge.merge_lora(model_dir, final / "adapter", out / "adapter", out / "merged", template)
    else:
        dtype = merge.save_full(model_dir, final / "model", out / "merged", template)

    merged = AutoModelForCausalLM.from_pretrained(str(out / "merged"), dtype="auto")
    after = train.eval_loss(merged, prep.eval, cfg.batch_size, pad_id)
    del merged
    trained = res.eval_loss[-1][1] if res.eval_loss else None
    _check_merge(after, trained, dtype == "float32" and train.mixed_precision(cfg.precision) == "no")
    g_after = (golden.exact_match(out / "merged", gold, shape0, cfg.golden_max_new_tokens) if gold else None)
    plot.loss_png(res.train_loss, res.eval_loss, out / "loss.png",
                  f"{cfg.method} fine-tuning: {res.steps} steps, {len(prep.train)} examples")

    hp = hyperparameters(cfg)
    if mods is not None:
        hp["lora"]["target_modules"] = mods
    return {
        "method": cfg.method,
        "merged_dir": "merged",
        "adapter_dir": "adapter" if cfg.method == "lora" else None,
        "loss_plot": "loss.png",
        "dtype": dtype,
        "steps": res.steps,
        "seconds": res.seconds,
        "stage_seconds": round(time.monotonic() - t_start, 3),
        "hardware": res.hardware,
        "world_size": res.world_size,
        "examples_per_step": res.examples_per_step,
        "trainable_parameters": res.trainable_parameters,
        "total_parameters": res.total_parameters,
        "resumed_from_step": res.resumed_from,
        "train_loss": res.train_loss,
        "eval_loss": res.eval_loss,
        "eval_loss_before": res.eval_loss[0][1] if res.eval_loss else None,
        "eval_loss_after": None if after is None else round(after, 6),
        "golden": ({"before": _em(g_before), "after": _em(g_after), "n": g_after["n"],
                    "examples_after": g_after["examples"]} if gold else None),
        "datasets": [asdict(s) for s in prep.sources],
        "train_examples": len(prep.train),
        "eval_examples": len(prep.eval),
        "chat_template": "llmbuild default (the tokenizer had none)" if template else
        ("the tokenizer's" if any(d.shape.value == "chat" for d in cfg.datasets) else None),
        "hyperparameters": hp,
        # the merged model every target is built from is a fine-tune of the base; the adapter folder
        # on its own is an adapter of it (Hugging Face's base_model_relation values)
        "base_model_relation": "finetune",
        "adapter_relation": "adapter" if cfg.method == "lora" else None,
    }


def _em(g: dict) -> dict:
    return {k: g[k] for k in ("exact_match", "correct")}


def _check_merge(merged: float | None, trained: float | None, exact: bool) -> None:
    """A broken merge (the garbled models of Axolotl #1267 / #1510) shows as a different eval loss.

    exact: fp32 training and an fp32 merged model, where only summation order differs; otherwise
    16-bit rounding (of the merged weights, or of autocast in training) moves the loss a little."""
    if merged is None or trained is None:
        return
    tol = 1e-3 if exact else max(0.05, 0.03 * abs(trained))
    if not abs(merged - trained) <= tol:
        raise RuntimeError(f"finetune: the merged model's eval loss {merged:.4f} differs from the trained model's "
                           f"{trained:.4f} (tolerance {tol:g}): the merge is broken")


def _launch(cfg, model_dir: Path, work: Path, fp: str, pad_id: int, mods, progress):
    """Train under cfg.launcher (accelerate launch / torchrun) and return rank 0's result."""
    from llmbuild.finetune import train

    spec = work / "spec.json"
    spec.write_text(json.dumps({"config": to_dict(cfg), "model_dir": str(model_dir), "work_dir": str(work),
                                "fingerprint": fp, "pad_id": pad_id, "target_modules": mods}))
    cmd = [*launcher_argv(cfg.launcher), "-m", "llmbuild.finetune.train", str(spec)]
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    tail: deque[str] = deque(maxlen=20)
    log = work / "launcher.log"
    with open(log, "w") as logf, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                                  env=env) as proc:
        for line in proc.stdout:
            if line.startswith("LLMBUILD_PROGRESS "):
                if progress:
                    progress(*json.loads(line.split(" ", 1)[1]))
                continue
            logf.write(line)
            tail.append(line.rstrip())
        rc = proc.wait()
    if rc != 0:
        last = next((x for x in reversed(tail) if x.strip()), "")
        raise RuntimeError(f"finetune: `{cfg.launcher}` exited with {rc}: {last} (log: {log})")
    res = train.finished(work, fp)
    if res is None:
        raise RuntimeError(f"finetune: `{cfg.launcher}` finished without a result in {train.final_dir(work)} "
                           f"(log: {log})")
    return res
