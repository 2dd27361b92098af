"""Verify: run an artifact in its own runtime on the probe token ids and compare with the source.

The figures are those llama.cpp's `llama-perplexity --kl-divergence` reports: mean and 99th
percentile KL divergence of the artifact's next-token distribution from the source's, top-1
agreement, plus the largest absolute logit difference. With `eval.kv_check` the second half of each
probe is decoded token by token through the runtime's KV cache and compared the same way, so a
broken past-key-values path fails the gates too. Gates are applied by the engine, not here, so
tightening a gate does not rerun the runtime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def compare(ref: list[np.ndarray], art: list[np.ndarray]) -> dict:
    r = np.concatenate(ref).astype(np.float64)
    a = np.concatenate(art).astype(np.float64)
    if r.shape != a.shape:
        raise ValueError(f"logit shapes differ: source {r.shape}, artifact {a.shape}")
    lr = r - np.logaddexp.reduce(r, axis=-1, keepdims=True)
    la = a - np.logaddexp.reduce(a, axis=-1, keepdims=True)
    kld = np.sum(np.exp(lr) * (lr - la), axis=-1)
    return {
        "positions": int(r.shape[0]),
        "top1": float(np.mean(r.argmax(-1) == a.argmax(-1))),
        "kld_mean": float(kld.mean()),
        "kld_p99": float(np.percentile(kld, 99)),
        "max_abs_diff": float(np.abs(r - a).max()),
    }


def run(backend, artifact_dir: Path, export_record: dict, reference_file: Path, kv_check: bool) -> dict:
    from llmbuild.stages import reference

    token_ids, ref_logits = reference.load(reference_file)
    full = backend.run_logits(artifact_dir, export_record, token_ids)
    metrics = compare(ref_logits, full)
    rec = {"status": "verified", "runtime": backend.runtime.dist, "metrics": metrics}
    if kv_check:
        splits = [max(1, len(t) // 2) for t in token_ids]
        kv = []
        for ids, s in zip(token_ids, splits):
            kv.extend(backend.run_logits(artifact_dir, export_record, [ids], split=s))
        rec["kv_metrics"] = compare(ref_logits, kv)
    ref_routing = reference.load_routing(reference_file)
    if ref_routing is not None:
        if backend.no_routing:
            rec["routing"] = {"status": "not observable", "reason": backend.no_routing}
        else:
            rec["routing"] = routing_agreement(ref_routing, backend.run_routing(artifact_dir, export_record, token_ids))
    return rec


def routing_agreement(ref: list[np.ndarray], art: list[np.ndarray]) -> dict:
    """The share of (token, sparse layer) pairs whose set of experts in the artifact is the source's,
    overall and in the layer that agrees least. Each array is [layers, tokens, top_k], rows sorted."""
    r, a = np.concatenate(ref, axis=1), np.concatenate(art, axis=1)
    if r.shape != a.shape:
        raise ValueError(f"routing shapes differ: source {r.shape}, artifact {a.shape}")
    same = (r == a).all(axis=-1)  # [layers, tokens]
    return {"status": "measured", "agreement": float(same.mean()), "lowest_layer": float(same.mean(axis=1).min()),
            "layers": int(r.shape[0]), "tokens": int(r.shape[1]), "top_k": int(r.shape[2])}


# gate -> (comparison, the verify figure it bounds (probe prompts, full and KV-cache runs) or None, the
# evaluate figures it bounds; "*" stands for any task name). A recipe sets these under
# targets.NAME.gates; the Gates dataclass (llmbuild/targets/common.py) rejects any other name.
GATES = {
    "min_top1": (">=", "top1", ["parity.top1"]),
    "max_kld": ("<=", "kld_mean", ["parity.kld_mean"]),
    "max_abs_diff": ("<=", "max_abs_diff", []),
    "max_ppl_ratio": ("<=", None, ["parity.ppl_ratio", "perplexity.ratio"]),
    "min_acc": (">=", None, ["tasks.*.acc"]),
    "min_golden_em": (">=", None, ["golden.exact_match"]),
    "min_client_agreement": (">=", None, []),  # the client stage's (llmbuild/evaluation/clients.py)
}

def apply_gates(record: dict, gates: dict) -> list[dict]:
    """Each gate with its figure, limit and verdict; worst of the full and KV-cache runs. Gates that
    bound no verify figure (perplexity, accuracy, golden set) are the evaluate stage's."""
    results = []
    for gate, limit in gates.items():
        if limit is None or GATES[gate][1] is None:
            continue
        op, figure, _ = GATES[gate]
        runs = [record["metrics"]] + ([record["kv_metrics"]] if record.get("kv_metrics") else [])
        values = [m[figure] for m in runs]
        value = min(values) if op == ">=" else max(values)
        ok = value >= limit if op == ">=" else value <= limit
        results.append({"gate": gate, "figure": figure, "value": value, "limit": limit, "passed": bool(ok)})
    return results
