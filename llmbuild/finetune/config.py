"""The `finetune` recipe group: the schema of every fine-tuning knob, and the LoRA target-module table.

Hydra validates a recipe's `finetune:` block against `FinetuneConfig` at composition (unknown keys and
wrong types fail there with their dotted path); the value checks (files, ranges, a GPU for QLoRA) and
those that need the model (target modules, the context window) are in `llmbuild.finetune.stage`. This module imports
nothing heavy, so composing and planning stay fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

METHODS = ("none", "lora", "full")


class Shape(Enum):
    text = "text"  # {"text": ...}: loss on every token
    instruction = "instruction"  # {"instruction", "input"?, "output"} (Alpaca): loss on the output only
    chat = "chat"  # {"messages": [{"role", "content"}, ...]}: tokenizer's chat template, loss on assistant turns


class Schedule(Enum):
    cosine = "cosine"  # decays to 0 along a half cosine: the usual choice for a fixed number of steps
    linear = "linear"  # decays to 0 linearly
    constant = "constant"  # no decay (after warmup): simplest to reason about, may end noisier


class Precision(Enum):
    auto = "auto"  # bf16 autocast on a CUDA GPU that has it, else fp32
    fp32 = "fp32"  # exact and deterministic on CPU; the slowest
    bf16 = "bf16"  # autocast in bfloat16 (CPU or GPU); master weights stay fp32
    fp16 = "fp16"  # autocast in float16 with loss scaling; CUDA only


@dataclass
class DatasetSpec:
    path: str = "???"  # a local JSONL file, one record per line
    shape: Shape = Shape.chat  # which fields a record has (see Shape)
    license: str = "???"  # SPDX id of the data's license; the license stage checks it against the policy
    eval_path: str | None = None  # held-out JSONL of the same shape; None: split off eval_fraction instead
    eval_fraction: float = 0.1  # seeded held-out share when no eval_path: more measures better, trains on less
    # the data's Hub dataset id (owner/name) when it is published there: the card's `datasets:` lists it
    # (the Hub links it); None: the card names no dataset id (a local path never goes into the metadata)
    hub_id: str | None = None


@dataclass
class LoraSpec:
    rank: int = 16  # r of the low-rank update: higher learns more, costs memory and time linearly
    alpha: float = 32.0  # the update is scaled by alpha/rank: higher moves further from the base per step
    dropout: float = 0.05  # dropout on the LoRA input: regularizes small datasets, slows fitting
    # modules that get an adapter; None: the architecture's `lora_modules` (llmbuild/archs: all linear
    # layers of attention and MLP, which learns more than attention-only at little extra cost)
    target_modules: list[str] | None = None


@dataclass
class FullSpec:
    # decoder layers to train (0-based, negative counts from the end); None: every parameter. Training
    # fewer layers needs less optimizer memory and forgets less, and learns less.
    train_layers: list[int] | None = None
    # a mixture of experts' routers: false keeps them frozen, so tokens go to the experts they went to
    # (the adapted experts stay the ones that learned); true also trains which expert a token picks
    train_router: bool = False


@dataclass
class FinetuneConfig:
    method: str = "none"  # none | lora (adapter, merged into the base) | full (every chosen weight trained)
    datasets: list[DatasetSpec] = field(default_factory=list)  # local JSONL files with their license
    golden: str | None = None  # JSONL of {"prompt","answer"}: greedy exact match before and after training
    lr: float = 2e-4  # peak learning rate: higher learns faster, too high diverges (LoRA tolerates ~10x full FT's)
    schedule: Schedule = Schedule.cosine  # learning-rate decay after warmup
    warmup_steps: int = 0  # steps of linear ramp from 0 to lr: steadies the first updates, delays learning
    weight_decay: float = 0.0  # AdamW decay: regularizes long runs, hardly matters for short ones
    epochs: int = 1  # passes over the training data (ignored when max_steps is set)
    max_steps: int | None = None  # optimizer steps; None: epochs * ceil(records / examples per step)
    batch_size: int = 8  # examples per micro-batch per device: larger is smoother and needs more memory
    grad_accum: int = 1  # micro-batches per optimizer step: a larger effective batch at the same memory
    max_seq_len: int = 512  # tokens per example, longer ones are cut: memory grows with it; at most the context window
    max_grad_norm: float = 1.0  # gradient clipping: guards against spikes, too low slows learning
    precision: Precision = Precision.auto  # compute precision (see Precision)
    seed: int = 0  # data order, held-out split, adapter init and dropout: same seed, same weights on CPU
    eval_every: int = 0  # steps between eval-loss points; 0: about ten points over the run
    checkpoint_every: int = 50  # steps between resumable checkpoints (0: none): often loses less to a kill, costs IO
    golden_max_new_tokens: int = 16  # greedy tokens generated per golden prompt: must cover the longest answer
    lora: LoraSpec = field(default_factory=LoraSpec)
    full: FullSpec = field(default_factory=FullSpec)
    qlora: bool = False  # lora on a 4-bit base (bitsandbytes): a quarter of the memory, CUDA only, a little less exact
    # run training under this launcher for several GPUs, e.g. "accelerate launch --config_file fsdp.yaml"
    # or "torchrun --nproc-per-node 8"; None: in the build process (one device)
    launcher: str | None = None


def from_dict(d: dict) -> FinetuneConfig:
    """A typed FinetuneConfig from plain values (enum names as strings), checked like a recipe."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from llmbuild.errors import InvalidInput

    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(FinetuneConfig), d))
    except OmegaConfBaseException as e:
        where = f"finetune.{e.full_key}" if getattr(e, "full_key", None) else "finetune"
        raise InvalidInput(f"{where}: {str(e).splitlines()[0]}") from None


def to_dict(cfg: FinetuneConfig) -> dict:
    """Plain JSON-able values (enums by value): for cache keys, records and the launcher's spec file."""
    from dataclasses import fields, is_dataclass

    def plain(v):
        if is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in fields(v)}
        if isinstance(v, Enum):
            return v.value
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(cfg)


def coerce(cfg: FinetuneConfig) -> FinetuneConfig:
    """The same config with every enum typed (Python callers may pass "chat" for Shape.chat)."""
    return from_dict(to_dict(cfg))
