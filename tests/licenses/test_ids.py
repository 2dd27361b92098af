"""Identifier resolution: Hub ids, `other` + license_name/link, SPDX ids and expressions, aliases."""

from __future__ import annotations

import pytest

from llmbuild.errors import InvalidInput
from llmbuild.licenses import ids, kb

# what users and model cards write -> the OR of ANDs of knowledge-base keys
RESOLVES = [
    ("llama3.1", [("llama3.1",)]),                      # Hub id
    ("apache-2.0", [("apache-2.0",)]),                  # Hub id
    ("Apache-2.0", [("apache-2.0",)]),                  # SPDX id
    ("CC-BY-NC-4.0", [("cc-by-nc-4.0",)]),              # SPDX id
    ("llama-2", [("llama2",)]),                         # alias
    ("Llama2", [("llama2",)]),                          # alias, other case
    ("meta-llama-3.1", [("llama3.1",)]),                # alias
    ("Llama 3.3", [("llama3.3",)]),                     # alias with a space
    ("LicenseRef-scancode-llama-2-license-2023", [("llama2",)]),         # scancode key
    ("LicenseRef-scancode-gemma-tou-2024-04-01", [("gemma",)]),
    ("LicenseRef-scancode-deepseek-la-1.0", [("deepseek-license-1.0",)]),
    ("tongyi-qianwen", [("tongyi-qianwen",)]),           # Hub license_name used as id
    ("Apache-2.0 OR MIT", [("apache-2.0",), ("mit",)]),  # SPDX expression: a choice
    ("apache-2.0 AND llama3.1", [("apache-2.0", "llama3.1")]),           # Hub ids in an expression
    ("(MIT AND LicenseRef-scancode-llama-3.1-license-2024) OR Apache-2.0", [("mit", "llama3.1"), ("apache-2.0",)]),
]


@pytest.mark.parametrize("text,expected", RESOLVES)
def test_resolve(text, expected):
    assert ids.resolve(text).alternatives == expected


@pytest.mark.parametrize("name,link,expected", [
    ("tongyi-qianwen", None, "tongyi-qianwen"),
    ("qwen-research", None, "qwen-research"),
    ("mrl", "https://mistral.ai/licenses/MRL-0.1.md", "mrl"),
    ("something-else", "https://mistral.ai/licences/MNPL-0.1.md", "mnpl"),  # the link identifies it
])
def test_hub_other_with_name_and_link(name, link, expected):
    assert ids.resolve("other", name=name, link=link).alternatives == [(expected,)]


@pytest.mark.parametrize("text,message", [
    ("lama2", "license.id: unknown license 'lama2'; closest known ids: llama2"),
    ("GPL-3.0-only", "a valid SPDX id, but llmbuild has no clause record for it"),
    ("Apache-2.0 AND", "license.id: malformed license expression 'Apache-2.0 AND'"),
    ("(MIT", "license.id: malformed license expression '(MIT'"),
    ("MIT OR OR Apache-2.0", "malformed license expression"),
    ("unknown", "license.id: unknown license 'unknown'"),
])
def test_bad_ids_are_one_line_invalid_input(text, message):
    with pytest.raises(InvalidInput) as e:
        ids.resolve(text)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_other_without_a_known_name_is_unknown_unless_allowed():
    with pytest.raises(InvalidInput, match="unknown license 'other' with license_name 'acme-license'"):
        ids.resolve("other", name="acme-license")
    assert ids.resolve("other", name="acme-license", allow_unknown=True).alternatives == [("?acme-license",)]
    assert ids.resolve("GPL-3.0 OR mit", allow_unknown=True).alternatives == [("?GPL-3.0",), ("mit",)]


def test_every_record_resolves_by_its_ids():
    for key, rec in kb.load().records.items():
        for field in ("key", "spdx", "scancode", "hf_license_name"):
            if rec.get(field):
                assert ids.lookup(rec[field]) == key, (key, field)
        if rec.get("hf_license") not in (None, "other"):
            assert ids.lookup(rec["hf_license"]) == key


def test_conjoin_is_the_stricter_reading():
    assert ids.conjoin([("apache-2.0",)], [("mnpl",)]) == [("apache-2.0", "mnpl")]
    # (apache OR mit) AND mit == mit
    assert ids.conjoin([("apache-2.0",), ("mit",)], [("mit",)]) == [("mit",)]


def test_records_inherit_clauses_not_identity():
    k = kb.load()
    assert k.get("llama3.2")["mau_threshold"] == 700_000_000          # clause from llama3.1
    assert k.get("llama3.2")["text_markers"] == ["LLAMA 3.2 COMMUNITY LICENSE AGREEMENT"]
    assert "hf_license_name" not in k.get("bigscience-bloom-rail-1.0")
    assert k.get("creativeml-openrail-m")["use_restrictions_count"] == 11
    assert len(k.keys(include_data=False)) == 24
