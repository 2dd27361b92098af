"""Convert the synthetic `tiny` and `mid` Llama models with llmbuild and with the anchor converters, side by side.

    .venv/bin/python bench/convert_compare.py [--models tiny mid] [--repeat N] [--only GLOB ...]

Every conversion is one command of the TOOLS table in this file, run in a fresh process under GNU time
(`/usr/bin/time -v`: wall clock and maximum resident set size of the process tree's largest process),
back to back on the same checkpoint with a warm file cache. llmbuild's rows call the backend
(`mod.export(ckpt, options, out_dir, meta, progress)`) in a child process of the project venv, so the
figures are whole-process ones like the anchors'. The anchors are fetched at run time into bench/.work,
with pip only:
  llama.cpp     convert_hf_to_gguf.py + its conversion/ and gguf-py, from the llama-cpp-python sdist of
                the installed version; run with this venv's python and PYTHONPATH at that gguf-py
  optimum       venv-optimum: torch==2.13.0 optimum-onnx==0.1.0 transformers==4.57.6 onnxruntime
  genai         venv-genai: torch==2.13.0 transformers==5.24.0 onnxruntime-genai==0.18.0 onnxruntime
An anchor that cannot be installed is reported with the reason and its rows are skipped.

Each output is then run once in its runtime (llama.cpp through llama-cpp-python for GGUF, onnxruntime
for ONNX) on the probe prompts of llmbuild's eval config and compared with the torch model's logits;
a row is OK when its mean KL divergence and largest logit difference pass the gates for its precision
(the same gates for every tool: llmbuild's GGUF defaults, int4 taking q4_0's), so a fast but broken
conversion shows FAIL. Top-1 agreement is shown, not gated: random weights give near-tied logits.
Ratio rows divide llmbuild's figures by the anchor's of the same precision; an aim is met only when
both rows are OK.

With --repeat N every row runs N times (rounds interleaved) and the median is shown. The table is
printed as markdown and written to bench/.work/convert_compare.json. Models come from
bench/make_models.py (made on first use in bench/.work/models).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / ".work"
ME = Path(__file__).resolve()
GNU_TIME = "/usr/bin/time"
LLAMA_CPP = WORK / "llama.cpp"

# The anchors' environments: pinned as in docs/anchors.md. torch is pinned
# because an open range pulls the multi-GB CUDA build.
VENVS = {
    "optimum": ["torch==2.13.0", "optimum-onnx==0.1.0", "transformers==4.57.6", "onnxruntime==1.32.0"],
    "genai": ["torch==2.13.0", "transformers==5.24.0", "onnxruntime-genai==0.18.0", "onnxruntime==1.32.0",
              "onnx==1.23.2", "onnx-ir==1.1.0"],
}


@dataclass
class Tool:
    id: str  # row id, for --only
    tool: str  # the table's tool column
    output: str  # what it writes
    precision: str  # picks the gates (GATE_KEY)
    runtime: str  # "gguf" (llama.cpp) or "onnx" (onnxruntime)
    env: str  # "llmbuild" | "llama.cpp" | "optimum" | "genai": the setup that provides it
    argv: tuple[str, ...]  # {py} {me} {work} {model} {out} {scratch} are filled in (fill())
    backend: dict = field(default_factory=dict)  # llmbuild rows: {"backend": name, **options}


def ours(id: str, output: str, precision: str, runtime: str, backend: str, **options) -> Tool:
    """A llmbuild row: the backend's export in a child process (export_child), its record in {scratch}."""
    argv = ("{py}", "{me}", "--export-child", backend, json.dumps(options), "{model}", "{out}", "{scratch}/record.json")
    tool = f"llmbuild {backend} " + " ".join(f"{k}={v}" for k, v in options.items())
    return Tool(id, tool, output, precision, runtime, "llmbuild", argv, {"backend": backend, **options})


CONVERT = ("{py}", "{work}/llama.cpp/convert_hf_to_gguf.py")
BUILDER = ("{work}/venv-genai/bin/python", "-m", "onnxruntime_genai.models.builder", "-i", "{model}", "-o", "{out}",
           "-e", "cpu", "-c", "{scratch}")
