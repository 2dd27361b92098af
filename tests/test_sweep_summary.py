"""The sweep summary's parts on plain data (Pareto fronts, exit codes, combinations, objectives), and the shipped
sweep recipes: each composes with its sweeper or launcher and every searched value types and plans."""

from __future__ import annotations

import json

import pytest

from llmbuild.report import sweep


def test_pareto_front_minimises_size_and_kld():
    rows = [{"size_mb": 1.0, "kld": 1e-3}, {"size_mb": 2.0, "kld": 1e-4}, {"size_mb": 2.0, "kld": 1e-3},
            {"size_mb": 0.5, "kld": 1e-1}, {"size_mb": 3.0, "kld": 1e-4}, {"size_mb": None, "kld": 0.0}]
    # 2 is beaten by 0 (smaller, same KLD), 4 by 1 (larger, same KLD); 5 has no size and is no point
    assert sweep.pareto_front(rows, "size_mb", "low", "kld", "low") == {0, 1, 3}


def test_pareto_front_speed_is_maximised():
    rows = [{"gen_tok_s": 100.0, "kld": 1e-2}, {"gen_tok_s": 50.0, "kld": 1e-3}, {"gen_tok_s": 40.0, "kld": 1e-2}]
    assert sweep.pareto_front(rows, "gen_tok_s", "high", "kld", "low") == {0, 1}


def test_ties_on_both_figures_stay_on_the_front():
    rows = [{"size_mb": 1.0, "kld": 0.1}, {"size_mb": 1.0, "kld": 0.1}]
    assert sweep.pareto_front(rows, "size_mb", "low", "kld", "low") == {0, 1}


def _jobs(*codes):
    return [sweep.Job(i, [], exit_code=c) for i, c in enumerate(codes)]


@pytest.mark.parametrize("codes,search,expected", [
    ((0, 0), False, 0), ((0, 4), False, 4), ((0, 2, 4), False, 4), ((0, 1, 4), False, 1),
    ((0, None), False, 1),  # a dead worker is a failure, never a build
    ((0, 4), True, 0),  # a search: a failed gate is an infeasible trial
    ((4, 4), True, 4), ((0, 4, 2), True, 2), ((), False, 1),
])
def test_exit_code(codes, search, expected):
    assert sweep.exit_code(_jobs(*codes), search) == expected


def test_combinations_follow_the_basic_sweepers_order():
    assert sweep.combinations(["recipe=tiny", "a=1,2", "b=x,y"]) == [
        ["recipe=tiny", "a=1", "b=x"], ["recipe=tiny", "a=1", "b=y"],
        ["recipe=tiny", "a=2", "b=x"], ["recipe=tiny", "a=2", "b=y"]]
    assert sweep.combinations(["x=interval(0.1, 0.5)"]) == [["x=0.1"], ["x=0.5"]]


def _build(tmp_path, name, artifacts):
    d = tmp_path / name
    d.mkdir()
    (d / "manifest.json").write_text(json.dumps({"artifacts": artifacts}))
    return d


def _artifact(target, size, kld, digest):
    return {"target": target, "backend": "gguf", "precision": "q8_0", "export": {"outputs_digest": digest},
            "files": [{"path": f"artifacts/{target}/m.gguf", "size": size}, {"path": f"artifacts/{target}/LICENSE",
                                                                           "size": 10**6}],
            "verification": {"status": "passed", "metrics": {"kld_mean": kld, "top1": 0.9}}}


def test_objective_and_its_checks(tmp_path):
    d = _build(tmp_path, "b", [_artifact("a", 2_000_000, 0.01, "x"), _artifact("b", 1_000_000, 0.02, "y")])
    assert sweep.objective(d, "size_mb") == 3.0  # license files are not the artifact's size
    assert sweep.objective(d, "b.kld") == 0.02
    with pytest.raises(ValueError, match="name one as TARGET.kld"):
        sweep.objective(d, "kld")
    with pytest.raises(ValueError, match="no a.ppl_ratio figure"):
        sweep.objective(d, "a.ppl_ratio")
    assert sweep.check_objective("a.size_mb", ["a", "b"]) is None
    assert "unknown figure" in sweep.check_objective("a.speed", ["a", "b"])
    assert "no target 'c'" in sweep.check_objective("c.kld", ["a", "b"])
    assert "differs per target" in sweep.check_objective("top1", ["a", "b"])


