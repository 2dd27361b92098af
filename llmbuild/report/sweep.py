"""The sweep summary: after a multirun (`llmbuild -m ...`), one table of every build's artifacts with the
Pareto front of size (and of speed) against quality, plots, and the combinations that failed.

A Hydra callback (`SweepSummary`, registered under `hydra.callbacks` in conf/base.yaml) writes it at the
end of every multirun, whichever launcher ran the jobs. Everything here is read from files, so jobs that
ran in other processes or on other machines (joblib, Ray, SLURM) report the same way:
    <sweep>/sweep.json              the jobs the sweep was to run (written when it starts)
    <sweep>/<job>/job.json          written by the worker when the job starts
    <sweep>/<job>/result.json       written by the worker when its build ends: exit code, build folder, error
    <build>/manifest.json, eval.json   the figures of every artifact
A job with job.json but no result.json died (killed, out of memory, lost node) and is listed as failed,
never as built. The module imports nothing from the engine: it reads what builds wrote.
Outputs in the sweep folder: summary.md, summary.csv, summary.json, pareto_size.png, pareto_speed.png.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

PLAN_FILE, JOB_FILE, RESULT_FILE = "sweep.json", "job.json", "result.json"

# (column, header, which way is better): the figures a row carries, in table order; multiple-choice
# columns (acc:<task>) are added per task found in the builds
FIGURES = [
    ("size_mb", "size MB", "low"),
    ("bits_per_weight", "bits/weight", "low"),
    ("kld", "KLD", "low"),
    ("top1", "top-1", "high"),
    ("ppl_ratio", "PPL ratio", "low"),
    ("golden_em", "golden EM", "high"),
    ("gen_tok_s", "gen tok/s", "high"),
    ("prompt_tok_s", "prompt tok/s", "high"),
]
OBJECTIVE_FIGURES = [f for f, _, _ in FIGURES]

_STATUS = {0: "built", 1: "failed (bug)", 2: "invalid input", 3: "license violation", 4: "gate failed",
           130: "interrupted"}


# -- the jobs of a sweep -----------------------------------------------------------------------------
def combinations(overrides: list[str]) -> list[list[str]]:
    """Every combination a basic sweep (-m) runs, in the order Hydra's BasicSweeper numbers its jobs."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = []
    for o in parsed:
        if o.is_sweep_override():
            key = o.get_key_element()
            if o.is_interval_sweep():  # a search's continuous range: its ends stand for it
                v = o.value()
                choices.append([f"{key}={v.start}", f"{key}={v.end}"])
                continue
            choices.append([f"{key}={v}" for v in o.sweep_string_iterator()])
        else:
            choices.append([o.input_line])
    return [list(c) for c in itertools.product(*choices)]


def is_search(sweeper_target: str | None) -> bool:
    """A search (Optuna, Ax, Nevergrad) picks its own trials, where the basic sweeper runs every combination."""
    return bool(sweeper_target) and not str(sweeper_target).endswith("BasicSweeper")


def write_job_result(job_dir: Path, result: dict) -> None:
    """The worker's report on its job (exit code, build folder, error line), written atomically."""
    job_dir.mkdir(parents=True, exist_ok=True)
    tmp = job_dir / f".{RESULT_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps({**result, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                               "host": socket.gethostname(), "pid": os.getpid()}, indent=1))
    os.replace(tmp, job_dir / RESULT_FILE)


@dataclass
class Job:
    num: int
    overrides: list[str]
    exit_code: int | None = None  # None: no result came back
    status: str = ""
    error: str | None = None
    build_dir: str | None = None
    objective: float | None = None
    started: bool = False
    host: str | None = None

    @property
    def built(self) -> bool:
        return self.exit_code == 0


def read_jobs(sweep_dir: Path) -> list[Job]:
    """Every job of the sweep: those planned (sweep.json) and those that reported (job.json, result.json)."""
    sweep_dir = Path(sweep_dir)
    plan = _read_json(sweep_dir / PLAN_FILE) or {}
    jobs: dict[int, Job] = {i: Job(i, o) for i, o in enumerate(plan.get("jobs") or [])}
    for d in sorted(p for p in sweep_dir.iterdir() if p.is_dir()) if sweep_dir.is_dir() else []:
        start, result = _read_json(d / JOB_FILE), _read_json(d / RESULT_FILE)
        if not (start or result):
            continue
        num = int((result or start).get("num", d.name if d.name.isdigit() else -1))
        job = jobs.setdefault(num, Job(num, list((result or start).get("overrides") or [])))
        job.started = True
        job.overrides = list((result or start).get("overrides") or job.overrides)
        job.host = (result or start).get("host")
        if result:
            job.exit_code = int(result["exit_code"])
            job.error, job.build_dir, job.objective = result.get("error"), result.get("build_dir"), result.get(
                "objective")
    for job in jobs.values():
        if job.exit_code is None:
            job.status = "died"
            job.error = (f"the worker{' on ' + job.host if job.host else ''} died before its build reported a "
                         f"result (killed, out of memory or lost)" if job.started else
                         "never started: the launcher stopped before running it")
        else:
            job.status = _STATUS.get(job.exit_code, f"failed (exit {job.exit_code})")
    return [jobs[k] for k in sorted(jobs)]


def exit_code(jobs: list[Job], search: bool = False) -> int:
    """0 when every job built; else the failures' code as a single build would exit (1 for a dead worker).
    In a search a gate failure is an infeasible trial, so it fails the sweep only when no trial built."""
    codes = [1 if j.exit_code is None else j.exit_code for j in jobs]
    if not codes:
        return 1
    if search and 0 in codes:
        codes = [c for c in codes if c != 4]
    bad = [c for c in codes if c != 0]
    if not bad:
        return 0
    return max(bad) if all(c in (2, 3, 4) for c in bad) else 1


# -- figures from a build folder -----------------------------------------------------------------------
def artifact_rows(build_dir: Path) -> list[dict]:
    """One row per artifact of a build, from its manifest.json (figures) and eval.json when present."""
    m = _read_json(Path(build_dir) / "manifest.json")
    if not m:
        return []
    ev = (_read_json(Path(build_dir) / "eval.json") or {}).get("artifacts", {})
    rows = []
    for a in m.get("artifacts") or []:
        e = a.get("evaluation") or ev.get(a["target"]) or {}
        v = (a.get("verification") or {})
        vm = v.get("metrics") or {}
        parity, speed = e.get("parity") or {}, e.get("speed") or {}
        size = sum(f.get("size", 0) for f in a.get("files") or [] if not _is_license_file(f.get("path", "")))
        row = {
            "target": a["target"], "backend": a.get("backend"), "precision": a.get("precision"),
            "size_mb": round(size / 1e6, 4) if size else None,
            "bits_per_weight": (a.get("export") or {}).get("bits_per_weight"),
            # the evaluation's parity text when it ran, else the verification probes
            "kld": parity.get("kld_mean", vm.get("kld_mean")),
            "top1": parity.get("top1", vm.get("top1")),
            "ppl_ratio": parity.get("ppl_ratio"),
            "golden_em": (e.get("golden") or {}).get("exact_match"),
            "gen_tok_s": speed.get("gen_tokens_per_s"),
            "prompt_tok_s": speed.get("prompt_tokens_per_s"),
            "verification": v.get("status", "not run"),
            "evaluation": e.get("status"),
            # what the front may hold: an artifact whose verification and evaluation gates all passed
            "gates": ("failed" if "failed" in (v.get("status"), e.get("status")) else
                      "passed" if v.get("status") == "passed" else v.get("status", "not run")),
            "artifact": (a.get("export") or {}).get("outputs_digest"),
        }
        for task, t in (e.get("tasks") or {}).items():
            row[f"acc:{task}"] = t.get("acc")
        rows.append(row)
    return rows


