"""The license decision: which licenses apply to this build, and what each clause says about its use.

`evaluate()` works in four steps:
1. Reading. The license comes from `license.id`, the snapshot's README tag and its LICENSE text.
   Where they disagree, all of them apply (the stricter reading) and a loud warning says so. A
   merge adds its parents' licenses, a model trained on a Gemma/RAIL/DeepSeek model's outputs
   becomes that model's derivative. The result is an OR of ANDs (an SPDX `OR` is a choice).
2. Clauses. For each license in an alternative, each clause function below reads the record, the
   policy and the deployment facts, and returns one result: pass, obligation, warn or fail, with
   the reason, the license text's words it rests on and the source.
3. Waivers. A failure named by an approved waiver becomes "waived" (recorded, with who approved it).
4. Verdict. Any fail -> "fail"; else any obligation, warning or waiver -> "pass with obligations";
   else "pass". Of several alternatives the best verdict is taken.

A policy failure is a verdict, not an exception: the engine writes the report, then stops the build
(exit 3). Bad input (unknown id, malformed expression, bad fact value, waiver without approval)
raises InvalidInput (exit 2).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

from llmbuild.errors import InvalidInput
from llmbuild.licenses import ids
from llmbuild.licenses import kb as kb_mod
from llmbuild.licenses.config import DEPLOYERS, LicenseConfig, validate

PASS, OBLIGATION, WARN, FAIL, WAIVED = "pass", "obligation", "warn", "fail", "waived"
VERDICTS = ("pass", "pass with obligations", "fail")
# record fields quoted as evidence when the record has no quote from the license text for a clause
_EVIDENCE_FIELDS = {
    "commercial_use": ("commercial",),
    "monthly_active_users": ("mau_threshold", "integrated_end_user_product_exemption"),
    "geo": ("geo_restriction",),
    "hosting": ("hosting_restriction",),
    "use_restrictions": ("use_restrictions_passdown", "passdown_mechanism", "aup_url", "use_restrictions_count"),
    "share_alike": ("copyleft",),
    "naming": ("name_prefix",),
    "attribution": ("display_attribution",),
    "notice": ("notice_file_text",),
    "redistribution": ("redistribution", "attribution"),
    "outputs": ("outputs_train_other_models",),
    "review": ("note",),
}


@dataclass
class BuildFacts:
    """What the build knows, passed by the engine."""

    model_name: Optional[str]  # name the artifacts ship under (build.model_name); None: not known (license check)
    base_model: Optional[str]  # hub repo id or local path name
    source: str  # "hub" | "local" | "init" (| "check" for `llmbuild-license check`)
    finetune: str  # "none" | "lora" | "full"
    # target name -> {"backend", "precision", "quantized": the precision quantizes rather than converts}
    targets: dict
    parents: list = field(default_factory=list)  # extra parent license ids for merges


@dataclass
class Decision:
    """The license decision of one build; `to_dict()` is license_report.json's body (see report.py)."""

    verdict: str
    licenses: list[str]  # knowledge-base keys of the chosen reading, strictest (primary) first
    expression: str  # every reading considered, e.g. "(llama3.1 AND apache-2.0) OR mit"
    hub_id: str  # the primary license's Hub id ("other" for licenses without one)
    name: str  # the primary license's full name
    link: Optional[str]
    license_name: Optional[str]  # Hub license_name (for hub_id "other")
    policy: dict
    clauses: list[dict]
    obligations: list[dict]
    warnings: list[str]
    waivers_applied: list[dict]
    facts: list[dict]  # each fact a clause relied on: fact, value, from
    chain: list[dict]
    relation: Optional[str]  # base_model_relation for the card: finetune | adapter | merge | quantized | None
    detected: dict
    alternatives: list[dict]  # each OR alternative with its verdict
    model_name: Optional[str] = None
    attribution: list[str] = field(default_factory=list)  # lines to display ("Built with Llama")
    unknown_allowed: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


