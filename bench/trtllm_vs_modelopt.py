"""llmbuild's trtllm quantized checkpoints beside NVIDIA ModelOpt's own PTQ + export, on the same model.

    .venv/bin/python bench/trtllm_vs_modelopt.py [--model mid] [--modes fp8 fp8-pc awq] [--work DIR]

ModelOpt (`nvidia-modelopt`, the anchor: what TensorRT-LLM's and vLLM's docs tell users to run, as
examples/llm_ptq/hf_ptq.py) quantizes the whole model in memory with `mtq.quantize` and writes it with
`export_hf_checkpoint`; llmbuild's trtllm target streams tensor by tensor and calibrates one decoder
layer at a time. Both get the same calibration tokens (the first 512 of data/tokenizer_corpus.txt, via
trtllm._calibration_batches) and the same options: FP8 per-tensor with static activation scales, FP8
per-channel with per-token activations, INT4-AWQ with groups of 128. ModelOpt's model is loaded in
bf16, the dtype llmbuild writes, so the two checkpoints hold the same tensors (hf_ptq would keep the
source's float32 for the unquantized ones).

Every step runs in its own process; wall time and peak RSS (VmHWM, reset after the imports, which both
sides make before the clock starts: see preimport) are the quantize+write step's own, from reading the
source to the last byte written. Both checkpoints are then read by the same loader (ModelOpt's quantized
modules, llmbuild/targets/modelopt_loader.py) and compared with the float32 source on held-out windows:
top-1 agreement and mean KL divergence. Ratios are llmbuild / ModelOpt (below 1: llmbuild is faster,
smaller in memory, closer to the source).

The bench models have random weights (bench/make_models.py): no trained activation outliers, so AWQ
has less to find than on a real model; both quantizers face the same model.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / ".work"
CALIB = REPO / "data" / "tokenizer_corpus.txt"
HELDOUT = REPO / "data" / "eval" / "heldout.txt"
MODES = {  # trtllm options; ModelOpt's side gets the matching config (modelopt_loader.modelopt_config)
    "fp8": {"quant": "fp8"},
    "fp8-pc": {"quant": "fp8", "fp8_weight_scales": "per_channel", "fp8_activation_scales": "dynamic"},
    "awq": {"quant": "int4_awq", "awq_group_size": 128},
}


def rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def reset_peak() -> int:
    base = rss_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
    return base


def preimport() -> None:
    """What both sides import before their clock starts: torch, the Llama model code, the tokenizer code
    (a build process has them loaded once; timing them would time Python's imports, ~2 s here)."""
    import torch  # noqa: F401
    import transformers.models.llama.modeling_llama  # noqa: F401
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: F401

    import llmbuild.targets.trtllm  # noqa: F401


def options(mode: str):
    from llmbuild.targets import trtllm

    return trtllm.Options(**MODES[mode], calibration_text=str(CALIB), calibration_tokens=512)


def child_ours(src: str, out: str, mode: str) -> dict:
    preimport()
    from llmbuild.checkpoint import open_checkpoint
    from llmbuild.targets import trtllm
    from llmbuild.targets.common import ArtifactMeta

    opts = options(mode)
    Path(out).mkdir(parents=True, exist_ok=True)
    base = reset_peak()
    t = time.monotonic()
    trtllm.export(open_checkpoint(Path(src)), opts, Path(out), ArtifactMeta(name="bench"))
    return {"wall_s": time.monotonic() - t, "base_kb": base, "peak_kb": rss_kb("VmHWM")}


def child_modelopt(src: str, out: str, mode: str) -> dict:
    import contextlib
    import io
    import warnings

    preimport()
    import torch
    from transformers import AutoModelForCausalLM

    warnings.simplefilter("ignore")
    import modelopt.torch.quantization as mtq
    from modelopt.torch.export import export_hf_checkpoint

    from llmbuild.checkpoint import open_checkpoint
    from llmbuild.targets import modelopt_loader, trtllm

    opts = options(mode)
    batches = trtllm._calibration_batches(open_checkpoint(Path(src)), opts) if trtllm.needs_calibration(opts) else None
    cfg = modelopt_loader.modelopt_config(trtllm.quant_algo(opts), opts.awq_group_size)
    base = reset_peak()
    t = time.monotonic()
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16).eval()
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        loop = (lambda m: [m(row[None]) for row in batches]) if batches is not None else None
        mtq.quantize(model, cfg, loop)
        export_hf_checkpoint(model, export_dir=out)
    return {"wall_s": time.monotonic() - t, "base_kb": base, "peak_kb": rss_kb("VmHWM")}


