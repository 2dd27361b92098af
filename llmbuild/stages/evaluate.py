"""Evaluate: every artifact through its own runtime, against the source model, with the field's figures.

Two stages, both cached like the others:
- `evalref` (once per model and evaluation settings) runs the source model in PyTorch: it tokenizes
  every evaluation input once (all runtimes are fed the same token ids, so tokenizer differences do
  not pass for conversion errors), keeps the source's logits on the scored positions of the parity
  text, and computes the source's own perplexity, multiple-choice, golden-set and speed figures.
- `evaluate-<backend>` (once per artifact) runs the artifact's runtime on those ids:
  (a) parity on `eval.text`: mean and p99 KL divergence, top-1 agreement and perplexity ratio over
      llama-perplexity's rolling windows (`--kl-divergence`'s figures);
  (b) perplexity on `eval.heldout_text`, and its ratio to the source's;
  (c) multiple choice in MMLU/HellaSwag format, acc and acc_norm as lm-evaluation-harness scores them;
  (d) the golden set, greedy through the runtime's KV cache: exact match, token F1, contains;
  (e) prompt and generated tokens per second, same prompt, length and threads for every runtime;
  (f) lm-evaluation-harness tasks (`eval.harness`), through an lm_eval model over the runtime
      (llmbuild/evaluation/harness_lm.py), each metric beside the source's.
Gates are applied by the engine from the record (`apply_gates`), so changing a gate reruns nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

from llmbuild.evaluation import data, metrics
from llmbuild.evaluation import multiple_choice as mc

TOOLS = ("torch", "transformers", "tokenizers", "numpy")
# sequences per run_logits call are grouped to about this many logits, so memory stays bounded
LOGITS_BUDGET = 1 << 26
SPEED_FALLBACK = "The quick brown fox jumps over the lazy dog. "
# eval.window 0 takes the model's context up to this: a window's logits (window x vocab floats) are held
# in memory by every runtime, which a 128k context and a 128k vocabulary would make 64 GB
MAX_AUTO_WINDOW = 2048


def enabled(cfg) -> bool:
    """The stage runs when the recipe names something to evaluate on; speed is timed alongside."""
    return bool(cfg.text or cfg.heldout_text or cfg.tasks or cfg.golden or cfg.harness.tasks)


def check(cfg, key: str = "eval") -> None:
    """Plan-time checks of the evaluation settings and files (path and line of a bad record)."""
    from llmbuild.errors import InvalidInput

    for name in ("text", "heldout_text"):
        if getattr(cfg, name):
            data.read_text(getattr(cfg, name), f"{key}.{name}")
    names = set()
    for i, t in enumerate(cfg.tasks):
        k = f"{key}.tasks[{i}]"
        if t.name in names:
            raise InvalidInput(f"{k}.name: task name {t.name!r} is used twice")
        names.add(t.name)
        if t.limit < 0:
            raise InvalidInput(f"{k}.limit: {t.limit} is negative; 0 means every record")
        data.read_mc(t.path, t.format.value, k, t.limit)
    if cfg.golden:
        data.read_golden(cfg.golden, f"{key}.golden")
    if cfg.golden_prompt not in ("auto", "chat", "plain"):
        raise InvalidInput(f"{key}.golden_prompt: {cfg.golden_prompt!r} is not one of auto, chat, plain")
    for name, low in (("window", 0), ("max_windows", 0), ("golden_max_new_tokens", 1), ("speed_prompt_tokens", 8),
                      ("speed_new_tokens", 2), ("speed_repeats", 1), ("threads", 1)):
        if getattr(cfg, name) < low:
            raise InvalidInput(f"{key}.{name}: {getattr(cfg, name)} is below {low}")
    if 0 < cfg.window < metrics.MIN_WINDOW:
        raise InvalidInput(f"{key}.window: {cfg.window} tokens is too short; 0 takes the model's context")
    from llmbuild.evaluation import contamination, harness

    contamination.check(cfg.contamination, f"{key}.contamination")
    harness.check(cfg.harness, f"{key}.harness")  # last: it loads the tasks' data


def key_parts(cfg, digest) -> dict:
    """What the source side depends on: settings, and the evaluation files by content, not by path."""
    def file(p):
        return {"name": Path(p).name, "sha256": digest(Path(p))} if p else None

    return {
        "text": file(cfg.text), "heldout_text": file(cfg.heldout_text), "window": cfg.window,
        "max_windows": cfg.max_windows,
        "tasks": [{"name": t.name, "format": t.format.value, "limit": t.limit, "file": file(t.path)} for t in cfg.tasks],
        "golden": file(cfg.golden), "golden_prompt": cfg.golden_prompt,
        "golden_max_new_tokens": cfg.golden_max_new_tokens,
        "speed": cfg.speed and {"prompt_tokens": cfg.speed_prompt_tokens, "new_tokens": cfg.speed_new_tokens,
                                "repeats": cfg.speed_repeats, "threads": cfg.threads},
        **({"harness": harness_key} if (harness_key := _harness_key(cfg, digest)) else {}),
    }


def _harness_key(cfg, digest) -> dict | None:
    from llmbuild.evaluation import harness

    return harness.key_parts(cfg.harness, digest)


def _settings(cfg) -> dict:
    """The settings the artifact side reads from the recipe: written into evalref.json, so that the
    artifacts' evaluate keys (which hold evalref's output digest) change with them too."""
    from llmbuild.hashing import sha256_file

    return {"golden_max_new_tokens": cfg.golden_max_new_tokens, "speed_new_tokens": cfg.speed_new_tokens,
            "speed_repeats": cfg.speed_repeats, "threads": cfg.threads,
            "harness": _harness_key(cfg, sha256_file)}


# --- the source side ------------------------------------------------------------------------------
def _tokenizer(model_dir: Path, trust_remote_code: bool):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=trust_remote_code)


def _bos(tok) -> int | None:
    """BOS when the tokenizer adds one (llama-perplexity puts it at the start of every window)."""
    if tok.bos_token_id is None:
        return None
    ids = tok("a").input_ids
    return tok.bos_token_id if ids and ids[0] == tok.bos_token_id else None


def _golden_ids(tok, prompt: str, how: str) -> list[int]:
    from llmbuild.errors import InvalidInput
    from llmbuild.finetune.data import render_chat

    has_template = bool(getattr(tok, "chat_template", None))
    if how == "chat" and not has_template:
        raise InvalidInput("eval.golden_prompt: chat, but the model's tokenizer has no chat template; use plain")
    if has_template and how in ("chat", "auto"):
        text = render_chat(tok, [{"role": "user", "content": prompt}], add_generation_prompt=True)
        return list(tok(text, add_special_tokens=False).input_ids)
    return list(tok(prompt).input_ids)


def prepare(model_dir: Path, cfg, dtype: str, trust_remote_code: bool, out: Path, context: int | None = None) -> dict:
    """The `evalref` stage: token ids for every runtime and the source model's figures, every sequence
    within `context` when an artifact declares a context shorter than the model's."""
    import numpy as np

    from llmbuild.errors import InvalidInput
    from llmbuild.evaluation.runtimes import measure_speed
    from llmbuild.evaluation.torch_runtime import TorchModel, torch_threads

    tok = _tokenizer(model_dir, trust_remote_code)
    src = TorchModel(model_dir, dtype, trust_remote_code)
    n_ctx = min(int(src.model.config.max_position_embeddings), context or 1 << 62)
    window = min(cfg.window or MAX_AUTO_WINDOW, n_ctx)
    bos = _bos(tok)
    ref: dict = {"window": window, "model_dtype": src.dtype, "settings": _settings(cfg)}
    summary: dict = {"window": window, "model_dtype": src.dtype}
    arrays = {}

    def text_windows(path, key):
        ids = tok(data.read_text(path, key), add_special_tokens=False).input_ids
        wins = metrics.windows(ids, window, bos, cfg.max_windows)
        if not wins:
            raise InvalidInput(f"{key}: {path} has {len(ids)} tokens; at least {metrics.MIN_WINDOW} are needed")
        return wins

    if cfg.text:
        wins = text_windows(cfg.text, "eval.text")
        nlls = []
        for i, (ids, lg) in enumerate(_each(src.logits, wins)):
            rows = metrics.scored_rows(lg, len(ids))
            arrays[f"parity_{i}"] = rows.astype(np.float32)
            nlls.append(metrics.nll(rows, ids[metrics.first_scored(len(ids)) + 1:]))
        nll = np.concatenate(nlls)
        ref["parity"] = {"windows": wins, "source_nll": nll.tolist()}
        summary["parity"] = {"text": Path(cfg.text).name, "windows": len(wins), "tokens": int(nll.size),
                             "ppl": metrics.perplexity(nll)}
    if cfg.heldout_text:
        wins = text_windows(cfg.heldout_text, "eval.heldout_text")
        nll = np.concatenate([metrics.nll(metrics.scored_rows(lg, len(ids)), ids[metrics.first_scored(len(ids)) + 1:])
                              for ids, lg in _each(src.logits, wins)])
        ref["perplexity"] = {"windows": wins}
        summary["perplexity"] = {"text": Path(cfg.heldout_text).name, "windows": len(wins), "tokens": int(nll.size),
                                 "ppl": metrics.perplexity(nll)}
    if cfg.tasks:
        ref["tasks"], summary["tasks"] = {}, {}
        for i, t in enumerate(cfg.tasks):
            docs = [mc.DOCS[t.format.value](r) for r in data.read_mc(t.path, t.format.value, f"eval.tasks[{i}]", t.limit)]
            reqs = [mc.requests(d, tok, n_ctx) for d in docs]
            lls = _lls(src.logits, reqs)
            scored = [mc.score(d, ll) for d, ll in zip(docs, lls)]
            ref["tasks"][t.name] = {"format": t.format.value,
                                    "docs": [{"choices": d.choices, "gold": d.gold, "requests": r}
                                             for d, r in zip(docs, reqs)],
                                    "source_preds": [s["pred"] for s in scored]}
            summary["tasks"][t.name] = {"format": t.format.value, "file": Path(t.path).name, **_mc_summary(scored)}
    if cfg.golden:
        gold = data.read_golden(cfg.golden, "eval.golden")
        prompts = [_golden_ids(tok, g["prompt"], cfg.golden_prompt) for g in gold]
        outputs = [tok.decode(src.generate(p, cfg.golden_max_new_tokens, tok.eos_token_id), skip_special_tokens=True)
                   for p in prompts]
        ref["golden"] = {"prompts": prompts, "answers": [g["answer"] for g in gold],
                         "questions": [g["prompt"] for g in gold], "eos_id": tok.eos_token_id}
        summary["golden"] = {"file": Path(cfg.golden).name,
                             **metrics.golden_scores(outputs, [g["answer"] for g in gold])}
    if cfg.speed:
        prompt = _speed_prompt(tok, cfg, bos)
        with torch_threads(cfg.threads):
            speed = measure_speed(lambda p, n, t: src.generate(p, n, None, t), prompt, cfg.speed_new_tokens,
                                  cfg.speed_repeats)
        ref["speed"] = {"prompt_ids": prompt}
        summary["speed"] = {"runtime": f"torch {src.dtype}", "threads": cfg.threads, **speed}
    if cfg.harness.tasks:
        from llmbuild.evaluation import harness
        from llmbuild.evaluation.runtimes import source_runtime

        lm = harness.make_lm(source_runtime(src, cfg.threads), model_dir, cfg.harness, trust_remote_code, n_ctx)
        summary["harness"] = harness.evaluate(lm, cfg.harness)
        ref["harness_max_length"] = lm.max_length  # every artifact gets the source's
    (out / "evalref.json").write_text(json.dumps(ref))
    np.savez(out / "evalref.npz", **arrays)
    return summary