# One round, in this order; each llmbuild row next to its anchor.
TOOLS = [
    Tool("llama.cpp-q8_0", "llama.cpp convert_hf_to_gguf.py --outtype q8_0", "GGUF Q8_0", "q8_0", "gguf", "llama.cpp",
         (*CONVERT, "--outtype", "q8_0", "--outfile", "{out}/model.gguf", "{model}")),
    ours("llmbuild-gguf-q8_0", "GGUF Q8_0", "q8_0", "gguf", "gguf", quant="q8_0"),
    Tool("llama.cpp-f16", "llama.cpp convert_hf_to_gguf.py --outtype f16", "GGUF F16", "f16", "gguf", "llama.cpp",
         (*CONVERT, "--outtype", "f16", "--outfile", "{out}/model.gguf", "{model}")),
    ours("llmbuild-gguf-f16", "GGUF F16", "f16", "gguf", "gguf", quant="f16"),
    # where the time goes (no output, not verified): what each GGUF row costs before it converts a tensor
    Tool("llmbuild-gguf-checks", "llmbuild gguf: imports + plan-time checks only (tokenizer read by transformers)",
         "-", "q8_0", "-", "llmbuild", ours("x", "", "", "", "gguf", quant="q8_0").argv, {"backend": "gguf"}),
    Tool("llama.cpp-imports", "llama.cpp convert_hf_to_gguf.py's imports only", "-", "q8_0", "-", "llama.cpp",
         ("{py}", "-c", "import sys; sys.path.insert(0, '{work}/llama.cpp'); import torch, numpy, gguf, conversion")),
    Tool("optimum-fp32", "optimum-cli export onnx --task text-generation-with-past", "ONNX fp32 + KV", "fp32", "onnx",
         "optimum", ("{work}/venv-optimum/bin/optimum-cli", "export", "onnx", "--task", "text-generation-with-past",
                     "--model", "{model}", "{out}")),
    Tool("genai-fp32", "onnxruntime-genai builder -p fp32 -e cpu", "ONNX fp32 + KV", "fp32", "onnx", "genai",
         (*BUILDER, "-p", "fp32")),
    Tool("genai-int4", "onnxruntime-genai builder -p int4 -e cpu", "ONNX int4 + KV", "int4", "onnx", "genai",
         (*BUILDER, "-p", "int4")),
    ours("llmbuild-onnx-fp32", "ONNX fp32 + KV", "fp32", "onnx", "onnx", dtype="fp32"),
    ours("llmbuild-onnx-fp16", "ONNX fp16 + KV", "fp16", "onnx", "onnx", dtype="fp16"),
]
# (ours, anchor, aim on wall ratio, aim on memory ratio): ratios are ours / anchor; None = no aim
RATIOS = [
    # issue 13: at most half of llama.cpp's wall time and 0.8x its peak memory, at Q8_0 and F16
    ("llmbuild-gguf-q8_0", "llama.cpp-q8_0", 0.5, 0.8),
    ("llmbuild-gguf-f16", "llama.cpp-f16", 0.5, 0.8),
    ("llmbuild-onnx-fp32", "optimum-fp32", None, 0.5),  # the issue: at most half of optimum's peak memory
    ("llmbuild-onnx-fp32", "genai-fp32", None, None),
]
# Gates per precision, for every tool alike: llmbuild's GGUF defaults (gguf.DEFAULT_GATES), int4 taking
# q4_0's; of those, GATED decide OK (verify_child says why min_top1 does not)
GATED = ("max_kld", "max_abs_diff")
GATE_KEY = {"fp32": "f32", "f32": "f32", "fp16": "f16", "f16": "f16", "q8_0": "q8_0", "int4": "q4_0"}


# --- measuring ---------------------------------------------------------------------------------------------

