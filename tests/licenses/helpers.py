"""Shared helpers for the license tests: shipped policies, build facts, fake snapshots."""

from __future__ import annotations

from pathlib import Path

from llmbuild.licenses import BuildFacts
from llmbuild.licenses.cli import load_policy


def policy(name: str):
    """A shipped policy (conf/license/policy/NAME.yaml) as the PolicyConfig a build would get."""
    return load_policy(name)


def build(model_name: str | None = "Llama-test", **kw) -> BuildFacts:
    targets = {"gguf8": {"backend": "gguf", "precision": "q8_0", "quantized": True},
               "onnx32": {"backend": "onnx", "precision": "fp32", "quantized": False}}
    defaults = {"base_model": "org/model", "source": "local", "finetune": "none", "targets": targets}
    return BuildFacts(model_name=model_name, **{**defaults, **kw})


def snapshot(root: Path, readme_license: dict | None = None, files: dict[str, bytes | str] | None = None,
             config: dict | None = None) -> Path:
    """A fake model snapshot: README.md front matter, license files, config.json."""
    import json

    import yaml

    root.mkdir(parents=True, exist_ok=True)
    if readme_license is not None:
        (root / "README.md").write_text("---\n" + yaml.safe_dump(readme_license) + "---\n# A model\n", encoding="utf-8")
    for name, data in (files or {}).items():
        (root / name).write_bytes(data.encode() if isinstance(data, str) else data)
    (root / "config.json").write_text(json.dumps(config or {"architectures": ["LlamaForCausalLM"]}))
    return root
