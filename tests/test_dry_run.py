"""`build.dry_run=true` prints the whole plan on a cold cache (every stage with its key, or the earlier stage
its key depends on, what each target will produce), runs nothing heavy, writes nothing, and exits 0; from a
Hub source it says what would be downloaded, offline with an empty Hub cache too."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import make_tiny
from tests.helpers import REPO, corpus_override, run_cli
from tests.test_acquire_hub import lay_out_hub_cache

DATA = REPO / "data" / "finetune"
# every stage kind: acquire, license, finetune, reference, evalref, contamination, export/verify/evaluate/client
# x 2
FINETUNE = ["finetune=lora", "finetune.max_steps=2", f"finetune.golden={DATA / 'golden.jsonl'}",
            f"finetune.datasets=[{{path: {DATA / 'facts-train.jsonl'}, shape: chat, license: cc0-1.0}}]"]
LINE = re.compile(r"^\[(?P<stage>[^\]]+)\] (?P<status>cached|would run|checked|would download|skipped|"
                  r"depends on an earlier stage \((?P<after>[^)]+)\))(?: \(key (?P<key>[0-9a-f]{12})\))?")


def snapshot(root: Path) -> dict:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")} if root.exists() else {}


def plan_lines(stderr: str) -> dict[str, re.Match]:
    return {m["stage"]: m for m in map(LINE.match, stderr.splitlines()) if m}


def test_cold_cache_prints_the_whole_plan_and_touches_nothing(tmp_path):
    proc = run_cli(["recipe=tiny", corpus_override(), *FINETUNE, "build.dry_run=true"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "running" not in proc.stderr  # no stage ran
    lines = plan_lines(proc.stderr)
    assert list(lines) == ["acquire", "license", "finetune", "reference", "evalref", "contamination",
                           "export:onnx32", "verify:onnx32", "evaluate:onnx32", "client:onnx32",
                           "export:gguf8", "verify:gguf8", "evaluate:gguf8", "client:gguf8"], proc.stderr
    assert lines["acquire"]["status"] == "would run" and lines["acquire"]["key"]
    assert lines["license"]["status"] == "checked"  # an init model's license needs no download: judged now
    assert lines["contamination"]["status"] == "would run"  # data files only: its key is known
    for name in ("finetune",):
        assert lines[name]["after"] == "acquire", proc.stderr
    for name in ("reference", "evalref", "export:onnx32", "export:gguf8"):
        assert lines[name]["after"] == "finetune", proc.stderr
    assert lines["verify:gguf8"]["after"] == "export:gguf8" and lines["evaluate:onnx32"]["after"] == "export:onnx32"
    assert lines["client:gguf8"]["after"] == "export:gguf8"
    # what each target will produce: files, precision, the runtime that verifies it
    assert re.search(r"produces tiny-test-llama-q8_0\.gguf; q8_0, verified by llama-cpp-python \d", proc.stderr)
    assert re.search(r"produces onnx/model\.onnx, .*genai_config\.json.*; fp32, verified by onnxruntime \d",
                     proc.stderr)
    assert "[document] README.md, LICENSE_REPORT.md" in proc.stderr
    assert "14 stages: 1 checked, 2 would run, 11 depend on an earlier stage" in proc.stderr
    assert not (tmp_path / "outputs").exists()  # no build folder, no cache, no stat cache


def test_dry_run_on_a_cache_changes_nothing_in_it(tmp_path):
    """The second half of 'touches nothing': a cache that holds entries is read and left as it was."""
    args = ["recipe=tiny", corpus_override(), "~targets.onnx32", "eval.text=null", "eval.tasks=[]",
            "eval.golden=null"]
    assert run_cli(args, tmp_path).returncode == 0
    before = snapshot(tmp_path / "outputs")
    proc = run_cli([*args, "targets.gguf8.quant=q4_0", "build.dry_run=true"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = plan_lines(proc.stderr)
    assert [lines[s]["status"] for s in ("acquire", "reference", "export:gguf8")] == ["cached", "cached", "would run"]
    assert lines["verify:gguf8"]["after"] == "export:gguf8"
    assert snapshot(tmp_path / "outputs") == before


def test_hub_source_offline_with_an_empty_hub_cache(tmp_path):
    hf = tmp_path / "hf"
    proc = run_cli(["recipe=tiny", "model.source=hub", "model.repo_id=acme/tiny-llama", "build.dry_run=true"],
                   tmp_path, env={"HF_HOME": str(hf), "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = plan_lines(proc.stderr)
    assert lines["acquire"]["status"] == "would download" and lines["acquire"]["key"]
    assert "acme/tiny-llama@main from the Hub (HF_HUB_OFFLINE is set" in proc.stderr
    assert all(m["after"] == "acquire" for s, m in lines.items() if s in ("license", "reference", "export:gguf8"))
    assert all(m["status"].startswith("depends on an earlier stage") for s, m in lines.items() if s != "acquire")
    assert not (tmp_path / "outputs").exists() and not any(hf.rglob("*.safetensors"))


def test_hub_source_in_the_hub_cache_is_checked_and_keyed(tmp_path):
    """A snapshot the Hub cache holds is read (headers, digests) as the build would, so every key is known."""
    hf = tmp_path / "hf"
    lay_out_hub_cache(hf, "acme/tiny-llama", make_tiny(tmp_path / "src"),
                      extra_files={"README.md": b"---\nlicense: apache-2.0\n---\n# tiny\n"})
    proc = run_cli(["recipe=tiny", "model.source=hub", "model.repo_id=acme/tiny-llama", "build.dry_run=true"],
                   tmp_path, env={"HF_HOME": str(hf), "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = plan_lines(proc.stderr)
    assert lines["acquire"]["status"] == "checked" and lines["license"]["status"] == "checked"
    for s in ("reference", "evalref", "export:onnx32", "export:gguf8"):
        assert lines[s]["status"] == "would run" and lines[s]["key"], proc.stderr
    assert lines["verify:gguf8"]["after"] == "export:gguf8" and lines["evaluate:onnx32"]["after"] == "export:onnx32"
    assert "hub checkpoint" in proc.stderr and not (tmp_path / "outputs").exists()
