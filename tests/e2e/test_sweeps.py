"""Sweeps end to end: the summary a multirun leaves (table, CSV, plots, Pareto fronts, failed combinations),
stages shared across a sweep run once, Hydra's launchers (joblib, submitit_local here; Ray slow-marked)
bring each build's result back, a worker that dies is reported as failed, an Optuna search finds the known
answer, and a bad sweep fails before any build."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO, cli_env, corpus_override, manifest, one_line_error, run_cli

PNG = b"\x89PNG\r\n\x1a\n"


def sweep_dirs(cwd: Path) -> list[Path]:
    root = cwd / "outputs" / ".sweeps"
    return sorted(root.iterdir(), key=lambda p: p.stat().st_mtime) if root.exists() else []


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A sweep of 2 GGUF types x 2 KLD gates; bf16 under the tight gate fails (exit 4) while the others build."""
    cwd = tmp_path_factory.mktemp("sweep")
    proc = run_cli(["-m", "recipe=tiny", corpus_override(), "targets.gguf8.quant=f16,bf16",
                    "+targets.gguf8.gates.max_kld=1e-8,1"], cwd)
    return cwd, proc, sweep_dirs(cwd)[-1]


def test_sweep_exit_code_and_failed_combination(ws):
    cwd, proc, sweep = ws
    assert proc.returncode == 4, proc.stderr[-3000:]
    s = json.loads((sweep / "summary.json").read_text())
    assert (s["built"], s["failed"], s["exit_code"]) == (3, 1, 4)
    failed = [j for j in s["jobs"] if j["exit_code"] != 0]
    assert len(failed) == 1 and failed[0]["status"] == "gate failed"
    assert "targets.gguf8.quant=bf16" in failed[0]["overrides"] and "+targets.gguf8.gates.max_kld=1e-08" in failed[0][
        "overrides"]
    assert failed[0]["error"].startswith("targets.gguf8.gates.max_kld")
    md = (sweep / "summary.md").read_text()
    assert "## Failed" in md and f"| {failed[0]['num']} | targets.gguf8.quant=bf16 +targets.gguf8.gates.max_kld=1e-08 | 4 " \
                                 f"| gate failed | targets.gguf8.gates.max_kld" in md
    assert f"sweep: 3 built, 1 failed; summary: {sweep / 'summary.md'}" in proc.stderr


def test_summary_rows_links_and_fronts(ws):
    cwd, proc, sweep = ws
    s = json.loads((sweep / "summary.json").read_text())
    rows = s["rows"]
    assert len(rows) == 4 * 2  # every build's two artifacts, the failed build's too (marked)
    for r in rows:
        assert (sweep / r["build"]).is_dir() and (sweep / r["manifest"]).is_file()
        m = manifest(sweep / r["build"])
        a = next(x for x in m["artifacts"] if x["target"] == r["target"])
        assert r["kld"] == a["evaluation"]["parity"]["kld_mean"] and r["top1"] == a["evaluation"]["parity"]["top1"]
        assert r["bits_per_weight"] == a["export"]["bits_per_weight"]
        assert r["gen_tok_s"] == a["evaluation"]["speed"]["gen_tokens_per_s"] > 0
        assert r["acc:mmlu-sample"] == a["evaluation"]["tasks"]["mmlu-sample"]["acc"]
        assert r["golden_em"] == a["evaluation"]["golden"]["exact_match"]
    built = [r for r in rows if r["build_status"] == "built"]
    f16 = next(r for r in built if r["precision"] == "f16")
    bf16 = next(r for r in built if r["precision"] == "bf16")
    onnx = next(r for r in built if r["target"] == "onnx32")
    # bf16 is f16's size with a larger KLD: dominated; f16 and the fp32 ONNX (lowest KLD) are on the front
    assert f16["pareto_size"] and onnx["pareto_size"] and not bf16["pareto_size"]
    assert not any(r["pareto_size"] for r in rows if r["gates"] != "passed")
    assert next(r for r in rows if r["build_status"] == "gate failed" and r["target"] == "gguf8")["gates"] == "failed"
    # the ONNX target did not vary: one artifact, one point; every build's row points at the first
    onnx_rows = [i for i, r in enumerate(rows) if r["target"] == "onnx32"]
    assert len({rows[i]["artifact"] for i in onnx_rows}) == 1
    assert [rows[i]["same_as"] for i in onnx_rows] == [onnx_rows[0]] * 4
    with open(sweep / "summary.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) and {"size_mb", "kld", "top1", "ppl_ratio", "gen_tok_s", "acc:mmlu-sample",
                                        "golden_em", "pareto_size", "build", "manifest"} <= set(table[0])
    for name in ("pareto_size.png", "pareto_speed.png"):
        assert (sweep / name).read_bytes()[:8] == PNG and f"![{name[:-4]}]({name})" in (sweep / "summary.md").read_text()
    md = (sweep / "summary.md").read_text()
    assert "| job | overrides | target | precision | size MB |" in md and "[manifest](" in md


