"""A sweep of N quantizations after one fine-tune costs about one fine-tune plus N exports: measured.

    .venv/bin/python bench/sweep_shared.py                       # 4 GGUF types of the demo, one after another
    .venv/bin/python bench/sweep_shared.py --quants q8_0,q4_0    # other types
    .venv/bin/python bench/sweep_shared.py --launcher joblib     # the same sweep, 2 builds at a time

Runs `llmbuild -m recipe=demo` with the demo's one GGUF target swept over the types (its other targets
dropped, so the sweep varies one thing) on an empty cache in bench/.work/sweep_shared/, as a user types it,
and reads every build's manifest: which stages ran, which were reused, and their seconds. Prints the sweep's
wall time beside (a) one full build plus the swept target's stages of the other builds (what sharing should
cost) and (b) N independent builds (what it would cost without the shared cache), and the sweep summary path.
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
WORK = REPO / "bench" / ".work" / "sweep_shared"
DROP = ["cpu-onnx", "cpu-onnx-fp16", "cpu-onnx-int4", "cpu-gguf-q4", "cpu-gguf-q4km"]
TARGET = "cpu-gguf"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quants", default="q8_0,q6_k,q4_k_m,q4_0")
    ap.add_argument("--launcher", default="basic", choices=["basic", "joblib"])
    a = ap.parse_args()
    work = WORK / a.launcher
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    args = ["-m", "recipe=demo", *(f"~targets.{t}" for t in DROP), f"targets.{TARGET}.quant={a.quants}"]
    if a.launcher == "joblib":
        args += ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("LLMBUILD_CACHE", None)
    t0 = time.perf_counter()
    p = subprocess.run([str(Path(sys.executable).with_name("llmbuild")), *args], cwd=work, env=env,
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"the sweep exited {p.returncode}:\n{p.stderr[-3000:]}")
    sweep = sorted((work / "outputs" / ".sweeps").iterdir())[-1]
    summary = json.loads((sweep / "summary.json").read_text())
    jobs = []
    for j in summary["jobs"]:
        m = json.loads((Path(j["build_dir"]) / "manifest.json").read_text())
        st = {s["stage"]: s for s in m["stages"]}
        own = sum(s["seconds"] for name, s in st.items() if name.endswith(f":{TARGET}") and s["status"] == "run")
        jobs.append({"num": j["num"], "quant": m["config"]["targets"][TARGET]["quant"], "seconds": m["seconds"],
                     "ran": [n for n, s in st.items() if s["status"] == "run"], "target_s": own,
                     "finetune": st.get("finetune", {}).get("status")})
    print(f"launcher {a.launcher}; load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("| job | type | build s | stages run | of which the swept target's s | finetune |")
    print("|---|---|---|---|---|---|")
    for j in jobs:
        print(f"| {j['num']} | {j['quant']} | {j['seconds']:.1f} | {len(j['ran'])} ({', '.join(j['ran'])}) | "
              f"{j['target_s']:.1f} | {j['finetune']} |")
    # the build that computed the fine-tune (with joblib the others waited for it, their seconds include that)
    first = next((j for j in jobs if j["finetune"] == "run"), jobs[0])
    shared = first["seconds"] + sum(j["target_s"] for j in jobs if j is not first)
    independent = len(jobs) * first["seconds"]
    runs = sum(j["finetune"] == "run" for j in jobs)
    print(f"\nsweep of {len(jobs)} types: {wall:.1f} s wall (the command); fine-tune ran {runs} time(s)")
    print(f"one build + the other builds' {TARGET} stages: {shared:.1f} s -> sweep/that = {wall / shared:.2f}")
    print(f"{len(jobs)} independent builds ({len(jobs)} x {first['seconds']:.1f} s): {independent:.1f} s -> "
          f"sweep/that = {wall / independent:.2f}")
    print(f"summary: {sweep / 'summary.md'}")


if __name__ == "__main__":
    main()
