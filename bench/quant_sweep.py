"""Every quantization type, measured through its runtime, beside the anchors' own quantizers.

    .venv/bin/python bench/quant_sweep.py                 # the mid synthetic model and the demo's model
    .venv/bin/python bench/quant_sweep.py --models demo   # one of them
    .venv/bin/python bench/quant_sweep.py --no-anchors    # llmbuild's rows only

For each model this runs `llmbuild recipe=quant-sweep` (recipes/quant-sweep.yaml: every GGUF type, ONNX
fp32/fp16, the evaluate stage on data/eval/parity.txt with speed) as a user would, into
bench/.work/sweep/, then adds rows made outside the build and scored by the same evaluate stage code on
the same token ids (the build's cached `evalref` entry):
- llama.cpp's own quantizer (`llama_model_quantize` through llama-cpp-python, what `llama-quantize`
  runs) on the build's F16 GGUF, to Q8_0, Q4_0 and Q4_K_M: beside llmbuild's gguf-py Q8_0/Q4_0 (made
  from the checkpoint's float32) and llmbuild's Q4_K_M (llama.cpp's quantizer on an F32 GGUF);
- onnxruntime-genai's builder, `-p int4 -e cpu` (bench/.work/venv-genai, made by bench/convert_compare.py
  or here: torch==2.13.0 transformers==5.24.0 onnxruntime-genai==0.18.0 onnxruntime==1.32.0 onnx onnx-ir);
- ONNX int8 and int4 from llmbuild's onnx_quant module applied to the build's fp32 graph (the step the
  onnx target's `quant` option runs once onnx.py calls it).
Models: `mid` is recipes/quant-sweep.yaml's own (bench/make_models.py's mid, built by the acquire stage);
`demo` is the fine-tuned model of `llmbuild recipe=demo` (built here first if needed), given to the same
recipe as a local checkpoint.

Columns: size (the model file(s), MB = 10^6 bytes), bits per weight (file tensor bytes * 8 / parameters
for GGUF, file bytes * 8 / parameters for ONNX), mean and p99 KL divergence, top-1 agreement and
perplexity ratio against the fp32 source in PyTorch, prompt and generated tokens/s (same prompt, 32 new
tokens, 2 threads, median of 3; x = against the fp32 torch source), quantization time (the export, or
for anchors their command). Results: bench/.work/quant_sweep-<model>.json and .md.
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
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / ".work"
SWEEP = WORK / "sweep"
GENAI_PY = WORK / "venv-genai" / "bin" / "python"
GENAI_PKGS = ["torch==2.13.0", "transformers==5.24.0", "onnxruntime-genai==0.18.0", "onnxruntime==1.32.0", "onnx",
              "onnx-ir"]
LLAMA_CPP_ROWS = ("q8_0", "q4_0", "q4_k_m")  # llama.cpp's quantizer on the F16 GGUF
# (ours, anchor): the ratios printed under the table
PAIRS = [("gguf-q8_0", "llama.cpp-q8_0"), ("gguf-q4_0", "llama.cpp-q4_0"), ("gguf-q4_k_m", "llama.cpp-q4_k_m"),
         ("gguf-q4_k_m-imatrix", "llama.cpp-q4_k_m"), ("onnx-int4", "genai-int4")]

sys.path.insert(0, str(REPO))
# the rows scored in this process must wait like the build's (the CLI sets this before any runtime loads):
# spinning threads would make this process's rows faster than the build's and the comparison unfair
os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "OMP_WAIT_POLICY": "PASSIVE"}


def llmbuild(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "llmbuild.cli", *args]
    print("$", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=cwd, env=env(), text=True, capture_output=True)


def build(model: str) -> Path:
    """The quant-sweep build folder for a model (exit 4, a gate failed, still leaves every figure)."""
    cwd = SWEEP / model
    cwd.mkdir(parents=True, exist_ok=True)
    args = ["recipe=quant-sweep"]
    if model == "demo":
        args += ["model.source=local", f"model.path={demo_model()}", "build.model_name=llmbuild-demo-sweep",
                 "eval.window=0"]
    t0 = time.time()
    proc = llmbuild(args, cwd)
    if proc.returncode not in (0, 4):
        sys.exit(f"quant-sweep build of {model} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    if proc.returncode == 4:
        print(f"  {model}: built, some gates failed: {proc.stderr.strip().splitlines()[-1]}")
    print(f"  {model}: build took {time.time() - t0:.0f} s")
    builds = [p for p in (cwd / "outputs" / "quant-sweep").iterdir() if p.is_dir() and not p.is_symlink()]
    return max(builds, key=lambda p: p.stat().st_mtime)


def demo_model() -> Path:
    """The demo's fine-tuned (merged) checkpoint, from a demo build in bench/.work/sweep/demo-build."""
    cwd = SWEEP / "demo-build"
    cwd.mkdir(parents=True, exist_ok=True)
    latest = cwd / "outputs" / "demo" / "latest"
    if not latest.exists():
        proc = llmbuild(["recipe=demo"], cwd)
        if proc.returncode:
            sys.exit(f"demo build failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    path = Path(json.loads((latest / "manifest.json").read_text())["inputs"]["model_dir"])
    return path if path.is_absolute() else cwd / path  # recorded relative to where the build ran


def eval_config(raw: dict):
    from llmbuild.config import EvalConfig, McFormat, McTask

    e = dict(raw)
    e["tasks"] = [McTask(name=t["name"], path=t["path"], format=McFormat(t["format"]), limit=t["limit"])
                  for t in e.get("tasks", [])]
    return EvalConfig(**e)


def row(name: str, quantizer: str, nbytes: int, bpw, ev: dict, seconds, note: str = "") -> dict:
    p, s = ev.get("parity") or {}, ev.get("speed") or {}
    return {"artifact": name, "quantizer": quantizer, "mb": round(nbytes / 1e6, 2), "bpw": bpw,
            "kld_mean": p.get("kld_mean"), "kld_p99": p.get("kld_p99"), "top1": p.get("top1"),
            "ppl_ratio": p.get("ppl_ratio"), "prompt_tps": s.get("prompt_tokens_per_s"),
            "gen_tps": s.get("gen_tokens_per_s"), "gen_vs_torch": s.get("gen_tokens_vs_torch"),
            "quant_s": seconds, "note": note}


def sweep(model: str, anchors: bool) -> dict:
    from llmbuild.cache import Cache
    from llmbuild.stages import evaluate
    from llmbuild.targets import gguf, onnx, onnx_quant

    d = build(model)
    m = json.loads((d / "manifest.json").read_text())
    ev_all = json.loads((d / "eval.json").read_text())
    cache = Cache(d.parents[1] / ".cache")
    key = next(s["key"] for s in m["stages"] if s["stage"] == "evalref")
    eref = cache.lookup("evalref", key)
    cfg = eval_config(m["config"]["eval"])
    model_dir = Path(m["inputs"]["model_dir"])
    model_dir = model_dir if model_dir.is_absolute() else d.parents[2] / model_dir
    hf = json.loads((model_dir / "config.json").read_text())
    seconds = {s["stage"]: s["seconds"] for s in m["stages"]}
    src = ev_all["source"]
    rows = [row("source", f"torch {src['model_dtype']}", 0, None, {"parity": {"kld_mean": 0, "kld_p99": 0, "top1": 1,
                                                                            "ppl_ratio": 1},
                                                                 "speed": {**src["speed"], "gen_tokens_vs_torch": 1}},
                None)]
    for a in m["artifacts"]:
        exp = a.get("export") or {}
        ev = a.get("evaluation") or {}
        q = exp.get("quantizer", {}).get("name") if isinstance(exp.get("quantizer"), dict) else "llmbuild onnx"
        gates = [g for g in ev.get("gates", []) + (a.get("verification") or {}).get("gates", []) if not g["passed"]]
        note = "; ".join(f"{g['gate']} {g['figure']} {g['value']:.3g}" for g in gates)
        rows.append(row(a["target"], q or "gguf-py", exp.get("bytes", 0), exp.get("bits_per_weight"), ev,
                        exp.get("quantize_seconds", seconds.get(f"export:{a['target']}")),
                        ("gates failed: " + note) if note else ""))

    def evaluate_dir(backend, name, out, record):
        return evaluate.run(backend, name, out, record, eref.out, eref.record, model_dir, cfg, False)

    extra = d / "bench-extra"
    shutil.rmtree(extra, ignore_errors=True)
    extra.mkdir()
    # llmbuild's ONNX int8/int4: onnx_quant on the build's fp32 graph (timed: that step alone)
    for quant in ("int8", "int4"):
        out = extra / f"onnx-{quant}"
        shutil.copytree(d / "artifacts" / "onnx-fp32", out)
        fp32 = next(a for a in m["artifacts"] if a["target"] == "onnx-fp32")["export"]
        t0 = time.monotonic()
        rec = onnx_quant.apply(out, SimpleNamespace(quant=quant, dtype="fp32", block_size=32, accuracy_level=4), fp32)
        dt = time.monotonic() - t0
        rows.append(row(f"onnx-{quant}", rec["quant"]["method"], rec["bytes"], rec["bits_per_weight"],
                        evaluate_dir(onnx.BACKEND, "onnx", out, rec), round(dt, 2)))
        print(f"  {model}: onnx-{quant} done", flush=True)
    if anchors:
        f16 = next((d / "artifacts" / "gguf-f16").glob("*.gguf"))
        n_params = next(a for a in m["artifacts"] if a["target"] == "gguf-f16")["export"]["params"]
        for quant in LLAMA_CPP_ROWS:
            out = extra / f"llama.cpp-{quant}"
            out.mkdir()
            t0 = time.monotonic()
            gguf.llama_quantize(f16, out / f"model-{quant}.gguf", quant, 2)
            dt = time.monotonic() - t0
            st = gguf.file_stats(out / f"model-{quant}.gguf")
            rec = {"file": f"model-{quant}.gguf"}
            rows.append(row(f"llama.cpp-{quant}", "llama.cpp llama_model_quantize on the F16 GGUF",
                            (out / rec["file"]).stat().st_size, st["bits_per_weight"],
                            evaluate_dir(gguf.BACKEND, "gguf", out, rec), round(dt, 2)))
            print(f"  {model}: llama.cpp-{quant} done ({n_params} params)", flush=True)
        genai = genai_int4(model_dir, extra / "genai-int4")
        if genai:
            out, dt = genai
            from llmbuild.evaluation import onnx_runtime

            heads = hf["num_attention_heads"]
            rec = {"head_dim": hf.get("head_dim") or hf["hidden_size"] // heads,
                   "kv_heads": hf.get("num_key_value_heads") or heads}
            backend = SimpleNamespace(run_logits=onnx_runtime.run_logits, generate=onnx_runtime.generate,
                                      runtime=onnx.BACKEND.runtime, no_generation=None, no_speed=None)
            nbytes = sum(p.stat().st_size for p in out.glob("model.onnx*"))
            n_params = next(a for a in m["artifacts"] if a["target"] == "onnx-fp32")["export"]["num_parameters"]
            rows.append(row("genai-int4", "onnxruntime-genai builder -p int4 -e cpu", nbytes,
                            round(nbytes * 8 / n_params, 4), evaluate_dir(backend, "onnx", out, rec), round(dt, 2)))
    result = {"model": model, "build": str(d),
              "config": {k: hf.get(k) for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                                "num_attention_heads", "num_key_value_heads", "vocab_size")},
              "eval": {k: m["config"]["eval"][k] for k in ("text", "window", "max_windows", "speed_prompt_tokens",
                                                           "speed_new_tokens", "speed_repeats", "threads")},
              "source_speed": src["speed"], "rows": rows, "ratios": ratios(rows), "aims": aims(rows)}
    (WORK / f"quant_sweep-{model}.json").write_text(json.dumps(result, indent=2))
    (WORK / f"quant_sweep-{model}.md").write_text(markdown(result))
    return result