def measure(argv: list[str], env: dict, log: Path) -> dict:
    """Run one command under GNU time; its output goes to `log`. Returns rc, wall_s, cpu_s (user + system
    seconds of the process tree: what it costs whatever else the machine runs) and peak_rss_mb."""
    stats = log.with_suffix(".time")
    with log.open("w") as f:
        rc = subprocess.run([GNU_TIME, "-v", "-o", str(stats), *argv], stdout=f, stderr=subprocess.STDOUT,
                            env=env, stdin=subprocess.DEVNULL, check=False).returncode
    text = stats.read_text()
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", text)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    cpu = [re.search(rf"{k} time \(seconds\): ([\d.]+)", text) for k in ("User", "System")]
    h, m, s = wall.groups() if wall else (None, "0", "nan")
    return {"rc": rc, "wall_s": int(h or 0) * 3600 + int(m) * 60 + float(s),
            "cpu_s": sum(float(c.group(1)) for c in cpu) if all(cpu) else float("nan"),
            "peak_rss_mb": int(rss.group(1)) * 1024 / 1e6 if rss else float("nan")}


def dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


# --- the anchors, fetched with pip ----------------------------------------------------------------------------

def setup_llama_cpp() -> str | None:
    """convert_hf_to_gguf.py + conversion/ + gguf-py from the llama-cpp-python sdist; None or why not."""
    if (LLAMA_CPP / "convert_hf_to_gguf.py").exists():
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("llama-cpp-python")
    except PackageNotFoundError:
        return "llama-cpp-python is not installed in this venv (its version picks the converter; `make llamacpp`)"
    sdist = WORK / "sdist"
    log = WORK / "sdist.log"
    with log.open("w") as f:
        rc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                             f"llama-cpp-python=={ver}", "-d", str(sdist)], stdout=f, stderr=subprocess.STDOUT,
                            check=False).returncode
    tars = sorted(sdist.glob(f"llama_cpp_python-{ver}.tar.gz"))
    if rc or not tars:
        return f"pip download of the llama-cpp-python {ver} sdist failed (see {log})"
    tmp = WORK / ".llama.cpp.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    wanted = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")
    with tarfile.open(tars[0]) as tar:
        prefix = f"llama_cpp_python-{ver}/vendor/llama.cpp/"
        members = []
        for m in tar.getmembers():
            rel = m.name[len(prefix):] if m.name.startswith(prefix) else ""
            if rel.startswith(wanted) and (m.isfile() or m.isdir()):
                m.name = rel
                members.append(m)
        tar.extractall(tmp, members=members, filter="data")
    if not (tmp / "convert_hf_to_gguf.py").exists():
        return f"{tars[0].name} has no vendor/llama.cpp/convert_hf_to_gguf.py"
    tmp.rename(LLAMA_CPP)
    return None


def setup_venv(name: str) -> str | None:
    """bench/.work/venv-<name> with VENVS[name] installed; None or why not."""
    venv = WORK / f"venv-{name}"
    ready = venv / ".ready"
    if ready.exists() and ready.read_text() == " ".join(VENVS[name]):
        return None
    log = WORK / f"venv-{name}.log"
    print(f"  installing {name} anchor into {venv.relative_to(REPO)}: {' '.join(VENVS[name])} (log: {log.name})",
          flush=True)
    with log.open("w") as f:
        rc = subprocess.run([sys.executable, "-m", "venv", str(venv)], stdout=f, stderr=subprocess.STDOUT,
                            check=False).returncode
        if not rc:
            rc = subprocess.run([str(venv / "bin" / "pip"), "install", *VENVS[name]], stdout=f,
                                stderr=subprocess.STDOUT, check=False).returncode
    if rc:
        tail = [ln for ln in log.read_text().splitlines() if ln.startswith("ERROR")][-1:] or ["see the log"]
        return f"pip install {' '.join(VENVS[name])} failed: {tail[0]} ({log})"
    ready.write_text(" ".join(VENVS[name]))
    return None


