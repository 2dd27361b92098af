"""A build's license decision: detection from a snapshot, shipped files, naming, waivers, reports."""

from __future__ import annotations

import hashlib
import json

import pytest

from llmbuild.errors import InvalidInput
from llmbuild.licenses import (
    artifact_files,
    artifact_metadata,
    card_fields,
    card_section,
    detect,
    evaluate,
    kb,
    write_reports,
)
from llmbuild.licenses.config import DeploymentFacts, LicenseConfig, Waiver

from .helpers import build, policy, snapshot

K = kb.load()
APACHE = K.text("apache-2.0")
LLAMA31 = K.text("llama3.1")
LLAMA31_AUP = K.text("llama3.1", "use_policy_file")
MNPL_TEXT = "Mistral AI Non-Production License\n\n1. Scope and acceptance ...\n"
NOTICE_31 = ("Llama 3.1 is licensed under the Llama 3.1 Community License, Copyright © Meta Platforms, Inc. "
             "All Rights Reserved.")


def cfg(license_id=None, pol="commercial-saas", **facts) -> LicenseConfig:
    return LicenseConfig(id=license_id, policy=policy(pol),
                         facts=DeploymentFacts(**{"monthly_active_users": 1_000_000, **facts}))


# -- detection --------------------------------------------------------------------------------------
def test_every_shipped_text_is_recognised_as_itself_by_hash_and_by_phrase():
    for key, rec in K.records.items():
        for field, kind in (("text_file", "license"), ("use_policy_file", "use_policy")):
            if rec.get(field):
                data = K.text(key, field)
                assert detect.recognise(data, kind)[:2] == (key, "sha256")
                # a reflowed copy (other whitespace, markdown emphasis) is still recognised by its phrase
                reflowed = b"**" + b" ".join(data.split()) + b"**\n"
                assert detect.recognise(reflowed, kind)[:2] == (key, "phrase"), key


@pytest.mark.parametrize("text,expected", [
    ("Creative Commons Attribution-NonCommercial 4.0 International Public License ...", "cc-by-nc-4.0"),
    ("Creative Commons Attribution 4.0 International Public License ...", "cc-by-4.0"),
    ("Attribution-ShareAlike 4.0 International", "cc-by-sa-4.0"),
    ("Tongyi Qianwen RESEARCH LICENSE AGREEMENT\n\nTongyi Qianwen ...", "tongyi-qianwen-research"),
    ("Tongyi Qianwen LICENSE AGREEMENT\n\nTongyi Qianwen Release Date: August 3, 2023", "tongyi-qianwen"),
    ("Qwen RESEARCH LICENSE AGREEMENT\n\nQwen RESEARCH LICENSE AGREEMENT Release Date", "qwen-research"),
    ("Qwen LICENSE AGREEMENT\n\nQwen LICENSE AGREEMENT Release Date: September 19, 2024", "qwen"),
    ("DEEPSEEK LICENSE AGREEMENT\n\nVersion 1.0, 23 October 2023", "deepseek-license-1.0"),
    ("Gemma Terms of Use\n\nLast modified: April 1, 2024", "gemma"),
    (MNPL_TEXT, "mnpl"),
    ("Some bespoke terms nobody has seen", None),
])
def test_recognise_by_phrase(text, expected):
    assert detect.recognise(text.encode())[0] == expected


def test_detect_reads_front_matter_and_hashes_the_license(tmp_path):
    snap = snapshot(tmp_path / "m", {"license": "apache-2.0"}, {"LICENSE": APACHE},
                    config={"architectures": ["MllamaForConditionalGeneration"]})
    det = detect.detect(snap)
    assert det.readme == {"license": "apache-2.0", "license_name": None, "license_link": None}
    assert det.tag.alternatives == [("apache-2.0",)]
    f = det.license_files[0]
    assert (f.name, f.sha256, f.recognised_as, f.by) == ("LICENSE", hashlib.sha256(APACHE).hexdigest(),
                                                         "apache-2.0", "sha256")
    assert det.multimodal is True


