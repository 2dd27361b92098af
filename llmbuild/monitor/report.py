"""Reports: report.json (the data) and report.md (for a reviewer, rendered from the JSON) in their own
folder, outputs/monitor/<id>/, never inside a build folder.

A one-shot run writes into a temporary folder renamed into place when complete; follow mode rewrites
the files of its folder one by one with atomic renames. `latest` points at the newest report. Every
rate line names the scorer that produced it; an empty window or a rate with no data says so in words.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

from llmbuild.errors import InvalidInput
from llmbuild.monitor.builds import inside_build
from llmbuild.monitor.metrics import METRICS

SCHEMA = "llmbuild-monitor-report/1"
SCORED = ("hallucination_rate", "groundedness", "citation_recall", "citation_precision")


def monitor_root(outputs_dir: str, build_dir: Path | None = None) -> Path:
    root = Path(outputs_dir).expanduser() / "monitor"
    holder = inside_build(root.parent if not root.exists() else root)
    if holder is not None or (build_dir is not None and build_dir in [root.resolve(), *root.resolve().parents]):
        raise InvalidInput(f"outputs_dir: {outputs_dir} is inside the build folder {holder or build_dir}; "
                           f"monitoring reports go in their own folder")
    return root


def free_id(root: Path, base: str) -> str:
    """base, or base-2, base-3 ... when a report of that name exists (two runs in one second)."""
    rid, n = base, 1
    while (root / rid).exists() or list(root.glob(f".{rid}.tmp-*")):
        n += 1
        rid = f"{base}-{n}"
    return rid


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def point_latest(root: Path, rid: str) -> None:
    link = root / "latest"
    tmp = root / f".latest.tmp-{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(rid)
    tmp.replace(link)


class ReportDir:
    """Where one report's files go: a temporary folder until `commit`, or (follow) the final folder."""

    def __init__(self, root: Path, rid: str, live: bool = False):
        self.root, self.rid, self.live = root, rid, live
        self.final = root / rid
        root.mkdir(parents=True, exist_ok=True)
        if live:
            self.final.mkdir(exist_ok=True)
            self.path = self.final
        else:
            if self.final.exists():
                raise InvalidInput(f"id: a report {self.final} exists already; choose another id")
            self.path = root / f".{rid}.tmp-{os.getpid()}"
            shutil.rmtree(self.path, ignore_errors=True)
            self.path.mkdir()

    def write(self, data: dict) -> None:
        _atomic_write(self.path / "report.json", json.dumps(data, indent=2, default=str, allow_nan=False))
        _atomic_write(self.path / "report.md", markdown(data))

    def commit(self) -> Path:
        if not self.live:
            self.path.rename(self.final)
            self.path = self.final
        point_latest(self.root, self.rid)
        return self.final

    def abandon(self) -> None:
        if not self.live:
            shutil.rmtree(self.path, ignore_errors=True)