def setup(envs: set[str]) -> dict[str, str]:
    """Install what the selected rows need; {env: why it is unavailable}."""
    missing = {}
    for env in sorted(envs):
        if env == "llama.cpp":
            why = setup_llama_cpp()
        elif env in VENVS:
            why = setup_venv(env)
        else:  # llmbuild: the row's backend must exist
            why = None
        if why:
            missing[env] = why
    import importlib.util

    from llmbuild.targets import BACKENDS

    for name in ("gguf", "onnx"):
        if importlib.util.find_spec(BACKENDS[name]) is None:
            missing[f"llmbuild:{name}"] = f"{BACKENDS[name].replace('.', '/')}.py is not in this checkout yet"
    return missing


def unavailable(t: Tool, missing: dict[str, str]) -> str | None:
    if t.env == "llmbuild":
        return missing.get(f"llmbuild:{t.backend['backend']}")
    return missing.get(t.env)


def child_env(t: Tool) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    env.pop("PYTHONPATH", None)
    env.pop("BENCH_CHECK_ONLY", None)
    if t.id.endswith("-checks"):
        env["BENCH_CHECK_ONLY"] = "1"
    if t.env == "llama.cpp":
        env["PYTHONPATH"] = str(LLAMA_CPP / "gguf-py")  # the converter's own gguf, not the venv's
    return env


def warm(model: Path, envs: set[str]) -> None:
    """Read the checkpoint and import each environment's torch once, so no row pays a cold cache."""
    for f in model.iterdir():
        with f.open("rb") as fh:
            while fh.read(1 << 24):
                pass
    pythons = {"llmbuild": sys.executable, "llama.cpp": sys.executable,
               "optimum": str(WORK / "venv-optimum/bin/python"), "genai": str(WORK / "venv-genai/bin/python")}
    for py in sorted({pythons[e] for e in envs}):
        subprocess.run([py, "-c", "import torch, transformers, onnx"], capture_output=True, check=False)


# --- verification: each output in its runtime against the torch model -----------------------------------------

def reference(model: Path) -> Path:
    """The torch model's logits on llmbuild's probe prompts, computed once per model."""
    out = WORK / "ref" / model.name
    if not (out / "reference.npz").exists():
        out.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(ME), "--reference-child", str(model), str(out)], check=True,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return out / "reference.npz"


def verify(t: Tool, model: Path, out: Path, record: dict | None, ref: Path) -> dict:
    """Run the output once in its runtime in a child process; returns metrics, gates and ok."""
    args = [sys.executable, str(ME), "--verify-child", t.runtime, str(out), str(model), str(ref),
            json.dumps({"precision": t.precision, "backend": t.backend, "record": record})]
    p = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=False)
    lines = p.stdout.strip().splitlines()
    if p.returncode or not lines:
        err = (p.stderr.strip().splitlines() or ["no output"])[-1]
        return {"ok": False, "error": f"{t.runtime} runtime failed (exit {p.returncode}): {err[:200]}"}
    return json.loads(lines[-1])


def ort_logits(path: Path, token_ids: list[list[int]], head_dim: int) -> list:
    """Logits of any decoder ONNX with past key values (optimum's, onnxruntime-genai's): a first forward
    pass with an empty cache; symbolic dims of the cache are batch 1, past length 0, else head_dim."""
    import numpy as np
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    types = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
             "tensor(int32)": np.int32}
    out = []
    for ids in token_ids:
        n = len(ids)
        feeds = {}
        for i in sess.get_inputs():
            dt = types[i.type]
            if i.name == "input_ids":
                feeds[i.name] = np.array([ids], dtype=dt)
            elif i.name == "attention_mask":
                feeds[i.name] = np.ones((1, n), dtype=dt)
            elif i.name == "position_ids":
                feeds[i.name] = np.arange(n, dtype=dt)[None]
            elif "past" in i.name:
                shape = [d if isinstance(d, int) else 1 if k == 0 else 0 if k == 2 else head_dim
                         for k, d in enumerate(i.shape)]
                feeds[i.name] = np.zeros(shape, dtype=dt)
            else:
                raise ValueError(f"{path}: input {i.name!r} is not one this benchmark knows how to feed")
        out.append(sess.run(["logits"], feeds)[0][0].astype(np.float32))
    return out