class _Ctx:
    """Policy, facts and build facts, recording every fact a clause reads (the report lists them)."""

    def __init__(self, cfg: LicenseConfig, build: BuildFacts, detected_multimodal: Optional[bool]):
        self.cfg, self.policy, self.build = cfg, cfg.policy, build
        f = cfg.facts
        self._facts: dict[str, tuple] = {
            "purpose": (self.policy.purpose, f"license.policy.purpose (policy {self.policy.name})"),
            "distribution": (f.distribution, "license.facts.distribution") if f.distribution
            else (self.policy.distribution, f"license.policy.distribution (policy {self.policy.name}; "
                                            "license.facts.distribution not set)"),
            "deployer": (f.deployer, "license.facts.deployer"),
            "monthly_active_users": (f.monthly_active_users, "license.facts.monthly_active_users"),
            "regions": (sorted({r.upper() for r in f.regions}), "license.facts.regions"),
            "multimodal": (f.multimodal, "license.facts.multimodal") if f.multimodal is not None
            else (detected_multimodal, "config.json of the snapshot" if detected_multimodal is not None
                  else "not declared (license.facts.multimodal) and no config.json"),
            "model_api": (f.model_api, "license.facts.model_api"),
            "model_name": (build.model_name, "build.model_name"),
        }
        self.relied: dict[str, dict] = {}

    def use(self, fact: str):
        value, src = self._facts[fact]
        self.relied.setdefault(fact, {"fact": fact, "value": value, "from": src})
        return value

    def distributed(self) -> str:
        return self.use("distribution")


# -- clause results ---------------------------------------------------------------------------------
def _result(rec: dict, clause: str, verdict: str, reason: str, obligation: str | None = None,
            cid: str | None = None) -> dict:
    quote = (rec.get("quotes") or {}).get(clause)
    if quote:
        checked = rec.get("quotes_checked_against")
        quote_from = "license text" + (f" ({checked})" if checked else "")
    else:
        fields = _EVIDENCE_FIELDS.get(clause, ())
        parts = [f"{f}: {_yaml_value(rec[f])}" for f in fields if rec.get(f) not in (None, "", [])]
        note = (rec.get("notes") or {}).get(clause)
        quote = "; ".join(parts + ([f"({note})"] if note else []))
        quote_from = "record (data/licenses.yaml)"
    return {"id": cid or f"{rec['key']}:{clause}", "license": rec["key"], "clause": clause, "verdict": verdict,
            "reason": reason, "obligation": obligation, "quote": quote or None, "quote_from": quote_from,
            "source": rec.get("source"), "url": rec.get("url")}


def _yaml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(map(str, v)) + "]"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _commercial_use(rec, ctx):
    c = rec.get("commercial")
    purpose = ctx.use("purpose")
    if c is True or c == "conditional":
        cond = " (subject to the conditions below)" if c == "conditional" else ""
        return [_result(rec, "commercial_use", PASS, f"permits {purpose} use{cond}")]
    if c is False:
        if purpose == "commercial":
            return [_result(rec, "commercial_use", FAIL,
                            f"{rec['name']} permits no commercial use; policy '{ctx.policy.name}' is for "
                            "commercial use")]
        purposes = rec.get("noncommercial_purposes") or ["research", "evaluation"]
        deployers = rec.get("noncommercial_deployers") or list(DEPLOYERS)
        deployer = ctx.use("deployer")
        if purpose not in purposes:
            return [_result(rec, "commercial_use", FAIL,
                            f"permits only non-commercial {' or '.join(purposes)} use, not {purpose}")]
        if deployer not in deployers:
            return [_result(rec, "commercial_use", FAIL,
                            f"permits {purpose} use only by a {' or '.join(d.replace('_', ' ') for d in deployers)}, "
                            f"not by a {deployer.replace('_', ' ')} (license.facts.deployer)")]
        return [_result(rec, "commercial_use", OBLIGATION, f"permits non-commercial {purpose} use only",
                        f"keep every use non-commercial ({' or '.join(purposes)}); commercial use needs a "
                        f"separate license from the licensor")]
    return [_result(rec, "commercial_use", WARN, "the record does not say whether commercial use is permitted",
                    "have counsel confirm whether commercial use is permitted")]


