"""Turn the trained weights into the stage's artifacts: the PEFT adapter and the merged checkpoint.

What users of Axolotl and torchtune fight with is a merged model that comes out in fp32 (twice the
size, and not what the base was), or garbled, or in a layout transformers cannot load. So:
- the base is reloaded from its own files in its own dtype (read from the safetensors headers) and
  the adapter saved on disk is merged into it with peft's `merge_and_unload(safe_merge=True)`, which
  computes the update in fp32 on CPU and refuses NaNs; merging the adapter as saved, not the training
  copy, means the adapter artifact and the merged artifact cannot disagree;
- the merged checkpoint is written with `save_pretrained` (config.json + safetensors) next to the base
  tokenizer's own files, copied byte for byte (targets like GGUF need tokenizer.model as it was);
- every floating tensor written is checked to have the base dtype, and the stage checks that the
  merged model's eval loss matches the trained model's.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections import Counter
from pathlib import Path

from llmbuild.checkpoint import safetensors_header

_ST_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}
# tokenizer files travel unchanged from the base to the merged model
_TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                    "added_tokens.json", "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json")


def weights_dtype(model_dir: Path) -> str:
    """The dtype the checkpoint's weights are stored in (the most common floating one)."""
    counts: Counter = Counter()
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        for name, info in safetensors_header(f).items():
            if name != "__metadata__" and info["dtype"] in _ST_DTYPES:
                counts[_ST_DTYPES[info["dtype"]]] += 1
    if counts:
        return counts.most_common(1)[0][0]
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    return str(cfg.get("dtype") or cfg.get("torch_dtype") or "float32")


def check_dtype(merged_dir: Path, dtype: str) -> None:
    """Every floating tensor of the merged checkpoint has the base dtype (never a silent fp32)."""
    for f in sorted(Path(merged_dir).glob("*.safetensors")):
        for name, info in safetensors_header(f).items():
            if name == "__metadata__" or info["dtype"] not in _ST_DTYPES:
                continue
            got = _ST_DTYPES[info["dtype"]]
            if got != dtype:
                raise RuntimeError(f"finetune: merged tensor {name} is {got}, the base model is {dtype}")


def copy_tokenizer(model_dir: Path, dest: Path, chat_template: str | None) -> None:
    for name in _TOKENIZER_FILES:
        src = Path(model_dir) / name
        if src.is_file():
            shutil.copy2(src, dest / name)
    if chat_template is not None:
        # the template training used, saved the way transformers 5 reads it
        (dest / "chat_template.jinja").write_text(chat_template, encoding="utf-8")


def merge_lora(model_dir: Path, adapter_src: Path, out_adapter: Path, out_merged: Path,
               chat_template: str | None) -> str:
    """Copy the adapter to out_adapter and write base+adapter to out_merged; returns the dtype."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    shutil.copytree(adapter_src, out_adapter, ignore=shutil.ignore_patterns("README.md"))
    # peft records the base's local path (here a cache folder): meaningless elsewhere, and it would make
    # the artifact's bytes depend on where the cache lives. The build's model card names the base.
    cfg_file = out_adapter / "adapter_config.json"
    acfg = json.loads(cfg_file.read_text())
    acfg["base_model_name_or_path"] = None
    cfg_file.write_text(json.dumps(acfg, indent=2, sort_keys=True) + "\n")
    dtype = weights_dtype(model_dir)
    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=getattr(torch, dtype))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # peft 0.21 on transformers 5: a rename notice
        model = PeftModel.from_pretrained(base, str(out_adapter))
    merged = model.merge_and_unload(safe_merge=True)
    _save(merged, dtype, model_dir, out_merged, chat_template)
    return dtype


def save_full(model_dir: Path, trained: Path, out_merged: Path, chat_template: str | None) -> str:
    """Write the fully fine-tuned weights (trained in fp32) in the base dtype; returns the dtype."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = weights_dtype(model_dir)
    model = AutoModelForCausalLM.from_pretrained(str(trained), dtype=getattr(torch, dtype))
    _save(model, dtype, model_dir, out_merged, chat_template)
    return dtype


def _save(model, dtype: str, model_dir: Path, out: Path, chat_template: str | None) -> None:
    import torch

    bad = {p.dtype for p in model.parameters() if p.is_floating_point() and p.dtype != getattr(torch, dtype)}
    if bad:
        raise RuntimeError(f"finetune: merged model has {sorted(map(str, bad))} weights, the base model is {dtype}")
    model.config.use_cache = True
    model.save_pretrained(str(out), safe_serialization=True)
    copy_tokenizer(model_dir, out, chat_template)
    check_dtype(out, dtype)
