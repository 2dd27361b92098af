"""Test-only hooks: pause a build inside a named stage, so a test can signal it at a known moment.

Not a user feature, and inert unless both variables are set (one environment lookup per stage):
    LLMBUILD_TEST_PAUSE=KIND          acquire | finetune | reference | evalref | export | verify | evaluate | document
    LLMBUILD_TEST_PAUSE_FILE=PATH     written (with the build's pid) once the build is paused
The first stage of that kind (the part of its name before ':') writes a partial file into its temporary
output folder, then sleeps until a signal ends the build, or for LLMBUILD_TEST_PAUSE_SECONDS (default 120)
when none comes. tests/hardening/test_interrupts.py uses it to interrupt every stage kind with
SIGINT, SIGTERM and SIGKILL and check what is left behind.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

_paused: list[str] = []


def pause_point(stage_name: str, out: Path | None = None) -> None:
    kind = os.environ.get("LLMBUILD_TEST_PAUSE")
    if not kind or _paused or stage_name.split(":")[0] != kind:
        return
    marker = os.environ.get("LLMBUILD_TEST_PAUSE_FILE")
    if not marker:
        return
    _paused.append(stage_name)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "partial.bin").write_bytes(b"\0" * 4096)  # what a stage killed half-way leaves
    tmp = f"{marker}.{os.getpid()}.tmp"
    Path(tmp).write_text(f"{os.getpid()} {stage_name}\n")
    os.replace(tmp, marker)  # the test sees the whole line or nothing
    deadline = time.monotonic() + float(os.environ.get("LLMBUILD_TEST_PAUSE_SECONDS", "120"))
    while time.monotonic() < deadline:
        time.sleep(0.05)