def _monthly_active_users(rec, ctx):
    thr = rec.get("mau_threshold")
    if not thr:
        return []
    if rec.get("mau_applies_to", "all") == "commercial" and ctx.use("purpose") != "commercial":
        return [_result(rec, "monthly_active_users", PASS,
                        f"the {thr:,} monthly-active-user cap applies to commercial use only")]
    if not ctx.policy.allow_mau_thresholds:
        return [_result(rec, "monthly_active_users", FAIL,
                        f"the license ends above {thr:,} monthly active users; policy '{ctx.policy.name}' does not "
                        "accept user-capped licenses (allow_mau_thresholds: false)")]
    mau = ctx.use("monthly_active_users")
    keep = (f"keep the monthly active users of your (and your affiliates') products at or below {thr:,}"
            + (" (counted on the model version's release date)" if rec.get("mau_applies_to", "all") == "all" else "")
            + ", or obtain a separate license from the licensor")
    if mau is None:
        level = ctx.policy.mau_unknown
        if level == "error":
            return [_result(rec, "monthly_active_users", FAIL,
                            f"the license ends above {thr:,} monthly active users and "
                            "license.facts.monthly_active_users is not declared (policy mau_unknown: error)")]
        return [_result(rec, "monthly_active_users", WARN if level == "warn" else OBLIGATION,
                        f"monthly active users not declared (license.facts.monthly_active_users); the license "
                        f"ends above {thr:,}", keep)]
    if mau > thr:
        return [_result(rec, "monthly_active_users", FAIL,
                        f"{mau:,} monthly active users is above the license's {thr:,}: you must request a "
                        "separate license from the licensor")]
    return [_result(rec, "monthly_active_users", PASS, f"{mau:,} monthly active users is within the {thr:,} cap")]


def _geo(rec, ctx):
    excluded = rec.get("geo_excluded_regions")
    if not excluded:
        return []
    groups = ", ".join(excluded)
    if rec.get("geo_applies_to") == "multimodal":
        mm = ctx.use("multimodal")
        if mm is False:
            return [_result(rec, "geo", PASS, f"text-only model: the {groups} exclusion covers multimodal models")]
    else:
        mm = True
    kb = kb_mod.load()
    members = set().union(*(kb.region_members(g) for g in excluded))
    hit = sorted(set(ctx.use("regions")) & members)
    if not hit:
        return [_result(rec, "geo", PASS, f"the deployer is not domiciled in {groups} (license.facts.regions)")]
    deployer = ctx.use("deployer")
    if mm is None:
        return [_result(rec, "geo", WARN,
                        f"rights are not granted for multimodal models to deployers domiciled in {groups} "
                        f"({', '.join(hit)} declared); whether this model is multimodal is unknown",
                        "declare license.facts.multimodal; a multimodal model may not be used by an "
                        f"individual or company domiciled in {groups}")]
    return [_result(rec, "geo", FAIL,
                    f"rights for multimodal models are not granted to a {deployer.replace('_', ' ')} domiciled in "
                    f"{groups} ({', '.join(hit)} in license.facts.regions)")]


def _hosting(rec, ctx):
    if not rec.get("hosting_restriction"):
        return []
    if ctx.distributed() == "internal":
        return [_result(rec, "hosting", PASS, "not offered to third parties")]
    if ctx.use("model_api"):
        return [_result(rec, "hosting", FAIL,
                        "offering the model to third parties as a shared instance or managed inference/fine-tuning "
                        "API is 'Hosting Use', which needs a separate license (license.facts.model_api: true)")]
    return [_result(rec, "hosting", OBLIGATION, "the model is not offered as an API (license.facts.model_api: false)",
                    "do not offer the model itself to third parties as a shared instance or managed "
                    "inference/fine-tuning API without a separate license; bind recipients to the same")]


def _passes_down(rec, dist: str) -> bool:
    # enforceable provisions bind "all of Your users", hosted ones included; an agreement copy only
    # travels with the materials themselves
    hosted_too = rec.get("passdown_mechanism") == "enforceable_provision" or bool(
        rec.get("hosted_service_counts_as_distribution"))
    return dist == "redistributed" or (dist == "hosted" and hosted_too)


def _use_restrictions(rec, ctx):
    if not rec.get("use_restrictions_passdown"):
        return []
    dist = ctx.distributed()
    aup = rec.get("aup_url") or f"the use restrictions of the {rec['name']}"
    own = f"your own use must follow {aup}"
    if not _passes_down(rec, dist):
        return [_result(rec, "use_restrictions", OBLIGATION,
                        f"the use restrictions bind your own use; nothing passes to recipients ({dist})", own)]
    if not ctx.policy.allow_use_restrictions_passdown:
        return [_result(rec, "use_restrictions", FAIL,
                        f"recipients must be bound by the use restrictions ({dist}); policy '{ctx.policy.name}' "
                        "does not accept passing use restrictions on (allow_use_restrictions_passdown: false)")]
    how = ("write the use restrictions into your terms with users as an enforceable provision and tell them the "
           "model is subject to them" if rec.get("passdown_mechanism") == "enforceable_provision"
           else "give recipients the agreement, which incorporates the use policy")
    return [_result(rec, "use_restrictions", OBLIGATION,
                    f"the use restrictions bind you and pass to recipients ({dist})",
                    f"{own}; {how} (USE_POLICY.md ships in every artifact)")]


