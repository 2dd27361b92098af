"""The recipe's `license:` section: which license, which policy, and the deployment facts it depends on.

These are OmegaConf structured configs; the main schema (llmbuild/config.py) embeds `LicenseConfig`
as `license:`. A recipe sets, for example:

    defaults:
      - base
      - override /license/policy: commercial-onprem   # conf/license/policy/commercial-onprem.yaml
      - _self_
    license:
      id: llama3.1                  # or leave null: read from the snapshot's README.md / LICENSE
      facts:
        monthly_active_users: 2000000
        distribution: redistributed
      waivers:
        - {clause: "llama3.1:monthly_active_users", reason: "separate license from Meta, ref LGL-42",
           approved_by: "legal@example.com"}

Policies are the Hydra config group `license/policy`. The shipped ones live in
conf/license/policy/*.yaml. To add your own, put `license/policy/NAME.yaml` in your own recipe folder
(the folder holding the recipe is on Hydra's search path; `--config-dir DIR` adds another) and pick
it with `override /license/policy: NAME`. A policy file lists the keys of `PolicyConfig`; it may
start from a shipped one with `defaults: [commercial-saas, _self_]`. `llmbuild-license check --policy
path/to/NAME.yaml` reads the same file.

Enum-like strings are plain `str` here (readable YAML, no enum class to import) and are checked by
`validate()` with the key's dotted path in the message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from llmbuild.errors import InvalidInput

PURPOSES = ("commercial", "research", "evaluation")
DISTRIBUTIONS = ("internal", "hosted", "redistributed")  # in order of how much of the license they trigger
DEPLOYERS = ("company", "individual", "research_institution")
LEVELS = ("allow", "warn", "error")
UNKNOWN_MODES = ("fail", "allow")


@dataclass
class PolicyConfig:
    name: str = "commercial-saas"  # shown in the report; the group option's file name
    purpose: str = "commercial"  # commercial | research | evaluation: what the model is used for
    distribution: str = "hosted"  # internal | hosted | redistributed: assumed when license.facts.distribution is null
    allow_mau_thresholds: bool = True  # accept licenses whose rights end above a user count (Llama, Qwen)
    mau_unknown: str = "warn"  # allow | warn | error: an MAU-capped license while facts.monthly_active_users is null
    allow_share_alike: bool = False  # accept copyleft (CC BY-SA) when the weights are redistributed
    allow_use_restrictions_passdown: bool = True  # accept having to bind recipients to an AUP / use restrictions
    nc_training_data: str = "error"  # allow | warn | error: training data under a non-commercial license
    sa_training_data: str = "warn"  # allow | warn | error: training data under a share-alike license
    allowed_training_data_licenses: List[str] = field(default_factory=list)  # non-empty: only these ids
    unreviewed: str = "error"  # allow | warn | error: a license whose clauses the knowledge base has not read


@dataclass
class DeploymentFacts:
    monthly_active_users: Optional[int] = None  # your + affiliates' products' MAU (Llama: on the release date)
    distribution: Optional[str] = None  # internal | hosted | redistributed; null: the policy's
    deployer: str = "company"  # company | individual | research_institution: who holds the license
    regions: List[str] = field(default_factory=list)  # deployer's domicile / principal place of business: EU, DE, ..
    multimodal: Optional[bool] = None  # the model takes images etc.; null: read from the snapshot's config.json
    model_api: bool = False  # third parties call the model itself (inference / fine-tuning API): Falcon's "Hosting Use"


@dataclass
class Waiver:
    clause: str = ""  # a clause id from the report, e.g. "llama3.1:naming", or a bare clause name for all licenses
    reason: str = ""  # why the failure is acceptable (e.g. a separate license and its reference)
    approved_by: str = ""  # who approved it; shown in the report and the model card


@dataclass
class DatasetLicense:
    name: str = ""  # the dataset: Hub id or local path
    license: str = ""  # its license id (same ids as license.id)


@dataclass
class LicenseConfig:
    id: Optional[str] = None  # Hub id, SPDX id/expression or alias; null: read from the snapshot
    name: Optional[str] = None  # license_name, for id "other"
    link: Optional[str] = None  # license_link, for id "other"
    unknown: str = "fail"  # fail | allow: an unknown license fails the build, or is allowed and recorded
    policy: PolicyConfig = field(default_factory=PolicyConfig)  # filled by the license/policy group
    facts: DeploymentFacts = field(default_factory=DeploymentFacts)
    waivers: List[Waiver] = field(default_factory=list)  # approved exceptions to specific failures
    training_data: List[DatasetLicense] = field(default_factory=list)  # data this model was trained/fine-tuned on
    outputs_of: List[str] = field(default_factory=list)  # licenses of models whose outputs trained this one


def _choice(value, allowed: tuple, key: str) -> None:
    if value not in allowed:
        raise InvalidInput(f"{key}: '{value}' is not one of {', '.join(allowed)}")


def validate(cfg: LicenseConfig, prefix: str = "license") -> None:
    """Check the enum-like strings and the waivers; InvalidInput names the key."""
    _choice(cfg.unknown, UNKNOWN_MODES, f"{prefix}.unknown")
    validate_policy(cfg.policy, f"{prefix}.policy")
    if cfg.id:  # the recipe's own id is known or not without the checkpoint: refused before acquisition
        from llmbuild.licenses import ids

        ids.resolve(cfg.id, key=f"{prefix}.id", name=cfg.name, link=cfg.link, allow_unknown=cfg.unknown == "allow")
    f = cfg.facts
    if f.distribution is not None:
        _choice(f.distribution, DISTRIBUTIONS, f"{prefix}.facts.distribution")
    _choice(f.deployer, DEPLOYERS, f"{prefix}.facts.deployer")
    if f.monthly_active_users is not None and f.monthly_active_users < 0:
        raise InvalidInput(f"{prefix}.facts.monthly_active_users: must be >= 0, got {f.monthly_active_users}")
    for i, w in enumerate(cfg.waivers):
        k = f"{prefix}.waivers[{i}]"
        if not str(w.clause or "").strip():
            raise InvalidInput(f"{k}.clause: a waiver names the clause it waives (a clause id from the report)")
        for part in ("reason", "approved_by"):
            if not str(getattr(w, part) or "").strip():
                raise InvalidInput(f"{k}.{part}: a waiver needs a reason and who approved it "
                                   f"(waiver for '{w.clause}')")
    for i, d in enumerate(cfg.training_data):
        if not str(d.license or "").strip():
            raise InvalidInput(f"{prefix}.training_data[{i}].license: say the dataset's license")


def validate_policy(p: PolicyConfig, prefix: str = "license.policy") -> None:
    _choice(p.purpose, PURPOSES, f"{prefix}.purpose")
    _choice(p.distribution, DISTRIBUTIONS, f"{prefix}.distribution")
    for k in ("mau_unknown", "nc_training_data", "sa_training_data", "unreviewed"):
        _choice(getattr(p, k), LEVELS, f"{prefix}.{k}")
