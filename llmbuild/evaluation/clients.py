"""Evaluate as users run it: each artifact's golden set, multiple choice and speed through the client its
users load it with, tokenized by that client's own tokenizer and chat template.

The evaluate stage feeds every runtime the source tokenizer's ids, so a conversion is judged on its
own. Users do not send ids: llama.cpp (`create_chat_completion`, llama-server) renders the GGUF's chat
template and tokenizes with the GGUF's vocab, onnxruntime-genai with the folder's tokenizer files,
transformers with an HF-layout folder's. Where those tokenize differently (a SentencePiece "▁" after
BOS, a missing BOS, a template the client renders differently) users get other answers than the card
says. So this stage (`client-<backend>`, once per artifact) asks the backend's client (`Backend.client`,
opened with `Backend.open_client`) for:
- the tokenization of every golden prompt as the client sends it (its template, its tokenizer),
  compared id by id with the source's: how many agree, and for those that do not, where they first
  differ, with the tokens on each side;
- the golden set answered through the client's own generation API (greedy), scored as the evaluate
  stage scores it;
- multiple choice with the client's tokenization of context and choices (lm-evaluation-harness's
  request layout), scored by the artifact's runtime on those ids;
- speed end to end through the client: its tokenization of the speed text, then generation.
Gates: `min_client_agreement` (share of golden prompts whose client ids equal the source's; unset by
default, so a build reports the difference rather than stopping on it: the card gives how many prompts
differ, where and with which tokens, and its golden figures are the client's; set it to 1.0 to stop a
build whose users would send other ids), and `min_golden_em` also bounds the client's golden exact match.

A client session (what `open_client` returns) offers:
    name, version                        the client and its version
    encode(text) -> ids                  plain text as the client tokenizes a prompt (its special tokens)
    chat_ids(messages) -> ids            the chat template rendered by the client, tokenized by it
    answer(prompt, chat, max_new) -> str greedy answer through the client's own API
    run(prompt_ids, n, timings) -> ids   n tokens through the client's generation loop, never stopping early
    close()
"""

from __future__ import annotations

from pathlib import Path

from llmbuild.evaluation import data, metrics
from llmbuild.evaluation import multiple_choice as mc

# no default bound: the card reports how a client's tokenization differs; a recipe sets 1.0 to require none
DEFAULT_MIN_AGREEMENT = None
EXAMPLES = 3  # differing prompts shown in the record and the card


def enabled(cfg) -> bool:
    return bool(cfg.golden or cfg.tasks or cfg.speed)


def key_parts(backend, cfg) -> dict:
    """What the stage depends on beyond the artifact and evalref digests."""
    return {"client": backend.client.dist, "golden_prompt": cfg.golden_prompt,
            "golden_max_new_tokens": cfg.golden_max_new_tokens, "threads": cfg.threads,
            "speed": cfg.speed and {"new_tokens": cfg.speed_new_tokens, "repeats": cfg.speed_repeats},
            "tasks": [{"name": t.name, "limit": t.limit} for t in cfg.tasks]}


def _first_difference(a: list[int], b: list[int]) -> int:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def _diff_example(i: int, question: str, src: list[int], cli: list[int], piece) -> dict:
    at = _first_difference(src, cli)
    window = slice(max(0, at - 1), at + 3)
    return {"index": i, "prompt": question, "position": at, "source_tokens": len(src), "client_tokens": len(cli),
            "source": [[t, piece(t)] for t in src[window]], "client": [[t, piece(t)] for t in cli[window]]}