def _share_alike(rec, ctx):
    if rec.get("copyleft") is not True:  # RAIL's "use-restrictions only" copyleft is _use_restrictions
        return []
    if ctx.distributed() != "redistributed":
        return [_result(rec, "share_alike", PASS, "share-alike applies to adapted material you share; the weights "
                                                  "are not redistributed")]
    if not ctx.policy.allow_share_alike:
        return [_result(rec, "share_alike", FAIL,
                        f"redistributing the adapted model requires licensing it under {rec['name']} or a compatible "
                        f"license; policy '{ctx.policy.name}' does not allow share-alike (allow_share_alike: false)")]
    return [_result(rec, "share_alike", OBLIGATION, "the redistributed weights must carry a share-alike license",
                    kb_mod.load().obligation_texts.get("share_alike", "license the adapted model share-alike"))]


def _has_prefix(name: str, prefix: str) -> bool:
    # "Llama-3.1-8B-q4", "llama_3_foo" and "Llama 3 Foo" all begin with "Llama 3": compare without separators
    squash = lambda s: re.sub(r"[\s_\-.]+", "", s).lower()  # noqa: E731
    return squash(name).startswith(squash(prefix))


def _naming(rec, ctx, via: str = ""):
    prefix = rec.get("name_prefix")
    if not prefix:
        return []
    cid = f"{rec['key']}:naming"
    if ctx.distributed() == "internal":
        return [_result(rec, "naming", PASS, "applies to models distributed or made available; this one stays internal",
                        cid=cid)]
    name = ctx.use("model_name")
    rule = f"the name of a model made with {rec['key']}{via} must start with '{prefix}'"
    if name is None:
        return [_result(rec, "naming", OBLIGATION, rule, f"start the distributed model's name with '{prefix}'",
                        cid=cid)]
    if _has_prefix(name, prefix):
        return [_result(rec, "naming", PASS, f"'{name}' starts with '{prefix}'", cid=cid)]
    suggestion = f"{prefix.replace(' ', '-')}-{name}"
    return [_result(rec, "naming", FAIL, f"{rule}: set build.model_name to '{suggestion}' (now '{name}')", cid=cid)]


def _attribution_text(rec, ctx) -> str:
    text = rec["display_attribution"]
    name = ctx.build.model_name
    return text.replace("[name of Derivative Work]", name) if name else text


def _attribution(rec, ctx):
    if not rec.get("display_attribution"):
        return []
    if ctx.distributed() == "internal":
        return [_result(rec, "attribution", PASS, "applies when the model is distributed or made available; internal")]
    text = _attribution_text(rec, ctx)
    return [_result(rec, "attribution", OBLIGATION, f"display \"{text}\"",
                    f"prominently display \"{text}\" on a related website, user interface, blog post, about page "
                    "or product documentation (the model card carries it)")]


def _notice(rec, ctx):
    text = rec.get("notice_file_text")
    if not text:
        return []
    if ctx.distributed() != "redistributed":
        return [_result(rec, "notice", PASS, "the NOTICE duty applies to copies you distribute; none are")]
    return [_result(rec, "notice", OBLIGATION, "copies must carry the notice",
                    f"ship a NOTICE file containing exactly: {text} (NOTICE ships in every artifact)")]


# redistribution items that have their own clause above
_OWN_CLAUSE_ITEMS = {"notice_file", "name_prefix", "display_built_with", "passdown_use_restrictions", "passdown_aup",
                     "passdown_hosting_restriction", "share_alike"}


def _redistribution(rec, ctx):
    items = [i for i in rec.get("redistribution") or [] if i not in _OWN_CLAUSE_ITEMS]
    if not items:
        return []
    dist = ctx.distributed()
    if not (dist == "redistributed" or (dist == "hosted" and rec.get("hosted_service_counts_as_distribution"))):
        return [_result(rec, "redistribution", PASS, f"no copies are distributed ({dist})")]
    texts = kb_mod.load().obligation_texts
    return [_result(rec, "redistribution", OBLIGATION, f"conditions on distribution apply ({dist})",
                    "; ".join(texts.get(i, i.replace("_", " ")) for i in items))]


def _review(rec, ctx):
    if not rec.get("review_needed"):
        return []
    level = ctx.policy.unreviewed
    reason = ("llmbuild's knowledge base has not read this license's clauses in the primary text; have counsel "
              "review it")
    if level == "error":
        return [_result(rec, "review", FAIL, f"{reason} and record a waiver (policy unreviewed: error)")]
    return [_result(rec, "review", WARN if level == "warn" else OBLIGATION, reason,
                    f"have counsel review {rec['name']} before relying on this verdict")]


LICENSE_CLAUSES: list[Callable] = [_commercial_use, _monthly_active_users, _geo, _hosting, _use_restrictions,
                                   _share_alike, _naming, _attribution, _notice, _redistribution, _review]


def _unknown(key: str) -> dict:
    name = key[len(ids.UNKNOWN_PREFIX):]
    return {"id": f"{name}:unknown_license", "license": key, "clause": "unknown_license", "verdict": WARN,
            "reason": f"'{name}' is not in llmbuild's knowledge base: no clause was checked; allowed by "
                      "license.unknown: allow",
            "obligation": f"have counsel review the license '{name}': llmbuild checked none of its clauses",
            "quote": None, "quote_from": None, "source": None, "url": None}


def _outputs(ctx, alt: tuple[str, ...], outputs_of: list[tuple[str, str]]) -> list[dict]:
    """Clauses of the licenses whose models' outputs trained this one (license.outputs_of)."""
    kb = kb_mod.load()
    out = []
    for _text, key in outputs_of:
        if key.startswith(ids.UNKNOWN_PREFIX):
            out.append(_unknown(key))
            continue
        rec = kb.get(key)
        rule = rec.get("outputs_train_other_models") or "allowed"
        cid = f"outputs_of:{key}"
        if rule == "forbidden_for_other_llms":
            if key in alt:
                out.append(_result(rec, "outputs", PASS, f"outputs of {key} trained a derivative of {key} itself, "
                                                         "which the license allows", cid=cid))
            else:
                out.append(_result(rec, "outputs", FAIL, f"{rec['name']} forbids using its outputs to improve any "
                                                         "other large language model (license.outputs_of)", cid=cid))
        elif rule == "research_only":
            if ctx.use("purpose") == "commercial":
                out.append(_result(rec, "outputs", FAIL, f"outputs of {key} may be used for research only; policy "
                                                         f"'{ctx.policy.name}' is for commercial use", cid=cid))
            else:
                out.append(_result(rec, "outputs", OBLIGATION, f"outputs of {key} may be used for research only",
                                   "keep this model's use to research, as the outputs it learned from", cid=cid))
        elif rule == "makes_derivative":
            out.append(_result(rec, "outputs", OBLIGATION,
                               f"a model trained on {key}'s outputs is a derivative of it: its terms apply "
                               "(evaluated above)", f"treat this model as a derivative under {rec['name']}", cid=cid))
        elif rule == "allowed_with_attribution":
            out.append(_result(rec, "outputs", OBLIGATION, f"outputs of {key} may train other models, with its "
                                                           "attribution and naming rules", cid=cid,
                               obligation=f"follow {key}'s attribution and naming rules for models trained on its "
                                          "outputs"))
            if key not in alt and rec.get("trigger_includes_outputs"):
                out += [dict(r, id=f"outputs_of:{r['id']}") for r in
                        _naming(rec, ctx, via="'s outputs") + _attribution(rec, ctx)]
        elif rule == "allowed":
            out.append(_result(rec, "outputs", PASS, f"outputs of {key} may train other models", cid=cid))
        else:
            out.append(_result(rec, "outputs", OBLIGATION, f"outputs of {key}: {rule}", rule, cid=cid))
    return out


def _training_data(ctx, cfg: LicenseConfig) -> list[dict]:
    kb = kb_mod.load()
    pol = ctx.policy
    out = []
    allowed = {ids.lookup(a) or a for a in pol.allowed_training_data_licenses}
    for i, d in enumerate(cfg.training_data):
        r = ids.resolve(d.license, key=f"license.training_data[{i}].license", allow_unknown=cfg.unknown == "allow")
        label = d.name or f"training_data[{i}]"
        best = None
        for alt in r.alternatives:  # an OR in a dataset's license is the user's choice: take the best
            res = [_data_clause(kb, key, label, pol, allowed) for key in alt]
            worst = max(res, key=lambda c: _RANK[c["verdict"]])
            if best is None or _RANK[worst["verdict"]] < _RANK[best["verdict"]]:
                best = worst
        ctx.relied.setdefault("training_data", {"fact": "training_data",
                                                "value": [f"{x.name}: {x.license}" for x in cfg.training_data],
                                                "from": "license.training_data"})
        out.append(best)
    return out


def _data_clause(kb, key: str, label: str, pol, allowed: set) -> dict:
    cid = f"training_data:{label}"
    if key.startswith(ids.UNKNOWN_PREFIX):
        return dict(_unknown(key), id=cid)
    rec = kb.get(key)
    if allowed and key not in allowed:
        return _result(rec, "commercial_use", FAIL, f"dataset {label} is under {key}, not one of the policy's "
                                                    f"allowed_training_data_licenses", cid=cid)
    for flag, level_key, what in ((rec.get("commercial") is False, "nc_training_data", "non-commercial"),
                                  (rec.get("copyleft") is True, "sa_training_data", "share-alike")):
        if not flag:
            continue
        level = getattr(pol, level_key)
        reason = f"dataset {label} is under {rec['name']} ({what})"
        if level == "error":
            return _result(rec, "commercial_use" if what == "non-commercial" else "share_alike", FAIL,
                           f"{reason}; policy '{pol.name}' does not accept {what} training data ({level_key}: error)",
                           cid=cid)
        if level == "warn":
            return _result(rec, "commercial_use" if what == "non-commercial" else "share_alike", WARN,
                           f"{reason}; whether its terms reach the trained weights is unsettled",
                           f"record that {label} ({key}) is {what} training data; have counsel confirm it does not "
                           "bind the weights", cid=cid)
    return _result(rec, "commercial_use", PASS, f"dataset {label} is under {key}", cid=cid)


def _combination(alt: tuple[str, ...]) -> list[dict]:
    """Licenses that cannot all be honoured at once (CC forbids adding the restrictions others demand)."""
    kb = kb_mod.load()
    recs = [kb.get(k) for k in alt if not k.startswith(ids.UNKNOWN_PREFIX)]
    restricting = [r["key"] for r in recs if r.get("use_restrictions_passdown")]
    out = []
    for r in recs:
        others = [k for k in restricting if k != r["key"]]
        if (r.get("no_downstream_restrictions") or r.get("copyleft") is True) and others:
            out.append(_result(r, "share_alike" if r.get("copyleft") is True else "redistribution", WARN,
                               f"{r['name']} forbids imposing further restrictions on recipients, while "
                               f"{', '.join(others)} require passing use restrictions on: the combination "
                               "needs legal review",
                               "have counsel review the combination of licenses", cid=f"{r['key']}:combination"))
    return out


_RANK = {PASS: 0, OBLIGATION: 1, WARN: 1, WAIVED: 1, FAIL: 2}


def _verdict(clauses: list[dict]) -> str:
    worst = max((_RANK[c["verdict"]] for c in clauses), default=0)
    return VERDICTS[worst]


def _apply_waivers(clauses: list[dict], cfg: LicenseConfig) -> list[dict]:
    applied = []
    for c in clauses:
        if c["verdict"] != FAIL:
            continue
        for w in cfg.waivers:
            if w.clause in (c["id"], c["clause"]):
                c["waived"] = {"reason": w.reason, "approved_by": w.approved_by, "was": c["reason"]}
                c["verdict"] = WAIVED
                c["reason"] = f"{c['reason']} — WAIVED: {w.reason} (approved by {w.approved_by})"
                applied.append({"clause": c["id"], "waiver": w.clause, "reason": w.reason,
                                "approved_by": w.approved_by, "failure": c["waived"]["was"]})
                break
    return applied


def _strictness(key: str) -> tuple:
    """Sort key: the strictest license of a reading comes first and names the model's license."""
    if key.startswith(ids.UNKNOWN_PREFIX):
        return (9,)
    r = kb_mod.load().get(key)
    commercial = {False: 3, "conditional": 2, True: 0}.get(r.get("commercial"), 1)
    return (-commercial, -int(r.get("copyleft") is True), -int(bool(r.get("use_restrictions_passdown"))),
            -int(bool(r.get("mau_threshold"))), -len(r.get("redistribution") or []))