def windows(src: str, n: int = 8, length: int = 128) -> list[list[int]]:
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(src)(HELDOUT.read_text()).input_ids
    return [ids[i: i + length] for i in range(0, len(ids) - length + 1, length)][:n]


def child_reference(src: str, out: str) -> dict:
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    with torch.inference_mode():
        logits = [model(torch.tensor([w])).logits[0].numpy() for w in windows(src)]
    np.save(out, np.stack(logits))
    return {"windows": len(logits)}


def child_score(src: str, ckpt: str, ref: str) -> dict:
    import numpy as np

    from llmbuild.stages.verify import compare
    from llmbuild.targets import modelopt_loader, trtllm

    algo = json.loads((Path(ckpt) / "hf_quant_config.json").read_text())["quantization"]["quant_algo"]
    rec = {"quant_algo": algo, "loader": {"third_party": modelopt_loader.available()}}
    got = trtllm.run_logits(Path(ckpt), rec, windows(src))
    size = sum(f.stat().st_size for f in Path(ckpt).glob("*.safetensors"))
    return {**compare(list(np.load(ref)), got), "bytes": size}


def run_child(*args: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}, check=False)
    if proc.returncode:
        sys.exit(f"{' '.join(args[:1])} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mid", help="a bench/make_models.py model (tiny, mid)")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    ap.add_argument("--work", default=str(WORK / "trtllm_vs_modelopt"))
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    sys.path.insert(0, str(REPO))
    if a.child:
        kind, *rest = a.child
        fn = {"ours": child_ours, "modelopt": child_modelopt, "reference": child_reference, "score": child_score}[kind]
        print(json.dumps(fn(*rest)))
        return
    sys.path.insert(0, str(REPO / "bench"))
    from make_models import make

    src = make(a.model)
    work = Path(a.work) / a.model
    work.mkdir(parents=True, exist_ok=True)
    ref = work / "reference.npy"
    run_child("reference", str(src), str(ref))
    rows = {}
    for mode in a.modes:
        for who in ("ours", "modelopt"):
            out = work / f"{mode}-{who}"
            if out.exists():
                shutil.rmtree(out)
            made = run_child(who, str(src), str(out), mode)
            rows[(mode, who)] = {**made, **run_child("score", str(src), str(out), str(ref))}
            r = rows[(mode, who)]
            print(f"{mode:7s} {who:8s} wall {r['wall_s']:6.1f} s  peak {r['peak_kb'] / 1024:6.0f} MiB "
                  f"(base {r['base_kb'] / 1024:.0f})  size {r['bytes'] / 2**20:6.1f} MiB  top-1 {r['top1']:.3f}  "
                  f"KLD {r['kld_mean']:.3e}", flush=True)
    (work / "results.json").write_text(json.dumps({f"{m}/{w}": r for (m, w), r in rows.items()}, indent=1))
    print()
    print(f"model {a.model}; ratio = llmbuild / ModelOpt")
    print()
    print("| format | wall s (llmbuild / ModelOpt) | peak RSS MiB | peak above baseline MiB | size | top-1 | "
          "KLD vs source | wall ratio | peak-above-baseline ratio | KLD ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for mode in a.modes:
        o, m = rows[(mode, "ours")], rows[(mode, "modelopt")]
        above = [(r["peak_kb"] - r["base_kb"]) / 1024 for r in (o, m)]
        print(f"| {mode} | {o['wall_s']:.1f} / {m['wall_s']:.1f} | {o['peak_kb'] / 1024:.0f} / {m['peak_kb'] / 1024:.0f} "
              f"| {above[0]:.0f} / {above[1]:.0f} | {o['bytes'] / m['bytes']:.3f} | {o['top1']:.3f} / {m['top1']:.3f} "
              f"| {o['kld_mean']:.2e} / {m['kld_mean']:.2e} | {o['wall_s'] / m['wall_s']:.2f} | "
              f"{above[0] / above[1]:.2f} | {o['kld_mean'] / m['kld_mean']:.2f} |")


if __name__ == "__main__":
    main()
