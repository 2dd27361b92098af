"""`llmbuild recipe=NAME [key=value ...] [-m] [--cfg job]`: the Hydra entry point.

The recipe is Hydra's primary config: `recipe=NAME` picks `NAME.yaml` from the recipe folders
(`$LLMBUILD_RECIPES`, os.pathsep-separated, then ./recipes, then the recipes/ shipped beside conf/),
or `recipe=path/to/file.yaml`. `conf/` is on the search path, so recipes compose its groups.
Every composition is checked before Hydra runs it, so a bad key or value ends with one line and
exit 2 instead of Hydra's multi-line error. A single build is composed once and run here as Hydra's run
mode runs it (_run_once); a sweep (-m) is checked combination by combination, and llmbuild/multirun.py
handles the rest of a sweep (launcher and sweeper plugins, its folder, its exit code).
"""

from __future__ import annotations

import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path

from llmbuild.errors import BuildError, InvalidInput

PROJECT = Path(__file__).resolve().parents[1]
CONF_DIR = PROJECT / "conf"
SHIPPED_RECIPES = PROJECT / "recipes"
_HYDRA_FLAGS_WITHOUT_BUILD = ("--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i", "--resolve")


def recipe_dirs() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get("LLMBUILD_RECIPES", "").split(os.pathsep) if p]
    return dirs + [Path.cwd() / "recipes", SHIPPED_RECIPES]


def find_recipe(value: str) -> Path:
    if value.endswith((".yaml", ".yml")) or "/" in value:
        p = Path(value).expanduser()
        if p.is_file():
            return p.resolve()
        raise InvalidInput(f"recipe={value}: no such file")
    for d in recipe_dirs():
        p = d / f"{value}.yaml"
        if p.is_file():
            return p.resolve()
    searched = ", ".join(str(d) for d in dict.fromkeys(recipe_dirs()))
    raise InvalidInput(f"recipe={value}: no {value}.yaml in the recipe folders ({searched})")


def split_args(argv: list[str]) -> tuple[str | None, list[str], list[str]]:
    """(recipe value, Hydra flags, overrides) from the command line."""
    recipe, flags, overrides = None, [], []
    it = iter(argv)
    for a in it:
        if a.startswith("recipe="):
            recipe = a.split("=", 1)[1]
            overrides.append(a)
        elif a.startswith("-"):
            flags.append(a)
            if a in ("--cfg", "-c", "--package", "-p", "--config-dir", "-cd", "--info", "-i") and "=" not in a:
                nxt = next(it, None)
                if nxt is not None:
                    flags.append(nxt)
        else:
            overrides.append(a)
    return recipe, flags, overrides


def _combinations(overrides: list[str]) -> list[list[str]]:
    """Every combination a sweep (-m) would run, as plain override lists (llmbuild/report/sweep.py)."""
    from llmbuild.report.sweep import combinations

    return combinations(overrides)


def _error_line(e: Exception) -> str:
    parts = []
    while e is not None and len(parts) < 3:
        text = str(e).strip()
        if text and "$VALUE" not in text and "$KEY" not in text:
            parts.append(text.splitlines()[0].rstrip("."))
        full_key = getattr(e, "full_key", None)
        if full_key and all(full_key not in p for p in parts):
            parts.append(f"key {full_key}")
        e = e.__cause__ or e.__context__
    return ": ".join(dict.fromkeys(parts)) or "invalid recipe"


