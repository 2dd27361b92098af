"""What a terminal shows is what the log shows: stage names in square brackets are text, not rich markup."""

from __future__ import annotations

import logging
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO

LINES = ["[acquire] running", "[verify:cpu-gguf] passed: top-1 0.951, KLD 1.2e-04, max |dlogit| 0.03",
         "[export:onnx-int4] done in 0.2 s", "warning: targets.x [bold]: not markup"]


def test_recording_terminal_console_keeps_stage_names(tmp_path):
    from rich.console import Console

    from llmbuild.ui import UI

    console = Console(record=True, force_terminal=True, width=200, highlight=False)
    ui = UI(console=console)
    assert ui.tty
    ui.attach_log(tmp_path / "build.log")
    try:
        for i, line in enumerate(LINES):
            ui.say(line, style="green" if i % 2 else None)
        with ui.progress("export:cpu-gguf") as cb:
            cb(1, 2, "[tensor] blk.0")
    finally:
        ui.close()
        logging.getLogger("llmbuild").handlers.clear()
    shown = console.export_text()
    logged = (tmp_path / "build.log").read_text()
    for line in LINES:
        assert line in shown, shown
        assert line in logged


def test_real_pseudo_terminal_keeps_stage_names():
    """The same through a pty: rich decides by itself that it writes to a terminal."""
    script = ("from llmbuild.ui import UI\nui = UI()\nprint('tty', ui.tty, flush=True)\n"
              + "".join(f"ui.say({line!r}, style='green')\n" for line in LINES))
    leader, follower = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "PYTHONPATH": str(REPO)}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=follower, stdout=follower, stderr=follower,
                            env=env, cwd=Path(REPO), close_fds=True)
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the follower side closed: the child is done
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    assert proc.wait(timeout=60) == 0
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.decode()).replace("\r", "")
    assert "tty True" in text, text
    for line in LINES:
        assert line in text, text