def verify_child(runtime: str, out: str, model: str, ref: str, spec: str) -> None:
    sys.path.insert(0, str(REPO))
    from llmbuild.checkpoint import read_json
    from llmbuild.stages import reference as reference_stage
    from llmbuild.stages import verify as verify_stage
    from llmbuild.targets import backend, gguf

    spec = json.loads(spec)
    out = Path(out)
    token_ids, ref_logits = reference_stage.load(Path(ref))
    if spec["record"] is not None:  # llmbuild's rows: the backend's own runner, as the verify stage does it
        logits = backend(spec["backend"]["backend"]).run_logits(out, spec["record"], token_ids)
    elif runtime == "gguf":
        (path,) = out.glob("*.gguf")
        logits = gguf.run_logits(out, {"file": path.name}, token_ids)
    else:
        cfg = read_json(Path(model) / "config.json", "config.json")
        head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
        logits = ort_logits(out / "model.onnx", token_ids, head_dim)
    metrics = verify_stage.compare(ref_logits, logits)
    # KLD and the largest logit difference judge; top-1 agreement is printed but not gated: on random
    # weights the logits are near-tied and top-1 is noise for 4-bit files (see gguf.DEFAULT_GATES),
    # while a broken file shows in KLD (whole nats, not 1e-3)
    gates = {k: v for k, v in gguf.DEFAULT_GATES[GATE_KEY[spec["precision"]]].items() if k in GATED}
    results = verify_stage.apply_gates({"metrics": metrics}, gates)
    print(json.dumps({"ok": all(r["passed"] for r in results), "metrics": metrics, "gates": gates}))
    sys.stdout.flush()
    os._exit(0)  # llama.cpp's teardown can outlive the interpreter's; the verdict is already out


def reference_child(model: str, out: str) -> None:
    sys.path.insert(0, str(REPO))
    from llmbuild.config import EvalConfig
    from llmbuild.stages import reference as reference_stage

    ev = EvalConfig()
    reference_stage.run(Path(model), ev.probes, ev.max_tokens, "auto", False, Path(out))


def export_child(backend_name: str, options: str, model: str, out: str, record_file: str) -> None:
    """One llmbuild export in this process, as the build's export stage runs it; writes its record."""
    sys.path.insert(0, str(REPO))
    from llmbuild.checkpoint import open_checkpoint
    from llmbuild.targets import backend
    from llmbuild.targets.common import ArtifactMeta, no_progress

    b = backend(backend_name)
    opts = b.Options(**json.loads(options))
    ckpt = open_checkpoint(Path(model))
    b.check_options(opts, f"bench.{backend_name}")
    b.check_model(opts, ckpt.arch, ckpt.dir, f"bench.{backend_name}")
    if os.environ.get("BENCH_CHECK_ONLY"):  # the `checks` rows: imports and plan-time checks, no export
        return
    record = b.export(ckpt, opts, Path(out), ArtifactMeta(name=Path(model).name), no_progress)
    Path(record_file).write_text(json.dumps(record, default=str))
    # this process's own peak, beside GNU time's (the largest of it and its children: the tokenizer's)
    hwm = next((line.split()[1] for line in Path("/proc/self/status").read_text().splitlines()
                if line.startswith("VmHWM")), None)
    if hwm:
        Path(record_file).with_suffix(".peak").write_text(str(int(hwm) / 1024))


# --- the run --------------------------------------------------------------------------------------------------

def fill(argv: tuple[str, ...], model: Path, out: Path, scratch: Path) -> list[str]:
    values = {"py": sys.executable, "me": str(ME), "work": str(WORK), "model": str(model), "out": str(out),
              "scratch": str(scratch)}
    # only {name}s of `values`: llmbuild rows carry JSON options, whose braces stay as they are
    return [re.sub(r"\{(\w+)\}", lambda m: values.get(m[1], m[0]), a) for a in argv]


