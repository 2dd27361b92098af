"""Every command the README and the recipes' headers show runs as documented.

The commands are read from the README's ```bash blocks and from the comment header of every recipe
(`llmbuild recipe=...`, with the exit code the text gives: "exit 3", "exit 4"; none means 0). The default
run composes, types and plans each llmbuild command (the recipe-level checks of a real run) and runs the
cheap ones; the slow twin runs every one of them for real, sharing one cache as a user's checkout does.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import REPO

# placeholders a user fills in: these lines show a shape, not a command to run as it is
PLACEHOLDERS = ("my-recipe", "my.jsonl", "=DIR", "~/recipes/", "PATH_OR_HUB_ID", "=PATH", "=SHA")
# a running server's side of the monitoring walk-through (README "Monitoring in production"): started and
# scraped for real by tests/monitor/test_e2e.py, so here only their shape is held to what that test runs
SERVER_LINES = {("python", "-m", "llama_cpp.server"), ("curl", "-s")}
# commands the recipes describe in prose rather than as a `llmbuild ...` line
PROSE = {"recipes/license-llama.yaml": [("recipe=license-llama build.model_name=my-model", 3)]}
# commands on a finished build folder: run for real on a tiny build by tests/clients/test_clients.py
# (llmbuild-publish against an HTTP stand-in of the Hub, llmbuild-verify on a tampered copy)
AFTER_A_BUILD = ("llmbuild-publish", "llmbuild-verify")
# launchers that need a cluster this machine does not have: their commands compose and plan here; the
# launchers themselves run in tests/e2e/test_sweeps.py (submitit_local, a local Ray cluster)
NEEDS_CLUSTER = ("hydra/launcher=ray_cluster", "hydra/launcher=submitit_slurm", "recipe=sweep-slurm")


@dataclass
class Command:
    where: str
    program: str  # llmbuild | llmbuild-license | llmbuild-monitor | make
    args: list[str]
    exit_code: int
    env: dict | None = None  # NAME=value words before the program

    @property
    def needs_cluster(self) -> bool:
        return "-m" in self.args and any(a in NEEDS_CLUSTER for a in self.args)

    @property
    def id(self) -> str:
        return f"{self.where}: {self.program} {' '.join(self.args)}"[:120]

    @property
    def placeholder(self) -> bool:
        return any(p in a for a in self.args for p in PLACEHOLDERS)


def _exit_code(comment: str) -> int:
    m = re.search(r"exit (\d)", comment)
    return int(m.group(1)) if m else 0


def readme_commands() -> list[Command]:
    out, block = [], False
    for n, line in enumerate((REPO / "README.md").read_text().splitlines(), 1):
        if line.startswith("```"):
            block = line.strip() == "```bash"
            continue
        if not block or not line.strip():
            continue
        text, _, comment = line.partition(" #")
        text = re.split(r"\s(?:\|\||\||&&|&)(?:\s|$)", text)[0]  # the command itself, not what the shell does next
        words = shlex.split(text)
        env = {}
        while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):  # LLMBUILD_CACHE=... llmbuild ...
            k, _, v = words.pop(0).partition("=")
            env[k] = v
        program = Path(words[0]).name
        if any(tuple([program, *words[1:]])[:len(pre)] == pre for pre in SERVER_LINES):
            continue
        assert program in ("llmbuild", "llmbuild-license", "llmbuild-monitor", "make", *AFTER_A_BUILD), \
            f"README.md:{n}: {line}"
        out.append(Command(f"README.md:{n}", program, words[1:], _exit_code(comment), env or None))
    return out


def recipe_commands() -> list[Command]:
    out = []
    for recipe in sorted((REPO / "recipes").glob("*.yaml")):
        rel = recipe.relative_to(REPO).as_posix()
        for n, line in enumerate(recipe.read_text().splitlines(), 1):
            if not line.startswith("#"):
                break  # the header ends where the recipe starts
            m = re.search(r"\bllmbuild ((?:-m )?recipe=.*)$", line)
            if not m:
                continue
            cmd = re.split(r"\s+\(|\s+->", m.group(1))[0].strip()  # the note after it: "(...)" or "-> ..."
            rest = m.group(1)[len(cmd):]
            out.append(Command(f"{rel}:{n}", "llmbuild", shlex.split(cmd), _exit_code(rest)))
        for args, code in PROSE.get(rel, []):
            out.append(Command(f"{rel} (prose)", "llmbuild", shlex.split(args), code))
    return out


COMMANDS = readme_commands() + recipe_commands()
RUNNABLE = [c for c in COMMANDS if not c.placeholder and c.program not in ("make", "llmbuild-monitor", *AFTER_A_BUILD)]
MONITOR = [c for c in COMMANDS if c.program == "llmbuild-monitor"]


def test_the_documents_show_commands():
    assert len([c for c in COMMANDS if c.where.startswith("README")]) >= 15
    shipped = {p.stem for p in (REPO / "recipes").glob("*.yaml")}
    shown = {a.split("=", 1)[1] for c in COMMANDS for a in c.args if a.startswith("recipe=")}
    assert shipped <= shown, shipped - shown  # every shipped recipe opens with its command


@pytest.mark.parametrize("cmd", [c for c in RUNNABLE if c.program == "llmbuild"], ids=lambda c: c.id)
def test_documented_command_composes_and_plans(cmd):
    """What a real run checks before any stage: composition, typing and the static plan."""
    from llmbuild import cli
    from llmbuild.config import typed_config
    from llmbuild.plan import make_plan

    assert cmd.exit_code in (0, 3, 4)  # no documented command is an invalid recipe
    recipe, flags, overrides = cli.split_args(cmd.args)
    recipe_file = cli.find_recipe(recipe)
    overrides = [o if not o.startswith("recipe=") else f"recipe={recipe_file.stem}" for o in overrides]
    combos = cli._combinations(overrides) if "-m" in flags else [overrides]
    for combo in combos:
        cfg = cli.compose(recipe_file, combo)
        if "--cfg" not in flags:
            make_plan(typed_config(cfg))


@pytest.mark.parametrize("cmd", MONITOR, ids=lambda c: c.id)
def test_documented_monitor_command_composes(cmd):
    """The monitor's lines compose and type (their runs need logs and a server: tests/monitor runs those)."""
    from llmbuild.monitor import cli

    command, flags, overrides = cli.split(cmd.args)
    from llmbuild.cli import _combinations

    combos = _combinations(overrides) if "-m" in flags else [overrides]
    for combo in combos:
        _, typed = cli.compose(command, combo)
        if not cmd.placeholder:
            cli.check(command, typed)


