"""A synthetic 1.5B-parameter Mixtral converted to GGUF Q8_0 by llmbuild and by llama.cpp's converter, side by side.

    .venv/bin/python bench/moe_convert.py [--repeat N] [--no-verify]

The model (`moe-1.5b`, made on first use in bench/.work/models): the `mid` model's attention (hidden 1024,
16 layers, 16 heads, 4 KV heads, vocabulary 32000) with 8 experts of intermediate size 3584 per layer, top-2,
in bfloat16 as Mixtral ships, 1.52B parameters in 17 safetensors shards (one per layer, the embeddings and
output in the last), random weights from a seeded generator written tensor by tensor, so making it needs no
model in memory. The tokenizer is the 2,000-piece SentencePiece of bench/make_models.py.

Rows, each one command in a fresh process under GNU time (bench/convert_compare.py's `measure`: wall clock
and peak RSS), back to back on a warm file cache:
- llama.cpp: `convert_hf_to_gguf.py --outtype q8_0` from the installed llama-cpp-python's sdist (fetched by
  convert_compare.py's setup into bench/.work/llama.cpp), with its own gguf-py;
- llmbuild: the gguf backend's export (convert_compare.py's export child), quant q8_0;
- baselines: a process that does what llmbuild's export child does before the first tensor (imports, the
  checkpoint's headers, the plan-time checks: the tokenizer is read by transformers, which imports torch),
  then exits; and one that imports what the converter imports (torch, its gguf-py, conversion/): each
  interpreter's own peak, subtracted to give what converting costs.
Printed: the table, the ratios llmbuild / llama.cpp (aims: wall <= 0.6x, peak RSS <= 0.5x) and llmbuild's
peak above the baseline against one layer's experts in the checkpoint (3 x 8 x 1024 x 3584 bfloat16 = 176 MB;
aim: under 1.5x). With verification (the default), each GGUF runs in llama.cpp on llmbuild's probe prompts
against the torch model (convert_compare.py's verify: Q8_0's KLD and max-diff gates), and llmbuild's file is
checked for the same tensors and types as llama.cpp's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

import convert_compare as cc  # noqa: E402  (bench/ is not a package)

WORK = cc.WORK
ME = Path(__file__).resolve()
NAME = "moe-1.5b"
CONFIG = {"hidden_size": 1024, "num_hidden_layers": 16, "num_attention_heads": 16, "num_key_value_heads": 4,
          "intermediate_size": 3584, "num_local_experts": 8, "num_experts_per_tok": 2, "vocab_size": 32000,
          "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 1e6, "tie_word_embeddings": False}
AIM_WALL, AIM_MEM, AIM_LAYER = 0.6, 0.5, 1.5


def experts_bytes(cfg: dict = CONFIG) -> int:
    """One layer's experts in the checkpoint (bfloat16): gate, up and down of every expert."""
    return 3 * cfg["num_local_experts"] * cfg["hidden_size"] * cfg["intermediate_size"] * 2


def make_model(out: Path = WORK / "models" / NAME) -> Path:
    """The checkpoint, written shard by shard (one decoder layer each) with a seeded generator."""
    if (out / "model.safetensors.index.json").exists():
        return out
    import shutil

    import torch
    from safetensors.torch import save_file
    from transformers import MixtralConfig

    from llmbuild.synth import BOS_ID, EOS_ID, train_tokenizer

    tmp = out.with_name(f".{NAME}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    train_tokenizer(REPO / "data" / "tokenizer_corpus.txt", 2000, tmp)
    cfg = MixtralConfig(**CONFIG, bos_token_id=BOS_ID, eos_token_id=EOS_ID)
    cfg.architectures = ["MixtralForCausalLM"]
    cfg.dtype = "bfloat16"
    cfg.save_pretrained(tmp)
    gen = torch.Generator().manual_seed(0)
    h, inter, kv = CONFIG["hidden_size"], CONFIG["intermediate_size"], CONFIG["num_key_value_heads"] * 64

    def rand(*shape):
        return (torch.randn(shape, generator=gen) * 0.02).to(torch.bfloat16)

    n = CONFIG["num_hidden_layers"]
    shards = [f"model-{i + 1:05d}-of-{n + 1:05d}.safetensors" for i in range(n + 1)]
    weight_map = {}
    for i in range(n):
        p = f"model.layers.{i}."
        t = {p + "input_layernorm.weight": torch.ones(h, dtype=torch.bfloat16),
             p + "post_attention_layernorm.weight": torch.ones(h, dtype=torch.bfloat16),
             p + "self_attn.q_proj.weight": rand(h, h), p + "self_attn.k_proj.weight": rand(kv, h),
             p + "self_attn.v_proj.weight": rand(kv, h), p + "self_attn.o_proj.weight": rand(h, h),
             p + "block_sparse_moe.gate.weight": rand(CONFIG["num_local_experts"], h)}
        for e in range(CONFIG["num_local_experts"]):
            q = f"{p}block_sparse_moe.experts.{e}."
            t.update({q + "w1.weight": rand(inter, h), q + "w3.weight": rand(inter, h), q + "w2.weight": rand(h, inter)})
        save_file(t, tmp / shards[i], metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(t, shards[i]))
        print(f"  made layer {i + 1}/{n}", end="\r", flush=True)
        del t
    last = {"model.embed_tokens.weight": rand(CONFIG["vocab_size"], h), "model.norm.weight": torch.ones(h, dtype=torch.bfloat16),
            "lm_head.weight": rand(CONFIG["vocab_size"], h)}
    save_file(last, tmp / shards[n], metadata={"format": "pt"})
    weight_map.update(dict.fromkeys(last, shards[n]))
    total = sum((tmp / s).stat().st_size for s in shards)
    (tmp / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                  "weight_map": weight_map}, indent=2))
    tmp.rename(out)
    return out