def _is_license_file(path: str) -> bool:
    return Path(path).name.startswith(("LICENSE", "NOTICE", "USE_POLICY"))


def pareto_front(rows: list[dict], x: str, x_better: str, y: str, y_better: str) -> set[int]:
    """Indices of the rows no other row beats on both figures (ties on both keep all)."""
    pts = [(i, r[x], r[y]) for i, r in enumerate(rows) if _num(r.get(x)) and _num(r.get(y))]

    def better_eq(a, b, way):
        return a <= b if way == "low" else a >= b

    def strictly(a, b, way):
        return a < b if way == "low" else a > b

    front = set()
    for i, xi, yi in pts:
        dominated = any(better_eq(xj, xi, x_better) and better_eq(yj, yi, y_better)
                        and (strictly(xj, xi, x_better) or strictly(yj, yi, y_better)) for _, xj, yj in pts)
        if not dominated:
            front.add(i)
    return front


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def objective(build_dir: Path, spec: str) -> float:
    """A search's objective from a build's figures: `figure` (summed for size, else the one artifact's) or
    `target.figure`. Raises ValueError when the build has no such figure."""
    rows = artifact_rows(build_dir)
    target, _, figure = spec.rpartition(".")
    if target:
        rows = [r for r in rows if r["target"] == target]
    values = [r.get(figure) for r in rows]
    if not values or not all(_num(v) for v in values):
        raise ValueError(f"build {build_dir} has no {spec} figure")
    if figure in ("size_mb",):
        return float(sum(values))
    if len(values) > 1:
        raise ValueError(f"{spec}: {len(values)} artifacts have it; name one as TARGET.{figure}")
    return float(values[0])


def check_objective(spec: str, target_names: list[str]) -> str | None:
    """Why `build.objective` cannot be computed for these targets, or None."""
    target, _, figure = spec.rpartition(".")
    if figure not in OBJECTIVE_FIGURES:
        return f"unknown figure {figure!r}; one of: {', '.join(OBJECTIVE_FIGURES)}"
    if target and target not in target_names:
        return f"no target {target!r} (targets: {', '.join(target_names)})"
    if not target and figure != "size_mb" and len(target_names) > 1:
        return f"{figure} differs per target: name one as TARGET.{figure} (targets: {', '.join(target_names)})"
    return None


