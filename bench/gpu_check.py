"""The GPU half of issue 6's checks, run by bench/gpu_check.sh on a machine with an NVIDIA GPU.

Parts (each prints SKIP with the reason when it cannot run, so one missing piece costs only its part):
  fp8     the trtllm FP8 checkpoint's linears through the GPU's FP8 GEMM (torch._scaled_mm, the kernel
          vLLM's ModelOptFp8LinearMethod falls back to) on activations captured from the bf16 model,
          against bf16 matmuls; then FP8 vs bf16 GEMM speed at Llama-3-8B shapes.
  decode  prefill and decode timing of the bf16 `mid` model (transformers, CUDA, KV cache).
  trt     the tensorrt target's engine built with the tensorrt Python API and run, against onnxruntime
          on CPU and against transformers.
Everything is written under WORK; figures are printed as Markdown tables.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CORPUS = REPO / "data" / "tokenizer_corpus.txt"
DEMO = {"hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4, "num_attention_heads": 8,
            "num_key_value_heads": 2, "max_position_embeddings": 1024, "rms_norm_eps": 1e-5}
MID = {"hidden_size": 1024, "num_hidden_layers": 16, "num_attention_heads": 16, "num_key_value_heads": 4,
           "intermediate_size": 2688, "vocab_size": 32000, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5}
ROWS: list[tuple[str, str, str]] = []
# GPU_CHECK_DEVICE=cpu: a dry run of the fp8 error check on a machine without a GPU (timings are skipped)
DEVICE = os.environ.get("GPU_CHECK_DEVICE", "cuda")


def row(part: str, what: str, value: str) -> None:
    ROWS.append((part, what, value))
    print(f"  {part}: {what} = {value}", flush=True)


def model(work: Path, name: str, cfg: dict) -> Path:
    from llmbuild.synth import create_model

    d = work / name
    if not (d / "config.json").exists():
        create_model(d, "LlamaForCausalLM", cfg, seed=0, train_text=CORPUS, vocab_size=2000)
    return d


def cuda_or_skip() -> None:
    import torch

    if DEVICE == "cuda" and not torch.cuda.is_available():
        raise SkipPart(f"torch {torch.__version__} sees no CUDA device (a CPU-only torch build?)")


class SkipPart(Exception):
    pass


def part_fp8(work: Path) -> None:
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmbuild.checkpoint import open_checkpoint
    from llmbuild.targets import trtllm
    from llmbuild.targets.common import ArtifactMeta

    cuda_or_skip()
    cap = torch.cuda.get_device_capability(0) if DEVICE == "cuda" else (9, 0)
    if cap < (8, 9):
        raise SkipPart(f"compute capability {cap[0]}.{cap[1]} has no FP8 tensor cores (needs 8.9+)")
    src = model(work, "demo", DEMO)
    m = AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.bfloat16).to(DEVICE).eval()
    ids = AutoTokenizer.from_pretrained(str(src))(CORPUS.read_text()[:4000], return_tensors="pt").input_ids[:, :512]
    inputs: dict[str, torch.Tensor] = {}
    hooks = [mod.register_forward_pre_hook(lambda mm, a, n=n: inputs.__setitem__(n, a[0].reshape(-1, a[0].shape[-1])))
             for n, mod in m.named_modules() if n.startswith("model.layers.") and isinstance(mod, torch.nn.Linear)]
    with torch.no_grad():
        m(ids.to(DEVICE))
    for h in hooks:
        h.remove()
    # per-tensor: static input_scale, tensor-wise _scaled_mm (vLLM ModelOptFp8LinearMethod);
    # per-channel: activations scaled per token at run time, row-wise _scaled_mm (ModelOptFp8PcPtLinearMethod)
    for scales, extra in (("per-tensor", {}),
                          ("per-channel", {"fp8_weight_scales": "per_channel", "fp8_activation_scales": "dynamic"})):
        out = work / f"demo-fp8-{scales}"
        if not (out / "hf_quant_config.json").exists():
            out.mkdir(parents=True, exist_ok=True)
            trtllm.export(open_checkpoint(src), trtllm.Options(quant="fp8", calibration_text=str(CORPUS), **extra),
                          out, ArtifactMeta(name="demo"))
        index = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
        errs_fp8 = []
        for name, x in inputs.items():
            with safe_open(str(out / index[f"{name}.weight"]), framework="pt", device=DEVICE) as st:
                w8, ws = st.get_tensor(f"{name}.weight"), st.get_tensor(f"{name}.weight_scale").float()
                xs = st.get_tensor(f"{name}.input_scale").float().reshape(()) if not extra else None
            w = m.get_submodule(name).weight
            ref = x.float() @ w.float().T
            if xs is None:
                xs = (x.float().abs().amax(dim=-1, keepdim=True) / 448).clamp(min=1e-12)  # [tokens, 1]
                ws = ws.reshape(1, -1)  # [1, out]
            else:
                ws = ws.reshape(())
            x8 = (x.float() / xs).clamp(-448, 448).to(torch.float8_e4m3fn)
            y8 = torch._scaled_mm(x8, w8.t(), scale_a=xs, scale_b=ws, out_dtype=torch.bfloat16)
            errs_fp8.append(float((y8.float() - ref).norm() / ref.norm()))
        row("fp8", f"{scales}: linears checked (checkpoint weights, captured activations)", str(len(errs_fp8)))
        row("fp8", f"{scales}: rel. error FP8 _scaled_mm vs fp32 (mean / max)",
            f"{sum(errs_fp8) / len(errs_fp8):.4f} / {max(errs_fp8):.4f}")
    errs_bf16 = []
    for name, x in inputs.items():
        w = m.get_submodule(name).weight
        ref = x.float() @ w.float().T
        errs_bf16.append(float(((x @ w.T).float() - ref).norm() / ref.norm()))
    row("fp8", "rel. error bf16 matmul vs fp32 (mean / max)", f"{sum(errs_bf16) / len(errs_bf16):.4f} / {max(errs_bf16):.4f}")
    if DEVICE != "cuda":
        return
    # speed at Llama-3-8B's MLP shape: tokens x 4096 -> 14336
    for mtok in (16, 4096):
        a = torch.randn(mtok, 4096, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(14336, 4096, device="cuda", dtype=torch.bfloat16) * 0.02
        one = torch.tensor(1.0, device="cuda")
        a8, b8 = a.to(torch.float8_e4m3fn), (b * 50).to(torch.float8_e4m3fn)
        t16 = _time(lambda a=a, b=b: a @ b.T)
        t8 = _time(lambda a8=a8, b8=b8, one=one: torch._scaled_mm(a8, b8.t(), scale_a=one, scale_b=one,
                                                                   out_dtype=torch.bfloat16))
        flops = 2 * mtok * 4096 * 14336
        row("fp8", f"GEMM {mtok}x4096x14336 bf16 / FP8 (TFLOP/s)",
            f"{flops / t16 / 1e12:.0f} / {flops / t8 / 1e12:.0f} (x{t16 / t8:.2f})")


def _time(fn, reps: int = 50) -> float:
    import torch

    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps


def part_decode(work: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    if not torch.cuda.is_available():  # timings only: no CPU dry run of this part
        raise SkipPart(f"torch {torch.__version__} sees no CUDA device; decode timings need one")
    src = model(work, "mid", MID)
    m = AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.bfloat16).cuda().eval()
    row("decode", "model", f"mid, {sum(p.numel() for p in m.parameters()) / 1e6:.0f}M params, bf16, "
                           f"{torch.cuda.get_device_name(0)}")
    with torch.no_grad():
        for batch, plen in ((1, 512), (8, 512)):
            ids = torch.randint(3, 2000, (batch, plen), device="cuda")
            t = _time(lambda ids=ids: m(ids), reps=10)
            row("decode", f"prefill {batch}x{plen} tokens", f"{t * 1e3:.1f} ms ({batch * plen / t:,.0f} tok/s)")
            new = 128
            m.generate(ids, max_new_tokens=8, min_new_tokens=8, do_sample=False)  # warm-up
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            m.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False)
            torch.cuda.synchronize()
            dt = time.perf_counter() - t0 - t
            row("decode", f"decode {batch}x{new} tokens after the prompt", f"{dt / new * 1e3:.2f} ms/step "
                                                                         f"({batch * new / dt:,.0f} tok/s)")


def part_trt(work: Path) -> None:
    import importlib.util

    import numpy as np

    if importlib.util.find_spec("tensorrt") is None:
        raise SkipPart("the tensorrt package is not installed (pip install tensorrt failed or was skipped)")
    cuda_or_skip()
    from llmbuild.checkpoint import open_checkpoint
    from llmbuild.stages import reference
    from llmbuild.stages.verify import compare
    from llmbuild.targets import tensorrt as R
    from llmbuild.targets.common import ArtifactMeta

    src = model(work, "demo", DEMO)
    out = work / "demo-trt"
    out.mkdir(parents=True, exist_ok=True)
    opts = R.Options(precision="fp16", engine="required",
                     profiles=R.Profiles(batch=R.Range(1, 1, 8), seq=R.Range(1, 128, 1024)))
    R.check(opts, open_checkpoint(src).config, "targets.tensorrt")
    t = time.perf_counter()
    rec = R.export(open_checkpoint(src), opts, out, ArtifactMeta(name="demo"))
    row("trt", "export + engine build", f"{time.perf_counter() - t:.1f} s (build {rec['build_seconds']} s)")
    row("trt", "engine tied to", f"{rec['gpu']}, sm {rec['compute_capability']}, TensorRT {rec['tensorrt']}")
    (work / "ref").mkdir(exist_ok=True)
    probes = ["The quick brown fox jumps over the lazy dog.", "one, two, three, four, five, six"]
    reference.run(src, probes, 64, "auto", False, work / "ref")
    ids, ref = reference.load(work / "ref" / "reference.npz")
    eng = R.run_logits(out, rec, ids)
    ort = R.run_logits(out, {**rec, "engine": "deferred"}, ids)
    for label, logits in (("engine vs transformers fp32", eng), ("onnxruntime CPU vs transformers fp32", ort)):
        mtr = compare(ref, logits)
        row("trt", label, f"top-1 {mtr['top1']:.4f}, KLD {mtr['kld_mean']:.2e}, max |dlogit| {mtr['max_abs_diff']:.3g}")
    run = R._engine_runner(out)
    x = list(np.random.default_rng(0).integers(3, 2000, 512))
    run(x)
    t = time.perf_counter()
    for _ in range(20):
        run(x)
    row("trt", "engine latency, 1x512 tokens", f"{(time.perf_counter() - t) / 20 * 1e3:.2f} ms")


def main() -> int:
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "outputs" / "gpu-check"
    work.mkdir(parents=True, exist_ok=True)
    parts = sys.argv[2].split(",") if len(sys.argv) > 2 else ["fp8", "decode", "trt"]
    failed = 0
    for name in parts:
        fn = {"fp8": part_fp8, "decode": part_decode, "trt": part_trt}[name]
        print(f"== {name}", flush=True)
        t = time.perf_counter()
        try:
            fn(work)
            row(name, "part time", f"{time.perf_counter() - t:.0f} s")
        except SkipPart as e:
            row(name, "SKIP", str(e))
        except Exception as e:
            traceback.print_exc()
            row(name, "FAIL", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            failed += 1
    print("\n| part | figure | value |\n|---|---|---|")
    for p, w, v in ROWS:
        print(f"| {p} | {w} | {v} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