def run(cmd: Command, cwd: Path, timeout: int = 3600) -> subprocess.CompletedProcess:
    module = {"llmbuild": "llmbuild.cli", "llmbuild-license": "llmbuild.licenses.cli"}[cmd.program]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    env.pop("LLMBUILD_CACHE", None)
    env.update(cmd.env or {})
    return subprocess.run([sys.executable, "-m", module, *cmd.args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


CHEAP = [c for c in RUNNABLE if c.program == "llmbuild-license" or "--cfg" in c.args]


@pytest.mark.parametrize("cmd", CHEAP, ids=lambda c: c.id)
def test_cheap_documented_command_runs_as_documented(cmd, tmp_path):
    proc = run(cmd, tmp_path, timeout=300)
    assert proc.returncode == cmd.exit_code, (cmd.id, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("user")  # one folder for all: the commands share a cache, as a user's do


@pytest.mark.slow
@pytest.mark.parametrize("cmd", [c for c in RUNNABLE if c not in CHEAP], ids=lambda c: c.id)
def test_documented_command_runs_as_documented(cmd, checkout):
    if cmd.needs_cluster:
        pytest.skip("needs a SLURM or Ray cluster; the launcher runs in tests/e2e/test_sweeps.py")
    proc = run(cmd, checkout)
    assert proc.returncode == cmd.exit_code, (cmd.id, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr
