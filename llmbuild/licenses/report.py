"""What a license decision ships: the reports, the files in every artifact folder, card and metadata fields.

LICENSE_REPORT.md is for a reviewer: the verdict first, then why, the obligations, waivers, the facts
relied on, and every clause with the words of the license it rests on and the source link.

license_report.json is for machines. Schema (schema_version 1; fields are only ever added):

    schema_version    1
    generated_by      "llmbuild <version>"
    verdict           "pass" | "pass with obligations" | "fail"
    model_name        name the artifacts ship under, or null (a license check without a build)
    license           {primary, keys[], expression, hub_id, license_name, name, link}
                      keys: knowledge-base keys of the reading used (strictest first); expression: every
                      reading considered ("(a AND b) OR c"); hub_id/license_name/link: the card's fields
    policy            the policy's keys and values (license.policy)
    facts             [{fact, value, from}]: each deployment fact a clause relied on, and where it came from
    clauses           [{id, license, clause, verdict, reason, obligation, quote, quote_from, source, url,
                        waived?}]; verdict: pass | obligation | warn | fail | waived; id: "<license>:<clause>",
                      "outputs_of:<license>" or "training_data:<dataset>" (a waiver names this id)
    obligations       [{clause, text}]: what the deployer must do
    warnings          [str]: tag/text mismatches, unrecognised files, undeclared facts, unused waivers
    waivers_applied   [{clause, waiver, reason, approved_by, failure}]
    chain             [{step: base|merge|adapter|finetune|converted|quantized, license, ...}]
    base_model_relation  finetune | adapter | merge | quantized | null
    alternatives      [{licenses[], verdict}]: each OR alternative evaluated (the best one is used)
    attribution       [str]: lines to display ("Built with Llama")
    unknown_allowed   true when license.unknown: allow let an unknown license through
    detected          {declared, readme{license, license_name, license_link}, tag{text, resolved},
                       license_files[], use_policy_files[], notice_files[] ({name, sha256, size,
                       recognised_as, by, phrase}), multimodal}

Every artifact folder gets LICENSE (the upstream file when the snapshot has one, else the text
llmbuild ships, else a pointer naming the license and its link), NOTICE (the upstream NOTICE plus the
exact notice each license demands) and USE_POLICY.md where the license's use restrictions pass to
recipients.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from llmbuild.licenses import ids
from llmbuild.licenses import kb as kb_mod

SCHEMA_VERSION = 1
REPORT_MD = "LICENSE_REPORT.md"
REPORT_JSON = "license_report.json"
_MARK = {"pass": "pass", "obligation": "obligation", "warn": "WARNING", "fail": "FAIL", "waived": "waived"}


def _known(decision) -> list[dict]:
    kb = kb_mod.load()
    return [kb.get(k) for k in decision.licenses if not k.startswith(ids.UNKNOWN_PREFIX)]


def to_json(decision) -> dict:
    from llmbuild import __version__

    d = decision
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_by": f"llmbuild {__version__}",
        "verdict": d.verdict,
        "model_name": d.model_name,
        "license": {"primary": d.licenses[0], "keys": d.licenses, "expression": d.expression, "hub_id": d.hub_id,
                    "license_name": d.license_name, "name": d.name, "link": d.link},
        "policy": d.policy,
        "facts": d.facts,
        "clauses": d.clauses,
        "obligations": d.obligations,
        "warnings": d.warnings,
        "waivers_applied": d.waivers_applied,
        "chain": d.chain,
        "base_model_relation": d.relation,
        "alternatives": d.alternatives,
        "attribution": d.attribution,
        "unknown_allowed": d.unknown_allowed,
        "detected": d.detected,
    }


def _fmt(v) -> str:
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    if isinstance(v, list):
        return ", ".join(map(str, v)) if v else "(none)"
    return "(not set)" if v is None else str(v)


def summary_lines(decision) -> list[str]:
    """The verdict and its reasons in plain lines (the CLI prints these; the build logs them)."""
    d = decision
    lines = [f"verdict: {d.verdict}",
             f"license: {d.name} ({', '.join(d.licenses)}); policy: {d.policy.get('name')}"]
    for c in d.clauses:
        if c["verdict"] in ("fail", "waived"):
            lines.append(f"  {_MARK[c['verdict']]}: {c['id']}: {c['reason']}")
    for o in d.obligations:
        lines.append(f"  obligation: {o['clause']}: {o['text']}")
    for w in d.warnings:
        lines.append(f"  warning: {w}")
    if d.facts:
        lines.append("facts relied on: " + "; ".join(f"{f['fact']}={_fmt(f['value'])} ({f['from']})" for f in d.facts))
    return lines


def render_markdown(decision) -> str:
    d = decision
    out = [f"# License verdict: {d.verdict.upper()}", ""]
    who = f"Model `{d.model_name}`" if d.model_name else "License check"
    out += [f"{who} · license **{d.name}** (`{' AND '.join(d.licenses)}`"
            + (f", [text]({d.link})" if d.link else "") + f") · policy `{d.policy.get('name')}`", ""]
    if d.warnings:
        out += ["> **Warnings**", ">"] + [f"> - **{w}**" for w in d.warnings] + [""]
    fails = [c for c in d.clauses if c["verdict"] in ("fail", "waived")]
    if fails:
        out += ["## Why", ""] + [f"- **{_MARK[c['verdict']]}** `{c['id']}`: {c['reason']}" for c in fails] + [""]
    out += ["## Obligations", ""]
    out += [f"{i}. {o['text']} (`{o['clause']}`)" for i, o in enumerate(d.obligations, 1)] or ["None."]
    if d.attribution:
        out += ["", "Attribution to display: " + "; ".join(f"**{a}**" for a in d.attribution)]
    out += [""]
    if d.waivers_applied:
        out += ["## Waivers", "", "| clause | reason | approved by | failure waived |", "|---|---|---|---|"]
        out += [f"| `{w['clause']}` | {w['reason']} | {w['approved_by']} | {w['failure']} |" for w in d.waivers_applied]
        out += [""]
    out += ["## Facts relied on", "", "| fact | value | from |", "|---|---|---|"]
    out += [f"| {f['fact']} | {_fmt(f['value'])} | {f['from']} |" for f in d.facts]
    out += ["", "## Clauses", ""]
    for c in d.clauses:
        reason = c["reason"] if c["reason"].endswith(".") else c["reason"] + "."
        out += [f"### `{c['id']}`: {_MARK[c['verdict']]}", "", reason, ""]
        if c.get("obligation") and c["verdict"] in ("obligation", "warn"):
            out += [f"Obligation: {c['obligation']}.", ""]
        if c.get("quote"):
            out += [f"> {c['quote']}", "", f"Quoted from: {c['quote_from']}."]
        src = c.get("source")
        if src or c.get("url"):
            out += [f"Source: {src or ''}" + (f" — <{c['url']}>" if c.get("url") else "")]
        out += [""]
    out += ["## License", "", f"- Readings considered: `{d.expression}`"]
    if len(d.alternatives) > 1:
        out += ["- Alternatives: " + "; ".join(f"`{' AND '.join(a['licenses'])}` → {a['verdict']}"
                                               for a in d.alternatives)]
    det = d.detected or {}
    out += [f"- Declared in the recipe (license.id): `{det.get('declared')}`"]
    if det.get("readme"):
        out += [f"- Snapshot README.md front matter: {json.dumps(det['readme'])}"]
    for kind in ("license_files", "use_policy_files", "notice_files"):
        for f in det.get(kind) or []:
            what = f"- Snapshot `{f['name']}`: sha256 `{f['sha256']}`, {f['size']} bytes"
            if kind != "notice_files":
                what += (f"; recognised as `{f['recognised_as']}` by {f['by']}" if f.get("recognised_as")
                         else "; not recognised")
            out += [what]
    if "multimodal" in det:
        out += [f"- Multimodal (config.json): {det.get('multimodal')}"]
    if d.unknown_allowed:
        out += ["- **An unknown license was allowed by `license.unknown: allow`: its clauses were not checked.**"]
    out += ["", "## Derivation chain", "", "| step | what | license |", "|---|---|---|"]
    for s in d.chain:
        what = s.get("model") or s.get("method") or ", ".join(s.get("parents", [])) or \
            f"{s.get('target')} ({s.get('backend')}, {s.get('precision')})"
        out += [f"| {s['step']} | {what} | `{s['license']}` |"]
    if d.relation:
        out += ["", f"base_model_relation: `{d.relation}`"]
    other = []
    for rec in _known(d):
        terms = [f"{k.replace('_', ' ')}: {rec[k]}" for k in ("patent", "trademark", "governing_law",
                                                              "remote_restriction", "derivative_relicense")
                 if rec.get(k) not in (None, "")]
        if terms:
            other += [f"- `{rec['key']}`: " + "; ".join(map(str, terms))]
    if other:
        out += ["", "## Other terms", ""] + other
    return "\n".join(out) + "\n"


def write_reports(decision, out_dir: Path) -> list[str]:
    """Write LICENSE_REPORT.md and license_report.json into out_dir; returns the file names."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / REPORT_MD).write_text(render_markdown(decision), encoding="utf-8")
    (out_dir / REPORT_JSON).write_text(json.dumps(to_json(decision), indent=2, ensure_ascii=False, default=str) + "\n",
                                       encoding="utf-8")
    return [REPORT_MD, REPORT_JSON]