def test_license_read_from_the_snapshot_when_the_recipe_says_nothing(tmp_path):
    snap = snapshot(tmp_path / "m", {"license": "other", "license_name": "tongyi-qianwen"})
    d = evaluate(cfg(None), snap, build("Qwen-72B-q4"))
    assert d.licenses == ["tongyi-qianwen"] and d.hub_id == "other" and d.license_name == "tongyi-qianwen"
    assert not d.warnings


def test_tag_and_text_disagree_warns_loudly_and_takes_the_stricter_reading(tmp_path):
    # a community GGUF of Codestral: tagged apache-2.0, LICENSE is the MNPL
    snap = snapshot(tmp_path / "m", {"license": "apache-2.0"}, {"LICENSE": MNPL_TEXT})
    d = evaluate(cfg(None), snap, build("codestral-q4"))
    assert d.verdict == "fail"  # the MNPL permits no commercial use
    assert set(d.licenses) == {"apache-2.0", "mnpl"} and d.licenses[0] == "mnpl"
    assert any(w.startswith("LICENSE MISMATCH") and "mnpl" in w and "apache-2.0" in w for w in d.warnings)
    assert [c["id"] for c in d.clauses if c["verdict"] == "fail"] == ["mnpl:commercial_use"]
    # the same snapshot for internal evaluation passes, still under both licenses
    assert evaluate(cfg(None, "internal-eval"), snap, build("codestral-q4")).verdict == "pass with obligations"


def test_recipe_id_is_checked_against_the_snapshot_too(tmp_path):
    snap = snapshot(tmp_path / "m", {"license": "llama3.1"}, {"LICENSE": LLAMA31})
    d = evaluate(cfg("apache-2.0"), snap, build("Llama-mine"))
    assert set(d.licenses) == {"apache-2.0", "llama3.1"} and any("LICENSE MISMATCH" in w for w in d.warnings)


def test_unrecognised_license_file_is_a_warning_and_no_license_at_all_is_invalid_input(tmp_path):
    snap = snapshot(tmp_path / "a", {"license": "mit"}, {"LICENSE.txt": "Copyright ACME. Custom words."})
    d = evaluate(cfg(None), snap, build())
    assert d.licenses == ["mit"] and any("LICENSE.txt" in w and "not a license text" in w for w in d.warnings)
    bare = snapshot(tmp_path / "b")
    with pytest.raises(InvalidInput, match="license.id: no license declared and none found in"):
        evaluate(cfg(None), bare, build())
    allowed = cfg(None)
    allowed.unknown = "allow"
    d = evaluate(allowed, bare, build())
    assert d.unknown_allowed and d.verdict == "pass with obligations" and d.hub_id == "other"


def test_unknown_id_is_invalid_input_with_closest_ids_unless_allowed():
    with pytest.raises(InvalidInput) as e:
        evaluate(cfg("llama-3.9"), None, build())
    assert str(e.value).startswith("license.id: unknown license 'llama-3.9'; closest known ids: ")
    allowed = cfg("acme-model-license")
    allowed.unknown = "allow"
    d = evaluate(allowed, None, build())
    assert d.unknown_allowed and d.clauses[0]["clause"] == "unknown_license"
    assert card_fields(d) == {"license": "other", "license_name": "acme-model-license", "license_link": None}


# -- what ships ---------------------------------------------------------------------------------------
def test_llama31_files_notice_use_policy_and_license_copy(tmp_path):
    snap = snapshot(tmp_path / "m", {"license": "llama3.1"}, {"LICENSE": LLAMA31, "USE_POLICY.md": LLAMA31_AUP})
    d = evaluate(cfg(None, distribution="redistributed"), snap, build("Llama-3.1-8B-acme-q8"))
    files = artifact_files(d, snap)
    assert files["NOTICE"].decode().strip() == NOTICE_31
    assert files["LICENSE"] == LLAMA31 and files["USE_POLICY.md"] == LLAMA31_AUP
    # a local checkpoint without the texts still ships them: llmbuild carries Meta's texts
    bare = snapshot(tmp_path / "bare")
    files = artifact_files(evaluate(cfg("llama3.1"), bare, build("Llama-x")), bare)
    assert files["LICENSE"] == LLAMA31 and files["USE_POLICY.md"] == LLAMA31_AUP
    assert files["NOTICE"].decode().strip() == NOTICE_31