def _plain(obj) -> dict:
    import dataclasses

    from omegaconf import OmegaConf

    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    return OmegaConf.to_container(obj, resolve=True)


# -- the reading ------------------------------------------------------------------------------------
def _reading(cfg: LicenseConfig, model_dir: Optional[Path], build: BuildFacts, detected, warnings: list[str]):
    """The licenses that apply, as an OR of ANDs, from the recipe, the snapshot and the derivation."""
    allow = cfg.unknown == "allow"
    witnesses: list[tuple[str, list]] = []
    if cfg.id:
        r = ids.resolve(cfg.id, key="license.id", name=cfg.name, link=cfg.link, allow_unknown=allow)
        witnesses.append((f"license.id '{cfg.id}'", r.alternatives))
    tag = detected.tag if detected is not None else None
    unknown_tag = tag is not None and any(k.startswith(ids.UNKNOWN_PREFIX) for k in tag.keys)
    if tag is not None and not unknown_tag:
        witnesses.append((f"README.md license tag '{tag.text}'", tag.alternatives))
    for f in detected.license_files if detected is not None else []:
        if f.recognised_as:
            witnesses.append((f"{f.name} text ({f.recognised_as}, by {f.by})", [(f.recognised_as,)]))
        else:
            warnings.append(f"{f.name} (sha256 {f.sha256[:12]}…) is not a license text llmbuild recognises; "
                            "check it by hand")
    if unknown_tag:
        if witnesses:
            label = ", ".join(k.lstrip(ids.UNKNOWN_PREFIX) for k in tag.keys)
            warnings.append(f"README.md license tag '{tag.text}' ({label}) is not a license llmbuild knows; relying on "
                            f"{' and '.join(w[0] for w in witnesses)}")
        elif allow:
            witnesses.append((f"README.md license tag '{tag.text}'", tag.alternatives))
        else:  # the same error as for an unknown license.id, naming where the id came from
            ids.resolve(tag.text, key=f"license tag in {model_dir}/README.md",
                        name=(detected.readme or {}).get("license_name"),
                        link=(detected.readme or {}).get("license_link"))
    if not witnesses:
        where = f"none found in {model_dir} (README.md front matter, LICENSE file)" if model_dir else \
            "the model has no upstream to read it from"
        if allow:
            warnings.append(f"no license declared and {where}; allowed by license.unknown: allow")
            return [(ids.UNKNOWN_PREFIX + "unknown",)]
        raise InvalidInput(f"license.id: no license declared and {where}; set license.id "
                           "(or license.unknown: allow to build anyway)")
    distinct = list(dict.fromkeys(tuple(sorted(map(tuple, w[1]))) for w in witnesses))
    reading = ids.conjoin(*(w[1] for w in witnesses))
    if len(distinct) > 1:
        said = "; ".join(f"{label} says {ids.expression(alts)}" for label, alts in witnesses)
        warnings.append(f"LICENSE MISMATCH: {said}. Using the stricter reading: all of them apply "
                        f"({ids.expression(reading)}). Check the upstream's license before relying on this build.")
    for i, p in enumerate(build.parents or []):
        reading = ids.conjoin(reading, ids.resolve(str(p), key=f"merge parent [{i}]", allow_unknown=allow).alternatives)
    return reading


def _outputs_of(cfg: LicenseConfig) -> list[tuple[str, str]]:
    out = []
    for i, text in enumerate(cfg.outputs_of):
        r = ids.resolve(text, key=f"license.outputs_of[{i}]", allow_unknown=cfg.unknown == "allow")
        out += [(text, k) for k in r.keys]
    return out


def _chain(build: BuildFacts, expr: str) -> tuple[list[dict], Optional[str]]:
    base = build.base_model or {"init": "initialized from a seed (this recipe)", "check": "(license check)"}.get(
        build.source, "(unnamed)")
    chain = [{"step": "base", "model": base, "source": build.source, "license": expr}]
    relation = None
    if build.parents:
        chain.append({"step": "merge", "parents": list(build.parents), "license": expr})
        relation = "merge"
    if build.finetune and build.finetune != "none":
        step = "adapter" if build.finetune == "lora" else "finetune"
        chain.append({"step": step, "method": build.finetune, "license": expr})
        relation = relation or step
    for name, t in (build.targets or {}).items():
        precision = str(t.get("precision", ""))
        step = "quantized" if t.get("quantized") else "converted"
        chain.append({"step": step, "target": name, "backend": t.get("backend"), "precision": precision,
                      "license": expr})
        if step == "quantized" and relation is None:
            relation = "quantized"
    return chain, relation