def _composition_error(recipe_file: Path, overrides: list[str], e: Exception) -> str:
    """One line for what Hydra, OmegaConf or PyYAML raised while composing: the file (and line and
    column) or the defaults entry at fault, never Hydra's multi-line report."""
    import yaml
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    chain, c = [], e
    while c is not None and len(chain) < 8:
        chain.append(c)
        c = c.__cause__ or c.__context__
    for c in chain:
        if isinstance(c, yaml.MarkedYAMLError) and c.problem_mark is not None:
            m = c.problem_mark
            where = m.name if m.name and not m.name.startswith("<") else str(recipe_file)
            what = "; ".join(x for x in (c.context, c.problem) if x)
            return f"{where}:{m.line + 1}:{m.column + 1}: YAML does not parse ({what})"
    for c in chain:
        if isinstance(c, MissingConfigException):
            first = str(c).splitlines()[0].rstrip(".")
            found = re.match(r"In '([^']+)': Could not (?:load|find) '([^']+)'", first)
            options = f"; available: {', '.join(c.options)}" if c.options else ""
            if found:
                cfg_name, missing = found.groups()
                group, _, choice = missing.rpartition("/")
                for o in overrides:  # a command-line choice (`finetune=nosuch`) rather than the recipe's
                    if group and o.lstrip("+~") == f"{group}={choice}":
                        return f"{o}: no config {group}/{choice}.yaml{options}"
                where = recipe_file if cfg_name == recipe_file.stem else f"{cfg_name}.yaml"
                return f"{where}: the defaults entry {missing!r} names no config in the recipe folder or conf/{options}"
            name = re.search(r"'([^']+)'", first)
            return f"{recipe_file.name}: {name.group(1) if name else first} names no config{options}"
        if isinstance(c, OverrideParseException):
            lines = [x for x in str(c).splitlines() if x.strip()]
            what = (lines[0] if lines else type(c).__name__).removesuffix(": None").rstrip(".")
            shown = c.override if c.override and c.override.isprintable() else repr(c.override or "")
            return f"{shown}: not a valid override ({what})"
        if isinstance(c, ConfigCompositionException) and "must be a DictConfig" in str(c):
            return (f"{recipe_file}: a recipe must be a YAML mapping (defaults:, model:, targets: ...), "
                    f"not {'a list' if 'ListConfig' in str(c) else 'a single value'}")
    return f"{recipe_file.name}: {_error_line(e)}"


def compose(recipe_file: Path, overrides: list[str], extra_dirs: list[str] = (), hydra_config: bool = False):
    """Compose a recipe with overrides (Hydra's Compose API); InvalidInput on any composition error.
    hydra_config keeps the `hydra` node (launcher, sweeper, sweep folder) for a multirun's checks."""
    with _hydra_on(recipe_file, overrides):
        return _compose(recipe_file, overrides, extra_dirs, hydra_config)


