"""One monitoring pass: read -> sample -> analyse -> rates per group and window -> thresholds -> publish.

`prepare` runs every check the config alone allows (files exist, formats known, the checker loads, the
endpoint answers, the history is a history, the report folder is not inside a build) before anything is
read or written; `publish` writes the report, the history, the plots and the Prometheus textfile, in
that order, and says whether a budget was breached. Follow mode (follow.py) calls the same steps on a
sliding window.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from llmbuild.monitor import metrics, sampling, thresholds
from llmbuild.monitor.builds import build_info
from llmbuild.monitor.config import check_monitor, duration, log_paths
from llmbuild.monitor.extraction import Extractor
from llmbuild.monitor.history import History
from llmbuild.monitor.readers import Defaults, check_files, read_logs
from llmbuild.monitor.report import SCHEMA, ReportDir, free_id, monitor_root

MAX_SKIPPED_LISTED = 50


def say(msg: str) -> None:
    print(f"llmbuild-monitor: {msg}", file=sys.stderr, flush=True)


@dataclass
class Run:
    cfg: object
    paths: list[str]
    defaults: Defaults
    scorer: object
    extractor: Extractor
    history: History
    root: Path
    rid: str
    stream: str
    window_s: float
    build: dict | None


def config_digest(cfg) -> str:
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True) if not isinstance(cfg, dict) else cfg
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()


def prepare(cfg) -> Run:
    from llmbuild.monitor.scorers import make_scorer

    check_monitor(cfg, tuple(metrics.METRICS))
    paths = log_paths(cfg.logs)
    check_files(paths)
    build = build_info(cfg.build) if cfg.build else None
    root = monitor_root(cfg.outputs_dir, build["dir"] if build else None)
    history = History(Path(cfg.history).expanduser() if cfg.history else root / "history.sqlite")
    rid = cfg.id or free_id(root, f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{config_digest(cfg)[:8]}")
    if not cfg.follow and (root / rid).exists():
        from llmbuild.errors import InvalidInput

        raise InvalidInput(f"id: a report {root / rid} exists already; choose another id")
    stream = cfg.name or (build["id"] if build else Path(paths[0]).stem)
    defaults = Defaults(model=cfg.model or (build["model_name"] if build else None),
                        build=build["id"] if build else None, reference_keys=list(cfg.extraction.reference_keys))
    scorer = make_scorer(cfg.scorer)  # loads the checker / asks the endpoint now: bad ones fail before work
    return Run(cfg, paths, defaults, scorer, Extractor(cfg.extraction), history, root, rid, stream,
               duration(cfg.window, "window"), build)


def grouped(analyses: list, confidence: float) -> dict[str, tuple[list, dict]]:
    return {k: (v, metrics.summarize(v, confidence)) for k, v in metrics.by_group(analyses).items()}


def overall(data: dict) -> dict:
    """The summary of all responses: "all" when there are several model/build groups, else the only one."""
    g = data["groups"]
    return g.get("all") or next(iter(g.values()), {})


def examples(analyses: list, limit: int = 10) -> list[dict]:
    out = []
    for a in analyses:
        for d in a.details:
            if not d["supported"]:
                out.append({"where": a.ex.where, **d})
                if len(out) >= limit:
                    return out
    return out


def assemble(run: Run, kind: str, read_stats: list[dict], skipped: list, n_read: int, analyses: list,
             windows: list[tuple[float, float, list]]) -> tuple[dict, dict, list[dict]]:
    """(report data, {group: (analyses, summary)}, threshold results) for these analyses."""
    conf = run.cfg.thresholds.confidence
    groups = grouped(analyses, conf)
    results = thresholds.evaluate({k: s for k, (_, s) in groups.items()}, run.cfg.thresholds)
    data = {
        "schema": SCHEMA, "id": run.rid, "kind": kind, "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "stream": run.stream, "window": run.cfg.window, "window_s": run.window_s,
        "build": {"id": run.build["id"], "dir": str(run.build["dir"])} if run.build else None,
        "logs": read_stats, "skipped": {"count": len(skipped), "lines": skipped[:MAX_SKIPPED_LISTED]},
        "sampling": {"rate": run.cfg.sample_rate, "read": n_read, "scored": len(analyses),
                     "weighted": round(sum(a.ex.weight for a in analyses), 3)},
        "scorer": run.scorer.info,
        "groups": {k: metrics.plain(s) for k, (_, s) in groups.items()},
        "windows": [{"start": s, "end": e, "groups": {k: metrics.plain(metrics.summarize(v, conf))
                                                       for k, v in metrics.by_group(w).items()} if w else {}}
                    for s, e, w in windows],
        "thresholds": {"mode": run.cfg.thresholds.mode, "min_samples": run.cfg.thresholds.min_samples,
                       "confidence": conf, "results": results},
        "breaches": thresholds.breaches(results),
        "empty": not analyses,
        "examples": examples(analyses),
    }
    return data, groups, results


def publish(run: Run, data: dict, windows: list, report: ReportDir, exposition=None, run_id: str | None = None) -> Path:
    """Report, history, plots, textfile; returns the report folder. Follow mode gives each update its run_id."""
    conf = run.cfg.thresholds.confidence
    hist_windows = [(s, e, {k: metrics.summarize(v, conf) for k, v in metrics.by_group(w).items()})
                    for s, e, w in windows if w]
    run.history.publish(run.stream, run_id or run.rid,
                        run.scorer.name, hist_windows, str(report.final), len(data["breaches"]),
                        {"scorer": run.scorer.info, "logs": run.paths})
    if run.cfg.plots:
        from llmbuild.monitor.plots import trend_plots

        data["plots"] = trend_plots(run.history, run.stream, run.scorer.name, report.path)
    if exposition is not None:
        target = Path(run.cfg.textfile).expanduser() if run.cfg.textfile else report.path / "metrics.prom"
        target.parent.mkdir(parents=True, exist_ok=True)
        exposition.write_textfile(target)
        data["textfile"] = str(target) if run.cfg.textfile else target.name
    report.write(data)
    return report.commit()


def run_once(cfg) -> int:
    """`llmbuild-monitor logs=...`: one report over the whole logs; 5 when a budget is breached."""
    from llmbuild.monitor.prometheus import Exposition

    run = prepare(cfg)
    result = read_logs(run.paths, cfg.format, run.defaults)
    for where, why in result.skipped[:5]:
        say(f"warning: {where}: {why}; skipped")
    if len(result.skipped) > 5:
        say(f"warning: {len(result.skipped) - 5} more lines skipped (listed in report.json)")
    kept = sampling.sample(result.exchanges, cfg.sample_rate)
    analyses = metrics.analyze(kept, run.scorer, run.extractor, cfg.extraction.max_citations)
    windows = metrics.by_window(analyses, run.window_s)
    data, _groups, results = assemble(run, "logs", result.files, result.skipped, len(result.exchanges), analyses, windows)
    expo = Exposition()
    # the textfile carries the latest window per model/build: what an alert should look at now
    latest = grouped(windows[-1][2], cfg.thresholds.confidence) if windows else {}
    expo.set_rates(latest, run.scorer.name, results, run.window_s)
    expo.count(analyses, run.scorer.name)
    for f in result.files:
        expo.count_skipped(f["format"], f["skipped"])
    report = ReportDir(run.root, run.rid)
    try:
        folder = publish(run, data, windows, report, expo)
    except BaseException:
        report.abandon()
        raise
    finally:
        run.scorer.close()
    h = (overall(data).get("rates") or {}).get("hallucination_rate") or {}
    hall = "no data" if h.get("value") is None else f"{h['value']:.3f} [{h['low']:.3f}, {h['high']:.3f}]"
    say(f"{len(analyses)} responses scored ({run.scorer.name}); hallucination_rate {hall}; "
        f"{len(result.skipped)} lines skipped; report {folder}")
    if data["breaches"]:
        raise thresholds.ThresholdBreached("; ".join(r["reason"] for r in data["breaches"][:3]) +
                                           (f" (+{len(data['breaches']) - 3} more)" if len(data["breaches"]) > 3 else "")
                                           + f"; see {folder / 'report.md'}")
    return 0
