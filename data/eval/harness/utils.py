"""Data loader for the demo's harness tasks: the JSONL beside this file, wherever llmbuild runs from
(a `data_files` path in the YAML would be read relative to the working directory)."""

from pathlib import Path


def load(**kwargs):
    import datasets

    return datasets.load_dataset("json", data_files={"test": str(Path(__file__).with_name("demo-facts.jsonl"))})


def spaced_choices(doc: dict) -> list[str]:
    """The choices as the demo model's replies begin: with a space. Its chat template writes
    "Assistant: <reply>", and the harness puts no delimiter between a chat-templated context and a
    choice, so the space travels with the choice."""
    return [" " + c for c in doc["choices"]]
