"""tokenizer_config.json that every client of a shipped folder loads: transformers 4.x and 5.x, optimum,
transformers.js, onnxruntime-genai.

transformers 5 saves what 4.x cannot read back, and the artifact folders ship the source's files as
saved. What differs, and what is written instead (the fields keep their meaning in both versions):
- `extra_special_tokens` as a list: 5.x's name for 4.x's `additional_special_tokens`. 4.x reads
  `extra_special_tokens` as a dict of named tokens and fails on a list (`'list' object has no attribute
  'keys'`: optimum-onnx 0.1, which pins transformers < 4.58). The list goes under
  `additional_special_tokens`, which 5.x converts back (tokenization_utils_base.py, "V5: Convert
  deprecated additional_special_tokens").
- `is_local`, `local_files_only`: where the saving process read the files from, not a tokenizer
  setting; a loader that honours `local_files_only` would refuse the Hub.
- the chat template: 5.x keeps it in chat_template.jinja only; transformers.js and transformers < 4.43
  read it from tokenizer_config.json's `chat_template`, so it is written there too (the file stays).
"""

from __future__ import annotations

import json
from pathlib import Path

CONFIG = "tokenizer_config.json"
DROP = ("is_local", "local_files_only")


def portable(cfg: dict, chat_template: str | None = None) -> dict:
    """The tokenizer_config.json fields rewritten for transformers 4.x and 5.x alike."""
    out = {k: v for k, v in cfg.items() if k not in DROP}
    extra = out.get("extra_special_tokens")
    if isinstance(extra, list):
        out.pop("extra_special_tokens")
        named = {out.get(k) for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
        rest = [t for t in extra if (t.get("content") if isinstance(t, dict) else t) not in named]
        if rest:
            out.setdefault("additional_special_tokens", rest)
    if chat_template and not out.get("chat_template"):
        out["chat_template"] = chat_template
    return out


def apply(folder: Path) -> list[str]:
    """Rewrite `folder`'s tokenizer_config.json in place (a new file, never written through a hard link
    into the cache); returns the files written."""
    folder = Path(folder)
    path = folder / CONFIG
    if not path.is_file():
        return []
    cfg = json.loads(path.read_text(encoding="utf-8"))
    jinja = folder / "chat_template.jinja"
    new = portable(cfg, jinja.read_text(encoding="utf-8") if jinja.is_file() else None)
    if new == cfg:
        return []
    tmp = path.with_name(CONFIG + ".tmp")
    tmp.write_text(json.dumps(new, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)  # a rename: a hard-linked original keeps its bytes
    return [CONFIG]