# -- the summary -------------------------------------------------------------------------------------
def write_summary(sweep_dir: Path) -> dict:
    """Write summary.md, summary.csv, summary.json and the plots; return what summary.json holds."""
    sweep_dir = Path(sweep_dir)
    plan = _read_json(sweep_dir / PLAN_FILE) or {}
    jobs = read_jobs(sweep_dir)
    varying = _varying_keys([j.overrides for j in jobs])
    rows: list[dict] = []
    seen: dict[str, int] = {}
    for j in jobs:
        if not j.build_dir or not Path(j.build_dir, "manifest.json").exists():
            continue
        for r in artifact_rows(Path(j.build_dir)):
            r = {"job": j.num, "overrides": _shown(j.overrides, varying), "build_status": j.status, **r,
                 "build": _rel(Path(j.build_dir), sweep_dir),
                 "manifest": _rel(Path(j.build_dir) / "manifest.json", sweep_dir)}
            # one artifact shared by several builds (a target the sweep did not vary) is one point
            r["same_as"] = seen.setdefault(r["artifact"], len(rows)) if r["artifact"] else len(rows)
            rows.append(r)
    # the fronts hold what could ship: each artifact once, where its gates passed (one artifact can pass one
    # build's gates and fail another's tighter ones)
    passing: dict[Any, int] = {}
    for i, r in enumerate(rows):
        if r["gates"] == "passed":
            passing.setdefault(r["artifact"] or i, i)
    points = [rows[i] for i in passing.values()]
    quality, q_better = ("kld", "low") if any(_num(r.get("kld")) for r in rows) else ("top1", "high")
    size_front = pareto_front(points, "size_mb", "low", quality, q_better)
    speed_front = pareto_front(points, "gen_tok_s", "high", quality, q_better)
    for i, r in enumerate(points):
        r["pareto_size"], r["pareto_speed"] = i in size_front, i in speed_front
    for i, r in enumerate(rows):
        point = rows[passing[r["artifact"] or i]] if (r["artifact"] or i) in passing else {}
        r.setdefault("pareto_size", point.get("pareto_size", False) and r["gates"] == "passed")
        r.setdefault("pareto_speed", point.get("pareto_speed", False) and r["gates"] == "passed")
    never_passed = [r for i, r in enumerate(rows) if r["same_as"] == i and (r["artifact"] or i) not in passing]
    tasks = sorted({k for r in rows for k in r if k.startswith("acc:")})
    search = is_search(plan.get("sweeper"))
    code = exit_code(jobs, search)
    infeasible = [j for j in jobs if search and j.exit_code == 4 and code == 0]
    failed = [j for j in jobs if j.exit_code != 0 and j not in infeasible]
    plots = _plots(sweep_dir, rows, points, never_passed, quality)
    summary = {
        "schema_version": 1, "sweep_dir": str(sweep_dir), "sweeper": plan.get("sweeper"),
        "direction": plan.get("direction"), "objective": plan.get("objective"),
        "launcher": plan.get("launcher"), "quality": quality, "exit_code": code,
        "jobs": [j.__dict__ for j in jobs], "rows": rows, "plots": plots,
        "built": sum(j.built for j in jobs), "failed": len(failed), "infeasible": [j.num for j in infeasible],
    }
    (sweep_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    (sweep_dir / "summary.csv").write_text(_csv(rows, tasks))
    (sweep_dir / "summary.md").write_text(_markdown(summary, jobs, rows, tasks, failed, infeasible, quality, plots,
                                                     search))
    return summary


def _varying_keys(overrides: list[list[str]]) -> set[str]:
    values: dict[str, set] = {}
    for ov in overrides:
        for o in ov:
            k, _, v = o.partition("=")
            values.setdefault(k, set()).add(v)
    for ov in overrides:  # a key missing from some jobs varies too
        keys = {o.partition("=")[0] for o in ov}
        for k in values:
            if k not in keys:
                values[k].add(None)
    return {k for k, v in values.items() if len(v) > 1}


def _shown(overrides: list[str], varying: set[str]) -> str:
    shown = [o for o in overrides if o.partition("=")[0] in varying]
    return " ".join(shown) if shown else "(no overrides vary)"


def _rel(p: Path, base: Path) -> str:
    try:
        return os.path.relpath(p.resolve(), base.resolve())
    except ValueError:  # another drive
        return str(p)


def _fmt(v, col: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, float):
        if col == "kld":
            return f"{v:.2e}"
        if col in ("gen_tok_s", "prompt_tok_s"):
            return f"{v:.0f}"
        if col == "size_mb":
            return f"{v:.3f}" if v < 10 else f"{v:.1f}"
        return f"{v:.4g}"
    return str(v)


def _columns(tasks: list[str]) -> list[tuple[str, str]]:
    cols = [("job", "job"), ("overrides", "overrides"), ("target", "target"), ("precision", "precision")]
    cols += [(f, h) for f, h, _ in FIGURES]
    cols += [(t, f"{t.split(':', 1)[1]} acc") for t in tasks]
    return cols + [("gates", "gates"), ("pareto_size", "front (size)"), ("pareto_speed", "front (speed)"),
                   ("same_as_job", "same artifact as")]


def _markdown(summary, jobs, rows, tasks, failed, infeasible, quality, plots, search) -> str:
    q = {"kld": "mean KL divergence (lower is better)", "top1": "top-1 agreement (higher is better)"}[quality]
    out = [f"# Sweep summary: {summary['built']} of {len(jobs)} builds built, {summary['failed']} failed",
           "",
           f"Sweeper: `{_short(summary['sweeper'])}`, launcher: `{_short(summary['launcher'])}`, exit code "
           f"{summary['exit_code']}. Quality is the {q} against the source model; an artifact that passed its "
           f"gates is on the size front when no other such artifact is both smaller and better, on the speed "
           f"front when none is both faster and better (tokens/s generated). An artifact several builds share is one "
           f"point; its repeats name the job that has it first (`same artifact as`).",
           ""]
    cols = _columns(tasks)
    out.append("| " + " | ".join(h for _, h in cols) + " | build | manifest |")
    out.append("|" + "---|" * (len(cols) + 2))
    for i, r in enumerate(rows):
        cells = [_fmt(r.get(c), c) for c, _ in cols]
        cells[-1] = f"job {rows[r['same_as']]['job']}" if r["same_as"] != i else ""
        if r["pareto_size"] or r["pareto_speed"]:
            cells[2] = f"**{cells[2]}**"
        out.append("| " + " | ".join(cells) + f" | [build]({r['build']}) | [manifest]({r['manifest']}) |")
    if not rows:
        out.append("| " + " | ".join("-" for _ in cols) + " | - | - |")
    varying = _varying_keys([j.overrides for j in jobs])
    for title, listed in (("Failed", failed), ("Infeasible (a gate failed: the search's constraint)", infeasible)):
        if not listed:
            continue
        out += ["", f"## {title}", "", "| job | overrides | exit code | status | reason | build |",
                "|---|---|---|---|---|---|"]
        for j in listed:
            link = f"[build]({_rel(Path(j.build_dir), Path(summary['sweep_dir']))})" if (
                j.build_dir and Path(j.build_dir).exists()) else "-"
            reason = (j.error or "").replace("|", "\\|")
            out.append(f"| {j.num} | {_shown(j.overrides, varying)} | {_fmt(j.exit_code)} | {j.status} | {reason} | "
                       f"{link} |")
    if search:
        out += ["", "## Search", ""]
        scored = [j for j in jobs if _num(j.objective)]
        if scored:
            pick = max if str(summary.get("direction", "minimize")).endswith("maximize") else min
            best = pick(scored, key=lambda j: j.objective)
            out.append(f"Best feasible trial: job {best.num} ({_shown(best.overrides, _varying_keys([j.overrides for j in jobs]))}), "
                       f"objective `{summary.get('objective')}` = {best.objective:.6g} ({summary.get('direction')}). "
                       f"{len(jobs) - len(scored)} trial(s) infeasible or failed (a failed gate scores "
                       f"{'-inf' if pick is max else 'inf'}). Optuna's own record: `optimization_results.yaml`.")
        else:
            out.append("No trial built: the search found no feasible point.")
    if plots:
        out += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(out) + "\n"


def _short(target: str | None) -> str:
    """hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher -> JoblibLauncher"""
    return str(target).rsplit(".", 1)[-1] if target else "BasicSweeper"


def _csv(rows: list[dict], tasks: list[str]) -> str:
    cols = ["job", "overrides", "build_status", "target", "backend", "precision", *[f for f, _, _ in FIGURES],
            *tasks, "verification", "evaluation", "gates", "pareto_size", "pareto_speed", "same_as", "build",
            "manifest"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in cols})
    return buf.getvalue()


