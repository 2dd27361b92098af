"""Multirun (`llmbuild -m ...`): what a sweep or search needs around Hydra's own sweeper and launcher.

Before any build: the launcher and sweeper plugins named are installed (else one line with the pip
command), every combination of a basic sweep and every value of a search's parameters composes and types,
a search names the figure it optimises (`build.objective`), and the sweep folder is fixed so the summary
can be found whatever happens to the workers. In each worker: the job's result file (exit code, build
folder, error) and, for a search, the objective Hydra's sweeper reads. After the sweep: the exit code from
the summary (llmbuild/report/sweep.py); when the launcher itself failed (a worker died and took the
launcher down), the summary is written here, with the jobs that never reported listed as failed.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import yaml

from llmbuild.errors import InvalidInput

# plugin choice -> (modules it needs, what to install). Hydra finds plugins in the hydra_plugins namespace.
PLUGINS = {
    ("launcher", "joblib"): (("hydra_plugins.hydra_joblib_launcher", "joblib"), "hydra-joblib-launcher"),
    ("launcher", "submitit_local"): (("hydra_plugins.hydra_submitit_launcher", "submitit"), "hydra-submitit-launcher"),
    ("launcher", "submitit_slurm"): (("hydra_plugins.hydra_submitit_launcher", "submitit"), "hydra-submitit-launcher"),
    ("launcher", "ray"): (("hydra_plugins.hydra_ray_launcher", "ray"), "'llmbuild[ray]'"),
    ("launcher", "ray_cluster"): (("hydra_plugins.hydra_ray_launcher", "ray"), "'llmbuild[ray]'"),
    ("launcher", "ray_aws"): (("hydra_plugins.hydra_ray_launcher", "ray", "boto3"), "'llmbuild[ray]'"),
    ("launcher", "rq"): (("hydra_plugins.hydra_rq_launcher", "rq"), "hydra-rq-launcher"),
    ("sweeper", "optuna"): (("hydra_plugins.hydra_optuna_sweeper", "optuna"), "hydra-optuna-sweeper"),
    ("sweeper", "ax"): (("hydra_plugins.hydra_ax_sweeper", "ax"), "hydra-ax-sweeper"),
    ("sweeper", "nevergrad"): (("hydra_plugins.hydra_nevergrad_sweeper", "nevergrad"), "hydra-nevergrad-sweeper"),
}


def _plugin_choices(recipe_file: Path, overrides: list[str]) -> list[tuple[str, str, str]]:
    """(group, name, where) for every hydra/launcher and hydra/sweeper the command line or recipe picks."""
    out = []
    for o in overrides:
        key, _, value = o.lstrip("+~").partition("=")
        for group in ("launcher", "sweeper"):
            if key == f"hydra/{group}" and value:
                out.append((group, value, o))
    try:
        recipe = yaml.safe_load(recipe_file.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return out  # composition reports a bad recipe with its line
    for d in recipe.get("defaults") or [] if isinstance(recipe, dict) else []:
        if isinstance(d, dict):
            for k, v in d.items():
                k = str(k).replace("override", "").strip().lstrip("/")
                for group in ("launcher", "sweeper"):
                    if k == f"hydra/{group}" and isinstance(v, str):
                        out.append((group, v, f"{recipe_file.name}: defaults: hydra/{group}: {v}"))
    return out


def check_plugins(recipe_file: Path, overrides: list[str]) -> None:
    for group, name, where in _plugin_choices(recipe_file, overrides):
        need = PLUGINS.get((group, name))
        if need is None:
            continue  # Hydra's own (basic) or one we do not know: composition says if it is missing
        modules, install = need
        missing = [m for m in modules if importlib.util.find_spec(m.split(".")[0]) is None
                   or importlib.util.find_spec(m) is None]
        if missing:
            raise InvalidInput(f"{where}: the {name} {group} is not installed ({missing[0]} is missing); "
                               f"install it with: pip install {install}")


def _values(override: str) -> list[str]:
    """The values a sweep override can take, as `key=value` overrides (ends of an interval)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    o = OverridesParser.create().parse_overrides([override])[0]
    key = o.get_key_element()
    if not o.is_sweep_override():
        return [o.input_line]
    if o.is_interval_sweep():
        v = o.value()
        return [f"{key}={v.start}", f"{key}={v.end}"]
    return [f"{key}={v}" for v in o.sweep_string_iterator()]