def _t(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _rate(e: dict) -> str:
    if e["value"] is None:
        return "no data (n = 0)"
    return f"{e['value']:.3f} [{e['low']:.3f}, {e['high']:.3f}]"


def _scorer_line(s: dict) -> str:
    extra = ", ".join(f"{k} {v}" for k, v in s.items() if k not in ("name", "threshold") and v not in (None, ""))
    return f"**{s['name']}** (support threshold {s['threshold']}{'; ' + extra if extra else ''})"


def markdown(d: dict) -> str:
    if d.get("kind") == "golden":
        return golden_markdown(d)
    scorer = d["scorer"]["name"]
    lines = [f"# Monitoring report `{d['id']}`", ""]
    lines.append(f"- stream: `{d['stream']}`; created {d['created']}; window {d['window']}")
    for f in d["logs"]:
        lines.append(f"- log `{f['path']}` ({f['format']}): {f['lines']} lines, {f['records']} records, "
                     f"{f['skipped']} skipped, {f['ignored']} ignored (not exchanges)")
    s = d["sampling"]
    lines.append(f"- sampling: rate {s['rate']}; {s['scored']} of {s['read']} records scored, weighted as "
                 f"{s['weighted']} responses")
    lines.append(f"- scorer: {_scorer_line(d['scorer'])}")
    lines.append("")
    br = d["breaches"]
    if d["empty"]:
        lines += ["## Verdict: empty", "", "No responses in the logs: every rate is \"no data\", nothing can breach.", ""]
    elif br:
        lines += [f"## Verdict: {len(br)} threshold breach{'es' if len(br) > 1 else ''} (exit 5)", ""]
        lines += [f"- {r['reason']}" for r in br] + [""]
    else:
        lines += ["## Verdict: within budgets", ""]
    for group, g in d["groups"].items():
        c = g["counts"]
        lines += [f"## {group}", "",
                  f"{c['responses']} responses: {c['answered']} answered with passages, {c['no_context']} "
                  f"ungrounded (no context), {c['refusal']} refusals, {c['empty']} empty, {c['error']} errors; "
                  f"{c['claims']} claims, {c['supported_claims']} supported ({scorer})", "",
                  "| metric | rate [95% interval] | units | responses | n_eff | scorer | what it counts |",
                  "|---|---|---|---|---|---|---|"]
        for m, e in g["rates"].items():
            by = scorer if m in SCORED else "-"
            lines.append(f"| {m} | {_rate(e)} | {e['n']} | {e['responses']} | {e['n_eff']:.1f} | {by} | {METRICS[m]} |")
        if g.get("alce_macro"):
            lines.append("")
            lines.append("ALCE's per-response averages: " + ", ".join(f"{k} {v:.3f}" for k, v in g["alce_macro"].items()))
        lines.append("")
    t = d["thresholds"]
    if t["results"]:
        lines += [f"## Thresholds (mode {t['mode']}, at least {t['min_samples']} effective samples)", "",
                  "| metric | group | budget | rate [95% interval] | n_eff | status |", "|---|---|---|---|---|---|"]
        for r in t["results"]:
            budget = " ".join(f"{k} {r[k]}" for k in ("min", "max") if r[k] is not None)
            rate = "no data" if r["value"] is None else f"{r['value']:.3f} [{r['low']:.3f}, {r['high']:.3f}]"
            lines.append(f"| {r['metric']} | {r['group']} | {budget} | {rate} | {r['n_eff']} | {r['status']} |")
        lines.append("")
    if len(d["windows"]) > 1 or (d["windows"] and d["window"] != "0"):
        show = ["hallucination_rate", "groundedness", "citation_recall", "refusal_rate", "no_context_rate", "error_rate"]
        lines += [f"## Windows ({d['window']})", "", "| window start | responses | " + " | ".join(show) + " |",
                  "|---|---|" + "---|" * len(show)]
        for w in d["windows"][-48:]:
            g = w["groups"].get("all") or next(iter(w["groups"].values()), None)  # "all" exists for several groups
            if not g or not g["counts"]["responses"]:
                lines.append(f"| {_t(w['start'])} | 0 (empty) |" + " |" * len(show))
                continue
            cells = [("-" if g["rates"][m]["value"] is None else f"{g['rates'][m]['value']:.3f}") for m in show]
            lines.append(f"| {_t(w['start'])} | {g['counts']['responses']} | " + " | ".join(cells) + " |")
        lines.append("")
    if d.get("examples"):
        lines += [f"## Unsupported claims ({scorer}), first {len(d['examples'])}", ""]
        for x in d["examples"]:
            lines.append(f"- `{x['where']}`: \"{x['claim'][:200]}\" (support {x['support']}, cited {x['cited'] or 'nothing'})")
        lines.append("")
    sk = d["skipped"]
    if sk["count"]:
        lines += [f"## Skipped lines: {sk['count']}", ""]
        lines += [f"- `{w}`: {why}" for w, why in sk["lines"]]
        if sk["count"] > len(sk["lines"]):
            lines.append(f"- ... and {sk['count'] - len(sk['lines'])} more (report.json has the first {len(sk['lines'])})")
        lines.append("")
    if d.get("plots"):
        lines += ["## Trends", ""] + [f"![{p}]({p})" for p in d["plots"]] + [""]
    if d.get("textfile"):
        lines += [f"Prometheus textfile: `{d['textfile']}`", ""]
    return "\n".join(lines)


def golden_markdown(d: dict) -> str:
    lines = [f"# Golden regression `{d['id']}`", "",
             f"- endpoint `{d['endpoint']}` (model `{d['model']}`, {d['api']} API), build `{d['build']}`, "
             f"artifact `{d['artifact']}`",
             f"- golden set `{d['golden']}`: {d['n']} prompts, max {d['max_tokens']} new tokens, temperature 0",
             f"- tolerance {d['tolerance']}: a figure more than this below the build's is a regression", "",
             f"## Verdict: {'regression (exit 5)' if d['regressions'] else 'as built'}", "",
             "| figure | deployed [95% interval] | at build time | change | status |", "|---|---|---|---|---|"]
    for f in d["figures"]:
        lines.append(f"| {f['figure']} | {f['deployed']:.3f} [{f['low']:.3f}, {f['high']:.3f}] | {f['build']:.3f} | "
                     f"{f['deployed'] - f['build']:+.3f} | {f['status']} |")
    lines += ["", "## First answers", "", "| prompt | answer | deployed output |", "|---|---|---|"]
    for x in d["examples"]:
        lines.append(f"| {x['prompt']} | {x['answer']} | {x['output']!r} |")
    return "\n".join(lines) + "\n"
