"""Document: the model card (README.md), eval.json, manifest.json and the license files at the build root.

Everything here is rendered from the typed build result (llmbuild/result.py: the acquire record,
each artifact's export, verification and evaluation records with the notes and "get started" lines
its backend gave, the license decision), never from what the recipe hoped: an artifact that was not
verified says so, with the reason. Nothing here imports the engine or asks a backend. The card is a
Hugging Face model card (`huggingface_hub.ModelCard`, YAML front matter + the standard sections) that
`ModelCard.load` reads back.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

from llmbuild import __version__
from llmbuild.cache import link_tree
from llmbuild.hashing import sha256_file
from llmbuild.plain import plain
from llmbuild.result import BuildResult


def link_tree_file(src: Path, dst: Path) -> None:
    import os
    import shutil

    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)

def _sig(value, digits: int = 6) -> float:
    """A metric value to `digits` significant digits: a KL divergence of 3e-9 stays 3e-09 (YAML prints it in
    scientific notation), where rounding to decimals would print 0.0."""
    return float(f"{float(value):.{digits}g}")


_CUTOFF = re.compile(r"(knowledge cut-?off|training data cut-?off|data freshness)[^\n]{0,120}", re.I)


def write_all(build: BuildResult) -> None:
    d: Path = build.dir
    if build.license_decision is not None:
        for fname, data in build.license_files.items():
            (d / fname).write_bytes(data)
    if build.finetune_dir is not None:
        # the fine-tuning evidence travels with the build: loss plot and the adapter beside the card
        for name in ("loss.png",):
            if (build.finetune_dir / name).exists():
                link_tree_file(build.finetune_dir / name, d / name)
        adapter = build.finetune.get("adapter_dir")
        if adapter and (build.finetune_dir / adapter).is_dir():
            link_tree(build.finetune_dir / adapter, d / "adapter")
            name_adapter_base(d / "adapter", adapter_base(build))
    if build.model is not None:
        (d / "README.md").write_text(model_card(build), encoding="utf-8")
        for a in build.artifacts:
            folder = d / "artifacts" / a.target
            if a.hub_repo and a.export is not None and folder.is_dir():
                # the folder is a Hub repository: its card is its README.md (a new file, not a cache link)
                (folder / "README.md").unlink(missing_ok=True)
                (folder / "README.md").write_text(model_card(build, only=a.target), encoding="utf-8")
    from llmbuild.report import bom, serving

    serving.write(build, d)
    if build.model is not None:
        bom.write(build, d)
    evaluation = eval_json(build)
    if evaluation is not None:
        (d / "eval.json").write_text(json.dumps(evaluation, indent=2, default=str))
    manifest = build_manifest(build)
    tmp = d / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, default=str))
    tmp.replace(d / "manifest.json")


def adapter_base(build: BuildResult) -> str | None:
    """Where AutoPeftModelForCausalLM finds the adapter's base model: the Hub id for a Hub source, else the
    local folder the build read it from (model.path, or for a model made from a seed the acquire stage's
    output in the cache)."""
    if build.repo_id:
        return build.repo_id
    base = build.base_model or build.model
    return str(Path(base.dir).resolve()) if base is not None else None


def name_adapter_base(adapter_dir: Path, base: str | None) -> None:
    """Set adapter_config.json's base_model_name_or_path in the build's copy. The cached adapter keeps null
    (its bytes must not depend on where this build's inputs live); the build's file is replaced, not written
    through its hard link into the cache."""
    cfg_file = adapter_dir / "adapter_config.json"
    if not cfg_file.is_file() or base is None:
        return
    cfg = json.loads(cfg_file.read_text())
    cfg["base_model_name_or_path"] = base
    cfg_file.unlink()
    cfg_file.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def _artifact_rows(build: BuildResult) -> list[dict]:
    rows = []
    for a in build.artifacts:
        size = sum(f["size"] for f in a.files.values())
        exp = a.export or {}
        rows.append({"name": a.target, "backend": a.backend, "precision": a.precision, "quantized": a.quantized,
                     "size": size, "bpw": exp.get("bits_per_weight"), "files": sorted(a.files),
                     "verification": a.verification or {"status": "not run"}, "evaluation": a.evaluation or {},
                     "export": exp, "notes": "; ".join(a.notes), "usage": a.usage, "library": a.library,
                     "client": a.client or {}, "hub_repo": a.hub_repo})
    return rows


def eval_json(build: BuildResult) -> dict | None:
    """eval.json: the source model's figures and every artifact's, with the settings that made them."""
    arts = [a for a in build.artifacts if a.evaluation]
    if build.eval_source is None and not arts:
        return None
    source = {k: v for k, v in (build.eval_source or {}).items()
              if k not in ("outputs_digest", "kind", "key", "created", "out_files")}
    return {"schema_version": 1, "settings": build.eval_settings, "source": source,
            "contamination": build.contamination,
            "artifacts": {a.target: {"backend": a.backend, "precision": a.precision,
                                     "size": sum(f["size"] for f in a.files.values()),
                                     "bits_per_weight": (a.export or {}).get("bits_per_weight"),
                                     **a.evaluation, **({"client": a.client} if a.client else {})} for a in arts}}


def _eval_results(name: str, ev: dict, EvalResult, client: dict | None = None) -> list:
    """model-index entries for one artifact's evaluation."""
    out = []

    def add(dataset_type, dataset_name, metric, value, label):
        out.append(EvalResult(task_type="text-generation", dataset_type=dataset_type, dataset_name=dataset_name,
                              dataset_config=name, metric_type=metric, metric_value=_sig(value),
                              metric_name=f"{name} {label}"))

    if p := ev.get("parity"):
        ds = f"parity text {p['text']} vs source model"
        add("llmbuild-parity-text", ds, "kl_divergence", p["kld_mean"], "text mean KL divergence")
        add("llmbuild-parity-text", ds, "kl_divergence_p99", p["kld_p99"], "text p99 KL divergence")
        add("llmbuild-parity-text", ds, "top1_agreement", p["top1"], "text top-1 agreement")
        add("llmbuild-parity-text", ds, "perplexity_ratio", p["ppl_ratio"], "text perplexity ratio")
    if p := ev.get("perplexity"):
        add("llmbuild-heldout-text", f"held-out text {p['text']}", "perplexity", p["ppl"], "held-out perplexity")
    for task, t in (ev.get("tasks") or {}).items():
        ds = f"{task} ({t['format']} format)"
        add(task, ds, "acc", t["acc"], f"{task} acc")
        add(task, ds, "acc_norm", t["acc_norm"], f"{task} acc_norm")
    cg = (client or {}).get("golden") or {}
    if "exact_match" in cg:  # the headline figure is what the client gives through its own tokenizer
        for metric in ("exact_match", "token_f1", "contains"):
            add("llmbuild-golden", f"golden set via {client.get('client')}", metric, cg[metric],
                f"golden {metric.replace('_', ' ')}")
    if (g := ev.get("golden")) and "exact_match" in g:
        suffix = " on source token ids" if "exact_match" in cg else ""
        for metric in ("exact_match", "token_f1", "contains"):
            add("llmbuild-golden", f"golden set{suffix}", metric, g[metric], f"golden {metric.replace('_', ' ')}{suffix}")
    return out


# -- lm-evaluation-harness scores and contamination (llmbuild/evaluation/harness.py, contamination.py) --
def harness_results(name: str, harness: dict | None, EvalResult) -> list:
    """model-index entries for one runtime's lm-evaluation-harness scores (`name`: the artifact, or
    "source"): task, metric, value, with stderr, n-shot, documents and the harness version as args."""
    out = []
    for task, t in ((harness or {}).get("tasks") or {}).items():
        for metric, m in t["metrics"].items():
            args = {"num_fewshot": t.get("num_fewshot"), "stderr": m.get("stderr"), "documents": t.get("n"),
                    "lm_eval_version": harness.get("lm_eval"), "runtime": harness.get("runtime")}
            if "source" in m:
                args["source_value"] = m["source"]
            out.append(EvalResult(
                task_type="text-generation", dataset_type=task, dataset_name=f"{task} (lm-evaluation-harness)",
                dataset_config=name, metric_type=metric, metric_value=_sig(m["value"]),
                metric_name=f"{name} {task} {metric}", metric_args={k: v for k, v in args.items() if v is not None}))
    return out


def harness_section(build, rows) -> list[str]:
    """The card's table of harness scores: the source, then each artifact with its change."""
    src = (build.eval_source or {}).get("harness")
    if not src or not src.get("tasks"):
        return []
    cols = [(task, metric) for task, t in src["tasks"].items() for metric in t["metrics"]]

    def cell(m, delta: bool) -> str:
        se = f" ± {m['stderr']:.3f}" if m.get("stderr") is not None else ""
        change = f" ({m['value'] - m['source']:+.4g})" if delta and "source" in m else ""
        return f"{m['value']:.4g}{se}{change}"

    heads = ["model", "runtime"] + [f"{task} {metric} ({src['tasks'][task]['num_fewshot']}-shot, "
                                    f"{src['tasks'][task]['n']} docs)" for task, metric in cols] + ["gates"]
    lines = ["", "### lm-evaluation-harness tasks", "",
             f"Scored by lm-evaluation-harness {src.get('lm_eval')} (`lm_eval.simple_evaluate`) through an lm_eval "
             "model over each artifact's own runtime, on the same token ids as the source model; values ± the "
             "harness's standard error, in brackets the change against the source. Tasks and data are named in "
             "eval.json (`settings.harness`).", "",
             "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads),
             "| " + " | ".join(["source", src.get("runtime", "")] +
                               [cell(src["tasks"][t]["metrics"][m], False) for t, m in cols] + [""]) + " |"]
    notes = []
    for r in rows:
        h = (r["evaluation"] or {}).get("harness")
        if not h:
            continue
        cells = []
        for task, metric in cols:
            m = (h.get("tasks") or {}).get(task, {}).get("metrics", {}).get(metric)
            cells.append(cell(m, True) if m else "skipped" if task in (h.get("skipped") or {}) else "-")
        gates = "; ".join(f"{g['gate']} {g['figure'].removeprefix('harness.')} {g['limit']} "
                          f"{'ok' if g['passed'] else '**FAILED**'}" for g in r["evaluation"].get("gates", [])
                          if g["figure"].startswith("harness."))
        lines.append("| " + " | ".join([f"`{r['name']}`", h.get("runtime", "")] + cells + [gates]) + " |")
        notes += [f"`{r['name']}` {task}: skipped ({why})" for task, why in (h.get("skipped") or {}).items()]
    return lines + (["", *(f"- {n}" for n in notes)] if notes else [])


def contamination_lines(build) -> list[str]:
    """The card's contamination section: one line per evaluation set, with examples."""
    c = build.contamination
    if not c:
        return []
    files = ", ".join(f"`{f}`" for f in c.get("training_files", []))
    lines = ["", "### Contamination", "",
             f"Word {c['n']}-grams shared between the fine-tuning data ({files}: {c['training_documents']:,} "
             f"documents) and each evaluation set, normalized as lm-evaluation-harness's decontamination does "
             f"(lower case, punctuation deleted); a document shorter than {c['n']} words counts when all of it "
             f"appears in a training document, and documents under {c['min_words']} words are not judged.", ""]
    gates = {g["figure"]: g for g in c.get("gates", [])}
    for s in c["sets"]:
        g = gates.get(f"contamination.{s['set']}.share")
        verdict = f"; gate max_overlap {g['limit']} {'ok' if g['passed'] else '**FAILED**'}" if g else ""
        short = f", {s['too_short']} too short to judge" if s["too_short"] else ""
        lines.append(f"- `{s['set']}` ({s['kind']}, {s['source']}): **{s['contaminated']} of {s['documents']}** "
                     f"documents ({s['share']:.1%}) overlap the fine-tuning data{short}{verdict}")
        for x in s["examples"]:
            lines.append(f"  - doc {x['doc']}: \"{x['text']}\" shares \"{x['ngram']}\" with `{x['training']}`")
    return lines


def _delta(value, base, fmt: str = "{:.3f}", rel: bool = False) -> str:
    if value is None:
        return "-"
    text = fmt.format(value)
    if base is None:
        return text
    if rel:
        return f"{text} ({(value / base - 1) * 100:+.2f}%)" if base else text
    return f"{text} ({value - base:+.3f})"


def _routing_section(rows) -> list[str]:
    """A mixture of experts: per artifact, how often its runtime runs the source's experts."""
    routed = [(r["name"], r["verification"]["routing"]) for r in rows if (r["verification"] or {}).get("routing")]
    if not routed:
        return []
    lines = ["", "Routing (mixture of experts): the share of (token, layer) pairs on the probes whose set of "
             "top-k experts in the artifact's runtime is the source's.", "",
             "| artifact | routing agreement | lowest layer | tokens x layers |", "|---|---|---|---|"]
    for name, ro in routed:
        if "agreement" in ro:
            lines.append(f"| `{name}` | {ro['agreement']:.4f} | {ro['lowest_layer']:.4f} | "
                         f"{ro['tokens']} x {ro['layers']} |")
        else:
            lines.append(f"| `{name}` | not observable: {ro.get('reason')} | | |")
    return lines


def _evaluation_section(build, rows) -> list[str]:
    """The card's table: each artifact's figures through its runtime, with the change against the source."""
    src = build.eval_source
    evaluated = [r for r in rows if r["evaluation"]]
    if src is None or not evaluated:
        return []
    tasks = list(src.get("tasks") or {})
    heads = ["model", "runtime", "size", "bits/weight"]
    if "parity" in src:
        heads += ["mean KLD", "p99 KLD", "top-1", "PPL ratio"]
    if "perplexity" in src:
        heads.append("held-out PPL")
    heads += [f"{t} acc / acc_norm" for t in tasks]
    if "golden" in src:
        heads += ["golden EM", "golden F1", "golden contains"]
    if "speed" in src:
        heads += ["prompt tok/s", "gen tok/s"]
    heads.append("gates")
    sp = src.get("speed") or {}
    srow = ["source", f"{sp.get('runtime', 'torch ' + str(src.get('model_dtype')))}", "-", "-"]
    if "parity" in src:
        srow += ["0", "0", "1", "1"]
    if "perplexity" in src:
        srow.append(f"{src['perplexity']['ppl']:.3f}")
    srow += [f"{src['tasks'][t]['acc']:.3f} / {src['tasks'][t]['acc_norm']:.3f}" for t in tasks]
    if "golden" in src:
        g = src["golden"]
        srow += [f"{g['exact_match']:.3f}", f"{g['token_f1']:.3f}", f"{g['contains']:.3f}"]
    if "speed" in src:
        srow += [f"{sp['prompt_tokens_per_s']:.0f}", f"{sp['gen_tokens_per_s']:.0f}" if sp.get("gen_tokens_per_s") else "-"]
    srow.append("")
    lines = [
        "",
        "### Quality and speed against the source model",
        "",
        "Each artifact run by its own runtime on the same token ids as the source model "
        f"(PyTorch, {src.get('model_dtype')}). Parity: KL divergence of the artifact's next-token distribution from "
        f"the source's, top-1 agreement and perplexity ratio on `{(src.get('parity') or {}).get('text', '-')}`, over "
        f"rolling windows of {src.get('window')} tokens with the second half of each scored (llama-perplexity's "
        "`--kl-divergence` figures). Multiple choice: zero-shot `acc`/`acc_norm` scored as lm-evaluation-harness "
        "scores them, on the files named in eval.json (the shipped ones are samples in the benchmarks' formats, "
        "not the benchmarks). Golden set: greedy answers through the runtime's KV cache. Speed: the same "
        f"{sp.get('prompt_tokens', '-')}-token prompt and {sp.get('new_tokens', '-')} generated tokens for every "
        f"runtime on {sp.get('threads', '-')} threads, median of {sp.get('repeats', '-')} runs. In brackets: the "
        "change against the source.",
        "",
        "| " + " | ".join(heads) + " |",
        "|" + "---|" * len(heads),
        "| " + " | ".join(srow) + " |",
    ]
    skipped, via_client = [], []
    for r in evaluated:
        ev = r["evaluation"]
        if ev.get("status") == "skipped":
            skipped.append(f"`{r['name']}`: not evaluated ({ev.get('reason')})")
            continue
        bpw = f"{r['bpw']:.2f}" if isinstance(r["bpw"], (int, float)) else "-"
        row = [f"`{r['name']}`", f"{ev.get('runtime')} {ev.get('runtime_version', '')}".strip(), _fmt_size(r["size"]), bpw]
        if "parity" in src:
            p = ev.get("parity") or {}
            row += [f"{p['kld_mean']:.3e}" if p else "-", f"{p['kld_p99']:.3e}" if p else "-",
                    f"{p['top1']:.4f}" if p else "-", f"{p['ppl_ratio']:.4f}" if p else "-"]
        if "perplexity" in src:
            p = ev.get("perplexity") or {}
            row.append(_delta(p.get("ppl"), p.get("ppl_source"), rel=True) if p else "-")
        for t in tasks:
            x = (ev.get("tasks") or {}).get(t)
            row.append(f"{_delta(x['acc'], x['acc_source'])} / {_delta(x['acc_norm'], x['acc_norm_source'])}" if x else "-")
        if "golden" in src:
            g = ev.get("golden") or {}
            cg = (r.get("client") or {}).get("golden") or {}
            if "exact_match" in cg:  # what the artifact's users get: its client, through its own tokenizer
                g = cg
                via_client.append(r["name"])
            if "exact_match" in g:
                row += [_delta(g["exact_match"], g["exact_match_source"]), _delta(g["token_f1"], g["token_f1_source"]),
                        _delta(g["contains"], g["contains_source"])]
            else:
                row += ["skipped", "", ""]
                skipped.append(f"`{r['name']}` golden set: {g.get('reason')}")
        if "speed" in src:
            s = ev.get("speed") or {}
            if s.get("prompt_tokens_per_s"):
                row += [f"{s['prompt_tokens_per_s']:.0f} (x{s.get('prompt_tokens_vs_torch', float('nan')):.2f})",
                        f"{s['gen_tokens_per_s']:.0f} (x{s.get('gen_tokens_vs_torch', float('nan')):.2f})"
                        if s.get("gen_tokens_per_s") else "-"]
            else:
                row += ["skipped", ""]
                skipped.append(f"`{r['name']}` speed: {s.get('reason')}")
        row.append("; ".join(f"{g['gate']} {g['figure']} {g['limit']} {'ok' if g['passed'] else '**FAILED**'}"
                             for g in ev.get("gates", [])))
        lines.append("| " + " | ".join(row) + " |")
    if via_client:
        lines += ["", "Golden columns of " + ", ".join(f"`{n}`" for n in via_client) + ": through the artifact's client "
                  "with its own tokenizer and chat template, as its users run it (see As users run it, which gives "
                  "the figures on the source's token ids beside them)."]
    if skipped:
        lines += ["", *(f"- {s}" for s in dict.fromkeys(skipped))]
    return lines


def _client_section(build, rows) -> list[str]:
    """Each artifact through the client its users run (llmbuild/evaluation/clients.py): how its tokenizer
    and template compare with the source's on the golden prompts, and the figures through it beside the
    figures on the source's ids."""
    measured = [r for r in rows if r.get("client")]
    if not measured:
        return []
    lines = ["", "### As users run it", "",
             "Each artifact loaded by the client its users run, which tokenizes and renders the chat template itself "
             "(llama.cpp from the GGUF's vocab and template, onnxruntime-genai from the folder's tokenizer files, "
             "transformers from an HF folder's): how many golden prompts it turns into exactly the source's token ids, "
             "the golden set answered through the client's own generation API (greedy), multiple choice on the "
             "client's tokenization scored by the artifact's runtime, and speed end to end through the client. "
             "Beside each figure, after `/`: the same figure on the source's token ids (the table above).", "",
             "| artifact | client | golden prompts as the source | golden EM | golden F1 | golden contains | "
             "multiple choice acc | MC requests as the source | gen tok/s | gates |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for r in measured:
        c, ev = r["client"], r["evaluation"] or {}
        if c.get("status") == "skipped":
            notes.append(f"`{r['name']}`: {c.get('client')} not run ({c.get('reason')})")
            continue
        t = c.get("tokenization") or {}
        g, gi = c.get("golden") or {}, ev.get("golden") or {}

        def pair(k, g=g, gi=gi):
            if k not in g:
                return "-"
            return f"{g[k]:.3f} / {gi[k]:.3f}" if isinstance(gi.get(k), (int, float)) else f"{g[k]:.3f}"

        tasks = c.get("tasks") or {}
        mc = "; ".join(f"{n} {x['acc']:.3f} / {((ev.get('tasks') or {}).get(n) or {}).get('acc', float('nan')):.3f}"
                       for n, x in tasks.items()) or "-"
        reqs = "; ".join(f"{x['requests_agree']}/{x['requests']}" for x in tasks.values()) or "-"
        sp, spi = c.get("speed") or {}, ev.get("speed") or {}
        speed = (f"{sp['gen_tokens_per_s']:.0f} / {spi['gen_tokens_per_s']:.0f}" if sp.get("gen_tokens_per_s")
                 and spi.get("gen_tokens_per_s") else f"{sp['gen_tokens_per_s']:.0f}" if sp.get("gen_tokens_per_s")
                 else "skipped" if sp.get("status") == "skipped" else "-")
        gates = "; ".join(f"{x['gate']} {x['limit']} {'ok' if x['passed'] else '**FAILED**'}" for x in c.get("gates", []))
        tok = f"{t['agree']}/{t['golden_prompts']}" if t else "-"
        lines.append(f"| `{r['name']}` | {c.get('client')} {c.get('client_version', '')} | {tok} | {pair('exact_match')} | "
                     f"{pair('token_f1')} | {pair('contains')} | {mc} | {reqs} | {speed} | {gates} |")
        if t and t.get("agree", 0) < t.get("golden_prompts", 0):
            line = (f"`{r['name']}`: {t['golden_prompts'] - t['agree']} of {t['golden_prompts']} golden prompts reach "
                    f"the model as other token ids through {c.get('client')} ({c.get('tokenizer')}) than through the "
                    "source's tokenizer")
            for d in (t.get("differ") or [])[:1]:  # the first; eval.json has more
                src = " ".join(f"`{p!r}`({i})" for i, p in d["source"])
                cli = " ".join(f"`{p!r}`({i})" for i, p in d["client"])
                line += (f"; e.g. prompt {d['index']} (\"{d['prompt']}\") first differs at token {d['position']} of "
                         f"{d['source_tokens']} (client: {d['client_tokens']}): source {src}, client {cli}")
            notes.append(line)
        for n, x in tasks.items():
            if x["requests_agree"] < x["requests"]:
                line = (f"`{r['name']}` {n}: {x['requests'] - x['requests_agree']} of {x['requests']} multiple-choice "
                        f"requests reach the runtime as other token ids through {c.get('client')}'s tokenizer than "
                        "through the source's")
                for d in (x.get("differ") or [])[:1]:
                    src = " ".join(f"`{p!r}`({i})" for i, p in d["source"])
                    cli = " ".join(f"`{p!r}`({i})" for i, p in d["client"])
                    line += (f"; e.g. request {d['index']} first differs at token {d['position']} of "
                             f"{d['source_tokens']} (client: {d['client_tokens']}): source {src}, client {cli}")
                notes.append(line)
        if sp.get("status") == "skipped":
            notes.append(f"`{r['name']}` speed: {sp.get('reason')}")
    return lines + (["", *(f"- {n}" for n in notes)] if notes else [])


def build_manifest(build: BuildResult) -> dict:
    artifacts = []
    for a in build.artifacts:
        entry = {k: v for k, v in plain(a).items()
                 if k not in ("files", "usage", "serving", "library") and v is not None}
        entry["files"] = [{"path": f"artifacts/{a.target}/{p}", **meta} for p, meta in sorted(a.files.items())]
        if a.serving:
            entry["serving"] = a.serving
        artifacts.append(entry)
    recipe_file = Path(build.recipe_file) if build.recipe_file else None
    decision = build.license_decision
    m = build.model
    return {
        "schema_version": 1,
        "llmbuild_version": __version__,
        "build_id": build.dir.name,
        "status": build.status,
        "error": build.error,
        "recipe": build.recipe,
        "recipe_file": str(recipe_file) if recipe_file else None,
        "recipe_sha256": sha256_file(recipe_file) if recipe_file and recipe_file.exists() else None,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(build.seconds, 3),
        "config": build.config,
        "model_name": build.model_name,
        "inputs": {
            "source": build.source,
            "model_dir": str(m.dir) if m else None,
            "repo_id": m.record.get("repo_id") if m else None,
            "commit": m.record.get("commit") if m else None,
            "model_digest": m.digest if m else None,
            "files": m.files if m else {},
        },
        "stages": build.stages,
        "finetune": build.finetune,
        "base_model_inputs": ({"model_dir": str(build.base_model.dir), "model_digest": build.base_model.digest,
                               "files": build.base_model.files} if build.base_model else None),
        "artifacts": artifacts,
        "license": {"verdict": getattr(decision, "verdict", None),
                    "report": "LICENSE_REPORT.md" if decision is not None else None,
                    "obligations": plain(getattr(decision, "obligations", None))},
        "warnings": build.warnings,
        "tools": build.tools,
        "host": build.host,
    }


def _file_list(files: list[str]) -> str:
    shown = [f for f in files if not f.startswith(("LICENSE", "NOTICE", "USE_POLICY", "tokenizer", "special_"))]
    more = len(files) - len(shown)
    return ", ".join(f"`{f}`" for f in shown[:6]) + (f" (+{more + max(0, len(shown) - 6)} more)" if
                                                      more + max(0, len(shown) - 6) else "")


def _fmt_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _cutoff(model_dir: Path) -> str | None:
    readme = model_dir / "README.md"
    if readme.exists():
        m = _CUTOFF.search(readme.read_text(encoding="utf-8", errors="replace"))
        if m:
            return m.group(0).strip()
    return None


def model_card(build: BuildResult, only: str | None = None) -> str:
    """The card of the build folder, or with `only`, of that one artifact's folder (a Hub repository:
    its README.md, whose metadata describes that folder alone)."""
    from huggingface_hub.repocard_data import EvalResult, ModelCardData

    from llmbuild import licenses

    rec = build.model.record
    cfg = rec["config"]
    decision = build.license_decision
    rows = [r for r in _artifact_rows(build) if only is None or r["name"] == only]
    if only is not None:  # the folder's own card: its paths are relative to the folder itself
        for r in rows:
            r["usage"] = [u.replace(f"artifacts/{only}/", "").replace(f"'artifacts/{only}'", "'.'") for u in r["usage"]]
    quantized = any(r["quantized"] for r in rows)
    base = build.repo_id  # a Hub id or nothing: a local path is not Hub metadata
    relation = "finetune" if build.finetune else ("quantized" if quantized else None)
    evals = []
    for r in rows:
        v = r["verification"]
        if v.get("status") in ("passed", "failed"):
            m = v["metrics"]
            for metric, value, label in (("top1_agreement", m["top1"], "top-1 agreement"),
                                         ("kl_divergence", m["kld_mean"], "mean KL divergence"),
                                         ("max_abs_logit_diff", m["max_abs_diff"], "max abs logit diff")):
                evals.append(EvalResult(
                    task_type="text-generation", dataset_type="llmbuild-parity-probes",
                    dataset_name="parity probes vs source model", dataset_config=r["name"],
                    metric_type=metric, metric_value=_sig(value),
                    metric_name=f"{r['name']} {label}"))
        evals += _eval_results(r["name"], r["evaluation"], EvalResult, r["client"])
        evals += harness_results(r["name"], (r["evaluation"] or {}).get("harness"), EvalResult)
    if only is None:
        evals += harness_results("source", (build.eval_source or {}).get("harness"), EvalResult)
    lic = licenses.card_fields(decision) if decision is not None else {}
    data = ModelCardData(
        model_name=build.model_name,
        license=lic.get("license"), license_name=lic.get("license_name"), license_link=lic.get("license_link"),
        base_model=base, library_name=card_library(rows),
        pipeline_tag="text-generation",
        tags=sorted({"llmbuild", *(r["backend"] for r in rows), *(r["precision"] for r in rows)}),
        eval_results=evals or None,
        datasets=card_datasets(build),
        **({"base_model_relation": relation} if base and relation else {}),
    )
    return card_text(data, _body(build, rows, cfg, rec, decision, in_folder=only is not None))


def card_text(data, body: str) -> str:
    """`str(ModelCard.from_template(data, template_str=<front matter, then body>, body=body))`, without what
    that costs every build: importing huggingface_hub.repocard (it imports the Hub client: ~0.1 s) and
    jinja2, and writing the metadata as YAML twice (20 ms for the demo's card). ModelCard fills in the
    template, reads the metadata back (ModelCardData) and writes it again in the order it read it; when
    the metadata is plain YAML data that reads back as itself, that second text is the first, so the card
    is the template filled in. Anything else is left to ModelCard itself."""
    front = data.to_yaml()
    if front and "\r" not in front + body and "\n---" not in front and _reads_back_as_itself(data):
        # jinja2 drops the template's last newline, as ModelCard's rendering does
        return f"---\n{front}\n---\n\n{body}"
    from huggingface_hub import ModelCard

    return str(ModelCard.from_template(data, template_str=_TEMPLATE_HEADER + "\n{{ body }}\n", body=body))


def _reads_back_as_itself(data) -> bool:
    """Whether the metadata ModelCard reads back from `data`'s YAML writes the same YAML: its dict holds only
    what YAML stores exactly (str keys, printable str, bool, int, finite float, None, lists, dicts), and
    ModelCardData made from that dict, its fields in the order read (RepoCard.content's original_order),
    gives that dict again, key for key and type for type."""
    import copy

    written = data.to_dict()
    if not _plain(written):
        return False
    try:
        again = type(data)(**copy.deepcopy(written))
    except Exception:  # metadata ModelCard would reject: let it say so
        return False
    order = list(written)
    again.__dict__ = {k: again.__dict__[k] for k in order + [k for k in again.__dict__ if k not in set(order)]
                      if k in again.__dict__}
    return _same(again.to_dict(), written)


def _plain(x) -> bool:
    if isinstance(x, dict):
        return all(type(k) is str and _plain(v) for k, v in x.items())
    if isinstance(x, list):
        return all(_plain(v) for v in x)
    if type(x) is float:
        return math.isfinite(x)
    if type(x) is str:  # YAML folds its other line breaks (\x85, \u2028 ...) when read back
        return x.isprintable() or all(c.isprintable() or c in "\n\t" for c in x)
    return x is None or type(x) in (bool, int)


def _same(a, b) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def card_library(rows: list[dict]) -> str:
    """The card's library_name (the Hub's "use this model" button and its filters): transformers when the
    build has a transformers folder (hf, trtllm) or no artifact, else the library of the first artifact
    (the others are tags: the Hub reads GGUF and ONNX files by themselves)."""
    libraries = [r["library"] or "transformers" for r in rows]
    if not libraries or "transformers" in libraries:
        return "transformers"
    return libraries[0]


def card_datasets(build: BuildResult) -> list[str] | None:
    """Hub dataset ids of the fine-tuning data (finetune.datasets[].hub_id), never local paths."""
    if not build.finetune:
        return None
    specs = ((build.config or {}).get("finetune") or {}).get("datasets") or []
    ids = [d["hub_id"] for d in specs if isinstance(d, dict) and d.get("hub_id")]
    return list(dict.fromkeys(ids)) or None


def _training_details(r: dict, in_folder: bool = False) -> list[str]:
    hp = r.get("hyperparameters", {})
    g = r.get("golden") or {}
    lines = [
        f"Fine-tuned with **{r['method']}** ({r.get('trainable_parameters', 0):,} of {r.get('total_parameters', 0):,} "
        f"parameters trained) for {r['steps']} steps in {r['seconds']:.1f} s on {r.get('hardware')}; the merged "
        f"checkpoint is in {r.get('dtype')} and every artifact was built from it"
        + (" (the LoRA adapter, in PEFT's format, is in `adapter/`)." if r.get("adapter_dir") else "."),
        "",
        "| data | shape | license | records | sha256 |",
        "|---|---|---|---|---|",
        *(f"| `{d['path']}` | {d['shape']} | {d['license']} | {d['records']} | `{d['sha256'][:16]}…` |"
          for d in r.get("datasets", [])),
        "",
        "| evidence | before | after |",
        "|---|---|---|",
        f"| eval loss (held-out) | {r['eval_loss_before']:.4f} | {r['eval_loss_after']:.4f} |",
    ]
    if g:
        lines.append(f"| golden set exact match ({g['n']} questions) | {g['before']['exact_match']:.3f} | "
                     f"{g['after']['exact_match']:.3f} |")
    lines += ["", *([] if in_folder else ["![train and eval loss](loss.png)", ""]),
              "Hyperparameters: " + ", ".join(f"`{k}={v}`" for k, v in sorted(hp.items()) if v is not None)]
    return lines


_TEMPLATE_HEADER = "---\n{{ card_data }}\n---\n"


def _body(build: BuildResult, rows, cfg, rec, decision, in_folder: bool = False) -> str:
    from llmbuild import licenses

    status, seconds, host = build.status, build.seconds, build.host
    src = {"hub": f"Hugging Face Hub `{rec.get('repo_id')}` at commit `{rec.get('commit')}`",
           "local": f"local checkpoint `{rec.get('model_dir')}`",
           "init": f"randomly initialized from seed {rec.get('seed')} (recipe `{build.recipe}`): "
                   "**its outputs are meaningless text**, it exists to exercise the pipeline"}[rec["source"]]
    ctx = cfg.get("max_position_embeddings")
    cutoff = _cutoff(build.model.dir) if rec["source"] != "init" else None
    lines = [
        f"# {build.model_name}",
        "",
        f"Built by llmbuild {__version__} from recipe `{build.recipe}`; build status: "
        f"**{status}**.",
        "",
        "## Model Details",
        "",
        f"- Source: {src}",
        f"- Architecture: `{rec['architecture']}`, {rec['num_parameters']:,} parameters, "
        f"{cfg.get('num_hidden_layers')} layers, hidden size {cfg.get('hidden_size')}, "
        f"{cfg.get('num_attention_heads')} attention heads ({cfg.get('num_key_value_heads', cfg.get('num_attention_heads'))} KV heads), "
        f"vocabulary {cfg.get('vocab_size')}",
        f"- Context window: {ctx:,} tokens" if ctx else "- Context window: not stated by the source",
        f"- Knowledge cutoff: {cutoff}" if cutoff else "- Knowledge cutoff: not stated by the source",
        f"- Fine-tuning: {build.finetune_method}",
        "",
        "### Artifacts",
        "",
        "| artifact | format | precision | size | bits/weight | files | verification | notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        v = r["verification"]
        vtxt = v.get("status", "not run") + (f" ({v['reason']})" if v.get("reason") else "")
        bpw = f"{r['bpw']:.2f}" if isinstance(r["bpw"], (int, float)) else "-"
        lines.append(f"| `{r['name']}` | {r['backend']} | {r['precision']} | {_fmt_size(r['size'])} | {bpw} | "
                     f"{_file_list(r['files'])} | {vtxt} | {r['notes']} |")
    lines += [
        "",
        "## Uses",
        "",
        "### Direct Use",
        "",
        "Text generation through the runtime of each artifact (see How to Get Started).",
        "",
        "### Downstream Use",
        "",
        "Fine-tuning or further conversion, under the license terms below.",
        "",
        "### Out-of-Scope Use",
        "",
        "Any use the license or its use policy forbids (see License).",
        "",
        "## Bias, Risks, and Limitations",
        "",
        "Conversion and quantization change the model's outputs slightly; the Evaluation section gives "
        "how much, measured against the source model on the probe prompts. The source model's own biases "
        "and limitations carry over unchanged." + (" This build's weights are random: it is a pipeline "
                                                  "check, not a usable model." if rec["source"] == "init" else ""),
        "",
        "## How to Get Started with the Model",
        "",
    ]
    for r in rows:
        lines += r["usage"]
    lines += [
        "## Training Details",
        "",
        *(_training_details(build.finetune, in_folder) if build.finetune else
          ["No training in this build: the weights are the source model's, converted."]),
        "",
        "## Evaluation",
        "",
        "Each artifact was run by its own runtime on the probe prompts (the same token ids for all) and "
        "compared with the source model in PyTorch, position by position. KV: the second half of each "
        "probe decoded token by token through the runtime's KV cache.",
        "",
        "| artifact | runtime | top-1 agreement | mean KLD | p99 KLD | max abs logit diff | KV top-1 | KV mean KLD | gates |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        v = r["verification"]
        if v.get("status") in ("passed", "failed"):
            m, kv = v["metrics"], v.get("kv_metrics") or {}
            gates = "; ".join(f"{g['gate']} {g['limit']} {'ok' if g['passed'] else '**FAILED**'}" for g in v["gates"])
            lines.append(f"| `{r['name']}` | {v['runtime']} {v.get('runtime_version', '')} | {m['top1']:.4f} | "
                         f"{m['kld_mean']:.3e} | {m['kld_p99']:.3e} | {m['max_abs_diff']:.4g} | "
                         f"{kv.get('top1', float('nan')):.4f} | {kv.get('kld_mean', float('nan')):.3e} | {gates} |")
        else:
            lines.append(f"| `{r['name']}` | - | UNVERIFIED: {v.get('reason', v.get('status'))} | | | | | | |")
    lines += _routing_section(rows)
    lines += _evaluation_section(build, rows)
    lines += _client_section(build, rows)
    lines += harness_section(build, rows)
    lines += contamination_lines(build)
    lines += [
        "",
        "## Environmental Impact",
        "",
        f"Built in {seconds:.1f} s on {host.get('cpus')} CPU cores ({host.get('machine')}, {host.get('platform')}); "
        "no GPU. Cached stages cost nothing on a rebuild.",
        "",
        "## Technical Specifications",
        "",
        f"See `manifest.json` for every input and output file with its sha256, the stage cache keys and the "
        f"tool versions. Python {host.get('python')}.",
        "",
        "## License",
        "",
        licenses.card_section(decision) if decision is not None else "Not evaluated.",
        "",
        "See `LICENSE_REPORT.md` for the clause-by-clause report.",
        "",
        "## Citation",
        "",
        "Cite the source model as its authors ask" + (f" (`{rec.get('repo_id')}`)." if rec.get("repo_id") else "."),
        "",
    ]
    return "\n".join(lines)