def search_overrides(cfg) -> list[str]:
    """A search's parameters (hydra.sweeper.params) as one `key=value` per value, to check before any trial."""
    from omegaconf import OmegaConf

    params = OmegaConf.select(cfg, "hydra.sweeper.params", default=None)
    out = []
    for k, expr in (OmegaConf.to_container(params) if params else {}).items():
        try:
            out += _values(f"{k}={expr}")
        except Exception as e:  # Hydra's grammar errors carry the position; one line is enough here
            raise InvalidInput(f"hydra.sweeper.params.{k}: {str(e).splitlines()[0]}") from None
    return out


def check_objective(bc, sweeper: str) -> None:
    from llmbuild.report.sweep import check_objective as why_not
    from llmbuild.report.sweep import is_search

    if not is_search(sweeper):
        return
    spec = bc.build.objective
    names = [t.name for t in bc.targets]
    if not spec:
        raise InvalidInput(f"build.objective: a search needs the figure it optimises, e.g. "
                           f"build.objective={names[0]}.size_mb")
    if why := why_not(spec, names):
        raise InvalidInput(f"build.objective={spec}: {why}")


def pin_sweep_dir(cfg, overrides: list[str]) -> tuple[Path, list[str]]:
    """Fix the sweep folder before Hydra runs (its default holds the time; two sweeps in one second would
    share it), so the summary can be written and found even when the launcher fails."""
    from omegaconf import OmegaConf

    user = any(o.partition("=")[0].lstrip("+") == "hydra.sweep.dir" for o in overrides)
    d = Path(str(OmegaConf.select(cfg, "hydra.sweep.dir")))
    if not user:
        base, i = d, 0
        while d.exists() and any(d.iterdir()):
            i += 1
            d = base.with_name(f"{base.name}.{i}")
    d = d.resolve()
    d.mkdir(parents=True, exist_ok=True)
    return d, [o for o in overrides if o.partition("=")[0].lstrip("+") != "hydra.sweep.dir"] + [
        f"hydra.sweep.dir='{d}'"]


def job_finished(hc, code: int, outcome: dict, error: str | None, objective_spec: str | None):
    """In the worker: report the job; return what the sweeper reads (the exit code, or a search's objective)."""
    from llmbuild.report import sweep

    search = sweep.is_search(hc.sweeper.get("_target_"))
    objective = None
    if search and code == 0:
        try:
            objective = sweep.objective(Path(outcome["build_dir"]), objective_spec)
        except (ValueError, KeyError) as e:
            code, error = 1, f"objective: {e}"
    elif search and code in (2, 3, 4):
        # infeasible (a gate failed, or the combination is invalid): the worst score, so the search
        # learns to avoid it instead of stopping
        objective = -math.inf if str(hc.sweeper.get("direction", "minimize")).endswith("maximize") else math.inf
    sweep.write_job_result(Path(hc.runtime.output_dir), {
        "num": hc.job.num, "overrides": list(hc.overrides.task), "exit_code": code, "error": error,
        "build_dir": outcome.get("build_dir"), "objective": objective})
    if search:
        return objective  # None (a bug) is a failed trial for the sweeper
    return code


def finish(sweep_dir: Path, launcher_failed: bool) -> int:
    """The sweep's exit code, from the summary the callback wrote (written here when it could not be)."""
    import json

    from llmbuild.report import sweep

    summary_file = sweep_dir / "summary.json"
    if launcher_failed or not summary_file.exists():
        s = sweep.write_summary(sweep_dir)
        sweep.print_summary(s)
        return s["exit_code"] or 1
    return int(json.loads(summary_file.read_text())["exit_code"])