def test_shared_stages_run_once_across_the_sweep(ws):
    """4 builds, 2 exports of the swept target; everything upstream (acquire, reference, evalref, the ONNX
    target) runs once: the sweep costs about one build plus one export per value."""
    cwd, proc, sweep = ws
    s = json.loads((sweep / "summary.json").read_text())
    manifests = [manifest(Path(j["build_dir"])) for j in s["jobs"]]
    runs = {}
    for m in manifests:
        for st in m["stages"]:
            runs[st["stage"]] = runs.get(st["stage"], 0) + (st["status"] == "run")
    assert runs["acquire"] == runs["reference"] == runs["evalref"] == runs["export:onnx32"] == 1, runs
    assert runs["export:gguf8"] == runs["verify:gguf8"] == 2, runs  # gates are applied, not part of the key


def test_joblib_launcher_runs_builds_in_workers(ws):
    cwd, _, _ = ws
    p = subprocess.Popen([sys.executable, "-m", "llmbuild.cli", "-m", "recipe=tiny", corpus_override(),
                          "targets.gguf8.quant=f16,bf16", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
                         cwd=cwd, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
    sweep = sweep_dirs(cwd)[-1]
    s = json.loads((sweep / "summary.json").read_text())
    assert s["launcher"].endswith("JoblibLauncher") and s["built"] == 2
    for j in s["jobs"]:
        result = json.loads((sweep / str(j["num"]) / "result.json").read_text())
        assert result["exit_code"] == 0 and result["pid"] != p.pid  # came back from a worker process
        m = manifest(Path(result["build_dir"]))
        assert m["status"] == "built" and m["recipe_file"] == str(REPO / "tests" / "recipes" / "tiny.yaml")
    assert {r["precision"] for r in s["rows"] if r["target"] == "gguf8"} == {"f16", "bf16"}


@pytest.mark.slow
def test_submitit_local_launcher(ws):
    cwd, _, _ = ws
    proc = run_cli(["-m", "recipe=tiny", corpus_override(), "targets.gguf8.quant=f16,bf16",
                    "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = sweep_dirs(cwd)[-1]
    s = json.loads((sweep / "summary.json").read_text())
    assert s["launcher"].endswith("LocalLauncher") and s["built"] == 2 and s["exit_code"] == 0
    assert any((sweep / ".submitit").rglob("*_result.pkl"))  # submitit's own record of each job


_DIE_HOOK = '''
import importlib.abc, importlib.util, os, signal, sys

class _Die(importlib.abc.MetaPathFinder):
    """Kill this process (as the OOM killer would) when it starts a build of the named GGUF type."""
    def find_spec(self, name, path, target=None):
        if name != "llmbuild.engine":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module
        def exec_module(mod):
            run(mod)
            real = mod.run_build
            def run_build(bc, *a, **kw):
                if any(getattr(t.options, "quant", None) == os.environ["DIE_ON_QUANT"] for t in bc.targets):
                    os.kill(os.getpid(), signal.SIGKILL)
                return real(bc, *a, **kw)
            mod.run_build = run_build
        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, _Die())
'''


def test_a_worker_that_dies_is_reported_failed(ws, tmp_path):
    cwd, _, _ = ws
    (tmp_path / "sitecustomize.py").write_text(_DIE_HOOK)
    proc = run_cli(["-m", "recipe=tiny", corpus_override(), "targets.gguf8.quant=f16,bf16", "hydra/launcher=joblib",
                    "hydra.launcher.n_jobs=2"], cwd,
                   env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}", "DIE_ON_QUANT": "bf16"})
    assert proc.returncode == 1, proc.stderr[-3000:]
    line = one_line_error(proc)
    assert "the sweep's launcher failed" in line
    sweep = sweep_dirs(cwd)[-1]
    s = json.loads((sweep / "summary.json").read_text())
    dead = next(j for j in s["jobs"] if "targets.gguf8.quant=bf16" in j["overrides"])
    assert dead["status"] == "died" and dead["exit_code"] is None and not dead["build_dir"], (dead, proc.stderr[-2000:])
    assert "died before its build reported a result" in dead["error"]
    assert not any(r["precision"] == "bf16" for r in s["rows"])  # never shown as built
    assert s["exit_code"] == 1 and "## Failed" in (sweep / "summary.md").read_text()


def test_optuna_search_finds_the_smallest_passing_type(ws):
    cwd, _, _ = ws
    proc = run_cli(["-m", "recipe=tiny-search", corpus_override()], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = sweep_dirs(cwd)[-1]
    s = json.loads((sweep / "summary.json").read_text())
    by_quant = {next(o.split("=")[1] for o in j["overrides"] if o.startswith("targets.gguf8.quant")): j
                for j in s["jobs"]}
    assert set(by_quant) == {"f16", "bf16", "f32"}  # the grid sampler tried each once
    assert by_quant["bf16"]["exit_code"] == 4 and by_quant["bf16"]["objective"] == float("inf")
    size = {q: next(r["size_mb"] for r in s["rows"] if r["job"] == j["num"]) for q, j in by_quant.items()}
    assert by_quant["f16"]["objective"] == size["f16"] < by_quant["f32"]["objective"] == size["f32"]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_params"] == {"targets.gguf8.quant": "f16"} and best["best_value"] == size["f16"]
    assert s["infeasible"] == [by_quant["bf16"]["num"]]
    assert "Best feasible trial: job" in (sweep / "summary.md").read_text()


# -- bad input: one line, exit 2, no build and no sweep started -----------------------------------------
@pytest.mark.parametrize("args,needles", [
    (["targets.gguf8.quant=f16,q9_9"], ["targets.gguf8.quant", "q9_9"]),  # the example
    (["model.seed=1,abc"], ["model.seed", "abc"]),
    (["+targets.gguf8.colour=red,blue"], ["targets.gguf8", "colour"]),
    (["targets.gguf8.quant=f16,f32", "eval.max_tokens=24,1"], ["eval.max_tokens", "at least 2"]),  # the plan's check
    (["targets.gguf8.quant=f16", "hydra/launcher=rq"], ["hydra/launcher=rq", "pip install hydra-rq-launcher"]),
    (["hydra/sweeper=optuna", "targets.gguf8.backend=choice(gguf,tensorflow)", "build.objective=gguf8.size_mb"],
     ["targets.gguf8.backend", "tensorflow"]),
    (["hydra/sweeper=optuna", "targets.gguf8.quant=choice(f16,f32)"], ["build.objective", "needs the figure it optimises"]),
])
def test_bad_sweep_fails_before_any_build(tmp_path, args, needles):
    proc = run_cli(["-m", "recipe=tiny", corpus_override(), *args], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = one_line_error(proc)
    assert all(n in line for n in needles), line
    assert not (tmp_path / "outputs").exists(), "a rejected sweep built or started something"


def test_bad_value_in_a_search_recipe(tmp_path):
    """hydra.sweeper.params in a recipe are checked value by value too."""
    for name in ("tiny.yaml", "tiny-search.yaml"):
        shutil.copy(REPO / "tests" / "recipes" / name, tmp_path / name)
    (tmp_path / "bad-search.yaml").write_text(
        "defaults:\n  - tiny-search\n  - _self_\nhydra:\n  sweeper:\n    params:\n"
        "      model.seed: choice(1, abc)\n")
    proc = run_cli(["-m", f"recipe={tmp_path / 'bad-search.yaml'}", corpus_override()], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = one_line_error(proc)
    assert "model.seed" in line and "abc" in line, line
    assert not (tmp_path / "outputs").exists()


# -- Ray: a local cluster this test starts ----------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ray_launcher_on_a_local_cluster(ws):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    cwd, _, _ = ws
    port = _free_port()
    # loopback only, no token, no usage report: a cluster for this test alone; a short temp dir for Ray's sockets
    env = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_ADDRESS": f"127.0.0.1:{port}"}
    ray_tmp = tempfile.mkdtemp(prefix="ray")
    ray_bin = Path(sys.executable).with_name("ray")
    head = subprocess.Popen([str(ray_bin), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                             "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={ray_tmp}",
                             "--block"], env=cli_env(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        deadline = time.time() + 60
        for line in head.stdout:
            if "Ray runtime started" in line or time.time() > deadline:
                break
        assert head.poll() is None, "ray start --head exited"
        proc = run_cli(["-m", "recipe=tiny", corpus_override(), "targets.gguf8.quant=f16,bf16",
                        "hydra/launcher=ray_cluster"], cwd, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        sweep = sweep_dirs(cwd)[-1]
        s = json.loads((sweep / "summary.json").read_text())
        assert s["launcher"].endswith("RayLauncher") and s["built"] == 2
        for j in s["jobs"]:
            result = json.loads((sweep / str(j["num"]) / "result.json").read_text())
            assert result["exit_code"] == 0 and manifest(Path(result["build_dir"]))["status"] == "built"
    finally:
        # the cluster's processes are this test's session: end that group only
        os.killpg(head.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(timeout=15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)
        head.wait()
        shutil.rmtree(ray_tmp, ignore_errors=True)
