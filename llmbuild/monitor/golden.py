"""`llmbuild-monitor golden endpoint=URL build=DIR`: the build's golden set through the deployed server.

Each golden prompt is sent as the build asked it (a chat message when the build's golden prompts went
through a chat template, else a plain completion), greedy (temperature 0, and no repetition penalty:
llama-cpp-python's server applies 1.1 unless told otherwise) with the build's `golden_max_new_tokens`,
and scored with the build's own figures (llmbuild.evaluation.metrics.golden_scores: exact match, token
F1, contains). A figure more than `tolerance` below the artifact's figure in eval.json is
a regression: the report is written, then exit 5. The deployed figures carry Wilson intervals (the
build's do not: they are one fixed run), so a reader sees how much a small golden set can say.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from llmbuild.errors import InvalidInput
from llmbuild.evaluation.data import read_golden
from llmbuild.evaluation.metrics import golden_scores, normalize, token_f1
from llmbuild.monitor import endpoints
from llmbuild.monitor.builds import build_info
from llmbuild.monitor.intervals import estimate
from llmbuild.monitor.report import ReportDir, free_id, monitor_root
from llmbuild.monitor.thresholds import ThresholdBreached

PROJECT = Path(__file__).resolve().parents[2]


def _golden_file(value: str, key: str) -> Path:
    p = Path(value).expanduser()
    for cand in (p, Path.cwd() / p, PROJECT / p):
        if cand.is_file():
            return cand
    raise InvalidInput(f"{key}: {value} not found (looked here and in the llmbuild checkout); set golden=PATH")


def _artifact(cfg, info: dict, figures: dict, served: list[str]) -> str:
    if cfg.artifact != "auto":
        if cfg.artifact not in figures:
            raise InvalidInput(f"artifact: {cfg.artifact!r} has no golden figures in eval.json; "
                               f"known: {', '.join(figures) or 'none'}")
        return cfg.artifact
    if len(figures) == 1:
        return next(iter(figures))
    names = {Path(s).name for s in served}
    for a in info["artifacts"]:
        if a.get("target") in figures and (a.get("export") or {}).get("file") in names:
            return a["target"]
    raise InvalidInput(f"artifact: say which artifact the endpoint serves ({', '.join(figures)}); the served model "
                       f"{', '.join(served) or '?'} matches none of their files")


def _uses_chat(info: dict, target: str, settings: dict) -> bool:
    how = settings.get("golden_prompt", "auto")
    if how in ("chat", "plain"):
        return how == "chat"
    folder = info["dir"] / "artifacts" / target
    for g in folder.glob("*.gguf"):
        from gguf import GGUFReader

        return "tokenizer.chat_template" in GGUFReader(str(g)).fields
    tc = folder / "tokenizer_config.json"
    if tc.is_file():
        import json

        return bool(json.loads(tc.read_text(encoding="utf-8")).get("chat_template"))
    return False


async def _ask_all(cfg, model: str, prompts: list[str], chat: bool, max_tokens: int) -> list[str]:
    import aiohttp

    url = endpoints.api_base(cfg.endpoint) + ("/chat/completions" if chat else "/completions")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=cfg.timeout_s)) as session:
        out = []
        for p in prompts:  # one at a time: the server's answer must not depend on its batching
            payload = {**dict(cfg.extra_body), "model": model, "temperature": 0, "top_p": 1, "seed": 0,
                       "max_tokens": max_tokens}
            payload |= {"messages": [{"role": "user", "content": p}]} if chat else {"prompt": p}
            try:
                body = await endpoints.post_json(session, url, payload)
            except (TimeoutError, aiohttp.ClientError, RuntimeError, ValueError) as e:
                raise InvalidInput(f"endpoint: {cfg.endpoint} failed on a golden prompt ({type(e).__name__}: "
                                   f"{str(e)[:160]})") from None
            ch = (body.get("choices") or [{}])[0]
            out.append((ch.get("message") or {}).get("content") or "" if chat else ch.get("text") or "")
        return out


def run_golden(cfg) -> int:
    info = build_info(cfg.build)
    ev = info["eval"]
    if not ev:
        raise InvalidInput(f"build: {info['dir']} has no eval.json; build with eval.golden set")
    figures = {n: a["golden"] for n, a in (ev.get("artifacts") or {}).items()
               if isinstance(a.get("golden"), dict) and "exact_match" in a["golden"]}
    if not figures:
        raise InvalidInput(f"build: {info['dir']}/eval.json has no golden figures (the build's eval.golden was not set)")
    settings = ev.get("settings") or {}
    gpath = _golden_file(cfg.golden or settings.get("golden") or "", "golden")
    gold = read_golden(gpath, "golden")
    root = monitor_root(cfg.outputs_dir, info["dir"])
    rid = cfg.id or free_id(root, f"golden-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    report = ReportDir(root, rid)  # refuses an existing id before any request is sent
    try:
        served = endpoints.models(cfg.endpoint, "endpoint", timeout_s=min(cfg.timeout_s, 30))
        target = _artifact(cfg, info, figures, served)
        chat = cfg.api == "chat" if cfg.api != "auto" else _uses_chat(info, target, settings)
        max_tokens = cfg.max_tokens or int(settings.get("golden_max_new_tokens") or 16)
        model = cfg.model or (served[0] if served else "default")
        outputs = asyncio.run(_ask_all(cfg, model, [g["prompt"] for g in gold], chat, max_tokens))
    except BaseException:
        report.abandon()
        raise
    answers = [g["answer"] for g in gold]
    scores = golden_scores(outputs, answers)
    per_item = {"exact_match": [float(o.strip() == a.strip()) for o, a in zip(outputs, answers)],
                "token_f1": [token_f1(o, a) for o, a in zip(outputs, answers)],
                "contains": [float(bool(normalize(a)) and normalize(a) in normalize(o)) for o, a in zip(outputs, answers)]}
    rows, regressions = [], []
    for f in cfg.figures:
        built = float(figures[target][f])
        e = estimate([(x, 1.0, 1.0) for x in per_item[f]])
        status = "regression" if scores[f] < built - cfg.tolerance else "ok"
        row = {"figure": f, "deployed": scores[f], "low": e.low, "high": e.high, "build": built, "status": status}
        rows.append(row)
        if status == "regression":
            regressions.append(row)
    data = {"schema": "llmbuild-monitor-golden/1", "kind": "golden", "id": rid,
            "created": datetime.now(UTC).isoformat(timespec="seconds"), "endpoint": cfg.endpoint,
            "model": model, "api": "chat" if chat else "completions", "build": info["id"], "build_dir": str(info["dir"]),
            "artifact": target, "golden": str(gpath), "n": len(gold), "max_tokens": max_tokens,
            "tolerance": cfg.tolerance, "figures": rows, "regressions": regressions,
            "examples": [{"prompt": g["prompt"], "answer": g["answer"], "output": o.strip()}
                         for g, o in list(zip(gold, outputs))[:10]]}
    report.write(data)
    folder = report.commit()
    line = ", ".join(f"{r['figure']} {r['deployed']:.3f} (build {r['build']:.3f})" for r in rows)
    print(f"llmbuild-monitor: golden {len(gold)} prompts via {cfg.endpoint}: {line}; report {folder}", flush=True)
    if regressions:
        raise ThresholdBreached("golden regression: " + "; ".join(
            f"{r['figure']} {r['deployed']:.3f} is more than {cfg.tolerance} below the build's {r['build']:.3f}"
            for r in regressions) + f" ({target}); see {folder / 'report.md'}")
    return 0
