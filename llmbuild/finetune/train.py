"""The training loop: LoRA (peft) or full fine-tuning (torch), deterministic and resumable.

One loop serves one CPU, one GPU and several GPUs: it runs through `accelerate.Accelerator`, which is
a thin pass-through in a single process and does DDP, FSDP or DeepSpeed when the process was started
by `accelerate launch` or `torchrun`. llmbuild never starts those itself unless the recipe asks:

    finetune:
      launcher: accelerate launch --config_file fsdp.yaml   # FSDP / DeepSpeed: accelerate's own config file
      # or:   launcher: torchrun --nproc-per-node 8          # plain DDP

With a launcher the stage (llmbuild.finetune.stage.run) writes a spec file into its work folder and
runs `<launcher> -m llmbuild.finetune.train <spec.json>`; every rank trains, rank 0 writes the result
and the trained weights into the work folder, and the build process merges and checks them as in
the single-process case. `batch_size` is per device, so one optimizer step sees
batch_size * grad_accum * devices examples. `accelerate config` writes the FSDP / DeepSpeed file.

Why it is deterministic (CPU, fixed seed): the data order is a pure function of (seed, epoch), the
adapter init and dropout come from a seeded RNG, `torch.use_deterministic_algorithms` is on, and no
step depends on timing. Why it resumes exactly: a checkpoint (accelerate's `save_state`: trainable
weights, optimizer, scheduler and every RNG state) is written every `checkpoint_every` steps into
the work folder by write-then-rename, and the data order needs only the step number, so an
interrupted run continues to the same weights as an uninterrupted one. The work folder is outside
the stage's output folder: a half-trained run is never mistaken for a result.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llmbuild.finetune.config import FinetuneConfig, Precision
from llmbuild.finetune.data import IGNORE, Example

# progress(step, total, loss, seconds_left)
Progress = Callable[[int, int, float, float], None]

_CKPT = "checkpoints"
_FINAL = "final"


@dataclass
class TrainResult:
    steps: int
    seconds: float  # training time of this process, resumed parts included as recorded
    hardware: str
    world_size: int
    examples_per_step: int
    trainable_parameters: int
    total_parameters: int
    train_loss: list = field(default_factory=list)  # [[step, loss], ...]
    eval_loss: list = field(default_factory=list)  # [[step, loss], ...]; step 0 is the base model
    resumed_from: int | None = None


def total_steps(cfg: FinetuneConfig, n_train: int, examples_per_step: int) -> int:
    if cfg.max_steps:
        return cfg.max_steps
    return max(1, math.ceil(cfg.epochs * n_train / examples_per_step))


def eval_every(cfg: FinetuneConfig, total: int) -> int:
    return cfg.eval_every if cfg.eval_every > 0 else max(1, total // 10)


class Order:
    """Which examples each micro-batch gets: a stream of seeded per-epoch permutations, indexed by
    position, so any step's batch can be computed without replaying the ones before it."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self._perms = n, seed, {}

    def _perm(self, epoch: int) -> list[int]:
        import torch

        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms = {epoch: torch.randperm(self.n, generator=g).tolist()}  # keep one epoch
        return self._perms[epoch]

    def take(self, start: int, count: int) -> list[int]:
        return [self._perm(k // self.n)[k % self.n] for k in range(start, start + count)]


def collate(examples: list[Example], pad_id: int):
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return ids, mask, labels


def _trained_tokens(labels) -> int:
    # the model shifts labels by one: the first position is never a target
    return int((labels[:, 1:] != IGNORE).sum())


def eval_loss(model, examples: list[Example], batch_size: int, pad_id: int, accelerator=None) -> float | None:
    """Mean loss per trained token over examples (all ranks' shares summed when distributed)."""
    import torch

    if not examples:
        return None
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    device = accelerator.device if accelerator else next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)
    with torch.no_grad():
        for b in range(rank * batch_size, len(examples), batch_size * world):
            ids, mask, labels = (t.to(device) for t in collate(examples[b:b + batch_size], pad_id))
            out = model(input_ids=ids, attention_mask=mask, labels=labels, num_items_in_batch=1)  # -> the sum
            total += torch.stack([out.loss.double(), torch.tensor(float(_trained_tokens(labels)), device=device,
                                                                  dtype=torch.float64)])
    if accelerator and world > 1:
        total = accelerator.reduce(total, "sum")
    if was_training:
        model.train()
    return float(total[0] / total[1]) if total[1] > 0 else None


def load_checkpoint(acc, ckpt: Path) -> None:
    """accelerate's load_state after checking every pickle in the checkpoint (optimizer, scheduler, RNG
    states) loads with weights_only=True, as accelerate.utils.load reads them: a file that would need
    to run code is refused, unrun, and named. Checked first because load_state skips RNG states it
    cannot read, which would resume silently on other random numbers."""
    from llmbuild.errors import InvalidInput

    for p in sorted(ckpt.iterdir()):
        if p.suffix in (".pkl", ".bin", ".pt") and not _safe_pickle(p):
            raise InvalidInput(f"{p}: the fine-tuning checkpoint cannot be loaded safely (weights_only refuses "
                               f"it); delete {ckpt.parent.parent} to train from the start")
    acc.load_state(str(ckpt), strict=False)


def _safe_pickle(path: Path) -> bool:
    from accelerate.utils import load

    try:
        load(str(path), map_location="cpu")  # weights_only=True
        return True
    except Exception:  # whatever the restricted unpickler refuses, or a damaged file
        return False


def hardware(accelerator) -> str:
    import torch

    if accelerator.device.type == "cuda":
        name = torch.cuda.get_device_name(accelerator.device)
        return f"{accelerator.num_processes} x {name}"
    return f"{accelerator.num_processes} x CPU ({platform.machine()}, {torch.get_num_threads()} threads)"


def mixed_precision(p: Precision) -> str:
    import torch

    if p is Precision.auto:
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return {Precision.fp32: "no", Precision.bf16: "bf16", Precision.fp16: "fp16"}[p]


def load_for_training(model_dir: Path, cfg: FinetuneConfig, target_modules: list[str], device_index: int):
    """The model as training sees it: fp32 master weights (or a 4-bit base for QLoRA), adapters added
    or layers frozen as the recipe says."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": torch.float32}
    if cfg.qlora:
        from transformers import BitsAndBytesConfig

        kwargs = {"quantization_config": BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16), "device_map": {"": device_index}}
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
    model.config.use_cache = False  # no KV cache while training: it only costs memory
    if cfg.method == "lora":
        import peft

        if cfg.qlora:
            model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        # a mixture of experts' `experts` are fused 3-D parameters, not Linear modules: PEFT adapts them
        # through target_parameters (its LoRA on nn.Parameter)
        family = _family(model_dir)
        by_param = getattr(family, "lora_parameters", {}) or {}
        modules = [m for m in target_modules if m not in by_param]
        params = [p for m in target_modules for p in by_param.get(m, ())]
        lcfg = peft.LoraConfig(r=cfg.lora.rank, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                               target_modules=modules, bias="none", task_type="CAUSAL_LM",
                               **({"target_parameters": params} if params else {}))
        model = peft.get_peft_model(model, lcfg)
    else:
        layers = cfg.full.train_layers
        if layers is not None:
            n = model.config.num_hidden_layers
            keep = {f".layers.{i % n}." for i in layers}
            for name, p in model.named_parameters():
                p.requires_grad = any(k in f".{name}" for k in keep)
        family = _family(model_dir)
        if family is not None and family.mixture_of_experts and not cfg.full.train_router:
            # the routers stay the base model's: which expert serves which token is kept
            for name, p in model.named_parameters():
                if f".{family.HF_ROUTER}." in f".{name}":
                    p.requires_grad = False
    return model


def _family(model_dir: Path):
    """The Arch class of the checkpoint (None when llmbuild does not know it)."""
    import json

    from llmbuild.archs import ARCHS, arch_class, architecture_of

    name = architecture_of(json.loads((Path(model_dir) / "config.json").read_text()))
    return arch_class(name) if name in ARCHS else None


class Trainer:
    """One training run in one process (of one or several)."""

    def __init__(self, model_dir: Path, cfg: FinetuneConfig, train: list[Example], evals: list[Example],
                 pad_id: int, target_modules: list[str], work_dir: Path, fingerprint: str,
                 progress: Progress | None):
        self.model_dir, self.cfg, self.train_set, self.eval_set = model_dir, cfg, train, evals
        self.pad_id, self.target_modules = pad_id, target_modules
        self.work, self.fingerprint, self.progress = Path(work_dir), fingerprint, progress

    # -- checkpoints ----------------------------------------------------------------------------------
    def _latest_checkpoint(self) -> Path | None:
        root = self.work / _CKPT
        best = None
        for d in sorted(root.glob("step-*")) if root.is_dir() else []:
            try:
                meta = json.loads((d / "trainer.json").read_text())
            except (OSError, json.JSONDecodeError):
                continue  # a checkpoint without its trainer.json was not finished
            if meta.get("fingerprint") == self.fingerprint:
                best = d
        return best

    def _save_checkpoint(self, acc, step: int, state: dict) -> None:
        root = self.work / _CKPT
        tmp, final = root / f".tmp-step-{step:08d}", root / f"step-{step:08d}"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        acc.wait_for_everyone()
        if acc.is_main_process:
            (tmp / "trainer.json").write_text(json.dumps({**state, "step": step, "fingerprint": self.fingerprint}))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)  # a checkpoint appears whole or not at all
            for old in root.glob("step-*"):
                if old != final:
                    shutil.rmtree(old, ignore_errors=True)  # one is enough to resume; they are large
        acc.wait_for_everyone()

    # -- the loop -------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        import torch
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState
        from accelerate.utils import set_seed
        from transformers import get_scheduler

        cfg = self.cfg
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
        was_det = torch.are_deterministic_algorithms_enabled()
        was_warn = torch.is_deterministic_algorithms_warn_only_enabled()
        # strict on CPU (the promise: same key, same weights); on CUDA some backward kernels have no
        # deterministic version, and a warning beats refusing to train
        torch.use_deterministic_algorithms(True, warn_only=torch.cuda.is_available())
        acc = Accelerator(mixed_precision=mixed_precision(cfg.precision), step_scheduler_with_optimizer=False,
                          cpu=not torch.cuda.is_available())
        try:
            return self._run(acc, torch, set_seed, get_scheduler)
        finally:
            torch.use_deterministic_algorithms(was_det, warn_only=was_warn)
            # the accelerator's settings are process-wide; a later stage in this process starts clean
            AcceleratorState._reset_state()

    def _run(self, acc, torch, set_seed, get_scheduler) -> TrainResult:
        cfg = self.cfg
        world, rank = acc.num_processes, acc.process_index
        per_step = cfg.batch_size * cfg.grad_accum * world
        total = total_steps(cfg, len(self.train_set), per_step)
        every = eval_every(cfg, total)

        set_seed(cfg.seed)  # adapter init and dropout; restored from the checkpoint when resuming
        with warnings.catch_warnings():
            # peft 0.21 calls a transformers 5 method that warns of its v6 rename; nothing for a user to do
            warnings.simplefilter("ignore", FutureWarning)
            model = load_for_training(self.model_dir, cfg, self.target_modules, acc.local_process_index)
        params = [p for p in model.parameters() if p.requires_grad]
        trainable = sum(p.numel() for p in params)
        n_total = sum(p.numel() for p in model.parameters())
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = get_scheduler(cfg.schedule.value, opt, num_warmup_steps=cfg.warmup_steps,
                              num_training_steps=total)
        model, opt, sched = acc.prepare(model, opt, sched)

        def trainable_only(models, weights, _dir):
            # the frozen base is not checkpointed: it is the stage's input and can be reloaded
            for i, m in enumerate(models):
                if i < len(weights):
                    keep = {n for n, p in m.named_parameters() if p.requires_grad}
                    weights[i] = {k: v for k, v in weights[i].items() if k in keep}

        acc.register_save_state_pre_hook(trainable_only)

        state = {"train_loss": [], "eval_loss": [], "seconds": 0.0}
        start_step, resumed = 0, None
        ckpt = self._latest_checkpoint()
        if ckpt is not None:
            load_checkpoint(acc, ckpt)
            meta = json.loads((ckpt / "trainer.json").read_text())
            start_step = resumed = meta["step"]
            state = {k: meta[k] for k in state}
        else:
            state["eval_loss"] = _point(0, eval_loss(model, self.eval_set, cfg.batch_size, self.pad_id, acc))

        order = Order(len(self.train_set), cfg.seed)
        model.train()
        t0, seconds0 = time.monotonic(), state["seconds"]
        for step in range(start_step + 1, total + 1):
            micro = []
            for m in range(cfg.grad_accum):
                first = (step - 1) * per_step + (m * world + rank) * cfg.batch_size
                micro.append(collate([self.train_set[i] for i in order.take(first, cfg.batch_size)], self.pad_id))
            # loss per trained token over the whole step (all micro-batches, all ranks): DDP averages
            # gradients over ranks, hence the factor world
            n_tok = torch.tensor(float(sum(_trained_tokens(lab) for _, _, lab in micro)), device=acc.device)
            n_all = acc.reduce(n_tok, "sum") if world > 1 else n_tok
            step_loss = torch.zeros((), device=acc.device)
            for m, (ids, mask, labels) in enumerate(micro):
                ids, mask, labels = ids.to(acc.device), mask.to(acc.device), labels.to(acc.device)
                sync = acc.no_sync(model) if m < cfg.grad_accum - 1 else contextlib.nullcontext()
                with sync:
                    out = model(input_ids=ids, attention_mask=mask, labels=labels,
                                num_items_in_batch=(n_all / world).clamp(min=1))
                    acc.backward(out.loss)
                step_loss += out.loss.detach()
            if cfg.max_grad_norm > 0:
                acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            loss = float(acc.reduce(step_loss, "mean") if world > 1 else step_loss)
            if not math.isfinite(loss):
                raise RuntimeError(f"finetune: the loss became {loss} at step {step}; lower finetune.lr "
                                   f"(now {cfg.lr}) or raise finetune.warmup_steps")
            state["train_loss"].append([step, round(loss, 6)])
            if step % every == 0 or step == total:
                state["eval_loss"] += _point(step, eval_loss(model, self.eval_set, cfg.batch_size, self.pad_id, acc))
            elapsed = time.monotonic() - t0
            state["seconds"] = seconds0 + elapsed
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total:
                self._save_checkpoint(acc, step, state)
            if self.progress and acc.is_main_process:
                left = elapsed / (step - start_step) * (total - step)
                self.progress(step, total, loss, left)

        self._save_final(acc, model)
        result = TrainResult(steps=total, seconds=round(state["seconds"], 3), hardware=hardware(acc),
                             world_size=world, examples_per_step=per_step, trainable_parameters=trainable,
                             total_parameters=n_total, train_loss=state["train_loss"], eval_loss=state["eval_loss"],
                             resumed_from=resumed)
        if acc.is_main_process:
            meta = {**asdict(result), "fingerprint": self.fingerprint}
            (self.work / _FINAL / "result.json").write_text(json.dumps(meta))
            shutil.rmtree(self.work / _CKPT, ignore_errors=True)  # the final weights supersede them
        acc.wait_for_everyone()
        return result

    def _save_final(self, acc, model) -> None:
        """The trained weights, whole, into work/final: a PEFT adapter folder for LoRA, a Hugging Face
        checkpoint in the training dtype for full fine-tuning (merge.py casts it to the base dtype)."""
        final = self.work / _FINAL
        if acc.is_main_process:
            shutil.rmtree(final, ignore_errors=True)
        acc.wait_for_everyone()
        state_dict = acc.get_state_dict(model)  # gathers FSDP / DeepSpeed shards; every rank must call it
        if acc.is_main_process:
            m = acc.unwrap_model(model)
            if self.cfg.method == "lora":
                m.save_pretrained(str(final / "adapter"), state_dict=state_dict, safe_serialization=True)
            else:
                m.config.use_cache = True
                m.save_pretrained(str(final / "model"), state_dict=state_dict, safe_serialization=True)
        acc.wait_for_everyone()


def _point(step: int, value: float | None) -> list:
    return [[step, round(value, 6)]] if value is not None else []


def finished(work_dir: Path, fingerprint: str) -> TrainResult | None:
    """The result of a run that already finished in this work folder (a rerun after a later failure)."""
    try:
        meta = json.loads((Path(work_dir) / _FINAL / "result.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if meta.pop("fingerprint", None) != fingerprint:
        return None
    return TrainResult(**meta)


def final_dir(work_dir: Path) -> Path:
    return Path(work_dir) / _FINAL


# -- the launcher entry point: `<launcher> -m llmbuild.finetune.train spec.json` ----------------------------
def main(argv: list[str] | None = None) -> int:
    """Train from a spec file written by stage.run; rank 0 reports progress as JSON lines on stdout."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from llmbuild.finetune import data
    from llmbuild.finetune.config import from_dict

    hf_logging.disable_progress_bar()  # rank 0's progress goes to the build as JSON lines instead

    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(argv[0]).read_text())
    cfg = from_dict(spec["config"])
    work = Path(spec["work_dir"])
    tok = AutoTokenizer.from_pretrained(spec["model_dir"])
    prep = data.prepare(cfg, tok, work / "datasets-cache")

    def report(step, total, loss, left):
        print("LLMBUILD_PROGRESS " + json.dumps([step, total, loss, left]), flush=True)

    Trainer(Path(spec["model_dir"]), cfg, prep.train, prep.eval, spec["pad_id"], spec["target_modules"], work,
            spec["fingerprint"], report).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
