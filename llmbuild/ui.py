"""What a build prints: one line per stage, progress for long conversions, and the full log file.

On a terminal, rich draws a progress bar per long stage; elsewhere (CI, pipes) progress comes as
plain lines at 25% steps so logs stay short. Everything printed also goes to build.log.
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("llmbuild")


_last_log: list[Path] = []


def log_bug(e: BaseException) -> str:
    """Write an unexpected exception's traceback to the current build log (or a temp file)."""
    import tempfile
    import traceback

    text = "".join(traceback.format_exception(e))
    path = _last_log[-1] if _last_log else Path(tempfile.mkstemp(prefix="llmbuild-bug-", suffix=".log")[1])
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
    return str(path)


def bug_message(e: BaseException) -> str:
    """The one line every console script prints for a bug (exit 1): the exception's type and first line, and
    the log its traceback went to (log_bug)."""
    first = str(e).splitlines()[0] if str(e) else ""
    return f"internal error ({type(e).__name__}: {first}); please report it with {log_bug(e)}"


class UI:
    def __init__(self, console=None) -> None:
        from rich.console import Console

        self.console = console or Console(stderr=True, highlight=False)
        self.tty = self.console.is_terminal
        self._file_handler: logging.Handler | None = None
        log.setLevel(logging.INFO)
        log.propagate = False

    def attach_log(self, path: Path) -> None:
        h = logging.FileHandler(path, encoding="utf-8")
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(h)
        self._file_handler = h
        _last_log.append(path)

    def close(self) -> None:
        if self._file_handler:
            log.removeHandler(self._file_handler)
            self._file_handler.close()
            self._file_handler = None

    def say(self, msg: str, style: str | None = None) -> None:
        log.info(msg)
        if self.tty:
            # markup=False: llmbuild's lines are plain text; rich would read `[acquire]` or
            # `[verify:cpu-gguf]` as markup tags and drop the stage names from the terminal
            self.console.print(msg, style=style, markup=False)
        else:
            print(msg, file=sys.stderr, flush=True)

    def warn(self, msg: str) -> None:
        log.warning(msg)
        self.say(f"warning: {msg}", style="yellow")

    @contextmanager
    def progress(self, what: str):
        """Yield a progress(done, total, item) callback for a long stage."""
        if self.tty:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            with Progress(TextColumn("  {task.description}", markup=False), BarColumn(),
                          TextColumn("{task.completed}/{task.total}"),
                          TimeRemainingColumn(), console=self.console, transient=True) as p:
                task = p.add_task(what, total=None)

                def cb(done: int, total: int, item: str) -> None:
                    p.update(task, completed=done, total=total, description=f"{what}: {item}")

                yield cb
            return
        state = {"next": 0.25, "t": time.monotonic()}

        def cb(done: int, total: int, item: str) -> None:
            if total and done / total >= state["next"]:
                self.say(f"  {what}: {done}/{total} ({item})")
                while state["next"] <= done / total:
                    state["next"] += 0.25

        yield cb