def _plots(sweep_dir: Path, rows: list[dict], points: list[dict], failed: list[dict], quality: str) -> list[str]:
    """size vs quality and speed vs quality: the front drawn as a line and labelled, the other passing
    artifacts as dots, those that failed a gate as crosses; [] when nothing to plot."""
    made = []
    several_jobs = len({r["job"] for r in rows}) > 1

    def label(r):
        name = r["target"] if str(r["precision"]) in r["target"] else f"{r['target']} {r['precision']}"
        return f"{name} (job {r['job']})" if several_jobs else name

    for name, x, x_label, x_better, front_key in (
            ("pareto_size.png", "size_mb", "size (MB)", "low", "pareto_size"),
            ("pareto_speed.png", "gen_tok_s", "generated tokens/s", "high", "pareto_speed")):
        pts = [r for r in points + failed if _num(r.get(x)) and _num(r.get(quality))]
        if not pts:
            continue
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
        on = sorted((r for r in pts if r in points and r[front_key]), key=lambda r: r[x])
        off = [r for r in pts if r in points and not r[front_key]]
        bad = [r for r in pts if r not in points]
        ax.scatter([r[x] for r in off], [r[quality] for r in off], c="#999999", label="artifact", zorder=2)
        ax.scatter([r[x] for r in bad], [r[quality] for r in bad], c="#999999", marker="x",
                   label="a gate failed", zorder=2)
        ax.plot([r[x] for r in on], [r[quality] for r in on], "o-", c="#d62728", label="Pareto front", zorder=3)
        for r in on:  # the front is labelled; every point is in summary.md
            ax.annotate(label(r), (r[x], r[quality]), fontsize=7, xytext=(4, 2), textcoords="offset points")
        if quality == "kld" and all(r[quality] > 0 for r in pts):
            ax.set_yscale("log")
        xs = [r[x] for r in pts]
        if min(xs) > 0 and max(xs) / min(xs) > 4:  # sizes from Q2_K to fp32 spread over a decade
            ax.set_xscale("log")
        ax.set_xlabel(x_label + (" (lower is better)" if x_better == "low" else " (higher is better)"))
        ax.set_ylabel({"kld": "mean KL divergence vs source (lower is better)",
                       "top1": "top-1 agreement vs source (higher is better)"}[quality])
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(sweep_dir / name)
        plt.close(fig)
        made.append(name)
    return made


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