def test_apache_license_copy_is_the_upstream_file(tmp_path):
    upstream = APACHE.replace(b"APPENDIX", b"APPENDIX (as shipped upstream)")  # not the canonical bytes
    snap = snapshot(tmp_path / "m", {"license": "apache-2.0"}, {"LICENSE": upstream, "NOTICE": "ACME model\n"})
    d = evaluate(cfg(None), snap, build("acme-q8"))
    files = artifact_files(d, snap)
    assert files["LICENSE"] == upstream and files["NOTICE"] == b"ACME model\n"
    assert "USE_POLICY.md" not in files
    # no upstream (the demo's seed-initialised model): the shipped Apache text
    d = evaluate(cfg("apache-2.0"), None, build("demo", source="init", base_model=None))
    assert artifact_files(d, None) == {"LICENSE": APACHE}


def test_gemma_without_a_text_ships_pointers(tmp_path):
    d = evaluate(cfg("gemma"), None, build("gemma-acme"))
    files = artifact_files(d, None)
    assert b"https://ai.google.dev/gemma/terms" in files["LICENSE"]
    assert files["NOTICE"].decode().strip() == ("Gemma is provided under and subject to the Gemma Terms of Use "
                                               "found at ai.google.dev/gemma/terms")
    assert b"enforceable provision" in files["USE_POLICY.md"] and b"prohibited_use_policy" in files["USE_POLICY.md"]


def test_merge_carries_every_parent_license():
    d = evaluate(cfg("apache-2.0"), None, build("Llama-merge", parents=["llama3.1"]))
    assert d.licenses == ["llama3.1", "apache-2.0"] and d.relation == "merge"
    files = artifact_files(d, None)
    assert files["LICENSE"] == LLAMA31 and files["LICENSE-apache-2.0"] == APACHE
    assert artifact_metadata(d)["license_id"] == "llama3.1"


def test_card_and_metadata_fields():
    d = evaluate(cfg("llama3.1"), None, build("Llama-3.1-acme"))
    assert card_fields(d) == {"license": "llama3.1", "license_name": None, "license_link": None}
    assert artifact_metadata(d) == {"license_id": "llama3.1", "license_name": K.get("llama3.1")["name"],
                                    "license_link": K.get("llama3.1")["url"]}
    section = card_section(d)
    assert "**Built with Llama**" in section and "pass with obligations" in section
    d = evaluate(LicenseConfig(id="other", name="mrl", policy=policy("research"),
                               facts=DeploymentFacts(deployer="individual")), None, build("Ministral-x"))
    assert card_fields(d) == {"license": "other", "license_name": "mrl",
                              "license_link": "https://mistral.ai/licenses/MRL-0.1.md"}


# -- naming, waivers, chain, reports -------------------------------------------------------------------
def test_naming_prefix_failure_says_which_key_to_change():
    d = evaluate(cfg("llama3.1"), None, build("acme-chat-q4"))
    fails = [c for c in d.clauses if c["verdict"] == "fail"]
    assert [c["id"] for c in fails] == ["llama3.1:naming"]
    assert "set build.model_name to 'Llama-acme-chat-q4'" in fails[0]["reason"]
    d3 = evaluate(cfg("llama3"), None, build("acme"))
    naming = next(c for c in d3.clauses if c["clause"] == "naming")
    assert "set build.model_name to 'Llama-3-acme'" in naming["reason"]
    assert evaluate(cfg("llama3"), None, build("Llama3-acme")).verdict == "pass with obligations"
    # internal use: nothing is distributed or made available, so no naming duty
    assert evaluate(cfg("llama3.1", pol="internal-eval"), None, build("acme")).verdict == "pass with obligations"


