"""Peak memory and wall time of writing the trtllm FP8 checkpoint of the `mid` model, and FP8's weight error.

    .venv/bin/python bench/fp8_write_memory.py [--work DIR] [--shard-mb 2000 100]

The `mid` model (hidden 1024, 16 layers, 16 heads, 4 KV heads, intermediate 2688, vocab 32000, float32,
about 1 GB) is made once with llmbuild.synth.create_model in --work. Each export runs in a fresh process
that resets its peak-RSS counter (VmHWM, via /proc/self/clear_refs) after the imports, so the figure is
the export's own peak: the resident imports (Python, torch, transformers: the baseline) plus what the
export holds. The aim (issue 6) is a peak under 1.5x the largest shard, not the model's size; both ratios
are printed, with and without the baseline. Then, per layer, the relative error ||W' - W|| / ||W|| of
the FP8 weights (dequantized with their scales) and, for scale, of the same weights rounded to bf16.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MID = {"hidden_size": 1024, "num_hidden_layers": 16, "num_attention_heads": 16, "num_key_value_heads": 4,
           "intermediate_size": 2688, "vocab_size": 32000, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5}


def rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def child(src: str, out: str, shard_mb: int, mode: str) -> None:
    """One export in this process; prints a JSON line of figures."""
    sys.path.insert(0, str(REPO))
    import torch  # noqa: F401  (imported before the counter reset: part of every process's baseline)
    import transformers  # noqa: F401

    from llmbuild.checkpoint import open_checkpoint
    from llmbuild.targets import trtllm
    from llmbuild.targets.common import ArtifactMeta

    opts = trtllm.Options(quant="fp8", shard_size_mb=shard_mb,
                          calibration_text=str(REPO / "data" / "tokenizer_corpus.txt"), calibration_tokens=512)
    if mode == "per_channel":
        opts.fp8_weight_scales, opts.fp8_activation_scales = "per_channel", "dynamic"
    ckpt = open_checkpoint(Path(src))
    Path(out).mkdir(parents=True, exist_ok=True)
    base = rss_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    t = time.monotonic()
    rec = trtllm.export(ckpt, opts, Path(out), ArtifactMeta(name="mid"))
    wall = time.monotonic() - t
    print(json.dumps({"base_rss_kb": base, "peak_rss_kb": rss_kb("VmHWM"), "wall_s": wall,
                      "largest_shard": rec["largest_shard_bytes"], "shards": len(rec["shards"]),
                      "bytes": rec["bytes"]}))


def make_mid(work: Path) -> Path:
    src = work / "mid"
    if not (src / "config.json").exists():
        sys.path.insert(0, str(REPO))
        from llmbuild.synth import create_model

        create_model(src, "LlamaForCausalLM", MID, seed=0, train_text=REPO / "data" / "tokenizer_corpus.txt",
                     vocab_size=2000)
    return src


def weight_errors(src: Path, out: Path) -> list[tuple[int, float, float]]:
    """(layer, fp8 relative error, bf16 relative error) over the layer's seven linears."""
    import torch
    from safetensors import safe_open

    sys.path.insert(0, str(REPO))
    from llmbuild.checkpoint import open_checkpoint

    ckpt = open_checkpoint(src)
    index = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    rows = []
    for i in range(ckpt.config["num_hidden_layers"]):
        e8 = e16 = n = 0.0
        for lin in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                    "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
            name = f"model.layers.{i}.{lin}"
            w = ckpt.get_tensor(f"{name}.weight").float()
            with safe_open(str(out / index[f"{name}.weight"]), framework="pt") as st:
                q, s = st.get_tensor(f"{name}.weight").float(), st.get_tensor(f"{name}.weight_scale").float()
            deq = q * (s[:, None] if s.dim() else s)
            e8 += float((deq - w).pow(2).sum())
            e16 += float((w.to(torch.bfloat16).float() - w).pow(2).sum())
            n += float(w.pow(2).sum())
        rows.append((i, (e8 / n) ** 0.5, (e16 / n) ** 0.5))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=str(REPO / "outputs" / "bench"), help="where the mid model and exports go")
    ap.add_argument("--shard-mb", type=int, nargs="+", default=[2000, 100], help="shard sizes to export with")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child[0], a.child[1], int(a.child[2]), a.child[3])
        return
    work = Path(a.work)
    t = time.monotonic()
    src = make_mid(work)
    model_bytes = sum(f.stat().st_size for f in src.glob("*.safetensors"))
    print(f"mid model: {model_bytes / 2**20:.0f} MiB float32 in {src} ({time.monotonic() - t:.0f} s to make or find)")
    print()
    print("| scales | shard size | shards | largest shard | checkpoint | baseline RSS | peak RSS | peak - baseline |"
          " peak / largest shard | (peak - baseline) / largest shard | peak / model | wall |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    last = None
    for mode in ("per_tensor", "per_channel"):
        for mb in a.shard_mb:
            out = work / f"fp8-{mode}-{mb}"
            proc = subprocess.run([sys.executable, __file__, "--child", str(src), str(out), str(mb), mode],
                                  capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                                  check=False)
            if proc.returncode:
                sys.exit(f"export failed ({mode}, {mb} MB):\n{proc.stderr[-3000:]}")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            peak, base, big = r["peak_rss_kb"] * 1024, r["base_rss_kb"] * 1024, r["largest_shard"]
            print(f"| {mode} {'calibrated' if mode == 'per_tensor' else 'dynamic'} | {mb} MB | {r['shards']} | "
                  f"{big / 2**20:.0f} MiB | {r['bytes'] / 2**20:.0f} MiB | {base / 2**20:.0f} MiB | "
                  f"{peak / 2**20:.0f} MiB | {(peak - base) / 2**20:.0f} MiB | {peak / big:.2f} | "
                  f"{(peak - base) / big:.2f} | {peak / model_bytes:.2f} | {r['wall_s']:.1f} s |")
            last = out if mode == "per_tensor" else last
    print()
    print("FP8 (per-tensor scales) weight error per layer, relative Frobenius norm; bf16 rounding for scale:")
    print()
    print("| layer | FP8 E4M3 | bf16 | FP8 / bf16 |")
    print("|---|---|---|---|")
    for i, e8, e16 in weight_errors(src, last):
        print(f"| {i} | {e8:.4f} | {e16:.5f} | {e8 / e16:.1f} |")


if __name__ == "__main__":
    main()