def genai_int4(model_dir: Path, out: Path):
    """onnxruntime-genai's int4 build of the model, timed; None (said why) when its venv cannot be had."""
    if not GENAI_PY.exists():
        print(f"  making {GENAI_PY.parent.parent} (pip: {' '.join(GENAI_PKGS)})", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(GENAI_PY.parent.parent)], check=True)
        p = subprocess.run([str(GENAI_PY), "-m", "pip", "install", "-q", *GENAI_PKGS], text=True, capture_output=True)
        if p.returncode:
            print(f"  genai-int4 skipped: pip failed: {p.stderr.strip().splitlines()[-1:]}")
            return None
    t0 = time.monotonic()
    p = subprocess.run([str(GENAI_PY), "-m", "onnxruntime_genai.models.builder", "-i", str(model_dir), "-o", str(out),
                        "-p", "int4", "-e", "cpu", "-c", str(out.parent / "genai-cache")],
                       text=True, capture_output=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    dt = time.monotonic() - t0
    if p.returncode:
        print(f"  genai-int4 skipped: builder failed: {p.stderr.strip().splitlines()[-1:]}")
        return None
    return out, dt


def _get(rows, name):
    return next((r for r in rows if r["artifact"] == name), None)


def ratios(rows) -> list[dict]:
    out = []
    for ours, theirs in PAIRS:
        a, b = _get(rows, ours), _get(rows, theirs)
        if not a or not b:
            continue
        out.append({"ours": ours, "anchor": theirs,
                    **{k: (round(a[k] / b[k], 3) if a[k] and b[k] else None)
                       for k in ("mb", "kld_mean", "top1", "ppl_ratio", "prompt_tps", "gen_tps")}})
    return out


def aims(rows) -> list[str]:
    """The issue's aims, checked on this run's figures."""
    lines = []
    for ours, theirs in (("gguf-q4_k_m", "llama.cpp-q4_k_m"), ("gguf-q4_k_m-imatrix", "llama.cpp-q4_k_m"),
                         ("onnx-int4", "genai-int4")):
        a, b = _get(rows, ours), _get(rows, theirs)
        if a and b:
            ok = a["kld_mean"] <= b["kld_mean"] and a["mb"] <= b["mb"] * 1.02
            lines.append(f"{ours} at least as accurate as {theirs} at the same size: {'yes' if ok else 'NO'} "
                         f"(KLD {a['kld_mean']:.3e} vs {b['kld_mean']:.3e}, {a['mb']} vs {b['mb']} MB)")
    for name in ("onnx-int8", "onnx-int4", "gguf-q8_0", "gguf-q4_k_m", "gguf-q4_0"):
        a = _get(rows, name)
        if a and a["gen_vs_torch"]:
            lines.append(f"{name} generates at >= 2x fp32 torch: {'yes' if a['gen_vs_torch'] >= 2 else 'NO'} "
                         f"(x{a['gen_vs_torch']:.2f})")
    return lines


def _f(v, fmt):
    return "-" if v is None else fmt.format(v)


def markdown(res: dict) -> str:
    e = res["eval"]
    lines = [f"### {res['model']}: every quantization type against the fp32 source",
             "",
             f"Parity on `{Path(e['text']).name}` (windows of {e['window'] or 'the context'} tokens, second half "
             f"scored); speed: {e['speed_prompt_tokens']}-token prompt, {e['speed_new_tokens']} new tokens, "
             f"{e['threads']} threads, median of {e['speed_repeats']}. Build: `{res['build']}`.",
             "",
             "| artifact | quantizer | MB | bpw | mean KLD | p99 KLD | top-1 | PPL ratio | prompt tok/s | gen tok/s | "
             "gen x torch | quant s | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append("| " + " | ".join([
            r["artifact"], r["quantizer"], _f(r["mb"] or None, "{:.1f}"), _f(r["bpw"], "{:.2f}"),
            _f(r["kld_mean"], "{:.2e}"), _f(r["kld_p99"], "{:.2e}"), _f(r["top1"], "{:.3f}"),
            _f(r["ppl_ratio"], "{:.4f}"), _f(r["prompt_tps"], "{:.0f}"), _f(r["gen_tps"], "{:.1f}"),
            _f(r["gen_vs_torch"], "{:.2f}"), _f(r["quant_s"], "{:.1f}"), r["note"]]) + " |")
    if res["ratios"]:
        lines += ["", "| ours / anchor | size | KLD | top-1 | PPL ratio | prompt tok/s | gen tok/s |",
                  "|---|---|---|---|---|---|---|"]
        for r in res["ratios"]:
            lines.append(f"| {r['ours']} / {r['anchor']} | " + " | ".join(
                _f(r[k], "{:.3f}") for k in ("mb", "kld_mean", "top1", "ppl_ratio", "prompt_tps", "gen_tps")) + " |")
    lines += ["", *(f"- {a}" for a in res["aims"])]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--models", nargs="+", default=["mid", "demo"], choices=["mid", "demo"])
    ap.add_argument("--no-anchors", action="store_true", help="llmbuild's rows only")
    a = ap.parse_args()
    for model in a.models:
        res = sweep(model, not a.no_anchors)
        print(markdown(res), flush=True)
    os._exit(0)  # llama.cpp's teardown can outlive the interpreter's; everything is written


if __name__ == "__main__":
    main()