def test_summary_of_a_sweep_folder_without_launcher_results(tmp_path):
    """A sweep whose launcher stopped: planned jobs without a result are failed; started ones died."""
    b = _build(tmp_path, "build0", [_artifact("g", 1_000_000, 0.01, "x")])
    s_dir = tmp_path / "sweep"
    s_dir.mkdir()
    (s_dir / "sweep.json").write_text(json.dumps({"jobs": [["q=a"], ["q=b"], ["q=c"]]}))
    sweep.write_job_result(s_dir / "0", {"num": 0, "overrides": ["q=a"], "exit_code": 0, "build_dir": str(b)})
    (s_dir / "1").mkdir()
    (s_dir / "1" / "job.json").write_text(json.dumps({"num": 1, "overrides": ["q=b"], "host": "node7"}))
    s = sweep.write_summary(s_dir)
    assert [j["status"] for j in s["jobs"]] == ["built", "died", "died"]
    assert "worker on node7 died" in s["jobs"][1]["error"] and "never started" in s["jobs"][2]["error"]
    assert s["exit_code"] == 1 and s["built"] == 1 and s["failed"] == 2
    assert [r["pareto_size"] for r in s["rows"]] == [True]
    md = (s_dir / "summary.md").read_text()
    assert "| 1 | q=b | - | died |" in md and "| 2 | q=c | - | died |" in md
    assert (s_dir / "pareto_size.png").read_bytes()[:4] == b"\x89PNG"
    assert not (s_dir / "pareto_speed.png").exists()  # no speed figures: no plot rather than an empty one


@pytest.mark.parametrize("recipe,group,target", [
    ("quant-search", "sweeper", "OptunaSweeper"),
    ("sweep-slurm", "launcher", "SlurmLauncher"),
])
def test_shipped_sweep_recipes_compose_and_plan(recipe, group, target):
    from llmbuild import multirun
    from llmbuild.cli import compose, find_recipe
    from llmbuild.config import typed_config
    from llmbuild.plan import make_plan

    f = find_recipe(recipe)
    cfg = compose(f, [f"recipe={recipe}"], hydra_config=True)
    assert str(cfg.hydra[group]._target_).endswith(target)
    values = multirun.search_overrides(cfg)
    assert len(values) == (9 if recipe == "quant-search" else 0)
    for extra in [[]] + [[v] for v in values]:
        bc = typed_config(compose(f, [f"recipe={recipe}", *extra]))
        make_plan(bc)
        multirun.check_objective(bc, str(cfg.hydra.sweeper._target_))


def test_an_artifact_is_on_the_front_where_its_gates_passed(tmp_path):
    """One artifact, two builds: a tight gate fails it in one and a loose one passes it in the other."""
    failed = _artifact("g", 1_000_000, 0.01, "same")
    failed["verification"]["status"] = "failed"
    a = _build(tmp_path, "a", [failed])
    b = _build(tmp_path, "b", [_artifact("g", 1_000_000, 0.01, "same")])
    s_dir = tmp_path / "sweep"
    for n, (build, code) in enumerate([(a, 4), (b, 0)]):
        sweep.write_job_result(s_dir / str(n), {"num": n, "overrides": [f"gate={n}"], "exit_code": code,
                                                 "build_dir": str(build)})
    rows = sweep.write_summary(s_dir)["rows"]
    assert [(r["gates"], r["pareto_size"], r["same_as"]) for r in rows] == [("failed", False, 0), ("passed", True, 0)]