@contextmanager
def _hydra_on(recipe_file: Path, overrides: list[str], job_name: str = "app"):
    """Hydra initialized on the recipe's folder (Compose API) for the with-block, and cleared after it."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from llmbuild.config import register_schema

    register_schema()
    GlobalHydra.instance().clear()
    try:
        try:
            session = initialize_config_dir(config_dir=str(recipe_file.parent), job_name=job_name, version_base="1.3")
        except Exception as e:  # Hydra and OmegaConf raise many types for a bad recipe
            raise InvalidInput(_composition_error(recipe_file, overrides, e)) from None
        with session:
            yield
    finally:
        GlobalHydra.instance().clear()


def _compose(recipe_file: Path, overrides: list[str], extra_dirs, hydra_config: bool):
    from hydra import compose as hydra_compose

    searchpath = [f"file://{CONF_DIR}", *(f"file://{Path(d).resolve()}" for d in extra_dirs)]
    sp = "hydra.searchpath=[" + ",".join(searchpath) + "]"
    try:
        return hydra_compose(config_name=recipe_file.stem, overrides=[*overrides, sp], return_hydra_config=hydra_config)
    except Exception as e:  # Hydra and OmegaConf raise many types for a bad recipe
        raise InvalidInput(_composition_error(recipe_file, overrides, e)) from None


# hydra.job.name of a build: what hydra.main names the job of llmbuild.cli._task (its module's last part)
_JOB_NAME = "cli"


def _run_once(recipe_file: Path, overrides: list[str]) -> int | None:
    """One build (no -m, no Hydra flags): the recipe composed once and run the way hydra.main's run mode
    runs it (Hydra 1.3's Hydra.run: logging configured, hydra.mode RUN, the recipe's callbacks, run_job
    with hydra.run.dir, HydraConfig set for ${hydra:...} and the job's env_set). hydra.main would compose
    it twice more (its get_mode probe, then its run) after the pre-check's composition, and the pre-check
    typed it too: 0.19 s of the demo's unchanged rebuild. A bad recipe fails in that one composition with
    the same one line as the pre-check's. None when the recipe itself sets hydra.mode (hydra.main decides
    then)."""
    from hydra._internal.callbacks import Callbacks  # Hydra.run's own; no public API runs a composed config
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.utils import configure_log, run_job
    from hydra.types import HydraContext, RunMode
    from omegaconf import open_dict

    with _hydra_on(recipe_file, overrides, job_name=_JOB_NAME):
        cfg = _compose(recipe_file, overrides, (), hydra_config=True)
        if cfg.hydra.mode is not None:
            return None
        configure_log(cfg.hydra.hydra_logging, cfg.hydra.verbose)
        # what hydra.main adds when the recipe leaves the mode open (its _run_app), so the job's Hydra
        # config is the one hydra.main gives it
        cfg.hydra.mode = RunMode.RUN
        with open_dict(cfg.hydra.overrides):
            cfg.hydra.overrides.hydra.append("hydra.mode=RUN")
        callbacks = Callbacks(cfg)
        callbacks.on_run_start(config=cfg, config_name=recipe_file.stem)
        ret = run_job(hydra_context=HydraContext(config_loader=GlobalHydra.instance().config_loader(),
                                                 callbacks=callbacks),
                      task_function=_task, config=cfg, job_dir_key="hydra.run.dir", job_subdir_key=None,
                      configure_logging=True)
        callbacks.on_run_end(config=cfg, config_name=recipe_file.stem, job_return=ret)
        _ = ret.return_value  # raises what the task raised (a bug: _task catches every error of a build)
    return _exit_code()


_results: list[int] = []
_recipe_file: list[Path] = []


def _task(cfg):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from llmbuild.config import typed_config
    from llmbuild.engine import run_build

    _library_environment()  # a launcher's worker process starts without main()
    outcome: dict = {}
    error = None
    bc = None
    try:
        bc = typed_config(cfg)
        bc.recipe_file = str(_recipe_file[0]) if _recipe_file else _recipe_from_hydra()
        code = run_build(bc, outcome)
    except BuildError as e:
        error = str(e)
        print(f"llmbuild: error: {e}", file=sys.stderr)
        code = e.exit_code
    except Exception as e:  # a bug: one line here, the traceback in the build log
        if _disk_full(e):
            # a disk that filled outside a stage (the build folder's documents): the environment, not a bug
            error, code = f"{e.filename or 'the outputs folder'}: {e.strerror}", 2
        else:
            from llmbuild.ui import bug_message

            error, code = bug_message(e), 1
        print(f"llmbuild: error: {error}", file=sys.stderr)
    _results.append(code)
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        from llmbuild import multirun

        return multirun.job_finished(HydraConfig.get(), code, outcome, error,
                                     bc.build.objective if bc is not None else None)
    return code


def _recipe_from_hydra() -> str | None:
    """The recipe file in a launcher's worker, where _recipe_file was never set: Hydra's primary config
    folder and name travel with the job's config."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    for src in hc.runtime.config_sources:
        if src.provider == "main" and src.schema == "file":
            return str(Path(str(src.path)) / f"{hc.job.config_name}.yaml")
    return None


def _disk_full(e: Exception) -> bool:
    import errno

    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


def _library_environment() -> None:
    """Environment for the libraries: quiet progress bars, polite threads. Set before they load."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    # OpenMP threads that spin while waiting (the default) make llama.cpp's decode 100x slower
    # when the cores are shared (measured: verify 16.9 s -> 0.1 s on the tiny model under load)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import warnings

    warnings.filterwarnings("ignore", module=r"torch\.onnx")  # exporter chatter about axis names
    import logging

    for name in ("gguf", "modelopt", "lm_eval", "onnxruntime"):  # their INFO lines would drown the build's own
        logging.getLogger(name).setLevel(logging.WARNING)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every cleanup a KeyboardInterrupt runs (a stage's temporary
    folder, the build's documents) runs for it too; Python's default for SIGTERM would skip them."""


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> None:
    import signal

    argv = list(sys.argv[1:] if argv is None else argv)
    _library_environment()
    if _in_main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        code = _main(argv)
    except BuildError as e:
        print(f"llmbuild: error: {e}", file=sys.stderr)
        code = e.exit_code
    except KeyboardInterrupt as e:
        what = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        print(f"llmbuild: {what}; the cache and earlier builds are intact, the next build resumes after "
              "the last finished stage", file=sys.stderr)
        code = 143 if isinstance(e, Terminated) else 130  # 128 + the signal's number, as shells report it
    except Exception as e:  # a bug before any build started: one line, the traceback in a log file
        from llmbuild.ui import bug_message

        print(f"llmbuild: error: {bug_message(e)}", file=sys.stderr)
        code = 1
    sys.exit(code)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()  # signal handlers can only be set there