def run(backend, artifact_dir: Path, export_record: dict, ref_out: Path, ref_summary: dict, model_dir: Path,
        cfg, trust_remote_code: bool, eval_record: dict | None = None) -> dict:
    """The `client-<backend>` stage for one artifact."""
    import json

    from llmbuild.evaluation.runtimes import measure_speed
    from llmbuild.stages.evaluate import _lls, _mc_summary, _tokenizer

    ref = json.loads((ref_out / "evalref.json").read_text())
    tok = _tokenizer(model_dir, trust_remote_code)
    session = backend.open_client(Path(artifact_dir), export_record, cfg.threads)
    rec: dict = {"status": "evaluated", "client": session.name, "client_version": session.version,
                 "tokenizer": session.tokenizer}
    try:
        if "golden" in ref:
            g = ref["golden"]
            chat = _chat(tok, cfg.golden_prompt)
            ids = [session.chat_ids([{"role": "user", "content": q}]) if chat else session.encode(q)
                   for q in g["questions"]]
            agree = [a == b for a, b in zip(ids, g["prompts"])]
            rec["tokenization"] = {
                "golden_prompts": len(ids), "agree": sum(agree), "share": round(sum(agree) / len(ids), 4),
                "template": "chat" if chat else "plain",
                # tokens shown by the source tokenizer's names (one vocabulary: "<s>", "▁U" read plainly)
                "differ": [_diff_example(i, g["questions"][i], g["prompts"][i], ids[i], tok.convert_ids_to_tokens)
                           for i, ok in enumerate(agree) if not ok][:EXAMPLES]}
            outs = [session.answer(q, chat, cfg.golden_max_new_tokens) for q in g["questions"]]
            src = ref_summary["golden"]
            rec["golden"] = {**metrics.golden_scores(outs, g["answers"]), "exact_match_source": src["exact_match"],
                             "token_f1_source": src["token_f1"], "contains_source": src["contains"],
                             "examples": [{"prompt": q, "answer": a, "output": o.strip()}
                                          for q, a, o in list(zip(g["questions"], g["answers"], outs))[:5]]}
        if cfg.tasks and "tasks" in ref:
            rec["tasks"] = {}

            def logits(seqs):
                return backend.run_logits(artifact_dir, export_record, seqs)

            # the evalref stage's request window: the model's context within the artifact's
            model_ctx = json.loads((Path(model_dir) / "config.json").read_text()).get("max_position_embeddings")
            n_ctx = min(int(model_ctx or 1 << 30), int(export_record.get("context_length") or 1 << 30))
            for i, t in enumerate(cfg.tasks):
                docs = [mc.DOCS[t.format.value](r) for r in data.read_mc(t.path, t.format.value, f"eval.tasks[{i}]",
                                                                         t.limit)]
                reqs = [mc.requests(d, session, n_ctx) for d in docs]
                src_reqs = [d["requests"] for d in ref["tasks"][t.name]["docs"]]
                pairs = [(d, a["ids"], b["ids"]) for d, x, y in zip(docs, reqs, src_reqs) for a, b in zip(x, y)]
                same = sum(a == b for _, a, b in pairs)
                # the first request the client tokenizes otherwise, shown as the golden prompts' are
                differ = next(([_diff_example(k, d.context, b, a, tok.convert_ids_to_tokens)]
                               for k, (d, a, b) in enumerate(pairs) if a != b), [])
                scored = [mc.score(d, ll) for d, ll in zip(docs, _lls(logits, reqs))]
                s = ref_summary["tasks"][t.name]
                rec["tasks"][t.name] = {**_mc_summary(scored), "acc_source": s["acc"], "acc_norm_source": s["acc_norm"],
                                        "requests": sum(len(r) for r in reqs), "requests_agree": same,
                                        "differ": differ}
        if cfg.speed and "speed" in ref and not backend.no_speed:
            text = tok.decode(ref["speed"]["prompt_ids"], skip_special_tokens=True)
            prompt = session.encode(text)
            rec["speed"] = {"threads": cfg.threads, "prompt_text_chars": len(text),
                            **measure_speed(session.run, prompt, cfg.speed_new_tokens, cfg.speed_repeats)}
            ids_fed = (eval_record or {}).get("speed") or {}
            for k in ("prompt_tokens_per_s", "gen_tokens_per_s"):
                if rec["speed"].get(k) and ids_fed.get(k):
                    rec["speed"][k.replace("_per_s", "_vs_ids")] = round(rec["speed"][k] / ids_fed[k], 3)
        elif cfg.speed and backend.no_speed:
            rec["speed"] = {"status": "skipped", "reason": backend.no_speed}
    finally:
        session.close()
    return rec


def _chat(tok, how: str) -> bool:
    """Whether golden prompts go through the chat template (the evaluate stage's rule)."""
    return bool(getattr(tok, "chat_template", None)) and how in ("chat", "auto")


def figures(rec: dict) -> dict[str, float]:
    out = {}
    if t := rec.get("tokenization"):
        out["client.tokenization.share"] = t["share"]
    for k, v in (rec.get("golden") or {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"client.golden.{k}"] = v
    return out


def apply_gates(rec: dict, gates: dict) -> list[dict]:
    """min_client_agreement on the golden prompts' tokenization (DEFAULT_MIN_AGREEMENT when unset), and
    min_golden_em on the client's golden exact match."""
    figs = figures(rec)
    want = {"min_client_agreement": ("client.tokenization.share",
                                     gates.get("min_client_agreement", DEFAULT_MIN_AGREEMENT)),
            "min_golden_em": ("client.golden.exact_match", gates.get("min_golden_em"))}
    out = []
    for gate, (figure, limit) in want.items():
        if limit is None or figure not in figs:
            continue
        out.append({"gate": gate, "figure": figure, "value": figs[figure], "limit": limit,
                    "passed": bool(figs[figure] >= limit)})
    return out


def describe(rec: dict) -> str:
    """The record in one console line."""
    parts = []
    if t := rec.get("tokenization"):
        parts.append(f"{t['agree']}/{t['golden_prompts']} golden prompts tokenized as the source")
    if (g := rec.get("golden")) and "exact_match" in g:
        parts.append(f"golden EM {g['exact_match']:.3f}")
    for name, r in (rec.get("tasks") or {}).items():
        parts.append(f"{name} acc {r['acc']:.3f}")
    if (s := rec.get("speed")) and s.get("gen_tokens_per_s"):
        parts.append(f"{s['gen_tokens_per_s']:.0f} gen tok/s")
    return "; ".join(parts) or "nothing to evaluate"