def test_waiver_turns_a_failure_into_a_recorded_pass(tmp_path):
    c = cfg("llama3.1", monthly_active_users=900_000_000)
    c.waivers = [Waiver(clause="llama3.1:monthly_active_users", reason="separate license from Meta, ref LGL-42",
                        approved_by="legal@acme.example")]
    d = evaluate(c, None, build("Llama-acme"))
    assert d.verdict == "pass with obligations"
    assert d.waivers_applied == [{"clause": "llama3.1:monthly_active_users", "waiver": "llama3.1:monthly_active_users",
                                  "reason": "separate license from Meta, ref LGL-42",
                                  "approved_by": "legal@acme.example",
                                  "failure": d.waivers_applied[0]["failure"]}]
    assert "900,000,000" in d.waivers_applied[0]["failure"]
    assert "LGL-42" in card_section(d) and "legal@acme.example" in card_section(d)
    write_reports(d, tmp_path)
    assert "LGL-42" in (tmp_path / "LICENSE_REPORT.md").read_text()
    # a waiver for a clause that did not fail is reported, never silently ignored
    c.waivers.append(Waiver(clause="naming", reason="r", approved_by="a"))
    warnings = evaluate(c, None, build("Llama-x")).warnings
    assert any("waiver for 'naming' matched no failing clause" in w for w in warnings)


@pytest.mark.parametrize("waiver,message", [
    (Waiver(clause="llama3.1:naming", reason="", approved_by="legal"), "license.waivers[0].reason: a waiver needs"),
    (Waiver(clause="llama3.1:naming", reason="ok", approved_by=" "), "license.waivers[0].approved_by: a waiver needs"),
    (Waiver(clause="", reason="ok", approved_by="legal"), "license.waivers[0].clause:"),
])
def test_waiver_without_reason_or_approver_is_invalid_input(waiver, message):
    c = cfg("llama3.1")
    c.waivers = [waiver]
    with pytest.raises(InvalidInput, match=message.replace("[", r"\[").replace("]", r"\]")):
        evaluate(c, None, build())


@pytest.mark.parametrize("field,value,key", [
    ("distribution", "everywhere", "license.facts.distribution"),
    ("deployer", "robot", "license.facts.deployer"),
    ("monthly_active_users", -1, "license.facts.monthly_active_users"),
])
def test_bad_fact_values_name_the_key(field, value, key):
    c = cfg("mit")
    setattr(c.facts, field, value)
    with pytest.raises(InvalidInput, match=key):
        evaluate(c, None, build())


def test_chain_and_relation():
    d = evaluate(cfg("apache-2.0"), None, build("m", finetune="lora"))
    steps = [(s["step"], s.get("target")) for s in d.chain]
    assert steps == [("base", None), ("adapter", None), ("quantized", "gguf8"), ("converted", "onnx32")]
    assert d.relation == "adapter" and all(s["license"] == "apache-2.0" for s in d.chain)
    assert evaluate(cfg("apache-2.0"), None, build("m")).relation == "quantized"


def test_reports(tmp_path):
    d = evaluate(cfg("llama3.1", distribution="redistributed"), None, build("acme"))
    names = write_reports(d, tmp_path)
    assert names == ["LICENSE_REPORT.md", "license_report.json"]
    md = (tmp_path / "LICENSE_REPORT.md").read_text()
    assert md.startswith("# License verdict: FAIL\n")
    assert "set build.model_name to 'Llama-acme'" in md
    assert "include “Llama” at the beginning of any such AI model name" in md  # the license's own words
    assert "https://github.com/meta-llama/llama-models/blob/main/models/llama3_1/LICENSE" in md
    data = json.loads((tmp_path / "license_report.json").read_text())
    assert data["schema_version"] == 1 and data["verdict"] == "fail"
    assert data["license"]["primary"] == "llama3.1"
    assert {"fact": "distribution", "value": "redistributed", "from": "license.facts.distribution"} in data["facts"]
    assert all({"id", "verdict", "reason", "quote", "source", "url"} <= set(c) for c in data["clauses"])


def test_unknown_tag_alone_is_invalid_input_but_another_witness_wins(tmp_path):
    snap = snapshot(tmp_path / "a", {"license": "other", "license_name": "acme-license"})
    with pytest.raises(InvalidInput, match=r"README.md: unknown license 'other' with license_name 'acme-license'"):
        evaluate(cfg(None), snap, build())
    snap = snapshot(tmp_path / "b", {"license": "other", "license_name": "acme-license"}, {"LICENSE": APACHE})
    d = evaluate(cfg(None), snap, build())
    assert d.licenses == ["apache-2.0"] and any("acme-license" in w and "LICENSE text" in w for w in d.warnings)