def evaluate(cfg: LicenseConfig, model_dir: Optional[Path], facts: BuildFacts) -> Decision:
    """The license decision for a build (see the module docstring)."""
    from llmbuild.licenses import detect as detect_mod

    validate(cfg)
    kb = kb_mod.load()
    warnings: list[str] = []
    detected = detect_mod.detect(Path(model_dir)) if model_dir is not None else None
    reading = _reading(cfg, model_dir, facts, detected, warnings)
    outputs_of = _outputs_of(cfg)
    # a model trained on a Gemma/RAIL/DeepSeek model's outputs is that model's derivative: its license applies
    derivative_of = [(k,) for _, k in outputs_of if not k.startswith(ids.UNKNOWN_PREFIX)
                     and kb.get(k).get("outputs_train_other_models") == "makes_derivative"]
    for d in derivative_of:
        reading = ids.conjoin(reading, [d])
    ctx = _Ctx(cfg, facts, detected.multimodal if detected else None)

    evaluated = []
    for alt in reading:
        alt = tuple(sorted(alt, key=_strictness))
        ctx.relied = {}  # each alternative reports the facts its own clauses read
        clauses = []
        for key in alt:
            if key.startswith(ids.UNKNOWN_PREFIX):
                clauses.append(_unknown(key))
                continue
            for fn in LICENSE_CLAUSES:
                clauses += fn(kb.get(key), ctx)
        clauses += _combination(alt) + _outputs(ctx, alt, outputs_of) + _training_data(ctx, cfg)
        waivers = _apply_waivers(clauses, cfg)
        evaluated.append((alt, clauses, waivers, _verdict(clauses), list(ctx.relied.values())))
    alt, clauses, waivers, verdict, relied = min(evaluated, key=lambda e: VERDICTS.index(e[3]))

    for w in sorted({w.clause for w in cfg.waivers} - {a["waiver"] for a in waivers}):
        warnings.append(f"waiver for '{w}' matched no failing clause (clause ids are in the report)")
    for c in clauses:
        if c["verdict"] == WARN:
            warnings.append(f"{c['id']}: {c['reason']}")
    if detected is not None:
        keys = set(alt)
        for f in detected.use_policy_files:
            if f.recognised_as and f.recognised_as not in keys:
                warnings.append(f"{f.name} is the use policy of {f.recognised_as}, which is not this model's license "
                                f"({', '.join(alt)})")

    primary = alt[0]
    unknown = primary.startswith(ids.UNKNOWN_PREFIX)
    rec = {} if unknown else kb.get(primary)
    hub_id = "other" if unknown else rec.get("hf_license") or "other"
    uname = primary[len(ids.UNKNOWN_PREFIX):] if unknown else None
    if unknown:
        license_name = cfg.name or uname
    else:
        license_name = (rec.get("hf_license_name") or primary) if hub_id == "other" else None
    expr = ids.expression(reading)
    chain, relation = _chain(facts, ids.expression([alt]))
    attribution = [_attribution_text(kb.get(c["license"]), ctx) for c in clauses
                   if c["clause"] == "attribution" and c["verdict"] == OBLIGATION]
    return Decision(
        verdict=verdict,
        licenses=list(alt),
        expression=expr,
        hub_id=hub_id,
        name=uname if unknown else rec["name"],
        link=(cfg.link if unknown else rec.get("hf_license_link") or rec.get("url")),
        license_name=license_name,
        policy=_plain(cfg.policy),
        clauses=clauses,
        obligations=[{"clause": c["id"], "text": c["obligation"]} for c in clauses
                     if c.get("obligation") and c["verdict"] in (OBLIGATION, WARN)],
        warnings=list(dict.fromkeys(warnings)),
        waivers_applied=waivers,
        facts=relied,
        chain=chain,
        relation=relation,
        detected={"declared": cfg.id, **(detected.to_dict() if detected else {"snapshot": None})},
        alternatives=[{"licenses": list(e[0]), "verdict": e[3]} for e in evaluated],
        model_name=facts.model_name,
        attribution=list(dict.fromkeys(attribution)),
        unknown_allowed=any(k.startswith(ids.UNKNOWN_PREFIX) for a in reading for k in a),
    )
