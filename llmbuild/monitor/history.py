"""The history: every published rate as a point in SQLite, so trends survive restarts.

One row per (stream, window, group, scorer, metric); publishing the same window again replaces its
row, so re-running over the same logs does not double the trend. Each publish is one transaction:
a crash leaves the previous history intact. A file that is not a monitor history is refused before
any work (exit 2), never overwritten.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from llmbuild.errors import InvalidInput

SCHEMA = """
CREATE TABLE IF NOT EXISTS points (
  stream TEXT NOT NULL, window_start REAL NOT NULL, window_end REAL NOT NULL, grp TEXT NOT NULL,
  scorer TEXT NOT NULL, metric TEXT NOT NULL, value REAL, low REAL, high REAL, n INTEGER, n_eff REAL,
  run_id TEXT, created REAL,
  PRIMARY KEY (stream, window_start, grp, scorer, metric));
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY, stream TEXT, created REAL, report_dir TEXT, breaches INTEGER, info TEXT);
"""


class History:
    def __init__(self, path: Path):
        self.path = path
        if path.exists():
            try:
                with sqlite3.connect(path) as con:
                    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            except sqlite3.DatabaseError as e:
                raise InvalidInput(f"history: {path} is not an SQLite file ({e}); move it away or set history=") from None
            if tables and not {"points", "runs"} <= tables:
                raise InvalidInput(f"history: {path} is an SQLite file but not a monitor history (tables: "
                                   f"{', '.join(sorted(tables))}); set history= to another file")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)

    def _connect(self):
        con = sqlite3.connect(self.path, timeout=30)
        con.executescript(SCHEMA)
        return con

    def publish(self, stream: str, run_id: str, scorer: str, windows: list[tuple[float, float, dict]],
                report_dir: str, breaches: int, info: dict) -> None:
        """windows: (start, end, {group: summary}) with summaries from metrics.summarize."""
        now = time.time()
        rows = []
        for start, end, groups in windows:
            for grp, summary in groups.items():
                for metric, e in summary["rates"].items():
                    rows.append((stream, start, end, grp, scorer, metric, e.value, e.low, e.high, e.n, e.n_eff,
                                 run_id, now))
        with self._connect() as con:  # one transaction: all of it or none
            con.executemany("INSERT OR REPLACE INTO points VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
            con.execute("INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?)",
                        (run_id, stream, now, report_dir, breaches, json.dumps(info, default=str)))
        con.close()

    def series(self, stream: str, scorer: str, metric: str) -> dict[str, list[tuple]]:
        """{group: [(window_start, window_end, value, low, high, n), ...]} in time order."""
        if not self.path.exists():
            return {}
        con = self._connect()
        try:
            out: dict[str, list[tuple]] = {}
            for row in con.execute("SELECT grp, window_start, window_end, value, low, high, n FROM points "
                                   "WHERE stream=? AND scorer=? AND metric=? ORDER BY window_end",
                                   (stream, scorer, metric)):
                out.setdefault(row[0], []).append(row[1:])
            return out
        finally:
            con.close()

    def runs(self, stream: str | None = None) -> list[tuple]:
        con = self._connect()
        try:
            q = "SELECT run_id, stream, created, report_dir, breaches FROM runs"
            return list(con.execute(q + (" WHERE stream=?" if stream else "") + " ORDER BY created",
                                    (stream,) if stream else ()))
        finally:
            con.close()
