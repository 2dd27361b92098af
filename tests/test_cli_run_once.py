"""A single build composes its recipe once (llmbuild/cli.py _run_once) and runs it as hydra.main's run mode
does: the same Hydra config (${hydra:...}, ${now:}), the same job config and job name, the recipe's
callbacks called in the same order with the same arguments, the job's env_set applied."""

from __future__ import annotations

import os

import pytest
from omegaconf import OmegaConf

from llmbuild import cli

EVENTS: list[tuple] = []


class Recorder:
    """A Hydra callback a recipe names: it records what Hydra calls it with."""

    def __init__(self, tag: str) -> None:
        EVENTS.append(("init", tag))

    def on_run_start(self, config, **kw):
        EVENTS.append(("run_start", str(config.hydra.mode), sorted(kw)))

    def on_job_start(self, config, **kw):
        EVENTS.append(("job_start", str(config.hydra.job.name), sorted(kw)))

    def on_job_end(self, config, job_return, **kw):
        EVENTS.append(("job_end", str(job_return.status), job_return.return_value, sorted(kw)))

    def on_run_end(self, config, job_return, **kw):
        EVENTS.append(("run_end", str(job_return.status), sorted(kw)))


RECIPE = """\
defaults:
  - base
  - _self_
build:
  model_name: m-${hydra:job.name}-${hydra:runtime.choices.finetune}-${now:%Y}
model:
  source: init
targets:
  g: {backend: gguf, quant: q8_0}
hydra:
  job:
    env_set: {LLMBUILD_TEST_ENV_SET: "set-by-recipe"}
  callbacks:
    recorder:
      _target_: tests.test_cli_run_once.Recorder
      tag: t-${now:%Y}
"""


@pytest.fixture
def observed(monkeypatch, tmp_path):
    """Replace the build by a task that records what it was given; count Hydra's compositions."""
    from hydra._internal.hydra import Hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import JobRuntime

    seen: list[dict] = []
    compositions = []

    def task(cfg):
        hydra_cfg = OmegaConf.to_container(HydraConfig.get())  # unresolved: sweep.subdir needs a job number
        seen.append({"hydra": hydra_cfg, "cfg": OmegaConf.to_container(cfg, resolve=True),
                     "job": JobRuntime.instance().get("name"), "cwd": os.getcwd(),
                     "env": os.environ.get("LLMBUILD_TEST_ENV_SET"), "events": list(EVENTS)})
        return 0

    task.__module__ = cli._task.__module__  # hydra.main names the job after the task's module
    monkeypatch.setattr(cli, "_task", task)
    compose_config = Hydra.compose_config

    def counting(self, *a, **kw):
        compositions.append(kw.get("run_mode"))
        return compose_config(self, *a, **kw)

    monkeypatch.setattr(Hydra, "compose_config", counting)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "_results", [])
    recipe = tmp_path / "hooks.yaml"
    recipe.write_text(RECIPE)
    EVENTS.clear()
    return recipe, seen, compositions


def test_a_single_build_runs_as_hydra_main_runs_it(observed):
    recipe, seen, compositions = observed
    overrides = ["recipe=hooks", "build.outputs_dir=out"]
    assert cli._run_hydra(recipe, [], list(overrides), multirun=False) == 0
    by_hydra_main, hydra_main_events = seen.pop(), list(EVENTS)
    assert len(compositions) == 2  # hydra.main: its get_mode probe and its run
    EVENTS.clear()
    compositions.clear()

    assert cli._run_once(recipe, list(overrides)) == 0
    once, once_events = seen.pop(), list(EVENTS)
    assert len(compositions) == 1
    assert once == by_hydra_main
    assert once_events == hydra_main_events
    assert once["cfg"]["build"]["model_name"].startswith("m-cli-none-")
    assert once["env"] == "set-by-recipe" and os.environ.get("LLMBUILD_TEST_ENV_SET") is None
    assert [e[0] for e in once_events] == ["init", "run_start", "job_start", "job_end", "run_end"]
    assert once_events[3][2] == 0  # the task's exit code reached the callback


def test_the_command_line_composes_a_single_build_once(observed):
    recipe, seen, compositions = observed
    assert cli._main([f"recipe={recipe}", "build.outputs_dir=out"]) == 0
    assert len(seen) == 1 and len(compositions) == 1


def test_a_recipe_that_sets_the_mode_is_left_to_hydra_main(observed):
    recipe, seen, compositions = observed
    recipe.write_text(RECIPE + "  mode: RUN\n")
    assert cli._run_once(recipe, ["recipe=hooks"]) is None and not seen
    assert cli._main([f"recipe={recipe}"]) == 0
    assert len(seen) == 1
