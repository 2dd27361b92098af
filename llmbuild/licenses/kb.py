"""The license knowledge base: clause records loaded from data/licenses.yaml, with inheritance resolved.

A record is a plain dict (the YAML's fields, documented at the top of the YAML file). `inherits: KEY`
copies every clause field of KEY that the record does not set; identity fields (name, ids, links,
markers, shipped texts, quotes) never travel, because a child's text is a different document. The
shipped texts under data/texts/ are hashed here, so a byte-exact copy in a snapshot is recognised
by its sha256.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"

# Fields that describe one document, not its clauses: a child record never inherits them.
IDENTITY_FIELDS = frozenset({
    "key", "name", "hf_license", "hf_license_name", "hf_license_link", "spdx", "scancode", "source", "url",
    "models", "aliases", "text_markers", "text_file", "text_sha256", "use_policy_file", "use_policy_markers",
    "quotes", "quotes_checked_against", "note", "caution", "kind", "osi_approved",
})


class KB:
    """All records by key, plus the tables derived from them."""

    def __init__(self, raw: dict):
        self.obligation_texts: dict[str, str] = dict(raw.get("obligation_texts") or {})
        self.region_groups: dict[str, list[str]] = {k: [c.upper() for c in v]
                                                    for k, v in (raw.get("region_groups") or {}).items()}
        plain = {r["key"]: r for r in raw["licenses"]}
        self.records: dict[str, dict] = {k: _resolve(k, plain, ()) for k in plain}
        self.text_hashes: dict[str, str] = {}  # sha256 of a known byte-exact license text -> key
        self.policy_hashes: dict[str, str] = {}  # sha256 of a known use-policy text -> key
        for key, rec in self.records.items():
            for h in rec.get("text_sha256") or []:
                self.text_hashes[h] = key
            if rec.get("text_file"):
                self.text_hashes[_sha256((DATA / rec["text_file"]).read_bytes())] = key
            if rec.get("use_policy_file"):
                self.policy_hashes[_sha256((DATA / rec["use_policy_file"]).read_bytes())] = key

    def get(self, key: str) -> dict:
        return self.records[key]

    def keys(self, include_data: bool = True) -> list[str]:
        return [k for k, r in self.records.items() if include_data or r.get("kind") != "data"]

    def text(self, key: str, field: str = "text_file") -> bytes | None:
        """The shipped byte-exact text of a license (or of its use policy with field='use_policy_file')."""
        rel = self.records[key].get(field)
        return (DATA / rel).read_bytes() if rel else None

    def region_members(self, group: str) -> set[str]:
        return {group.upper(), *self.region_groups.get(group.upper(), [])}


def _resolve(key: str, plain: dict, seen: tuple) -> dict:
    if key in seen:
        raise ValueError(f"licenses.yaml: inheritance cycle through {key}")
    rec = plain[key]
    parent_key = rec.get("inherits")
    if not parent_key:
        return dict(rec)
    if parent_key not in plain:
        raise ValueError(f"licenses.yaml: {key} inherits unknown record {parent_key}")
    parent = _resolve(parent_key, plain, (*seen, key))
    merged = {k: v for k, v in parent.items() if k not in IDENTITY_FIELDS and k != "inherits"}
    merged.update(rec)
    return merged


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@functools.lru_cache(maxsize=1)
def load() -> KB:
    """The knowledge base, parsed once per process."""
    import yaml

    # libyaml's loader when PyYAML has it: 10x faster on this 60 KB file, which every build reads
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(DATA / "licenses.yaml", encoding="utf-8") as f:
        return KB(yaml.load(f, Loader=loader))