def run_model(model: Path, tools: list[Tool], repeat: int, missing: dict[str, str]) -> list[dict]:
    rows = {t.id: {"id": t.id, "tool": t.tool, "model": model.name, "output": t.output, "runs": []} for t in tools}
    runnable = []
    for t in tools:
        why = unavailable(t, missing)
        if why:
            rows[t.id]["skipped"] = why
        else:
            runnable.append(t)
    warm(model, {t.env for t in runnable})
    records: dict[str, dict | None] = {}
    for r in range(repeat):
        for t in runnable:
            out = WORK / "out" / model.name / t.id  # what the tool writes: its size is the output's
            scratch = WORK / "out" / model.name / f"{t.id}.scratch"  # caches, llmbuild's export record
            for d in (out, scratch):
                shutil.rmtree(d, ignore_errors=True)
                d.mkdir(parents=True)
            log = WORK / "out" / model.name / f"{t.id}.log"
            print(f"  [{model.name} {r + 1}/{repeat}] {t.id} ...", end=" ", flush=True)
            m = measure(fill(t.argv, model, out, scratch), child_env(t), log)
            m["output_mb"] = dir_mb(out)
            failed = f", exit {m['rc']} (see {log})" if m["rc"] else ""
            print(f"{m['wall_s']:.1f} s ({m['cpu_s']:.1f} s CPU), {m['peak_rss_mb']:.0f} MB{failed}", flush=True)
            rows[t.id]["runs"].append(m)
            if t.env == "llmbuild" and not m["rc"] and t.runtime != "-":
                records[t.id] = json.loads((scratch / "record.json").read_text())
            rows[t.id]["log"] = str(log.relative_to(REPO))
    ref = reference(model)
    for t in runnable:
        row = rows[t.id]
        runs = row["runs"]
        row["rc"] = max(x["rc"] for x in runs)
        for k in ("wall_s", "cpu_s", "peak_rss_mb", "output_mb"):
            row[k] = statistics.median(x[k] for x in runs)
        if row["rc"]:
            row["verify"] = {"ok": False, "error": f"conversion exited {row['rc']} (see {row['log']})"}
        elif t.runtime == "-":
            row["verify"] = {"ok": True, "none": "no output: a row that measures a part"}
        else:
            out = WORK / "out" / model.name / t.id
            row["verify"] = verify(t, model, out, records.get(t.id) if t.env == "llmbuild" else None, ref)
        print(f"  [{model.name}] {t.id}: {'OK' if row['verify']['ok'] else 'FAIL'}", flush=True)
    return list(rows.values())


def ratios(rows: list[dict]) -> list[dict]:
    by = {(r["model"], r["id"]): r for r in rows}
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        for a, b, aim_wall, aim_mem in RATIOS:
            x, y = by.get((model, a)), by.get((model, b))
            if not x or not y or "wall_s" not in x or "wall_s" not in y or x["rc"] or y["rc"]:
                continue
            rw, rm = x["wall_s"] / y["wall_s"], x["peak_rss_mb"] / y["peak_rss_mb"]
            rc = x["cpu_s"] / y["cpu_s"] if y["cpu_s"] else float("nan")
            aims = []
            if aim_wall is not None:
                aims.append(f"wall <= {aim_wall:g}x")
            if aim_mem is not None:
                aims.append(f"memory <= {aim_mem:g}x")
            met = (aim_wall is None or rw <= aim_wall) and (aim_mem is None or rm <= aim_mem)
            if not (x["verify"]["ok"] and y["verify"]["ok"]):
                verdict = "n/a: an output FAILED verification"
            else:
                verdict = ("met" if met else "missed") if aims else "-"
            out.append({"model": model, "ours": a, "anchor": b, "wall_ratio": rw, "cpu_ratio": rc, "memory_ratio": rm,
                        "aim": ", ".join(aims) or "-", "verdict": verdict})
    return out


def check_cell(row: dict) -> str:
    if "skipped" in row:
        return "skipped"
    v = row["verify"]
    if "none" in v:
        return "-"
    if "metrics" not in v:
        return f"FAIL: {v['error']}"
    m = v["metrics"]
    verdict = "OK" if v["ok"] else "FAIL"
    return f"{verdict} (top1 {m['top1']:.2f}, KLD {m['kld_mean']:.1e}, max diff {m['max_abs_diff']:.3f})"