def _pointer(rec: Optional[dict], key: str, decision) -> bytes:
    if rec is None:
        name = key[len(ids.UNKNOWN_PREFIX):]
        lines = [f"This model is distributed under the license '{name}'.",
                 f"License text: {decision.link or 'not given (license.link)'}",
                 "llmbuild does not know this license and ships no copy of its text: include the full text with "
                 "every copy you distribute."]
    else:
        lines = [f"This model is distributed under the {rec['name']} (Hub license id: {rec.get('hf_license')}"
                 + (f", license_name: {rec['hf_license_name']}" if rec.get("hf_license_name") else "") + ").",
                 f"License text: {rec.get('hf_license_link') or rec.get('url')}",
                 "llmbuild ships no copy of this text and the upstream snapshot had none: obtain the text from the "
                 "link above and include it with every copy you distribute."]
    return ("\n".join(lines) + "\n").encode()


def artifact_files(decision, model_dir: Optional[Path]) -> dict[str, bytes]:
    """The files every artifact folder must carry: LICENSE (+ LICENSE-<key>), NOTICE, USE_POLICY.md."""
    kb = kb_mod.load()
    det = decision.detected or {}
    upstream = Path(model_dir) if model_dir is not None else None
    lic_files = [f for f in det.get("license_files") or [] if upstream and (upstream / f["name"]).is_file()]
    files: dict[str, bytes] = {}
    used: set[str] = set()
    for i, key in enumerate(decision.licenses):
        name = "LICENSE" if i == 0 else f"LICENSE-{key.lstrip(ids.UNKNOWN_PREFIX)}"
        match = next((f for f in lic_files if f["recognised_as"] == key and f["name"] not in used), None)
        if match is None and i == 0:  # the upstream's own file, even unrecognised, is the best copy of its license
            match = next((f for f in lic_files if not f["recognised_as"] and f["name"] not in used), None)
        rec = None if key.startswith(ids.UNKNOWN_PREFIX) else kb.get(key)
        if match is not None:
            used.add(match["name"])
            files[name] = (upstream / match["name"]).read_bytes()
        elif rec is not None and kb.text(key):
            files[name] = kb.text(key)
        else:
            files[name] = _pointer(rec, key, decision)
    for f in lic_files:  # every other license file of the upstream travels too (the stricter reading)
        if f["name"] not in used:
            dest = f["name"] if f["name"] not in files else f"upstream-{f['name']}"
            files[dest] = (upstream / f["name"]).read_bytes()

    notice = b""
    for f in det.get("notice_files") or []:
        if upstream and (upstream / f["name"]).is_file():
            notice += (upstream / f["name"]).read_bytes().rstrip(b"\n") + b"\n"
    for rec in _known(decision):
        text = rec.get("notice_file_text")
        if text and text.encode() not in notice:
            notice += (b"\n" if notice else b"") + text.encode() + b"\n"
    if notice:
        files["NOTICE"] = notice

    policy = _use_policy(decision, upstream, det)
    if policy is not None:
        files["USE_POLICY.md"] = policy
    return files


