"""Peak memory of llmbuild's conversions as the model grows 4x: `mid` (240M) beside `1b` (971M), side by side.

    .venv/bin/python bench/scale_memory.py [--repeat N] [--only GLOB ...]

Both models come from bench/make_models.py (float32 Llama checkpoints, made on first use in
bench/.work/models; `1b` is written tensor by tensor). Each conversion is the backend's export in a fresh
process under GNU time (bench/convert_compare.py's export child and `measure`: wall clock and peak RSS), the
rows of both models interleaved in every round on a warm file cache:
- gguf quant=q8_0 (the C block quantizers when llama-cpp-python is installed, as a build runs it);
- onnx dtype=fp32 (external data: the 1b graph's weights are 3.9 GB);
- trtllm quant=fp8 (per-tensor weight scales, input scales calibrated on 512 tokens of
  data/tokenizer_corpus.txt, one decoder layer at a time).
Printed: each row's wall, peak RSS and output size per model, and peak(1b) / peak(mid) per target; the aim
(issue 13) is a flat peak, within +-10% (a ratio of 0.9-1.1) for a model 4x the size. The table goes to
bench/.work/scale_memory.json as well. The outputs are not run here: tests/ and bench/convert_compare.py
verify the same exports on smaller models.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import shutil
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

import convert_compare as cc  # noqa: E402  (bench/ is not a package)
import make_models  # noqa: E402

WORK = cc.WORK
MODELS = ("mid", "1b")
CALIBRATION = REPO / "data" / "tokenizer_corpus.txt"
TOOLS = [
    cc.ours("gguf-q8_0", "GGUF Q8_0", "q8_0", "gguf", "gguf", quant="q8_0"),
    cc.ours("onnx-fp32", "ONNX fp32 + KV", "fp32", "onnx", "onnx", dtype="fp32"),
    cc.ours("trtllm-fp8", "trtllm FP8 (per tensor, calibrated)", "fp8", "-", "trtllm", quant="fp8",
            calibration_text=str(CALIBRATION), calibration_tokens=512),
]
FLAT = 0.10  # the aim: peak(1b) within 10% of peak(mid)


def params(model: Path) -> int:
    from llmbuild.checkpoint import open_checkpoint

    shapes = open_checkpoint(model).tensor_shapes()
    total = 0
    for shape, _ in shapes.values():
        n = 1
        for d in shape:
            n *= d
        total += n
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("--repeat", type=int, default=1, metavar="N", help="rounds; the median is shown (default 1)")
    ap.add_argument("--only", nargs="+", metavar="GLOB", help=f"rows: {', '.join(t.id for t in TOOLS)}")
    ap.add_argument("--json", type=Path, default=WORK / "scale_memory.json", help="default: %(default)s")
    a = ap.parse_args()
    tools = [t for t in TOOLS if not a.only or any(fnmatch.fnmatch(t.id, g) for g in a.only)]
    if not tools:
        ap.error(f"--only matches no row; rows: {', '.join(t.id for t in TOOLS)}")
    if not Path(cc.GNU_TIME).exists():
        sys.exit(f"{cc.GNU_TIME} (GNU time) is missing: apt-get update && apt-get install -y time")
    models = {name: make_models.make(name) for name in MODELS}
    sizes = {name: params(m) for name, m in models.items()}
    for name, m in models.items():
        print(f"{name}: {sizes[name] / 1e6:.1f}M parameters, {cc.dir_mb(m):.0f} MB", flush=True)
        cc.warm(m, {"llmbuild"})
    runs: dict[tuple[str, str], list[dict]] = {}
    for r in range(a.repeat):
        for t in tools:
            for name, model in models.items():
                out = WORK / "out" / f"scale-{name}" / t.id
                scratch = WORK / "out" / f"scale-{name}" / f"{t.id}.scratch"
                for d in (out, scratch):
                    shutil.rmtree(d, ignore_errors=True)
                    d.mkdir(parents=True)
                log = WORK / "out" / f"scale-{name}" / f"{t.id}.log"
                print(f"  [{r + 1}/{a.repeat}] {t.id} {name} ...", end=" ", flush=True)
                m = cc.measure(cc.fill(t.argv, model, out, scratch), cc.child_env(t), log)
                m["output_mb"] = cc.dir_mb(out)
                own = scratch / "record.peak"  # the export process alone (export_child), without its children
                m["process_peak_mb"] = float(own.read_text()) if own.is_file() else float("nan")
                print(f"rc {m['rc']}, {m['wall_s']:.1f} s, {m['peak_rss_mb']:.0f} MB "
                      f"(the export process alone {m['process_peak_mb']:.0f} MB)" +
                      (f" (see {log})" if m["rc"] else ""), flush=True)
                runs.setdefault((t.id, name), []).append(m)
                shutil.rmtree(out, ignore_errors=True)  # the 1b outputs are GBs each
    rows = []
    print("\n| target | model | params | wall s | peak RSS MB | export process alone MB | output MB |"
          "\n|---|---|---|---|---|---|---|")
    for t in tools:
        for name in MODELS:
            ms = runs[(t.id, name)]
            ok = [m for m in ms if m["rc"] == 0]
            med = {k: statistics.median(m[k] for m in ok)
                   for k in ("wall_s", "peak_rss_mb", "process_peak_mb", "output_mb")} if ok else {}
            rows.append({"id": t.id, "tool": t.tool, "model": name, "params": sizes[name], "runs": ms, **med})
            cell = (f"{med['wall_s']:.1f} | {med['peak_rss_mb']:.0f} | {med['process_peak_mb']:.0f} | "
                    f"{med['output_mb']:.0f}" if ok else "FAIL | - | - | -")
            print(f"| {t.output} | {name} | {sizes[name] / 1e6:.0f}M | {cell} |")
    grow = sizes["1b"] / sizes["mid"]
    print(f"\n| target | peak RSS 1b / mid (model {grow:.2f}x) | export process alone | wall 1b / mid | "
          f"aim: peak within +-{FLAT:.0%} |\n|---|---|---|---|---|")
    ratios = []
    for t in tools:
        mid, big = (next(r for r in rows if r["id"] == t.id and r["model"] == n) for n in MODELS)
        if "peak_rss_mb" not in mid or "peak_rss_mb" not in big:
            print(f"| {t.output} | - | - | not measured (a run failed) |")
            continue
        rat = big["peak_rss_mb"] / mid["peak_rss_mb"]
        own = big["process_peak_mb"] / mid["process_peak_mb"]
        ratios.append({"id": t.id, "peak_ratio": rat, "process_peak_ratio": own,
                       "wall_ratio": big["wall_s"] / mid["wall_s"]})
        print(f"| {t.output} | {rat:.2f}x | {own:.2f}x | {big['wall_s'] / mid['wall_s']:.2f}x | "
              f"{'met' if abs(rat - 1) <= FLAT else 'not met'} |")
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps({"environment": cc.environment(), "repeat": a.repeat, "model_ratio": grow,
                                  "rows": rows, "ratios": ratios}, indent=2))
    print(f"\nwritten to {a.json}")


if __name__ == "__main__":
    main()