def print_table(rows: list[dict], rats: list[dict]) -> None:
    print("\n| tool | model | output | wall s | CPU s | peak RSS MB | output MB | runs in its runtime |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "skipped" in r:
            print(f"| {r['tool']} | {r['model']} | {r['output']} | - | - | - | - | skipped: {r['skipped']} |")
        else:
            print(f"| {r['tool']} | {r['model']} | {r['output']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
                  f"{r['peak_rss_mb']:.0f} | {r['output_mb']:.0f} | {check_cell(r)} |")
    print("\n| ratio (llmbuild / anchor) | model | wall | CPU | peak RSS | aim | verdict |")
    print("|---|---|---|---|---|---|---|")
    for x in rats:
        print(f"| {x['ours']} / {x['anchor']} | {x['model']} | {x['wall_ratio']:.2f} | {x['cpu_ratio']:.2f} | "
              f"{x['memory_ratio']:.2f} | {x['aim']} | {x['verdict']} |")


def environment() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    def v(d):
        try:
            return version(d)
        except PackageNotFoundError:
            return None

    return {"python": platform.python_version(), "cores": len(os.sched_getaffinity(0)),
            "packages": {d: v(d) for d in ("torch", "transformers", "gguf", "llama-cpp-python", "onnx", "onnxruntime")},
            "anchors": VENVS, "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def main() -> None:
    rows_help = "\n".join(f"  {t.id:<20} {t.tool}" for t in TOOLS)
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2] + "\nRows (--only matches these ids):\n" + rows_help)
    ap.add_argument("--models", nargs="+", default=["tiny", "mid"], metavar="MODEL",
                    help="models from bench/make_models.py (default: tiny mid)")
    ap.add_argument("--repeat", type=int, default=1, metavar="N", help="runs per row; the median is shown (default 1)")
    ap.add_argument("--only", nargs="+", metavar="GLOB", help="run only rows whose id matches, e.g. 'llama.cpp-*' "
                    "'llmbuild-gguf-*' (a ratio needs both of its rows)")
    ap.add_argument("--json", type=Path, default=WORK / "convert_compare.json", help="where the table goes as JSON "
                    "(default: %(default)s)")
    ap.add_argument("--export-child", nargs=5, help=argparse.SUPPRESS)
    ap.add_argument("--verify-child", nargs=5, help=argparse.SUPPRESS)
    ap.add_argument("--reference-child", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.export_child:
        return export_child(*a.export_child)
    if a.verify_child:
        return verify_child(*a.verify_child)
    if a.reference_child:
        return reference_child(*a.reference_child)

    if not Path(GNU_TIME).exists():
        sys.exit(f"{GNU_TIME} (GNU time) is missing: apt-get update && apt-get install -y time")
    if a.repeat < 1:
        ap.error("--repeat must be at least 1")
    tools = [t for t in TOOLS if not a.only or any(fnmatch.fnmatch(t.id, g) for g in a.only)]
    if not tools:
        ap.error(f"--only matches no row; rows: {', '.join(t.id for t in TOOLS)}")
    sys.path.insert(0, str(REPO / "bench"))
    sys.path.insert(0, str(REPO))
    import make_models

    WORK.mkdir(parents=True, exist_ok=True)
    print("setting up the anchors in bench/.work (pip) ...", flush=True)
    missing = setup({t.env for t in tools})
    for what, why in missing.items():
        print(f"  unavailable: {what}: {why}")
    rows = []
    for name in a.models:
        if name not in make_models.MODELS and name not in make_models.STREAMED:
            ap.error(f"unknown model {name!r}; known: {', '.join([*make_models.MODELS, *make_models.STREAMED])}")
        model = make_models.make(name)
        print(f"{name}: {model.relative_to(REPO)}, {dir_mb(model):.0f} MB", flush=True)
        rows += run_model(model, tools, a.repeat, missing)
    rats = ratios(rows)
    print_table(rows, rats)
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps({"environment": environment(), "repeat": a.repeat, "rows": rows, "ratios": rats,
                                  "unavailable": missing}, indent=2))
    print(f"\nwritten to {a.json}")


if __name__ == "__main__":
    main()
