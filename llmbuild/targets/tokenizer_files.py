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
from llmbuild.targets import portable_tokenizer, source_tokenizer

# what transformers reads a tokenizer from (tokenizer.json, or the slow files it converts)
SHIPPED = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
           "added_tokens.json", "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json")
TEMPLATES_DIR = "additional_chat_templates"  # transformers 5's named templates, one NAME.jinja each


def check(model_dir: Path, key: str) -> None:
    """Model check: the folder has a tokenizer and transformers loads it (what every client of the
    artifact folder starts from). A tokenizer in the model's own code ships as it is: loading it would run
    that code, which only the recipe's trust_remote_code may allow."""
    model_dir = Path(model_dir)
    if source_tokenizer.remote_code(model_dir):
        return
    try:
        source_tokenizer.load(model_dir)
    except InvalidInput as e:
        raise InvalidInput(f"{key}: {e}") from None


def chat_template(model_dir: Path) -> str | dict | None:
    """The chat template as transformers 5 reads it: chat_template.jinja (with named templates in
    additional_chat_templates/) over tokenizer_config.json's, over chat_template.json's."""
    model_dir = Path(model_dir)
    template = None
    for name in ("chat_template.json", "tokenizer_config.json"):
        path = model_dir / name
        if path.is_file():
            try:
                template = json.loads(path.read_text(encoding="utf-8")).get("chat_template") or template
            except ValueError:
                raise InvalidInput(f"{path}: not valid JSON") from None
    if isinstance(template, list):  # the list form of named templates
        template = {t["name"]: t["template"] for t in template}
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        template = jinja.read_text(encoding="utf-8")
    named = sorted((model_dir / TEMPLATES_DIR).glob("*.jinja")) if (model_dir / TEMPLATES_DIR).is_dir() else []
    if named:
        template = {**({"default": template} if isinstance(template, str) else template or {}),
                    **{p.stem: p.read_text(encoding="utf-8") for p in named}}
    return template or None


def ship(model_dir: Path, out_dir: Path) -> list[str]:
    """Copy the tokenizer files of `model_dir` into `out_dir`; returns the names written."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    written = []
    for name in SHIPPED:
        if (model_dir / name).is_file():
            shutil.copyfile(model_dir / name, out_dir / name)
            written.append(name)
    if (model_dir / TEMPLATES_DIR).is_dir():
        shutil.copytree(model_dir / TEMPLATES_DIR, out_dir / TEMPLATES_DIR)
        written += [f"{TEMPLATES_DIR}/{p.name}" for p in sorted((out_dir / TEMPLATES_DIR).iterdir())]
    template = chat_template(model_dir)
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
    # fields transformers 4.x (optimum) cannot read back, rewritten so every client loads the folder
    written += [f for f in portable_tokenizer.apply(out_dir) if f not in written]
    return written
