"""What `build.dry_run=true` prints: every planned stage with its key and whether it is cached, and what
each target will produce, from the rows the engine's dry run recorded (llmbuild/engine.py `dry_run`).

One line per stage, in run order, `[stage] status (key KEY): what it does`:
- cached: the cache holds a sound entry under the key (the build reuses it);
- would run: the key is known and the cache has no entry for it;
- checked: a stage with no cache entry that every build runs because it is cheap (a local checkpoint
  hashed through the stat cache, the license gate), run here as the build would run it;
- would download: the Hub snapshot is not in the Hub cache (the line says what the build would fetch);
- depends on an earlier stage (NAME): the key needs NAME's output, which only running NAME gives;
- skipped: its runtime is not installed (the artifact is built but UNVERIFIED).
An export line is followed by what it will write (or, cached, what it holds), its precision and the
runtime that verifies it.
"""

from __future__ import annotations

from llmbuild import __version__


def lines(build) -> list[str]:
    """The plan as the console shows it (`build` is the engine's Build after its dry run)."""
    plan, rows = build.plan, {r["stage"]: r for r in build.stages}
    out = [f"llmbuild {__version__}: dry run of recipe {build.bc.recipe}: the plan, nothing is built or written"]
    counts: dict[str, int] = {}
    for st in plan:
        r = rows[st.name]
        status = r["status"]
        counts[status] = counts.get(status, 0) + 1
        what = {"depends on an earlier stage": f"depends on an earlier stage ({r.get('after')})"}.get(status, status)
        key = f" (key {r['key'][:12]})" if r.get("key") else ""
        note = (r.get("reason") if status in ("would download", "skipped") else None) or build.notes.get(st.name) or (
            "" if st.role == "export" else st.summary)
        out.append(f"[{st.name}] {what}{key}" + (f": {note}" if note else ""))
        if st.role == "export":
            out.append(f"    {_produces(build, st)}")
    out.append(f"[document] {', '.join(plan.documents)}: written by every build from what the stages recorded")
    order = ("cached", "checked", "would run", "would download", "depends on an earlier stage", "skipped")
    plural = {"depends on an earlier stage": "depend on an earlier stage"}
    out.append(f"{len(plan)} stages: " + ", ".join(f"{counts[s]} {plural.get(s, s) if counts[s] > 1 else s}"
                                                   for s in order if counts.get(s))
               + " (a key that depends on an earlier stage is known once that stage has run)")
    return out


def _produces(build, st) -> str:
    """What an export writes: the files the cache holds when it is cached, else the backend's plan."""
    out = build.outputs.get(st.name)
    if out is None:
        return f"produces {st.summary}"
    files = sorted(out.record.get("out_files") or {})
    shown = ", ".join(files[:6]) + (f" (+{len(files) - 6} more)" if len(files) > 6 else "")
    return f"holds {shown}; {st.summary.split('; ')[-1]}"
