"""The tokenizer files an artifact folder ships beside the model (ONNX folders, HF-layout checkpoints).

One function, so every folder ships the same set and client layouts (onnxruntime-genai's
genai_config.json, transformers.js) can build on it. The files travel as the source has them, with one
addition: the chat template is also written into tokenizer_config.json's `chat_template`, because
transformers 5 keeps it in chat_template.jinja, which transformers 4 and transformers.js never read
(transformers.js takes the template from tokenizer_config.json only).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from llmbuild.errors import InvalidInput
from llmbuild.targets import source_tokenizer

# what transformers reads a tokenizer from (tokenizer.json, or the slow files it converts)
SHIPPED = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
           "added_tokens.json", "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json")


def check(model_dir: Path, key: str) -> None:
    """Model check: the folder has a tokenizer and transformers loads it (what every client of the
    artifact folder starts from)."""
    try:
        source_tokenizer.load(Path(model_dir))
    except InvalidInput as e:
        raise InvalidInput(f"{key}: {e}") from None


def ship(model_dir: Path, out_dir: Path) -> list[str]:
    """Copy the tokenizer files of `model_dir` into `out_dir`; returns the names written."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    written = []
    for name in SHIPPED:
        if (model_dir / name).is_file():
            shutil.copyfile(model_dir / name, out_dir / name)
            written.append(name)
    template = source_tokenizer.load(model_dir).chat_template
    if template:
        cfg_path = out_dir / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
        if isinstance(template, dict):  # named templates, in the list form tokenizer_config.json holds them
            template = [{"name": k, "template": v} for k, v in template.items()]
        if cfg.get("chat_template") != template:
            cfg["chat_template"] = template
            cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            if "tokenizer_config.json" not in written:
                written.append("tokenizer_config.json")
    return written