def _speed_prompt(tok, cfg, bos) -> list[int]:
    """The first speed_prompt_tokens tokens of the evaluation text (repeated if short): the same ids
    for every runtime."""
    text = next((data.read_text(p, "eval") for p in (cfg.text, cfg.heldout_text) if p), SPEED_FALLBACK)
    ids = tok(text, add_special_tokens=False).input_ids or tok(SPEED_FALLBACK, add_special_tokens=False).input_ids
    need = cfg.speed_prompt_tokens
    ids = (ids * (need // len(ids) + 1))[:need]
    if bos is not None:
        ids[0] = bos
    return ids


def _groups(items: list, length=len, vocab_guess: int = 32000):
    """Consecutive groups of items whose logits ([tokens, vocab] floats) fit LOGITS_BUDGET together."""
    group, size = [], 0
    for it in items:
        n = length(it) * vocab_guess
        if group and size + n > LOGITS_BUDGET:
            yield group
            group, size = [], 0
        group.append(it)
        size += n
    if group:
        yield group


def _each(logits_fn, seqs: list[list[int]]):
    """(ids, logits) for each sequence, computed a group at a time."""
    for group in _groups(seqs):
        yield from zip(group, logits_fn(group))


def _lls(logits_fn, reqs: list[list[dict]]) -> list[list[float]]:
    """Log-likelihoods of every request (per document, per choice), a group of sequences per call."""
    flat = [r for doc in reqs for r in doc]
    values = []
    for group in _groups(flat, length=lambda r: len(r["ids"])):
        for r, lg in zip(group, logits_fn([r["ids"] for r in group])):
            values.append(mc.loglikelihood(lg, r["ids"], r["n_cont"]))
    out, i = [], 0
    for doc in reqs:
        out.append(values[i:i + len(doc)])
        i += len(doc)
    return out


def _mc_summary(scored: list[dict]) -> dict:
    n = len(scored)
    return {"n": n, "acc": round(sum(s["acc"] for s in scored) / n, 4),
            "acc_norm": round(sum(s["acc_norm"] for s in scored) / n, 4)}


# --- the artifact side ----------------------------------------------------------------------------
def run(backend, backend_name: str, artifact_dir: Path, export_record: dict, ref_out: Path, ref_summary: dict,
        model_dir: Path, cfg, trust_remote_code: bool) -> dict:
    """The `evaluate-<backend>` stage for one artifact."""
    import numpy as np

    from llmbuild.evaluation.runtimes import generator, measure_speed
    from llmbuild.stages.verify import compare

    ref = json.loads((ref_out / "evalref.json").read_text())
    src_logits = np.load(ref_out / "evalref.npz")

    def logits(seqs):
        return backend.run_logits(artifact_dir, export_record, seqs)

    rec: dict = {"status": "evaluated", "runtime": backend.runtime.dist}
    if "parity" in ref:
        wins = ref["parity"]["windows"]
        rows, nlls, ref_rows = [], [], []
        for i, (ids, lg) in enumerate(_each(logits, wins)):
            r = metrics.scored_rows(lg, len(ids))
            rows.append(r)
            ref_rows.append(src_logits[f"parity_{i}"])
            nlls.append(metrics.nll(r, ids[metrics.first_scored(len(ids)) + 1:]))
        m = compare(ref_rows, rows)
        nll, src_nll = np.concatenate(nlls), np.asarray(ref["parity"]["source_nll"])
        rec["parity"] = {"text": ref_summary["parity"]["text"], "tokens": m["positions"], "kld_mean": m["kld_mean"],
                         "kld_p99": m["kld_p99"], "top1": m["top1"], "ppl": metrics.perplexity(nll),
                         "ppl_source": metrics.perplexity(src_nll),
                         # llama-perplexity's "Mean PPL ratio": exp of the mean log-likelihood difference
                         "ppl_ratio": float(np.exp(np.mean(nll - src_nll)))}
    if "perplexity" in ref:
        wins = ref["perplexity"]["windows"]
        nll = np.concatenate([metrics.nll(metrics.scored_rows(lg, len(ids)), ids[metrics.first_scored(len(ids)) + 1:])
                              for ids, lg in _each(logits, wins)])
        ppl, src_ppl = metrics.perplexity(nll), ref_summary["perplexity"]["ppl"]
        rec["perplexity"] = {"text": ref_summary["perplexity"]["text"], "tokens": int(nll.size), "ppl": ppl,
                             "ppl_source": src_ppl, "ratio": ppl / src_ppl}
    if "tasks" in ref:
        rec["tasks"] = {}
        for name, t in ref["tasks"].items():
            docs = [mc.Doc("", d["choices"], d["gold"]) for d in t["docs"]]
            lls = _lls(logits, [d["requests"] for d in t["docs"]])
            scored = [mc.score(d, ll) for d, ll in zip(docs, lls)]
            s = ref_summary["tasks"][name]
            agree = sum(x["pred"] == p for x, p in zip(scored, t["source_preds"])) / len(scored)
            rec["tasks"][name] = {"format": t["format"], **_mc_summary(scored), "acc_source": s["acc"],
                                  "acc_norm_source": s["acc_norm"], "agreement_with_source": round(agree, 4)}
    gen, reason = generator(backend)
    if "golden" in ref:
        if gen is None:
            rec["golden"] = {"status": "skipped", "reason": reason}
        else:
            g = ref["golden"]
            tok = _tokenizer(model_dir, trust_remote_code)
            outs = [tok.decode(gen(artifact_dir, export_record, p, cfg.golden_max_new_tokens, g["eos_id"],
                                   threads=cfg.threads), skip_special_tokens=True) for p in g["prompts"]]
            scores = metrics.golden_scores(outs, g["answers"])
            src = ref_summary["golden"]
            rec["golden"] = {**scores, "exact_match_source": src["exact_match"], "token_f1_source": src["token_f1"],
                             "contains_source": src["contains"],
                             "examples": [{"prompt": q, "answer": a, "output": o.strip()}
                                          for q, a, o in list(zip(g["questions"], g["answers"], outs))[:5]]}
    if "speed" in ref:
        if gen is None or backend.no_speed:
            rec["speed"] = {"status": "skipped", "reason": reason or backend.no_speed}
        else:
            def one(p, n, t):
                return gen(artifact_dir, export_record, p, n, None, threads=cfg.threads, timings=t)

            rec["speed"] = {"threads": cfg.threads, **measure_speed(one, ref["speed"]["prompt_ids"],
                                                                      cfg.speed_new_tokens, cfg.speed_repeats)}
            src = ref_summary["speed"]
            for k in ("prompt_tokens_per_s", "gen_tokens_per_s"):
                if rec["speed"].get(k) and src.get(k):
                    rec["speed"][k.replace("_per_s", "_vs_torch")] = round(rec["speed"][k] / src[k], 3)
    if cfg.harness.tasks:
        from llmbuild.evaluation import harness
        from llmbuild.evaluation.runtimes import artifact_runtime

        runtime = artifact_runtime(backend, artifact_dir, export_record, cfg.threads)
        lm = harness.make_lm(runtime, model_dir, cfg.harness, trust_remote_code, ref.get("harness_max_length"))
        rec["harness"] = harness.compare(harness.evaluate(lm, cfg.harness), ref_summary.get("harness") or {})
    return rec


# --- gates -----------------------------------------------------------------------------------------
def figures(rec: dict) -> dict[str, float]:
    """Every gateable figure of an evaluation record by its dotted name."""
    out = {}
    for part in ("parity", "perplexity", "golden"):
        for k, v in (rec.get(part) or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[f"{part}.{k}"] = v
    for name, t in (rec.get("tasks") or {}).items():
        for k in ("acc", "acc_norm"):
            out[f"tasks.{name}.{k}"] = t[k]
    return out


def apply_gates(rec: dict, gates: dict, cfg=None) -> list[dict]:
    """Each gate against each evaluation figure it bounds (llmbuild.stages.verify.GATES), and with the
    recipe's eval settings `cfg`, each eval.harness.max_drop gate against the harness scores."""
    from llmbuild.evaluation import harness
    from llmbuild.stages.verify import GATES

    figs = figures(rec)
    results = []
    for gate, limit in gates.items():
        if limit is None or gate not in GATES:
            continue
        op, _, patterns = GATES[gate]
        for pattern in patterns:
            for name, value in figs.items():
                if _match(pattern, name):
                    ok = value >= limit if op == ">=" else value <= limit
                    results.append({"gate": gate, "figure": name, "value": value, "limit": limit, "passed": bool(ok)})
    if cfg is not None and rec.get("harness"):
        results += harness.gates(rec["harness"], cfg.harness.max_drop)
    return results


def _match(pattern: str, name: str) -> bool:
    p, n = pattern.split("."), name.split(".")
    return len(p) == len(n) and all(a in ("*", b) for a, b in zip(p, n))