TOOLS = [
    cc.Tool("llama.cpp-q8_0", "llama.cpp convert_hf_to_gguf.py --outtype q8_0", "GGUF Q8_0", "q8_0", "gguf",
            "llama.cpp", (*cc.CONVERT, "--outtype", "q8_0", "--outfile", "{out}/model.gguf", "{model}")),
    cc.Tool("llmbuild-gguf-q8_0", "llmbuild gguf quant=q8_0", "GGUF Q8_0", "q8_0", "gguf", "llmbuild",
            ("{py}", str(REPO / "bench" / "convert_compare.py"), "--export-child", "gguf", json.dumps({"quant": "q8_0"}),
             "{model}", "{out}", "{scratch}/record.json"), {"backend": "gguf", "quant": "q8_0"}),
    cc.Tool("baseline", "baseline: interpreter + llmbuild's imports, headers read, plan-time checks", "-", "q8_0", "gguf", "llmbuild",
            ("{py}", str(ME), "--baseline-child", "{model}")),
    cc.Tool("baseline-llama.cpp", "baseline: interpreter + the converter's imports", "-", "q8_0", "gguf", "llama.cpp",
            ("{py}", "-c", "import sys; sys.path.insert(0, '{work}/llama.cpp'); import torch, numpy, gguf, conversion")),
]


def baseline_child(model: str) -> None:
    """What llmbuild's export child does before converting anything, then exit: the imports, the headers,
    and the plan-time checks, whose tokenizer read goes through transformers (which imports torch)."""
    import gguf  # noqa: F401
    import numpy  # noqa: F401

    from llmbuild.checkpoint import open_checkpoint
    from llmbuild.targets import gguf as backend

    ckpt = open_checkpoint(Path(model))
    ckpt.tensor_shapes()
    opts = backend.Options(quant="q8_0")
    backend.check_options(opts, "bench.gguf")
    backend.check_model(opts, ckpt.arch, ckpt.dir, "bench.gguf")