def _use_policy(decision, upstream: Optional[Path], det: dict) -> Optional[bytes]:
    kb = kb_mod.load()
    recs = [r for r in _known(decision) if r.get("use_restrictions_passdown")]
    if not recs:
        return None
    parts: list[bytes] = []
    ups = [f for f in det.get("use_policy_files") or [] if upstream and (upstream / f["name"]).is_file()]
    for rec in recs:
        match = next((f for f in ups if f["recognised_as"] == rec["key"]), None)
        if match is None and len(recs) == 1 and ups:
            match = ups[0]  # the upstream's own policy file, even unrecognised
        if match is not None:
            parts.append((upstream / match["name"]).read_bytes())
        elif kb.text(rec["key"], "use_policy_file"):
            parts.append(kb.text(rec["key"], "use_policy_file"))
        else:
            how = ("They must be included as an enforceable provision in any agreement governing the use or "
                   "distribution of this model, and every recipient must be told the model is subject to them."
                   if rec.get("passdown_mechanism") == "enforceable_provision" else
                   "They are part of the license agreement shipped as LICENSE, which binds every recipient.")
            where = (f"the acceptable use policy at {rec['aup_url']}" if rec.get("aup_url")
                     else "the use restrictions written into the license itself (see LICENSE)")
            parts.append((f"# Use restrictions\n\nThis model is a {rec['name']} model (or a derivative of one). "
                          f"Its use is restricted by {where}.\n\n{how}\n").encode())
    return b"\n\n".join(parts)