def _main(argv: list[str]) -> int:
    recipe, flags, overrides = split_args(argv)
    if recipe is None:
        if any(f in ("--help", "-h") for f in flags):
            print(__doc__)
            return 0
        raise InvalidInput("recipe: say which recipe to build, e.g. `llmbuild recipe=demo`")
    recipe_file = find_recipe(recipe)
    _recipe_file[:] = [recipe_file]
    overrides = [o if not o.startswith("recipe=") else f"recipe={recipe_file.stem}" for o in overrides]
    extra_dirs = [flags[i + 1] for i, f in enumerate(flags[:-1]) if f in ("--config-dir", "-cd")]
    multirun = any(f in ("-m", "--multirun") for f in flags)
    builds = not any(f in _HYDRA_FLAGS_WITHOUT_BUILD for f in flags)
    sweep_dir = None
    if multirun and any(f in ("--cfg", "-c", "--info", "-i") for f in flags):
        raise InvalidInput("-m: a sweep cannot be combined with --cfg or --info; print one combination's config "
                           "without -m")
    if multirun:
        from llmbuild import multirun as mr

        mr.check_plugins(recipe_file, overrides)
        try:
            combos = _combinations(overrides)
        except Exception as e:  # Hydra's override grammar: a sweep that does not parse
            raise InvalidInput(_composition_error(recipe_file, overrides, e)) from None
        first = compose(recipe_file, combos[0], extra_dirs, hydra_config=True)
        # a search's parameters (hydra.sweeper.params) are checked value by value, like a sweep's combinations
        combos += [[*combos[0], o] for o in mr.search_overrides(first)]
    elif builds and not flags:
        code = _run_once(recipe_file, overrides)
        if code is not None:
            return code
        combos = [overrides]
    else:
        combos = [overrides]
    for combo in combos:
        cfg = compose(recipe_file, combo, extra_dirs)
        if builds and multirun:
            # every combination typed (targets' options too) and planned before the first build; a single
            # build is typed by _task first thing, where HydraConfig is set for ${hydra:...}
            from llmbuild.config import typed_config
            from llmbuild.plan import make_plan

            bc = typed_config(cfg)
            make_plan(bc)
            mr.check_objective(bc, str(first.hydra.sweeper.get("_target_", "")))
    if multirun and builds:
        sweep_dir, overrides = mr.pin_sweep_dir(first, overrides)
    return _run_hydra(recipe_file, flags, overrides, multirun, sweep_dir)


def _run_hydra(recipe_file: Path, flags: list[str], overrides: list[str], multirun: bool,
               sweep_dir: Path | None = None) -> int:
    import hydra

    from llmbuild.config import register_schema

    register_schema()
    sp = f"hydra.searchpath=[file://{CONF_DIR}]"
    task = hydra.main(version_base="1.3", config_path=str(recipe_file.parent), config_name=recipe_file.stem)(_task)
    saved = sys.argv
    sys.argv = [saved[0] if saved else "llmbuild", *flags, *overrides, sp]
    launcher_failed = False
    if sweep_dir is not None:
        # let an exception from the sweeper or launcher (a worker that died) reach us instead of Hydra
        # printing its traceback: one line here, the traceback in a log, the summary says which jobs
        # never reported
        os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        task()
    except Exception as e:
        if sweep_dir is None:
            raise
        from llmbuild.ui import log_bug

        print(f"llmbuild: error: the sweep's launcher failed ({type(e).__name__}: "
              f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}); traceback in {log_bug(e)}",
              file=sys.stderr)
        launcher_failed = True
    except KeyboardInterrupt:
        if sweep_dir is not None:  # what finished is kept: say so before stopping
            from llmbuild import multirun

            multirun.finish(sweep_dir, launcher_failed=True)
        raise
    finally:
        sys.argv = saved
    if sweep_dir is not None:
        from llmbuild import multirun

        return multirun.finish(sweep_dir, launcher_failed)
    return _exit_code()


def _exit_code() -> int:
    if not _results:
        return 0  # --cfg, --info, --help: Hydra printed what was asked
    return max(_results) if all(r in (0, 2, 3, 4) for r in _results) else 1


if __name__ == "__main__":
    main()