def same_layout(ours: Path, theirs: Path) -> str:
    """llmbuild's file holds llama.cpp's tensors, shapes and types: '' or the first difference."""
    import gguf

    a, b = ({t.name: (t.tensor_type.name, tuple(int(x) for x in t.shape)) for t in gguf.GGUFReader(f).tensors}
            for f in (next(ours.glob("*.gguf")), next(theirs.glob("*.gguf"))))
    for name in sorted(set(a) | set(b)):
        if a.get(name) != b.get(name):
            return f"{name}: llmbuild {a.get(name)}, llama.cpp {b.get(name)}"
    return ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("--repeat", type=int, default=1, metavar="N", help="runs per row, interleaved; medians shown")
    ap.add_argument("--no-verify", action="store_true", help="skip running the GGUFs in llama.cpp (saves the "
                    "float32 torch reference, about 6 GB of memory)")
    ap.add_argument("--json", type=Path, default=WORK / "moe_convert.json", help="results (default: %(default)s)")
    ap.add_argument("--baseline-child", nargs=1, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.baseline_child:
        return baseline_child(*a.baseline_child)
    if not Path(cc.GNU_TIME).exists():
        sys.exit(f"{cc.GNU_TIME} (GNU time) is missing: apt-get update && apt-get install -y time")
    WORK.mkdir(parents=True, exist_ok=True)
    why = cc.setup_llama_cpp()
    if why:
        sys.exit(f"llama.cpp's converter is unavailable: {why}")
    model = make_model()
    print(f"{NAME}: {model.relative_to(REPO)}, {cc.dir_mb(model):.0f} MB", flush=True)
    cc.warm(model, {"llmbuild"})
    runs: dict[str, list[dict]] = {t.id: [] for t in TOOLS}
    records = {}
    for r in range(a.repeat):
        for t in TOOLS:
            out, scratch = WORK / "out" / NAME / t.id, WORK / "out" / NAME / f"{t.id}.scratch"
            for d in (out, scratch):
                import shutil

                shutil.rmtree(d, ignore_errors=True)
                d.mkdir(parents=True)
            log = WORK / "out" / NAME / f"{t.id}.log"
            print(f"  [{r + 1}/{a.repeat}] {t.id} ...", end=" ", flush=True)
            m = cc.measure(cc.fill(t.argv, model, out, scratch), cc.child_env(t), log)
            m["output_mb"] = cc.dir_mb(out)
            print(f"{m['wall_s']:.1f} s, {m['peak_rss_mb']:.0f} MB" + (f", exit {m['rc']} (see {log})" if m["rc"] else ""),
                  flush=True)
            runs[t.id].append(m)
            if t.id.startswith("llmbuild") and not m["rc"]:
                records[t.id] = json.loads((scratch / "record.json").read_text())
    rows = {}
    for t in TOOLS:
        rs = runs[t.id]
        rows[t.id] = {"tool": t.tool, "rc": max(x["rc"] for x in rs),
                      **{k: statistics.median(x[k] for x in rs) for k in ("wall_s", "peak_rss_mb", "output_mb")}}
    if not a.no_verify:
        ref = cc.reference(model)
        for t in TOOLS[:2]:  # the two conversions
            if rows[t.id]["rc"]:
                continue
            rows[t.id]["verify"] = cc.verify(t, model, WORK / "out" / NAME / t.id, records.get(t.id), ref)
        rows["llmbuild-gguf-q8_0"]["layout_difference"] = same_layout(WORK / "out" / NAME / "llmbuild-gguf-q8_0",
                                                                      WORK / "out" / NAME / "llama.cpp-q8_0")
    ours, theirs = rows["llmbuild-gguf-q8_0"], rows["llama.cpp-q8_0"]
    base, anchor_base = rows["baseline"], rows["baseline-llama.cpp"]
    layer_mb = experts_bytes() / 1e6
    summary = {"wall_ratio": ours["wall_s"] / theirs["wall_s"], "memory_ratio": ours["peak_rss_mb"] / theirs["peak_rss_mb"],
               "above_baseline_mb": ours["peak_rss_mb"] - base["peak_rss_mb"],
               "anchor_above_baseline_mb": theirs["peak_rss_mb"] - anchor_base["peak_rss_mb"], "layer_experts_mb": layer_mb}
    summary["above_baseline_per_layer_experts"] = summary["above_baseline_mb"] / layer_mb
    summary["anchor_above_baseline_per_layer_experts"] = summary["anchor_above_baseline_mb"] / layer_mb

    print("\n| tool | wall s | peak RSS MB | output MB | runs in llama.cpp |")
    print("|---|---|---|---|---|")
    for t in TOOLS:
        r = rows[t.id]
        v = r.get("verify")
        cell = "-" if v is None else ("FAIL: " + v.get("error", "gates") if not v.get("ok") else
                                      f"OK (top1 {v['metrics']['top1']:.2f}, KLD {v['metrics']['kld_mean']:.1e}, "
                                      f"max diff {v['metrics']['max_abs_diff']:.3f})")
        if r.get("layout_difference"):
            cell += f"; layout differs: {r['layout_difference']}"
        elif "layout_difference" in r:
            cell += "; same tensors, shapes and types as llama.cpp's"
        print(f"| {r['tool']} | {r['wall_s']:.1f} | {r['peak_rss_mb']:.0f} | {r['output_mb']:.0f} | {cell} |")
    s = summary
    print("\n| figure | value | aim | verdict |\n|---|---|---|---|")
    print(f"| wall, llmbuild / llama.cpp | {s['wall_ratio']:.2f}x | <= {AIM_WALL}x | "
          f"{'met' if s['wall_ratio'] <= AIM_WALL else 'missed'} |")
    print(f"| peak RSS, llmbuild / llama.cpp | {s['memory_ratio']:.2f}x | <= {AIM_MEM}x | "
          f"{'met' if s['memory_ratio'] <= AIM_MEM else 'missed'} |")
    print(f"| llmbuild's peak above the baseline / one layer's experts ({layer_mb:.0f} MB) | "
          f"{s['above_baseline_mb']:.0f} MB = {s['above_baseline_per_layer_experts']:.2f}x | < {AIM_LAYER}x | "
          f"{'met' if s['above_baseline_per_layer_experts'] < AIM_LAYER else 'missed'} |")
    print(f"| llama.cpp's peak above its baseline / one layer's experts | {s['anchor_above_baseline_mb']:.0f} MB = "
          f"{s['anchor_above_baseline_per_layer_experts']:.2f}x | - | - |")
    a.json.write_text(json.dumps({"environment": cc.environment(), "config": CONFIG, "repeat": a.repeat, "rows": rows,
                                  "runs": runs, "summary": summary}, indent=2))
    print(f"\nwritten to {a.json}")


if __name__ == "__main__":
    main()
