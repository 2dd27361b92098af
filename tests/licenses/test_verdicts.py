"""Every license x the shipped policies x the deployment facts that change the verdict.

The expected verdicts below were written by reading each license's text (quoted in
llmbuild/licenses/data/licenses.yaml), not computed by the code under test. P = pass,
O = pass with obligations, F = fail. The columns:

  A saas      commercial-saas, nothing declared: hosted, company, MAU unknown
  B saas50M   commercial-saas, 50M monthly active users (below every cap)
  C saas200M  commercial-saas, 200M MAU (above Tongyi/Qwen's 100M for commercial use, below Llama's 700M)
  D saas800M  commercial-saas, 800M MAU (above Llama's 700M)
  E redist    commercial-saas, 50M MAU, but the weights are redistributed (license.facts.distribution)
  F onprem    commercial-onprem (redistributed by policy), 50M MAU
  G research  research policy (published weights), deployer a research institution
  H eval      internal-eval (nothing leaves the company), deployer a company
  I ncdata    commercial-saas, 50M MAU, fine-tuned on CC-BY-NC-4.0 data
  J api       commercial-saas, 50M MAU, third parties call the model as an inference API
  K eumm      commercial-saas, 50M MAU, a multimodal model, deployer domiciled in the EU
"""

from __future__ import annotations

import pytest

from llmbuild.licenses import BuildFacts, evaluate
from llmbuild.licenses.config import DatasetLicense, DeploymentFacts, LicenseConfig

from .helpers import policy

M = 1_000_000
CHECK = BuildFacts(model_name=None, base_model=None, source="check", finetune="none", targets={})  # no build: a check
COLUMNS = {
    "saas": ("commercial-saas", {}, []),
    "saas50M": ("commercial-saas", {"monthly_active_users": 50 * M}, []),
    "saas200M": ("commercial-saas", {"monthly_active_users": 200 * M}, []),
    "saas800M": ("commercial-saas", {"monthly_active_users": 800 * M}, []),
    "redist": ("commercial-saas", {"monthly_active_users": 50 * M, "distribution": "redistributed"}, []),
    "onprem": ("commercial-onprem", {"monthly_active_users": 50 * M}, []),
    "research": ("research", {"deployer": "research_institution"}, []),
    "eval": ("internal-eval", {"deployer": "company"}, []),
    "ncdata": ("commercial-saas", {"monthly_active_users": 50 * M}, ["cc-by-nc-4.0"]),
    "api": ("commercial-saas", {"monthly_active_users": 50 * M, "model_api": True}, []),
    "eumm": ("commercial-saas", {"monthly_active_users": 50 * M, "multimodal": True, "regions": ["EU"]}, []),
}

