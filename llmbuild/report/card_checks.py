"""Offline checks of a model card's metadata: what the Hub's validate-yaml endpoint refuses, as far as it can
be known without the network (huggingface_hub's `RepoCard.validate` and `upload_folder` call that endpoint).

huggingface_hub parses the card (`ModelCard(text)`: YAML front matter), builds `ModelCardData` from it
(which parses model-index into EvalResults and rejects malformed ones), and these checks add the Hub's
rules llmbuild's cards must keep: the license among the Hub's ids (or "other" with a name), base_model
and datasets as repo ids (never local paths), base_model_relation one of the Hub's values and only with a
base_model, library_name set, every metric value a finite number. `problems(text)` lists each broken rule.
"""

from __future__ import annotations

import math
from pathlib import Path

# the Hub's base_model_relation values (hub-docs model-cards.md, "Specifying a base model")
RELATIONS = ("adapter", "merge", "quantized", "finetune")


def _repo_id_problem(value, key: str) -> str | None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(value, str):
        return f"{key}: {value!r} is not a string"
    if value.startswith((".", "/", "~")) or value.count("/") > 1 or Path(value).suffix in (".jsonl", ".json",
                                                                                            ".csv", ".parquet"):
        return f"{key}: {value!r} looks like a path, not a Hub repo id"
    try:
        validate_repo_id(value)
    except HFValidationError as e:
        return f"{key}: {value!r}: {str(e).splitlines()[0]}"
    return None


def problems(text: str) -> list[str]:
    """Every rule the card's metadata breaks (empty: it validates offline)."""
    from huggingface_hub import ModelCard, ModelCardData

    try:
        card = ModelCard(text, ignore_metadata_errors=False)
        data = card.data.to_dict()
        ModelCardData(**data)
    except Exception as e:  # what huggingface_hub itself refuses
        return [f"huggingface_hub: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"]
    out = []
    lic = data.get("license")
    if lic is None:
        out.append("license: missing")
    elif lic == "other" and not data.get("license_name"):
        out.append("license: other needs license_name")
    elif lic != "other":
        from llmbuild.licenses import kb as kb_mod

        kb = kb_mod.load()
        hub_ids = {kb.get(k).get("hf_license") for k in kb.keys(include_data=True)}
        if lic not in hub_ids:
            out.append(f"license: {lic!r} is not a Hub license id")
    if not data.get("library_name"):
        out.append("library_name: missing")
    bases = data.get("base_model")
    for b in [bases] if isinstance(bases, str) else bases or []:
        out.append(_repo_id_problem(b, "base_model"))
    rel = data.get("base_model_relation")
    if rel is not None and (rel not in RELATIONS or not bases):
        out.append(f"base_model_relation: {rel!r} needs a base_model and one of {', '.join(RELATIONS)}")
    for d in data.get("datasets") or []:
        out.append(_repo_id_problem(d, "datasets"))
    for r in card.data.eval_results or []:
        v = r.metric_value
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            out.append(f"model-index: {r.metric_name}: value {v!r} is not a finite number")
    return [p for p in out if p]