# -- the Hydra callback ----------------------------------------------------------------------------------
@dataclass
class SweepSummary(Callback):
    """Registered in conf/base.yaml (hydra.callbacks.sweep_summary). Hydra pickles callbacks to remote
    workers with the job, so this holds no state beyond its settings."""

    print_table: bool = True  # one line per failed job on stderr after the sweep; the files hold everything

    def on_multirun_start(self, config, **kwargs) -> None:
        from omegaconf import OmegaConf

        h = config.hydra
        sweep_dir = Path(str(h.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        sweeper = str(OmegaConf.select(h, "sweeper._target_", default="") or "")
        plan = {"sweeper": sweeper, "launcher": str(OmegaConf.select(h, "launcher._target_", default="") or ""),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "overrides": list(h.overrides.task)}
        if not is_search(sweeper):
            plan["jobs"] = combinations(list(h.overrides.task))
        else:
            plan["n_trials"] = OmegaConf.select(h, "sweeper.n_trials", default=None)
            plan["direction"] = str(OmegaConf.select(h, "sweeper.direction", default="minimize"))
            plan["objective"] = OmegaConf.select(config, "build.objective", default=None)
        (sweep_dir / PLAN_FILE).write_text(json.dumps(plan, indent=1))

    def on_job_start(self, config, **kwargs) -> None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        if hc.mode != RunMode.MULTIRUN:
            return
        d = Path(hc.runtime.output_dir)
        d.mkdir(parents=True, exist_ok=True)
        (d / JOB_FILE).write_text(json.dumps({"num": hc.job.num, "overrides": list(hc.overrides.task),
                                              "host": socket.gethostname(), "pid": os.getpid(),
                                              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=1))

    def on_multirun_end(self, config, **kwargs) -> None:
        s = write_summary(Path(str(config.hydra.sweep.dir)))
        if self.print_table:
            print_summary(s, file=sys.stderr)


def print_summary(s: dict, file=sys.stderr) -> None:
    sweep_dir = Path(s["sweep_dir"])
    print(f"sweep: {s['built']} built, {s['failed']} failed; summary: {sweep_dir / 'summary.md'}", file=file)
    for j in s["jobs"]:
        if j["exit_code"] != 0:
            what = "infeasible" if j["num"] in s.get("infeasible", []) else j["status"]
            print(f"  job {j['num']} {what} (exit {j['exit_code']}): {j['error']}", file=file)