def card_fields(decision) -> dict:
    """Model card front matter: license, license_name, license_link (the last two for 'other')."""
    other = decision.hub_id == "other"
    return {"license": decision.hub_id,
            "license_name": decision.license_name if other else None,
            "license_link": decision.link if other else None}


def card_section(decision) -> str:
    """The model card's License section: verdict, attribution, obligations, waivers."""
    d = decision
    lic = f"[{d.name}]({d.link})" if d.link else d.name
    lines = [f"License: {lic} (`{' AND '.join(d.licenses)}`). llmbuild license check: **{d.verdict}** under "
             f"policy `{d.policy.get('name')}`."]
    if len(d.licenses) > 1:
        lines += ["", "All of these licenses apply to this model: " + ", ".join(f"`{k}`" for k in d.licenses) + "."]
    for a in d.attribution:
        lines += ["", f"**{a}**"]
    if d.obligations:
        lines += ["", "Obligations of whoever uses or redistributes this model:", ""]
        lines += [f"- {o['text']}" for o in d.obligations]
    if d.waivers_applied:
        lines += ["", "Waivers recorded for this build:", ""]
        lines += [f"- `{w['clause']}`: {w['reason']} (approved by {w['approved_by']})" for w in d.waivers_applied]
    if d.unknown_allowed:
        lines += ["", "**The license is not known to llmbuild; it was allowed by `license.unknown: allow` and none "
                      "of its clauses were checked.**"]
    shipped = ["LICENSE"] + (["NOTICE"] if any(r.get("notice_file_text") for r in _known(d))
                             or (d.detected or {}).get("notice_files") else []) \
        + (["USE_POLICY.md"] if any(r.get("use_restrictions_passdown") for r in _known(d)) else [])
    lines += ["", f"Every artifact folder carries {', '.join(f'`{s}`' for s in shipped)}."]
    return "\n".join(lines)


def artifact_metadata(decision) -> dict:
    """GGUF general.license* / ONNX metadata_props: the Hub id, the license's name and its link."""
    d = decision
    others = d.licenses[1:]
    name = d.license_name if d.hub_id == "other" and d.license_name else d.name
    if others:
        name = f"{name} AND {' AND '.join(k.lstrip(ids.UNKNOWN_PREFIX) for k in others)}"
    return {"license_id": d.hub_id, "license_name": name, "license_link": d.link}