TABLE = """
license                   A  B  C  D  E  F  G  H  I  J  K   # why (the license text)
apache-2.0                P  P  P  P  O  O  O  P  F  P  P   # §2 grant; §4 conditions bind copies only
mit                       P  P  P  P  O  O  O  P  F  P  P   # the notice travels with copies only
llama2                    O  O  O  F  O  O  O  O  F  O  O   # §2 700M cap, any use; §1.b.iv AUP binds own use
llama3                    O  O  O  F  O  O  O  O  F  O  O   # as llama2; "Built with Meta Llama 3"; "Llama 3" name
llama3.1                  O  O  O  F  O  O  O  O  F  O  O   # §2 700M; "Built with Llama"; no EU clause in 3.1
llama3.2                  O  O  O  F  O  O  O  O  F  O  F   # AUP: no multimodal rights for EU deployers
llama3.3                  O  O  O  F  O  O  O  O  F  O  F   # the same EU multimodal clause as 3.2
llama4                    O  O  O  F  O  O  O  O  F  O  F   # the same EU multimodal clause in its AUP
gemma                     O  O  O  O  O  O  O  O  F  O  O   # §3.1 enforceable restrictions; hosting = Distribution
tongyi-qianwen            O  P  F  F  O  O  O  P  F  P  P   # §4 100M cap "if commercially using"; §3 copies only
tongyi-qianwen-research   F  F  F  F  F  F  O  O  F  F  F   # non-commercial: research or evaluation
qwen                      O  O  F  F  O  O  O  P  F  O  O   # 100M cap, commercial; "Built with Qwen" if available
qwen-research             F  F  F  F  F  F  O  O  F  F  F   # §1.i Non-Commercial = research or evaluation
mrl                       F  F  F  F  F  F  O  F  F  F  F   # Research Purposes only, never by a company
mnpl                      F  F  F  F  F  F  O  O  F  F  F   # non-production: testing, research, evaluation
bigscience-openrail-m     O  O  O  O  O  O  O  O  F  O  O   # Attachment A binds own use and all users
bigscience-bloom-rail-1.0 O  O  O  O  O  O  O  O  F  O  O   # RAIL 1.0: the same structure
creativeml-openrail-m     O  O  O  O  O  O  O  O  F  O  O   # Open RAIL-M: the same structure
cc-by-4.0                 P  P  P  P  O  O  O  P  F  P  P   # §3(a) attribution when Shared
cc-by-sa-4.0              P  P  P  P  F  F  O  P  F  P  P   # §3(b) ShareAlike on Shared adapted material
cc-by-nc-4.0              F  F  F  F  F  F  O  O  F  F  F   # §1(i) NonCommercial
falcon-180b               O  O  O  O  O  O  O  O  F  F  O   # Hosting Use (a managed API) needs a TII license
falcon-llm-license-2.0    F  F  F  F  F  F  O  O  F  F  F   # clauses not read: commercial policies fail it
deepseek-license-1.0      O  O  O  O  O  O  O  O  F  O  O   # §4.a enforceable restrictions, hosting included
"""
LETTER = {"P": "pass", "O": "pass with obligations", "F": "fail"}


def _rows():
    header, *lines = [ln.split("#")[0].split() for ln in TABLE.strip().splitlines()]
    assert header[1:] == list("ABCDEFGHIJK")
    for cells in lines:
        key, verdicts = cells[0], cells[1:]
        assert len(verdicts) == len(COLUMNS), key
        for col, letter in zip(COLUMNS, verdicts):
            yield pytest.param(key, col, LETTER[letter], id=f"{key}-{col}")


def decide(license_id: str, column: str):
    pol_name, facts, data = COLUMNS[column]
    cfg = LicenseConfig(id=license_id, policy=policy(pol_name), facts=DeploymentFacts(**facts),
                        training_data=[DatasetLicense(name=f"data{i}", license=d) for i, d in enumerate(data)])
    return evaluate(cfg, None, CHECK)


def test_table_covers_every_model_license():
    from llmbuild.licenses import kb

    keys = {ln.split()[0] for ln in TABLE.strip().splitlines()[1:]}
    assert keys == set(kb.load().keys(include_data=False))


@pytest.mark.parametrize("key,column,expected", list(_rows()))
def test_verdict(key, column, expected):
    d = decide(key, column)
    failing = [c["id"] for c in d.clauses if c["verdict"] == "fail"]
    assert d.verdict == expected, f"{key} / {column}: got {d.verdict}; failing {failing}"


def test_mau_boundary_is_greater_than():
    # Llama §2: "is greater than 700 million": exactly 700M is still within the license
    assert decide("llama3.1", "saas").verdict != "fail"
    cfg_at = LicenseConfig(id="llama3.1", policy=policy("commercial-saas"),
                           facts=DeploymentFacts(monthly_active_users=700 * M))
    cfg_above = LicenseConfig(id="llama3.1", policy=policy("commercial-saas"),
                              facts=DeploymentFacts(monthly_active_users=700 * M + 1))
    bf = CHECK
    at = {c["clause"]: c["verdict"] for c in evaluate(cfg_at, None, bf).clauses}
    assert at["monthly_active_users"] == "pass"
    assert evaluate(cfg_above, None, bf).verdict == "fail"


def test_mrl_research_by_company_fails_but_by_individual_passes():
    # MRL: "Research Purposes" excludes use by people employed by companies
    for deployer, expected in (("company", "fail"), ("individual", "pass with obligations")):
        cfg = LicenseConfig(id="mrl", policy=policy("research"), facts=DeploymentFacts(deployer=deployer))
        bf = CHECK
        assert evaluate(cfg, None, bf).verdict == expected, deployer


def test_eu_text_only_model_passes_geo_clause():
    cfg = LicenseConfig(id="llama3.2", policy=policy("commercial-saas"),
                        facts=DeploymentFacts(monthly_active_users=M, multimodal=False, regions=["DE"]))
    bf = BuildFacts(model_name="Llama-3.2-1B-q8", base_model=None, source="check", finetune="none", targets={})
    d = evaluate(cfg, None, bf)
    assert d.verdict == "pass with obligations"
    assert {c["clause"]: c["verdict"] for c in d.clauses}["geo"] == "pass"
    # the same with a member state code and a multimodal model fails
    cfg.facts.multimodal = True
    assert evaluate(cfg, None, bf).verdict == "fail"


def test_policy_without_mau_caps_or_passdown():
    strict = policy("commercial-saas")
    strict.allow_mau_thresholds = False
    cfg = LicenseConfig(id="llama3.1", policy=strict, facts=DeploymentFacts(monthly_active_users=M))
    bf = CHECK
    assert evaluate(cfg, None, bf).verdict == "fail"
    strict = policy("commercial-onprem")
    strict.allow_use_restrictions_passdown = False
    cfg = LicenseConfig(id="gemma", policy=strict)
    d = evaluate(cfg, None, bf)
    assert [c["id"] for c in d.clauses if c["verdict"] == "fail"] == ["gemma:use_restrictions"]


def test_training_data_levels_follow_the_policy():
    bf = CHECK
    data = [DatasetLicense(name="wiki", license="CC-BY-SA-4.0"), DatasetLicense(name="open", license="cc0-1.0")]
    d = evaluate(LicenseConfig(id="apache-2.0", policy=policy("commercial-saas"), training_data=data), None, bf)
    assert d.verdict == "pass with obligations"  # share-alike data: warn
    verdicts = {c["id"]: c["verdict"] for c in d.clauses if c["id"].startswith("training_data:")}
    assert verdicts == {"training_data:wiki": "warn", "training_data:open": "pass"}
    only = policy("commercial-saas")
    only.allowed_training_data_licenses = ["cc0-1.0"]
    d = evaluate(LicenseConfig(id="apache-2.0", policy=only, training_data=data), None, bf)
    assert d.verdict == "fail" and d.facts[-1]["fact"] == "training_data"


@pytest.mark.parametrize("outputs_of,base,expected,failing", [
    ("llama2", "apache-2.0", "fail", ["outputs_of:llama2"]),  # §1.b.v: no improving other LLMs
    ("llama2", "llama2", "pass with obligations", []),  # ... "excluding Llama 2 or derivative works thereof"
    ("tongyi-qianwen", "mit", "fail", ["outputs_of:tongyi-qianwen"]),  # §5.b
    ("mrl", "apache-2.0", "fail", ["outputs_of:mrl"]),  # outputs for research purposes only
    ("llama3.1", "apache-2.0", "pass with obligations", []),  # allowed, with "Built with Llama" + naming
    ("gemma", "apache-2.0", "pass with obligations", []),  # the trained model becomes a Model Derivative
])
def test_outputs_of(outputs_of, base, expected, failing):
    cfg = LicenseConfig(id=base, policy=policy("commercial-saas"), outputs_of=[outputs_of],
                        facts=DeploymentFacts(monthly_active_users=M))
    bf = CHECK
    d = evaluate(cfg, None, bf)
    assert d.verdict == expected
    assert [c["id"] for c in d.clauses if c["verdict"] == "fail"] == failing
    if outputs_of == "gemma":
        assert "gemma" in d.licenses and d.licenses[0] == "gemma"  # Gemma's terms now govern the model
    if outputs_of == "llama3.1":
        assert any(c["id"] == "outputs_of:llama3.1:naming" for c in d.clauses)
