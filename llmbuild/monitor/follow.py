"""`llmbuild-monitor logs=... --follow`: score a growing log on a sliding window and serve /metrics.

Every `interval` the new complete lines of each log are read (a rotated or truncated file is read again
from its start), only the new responses are scored, and the rates over the last `window` of wall-clock
time are published: Prometheus gauges on `metrics_listen` (/metrics) and in the textfile, a point per
update in the history (so the trend survives restarts), and the report folder, rewritten in place.
Counters count each response once. The process runs until SIGINT/SIGTERM, or `ticks` updates; it
exits 5 when the last update breached a budget, so a bounded run can gate a deploy.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from llmbuild.errors import InvalidInput
from llmbuild.monitor import metrics, sampling, thresholds
from llmbuild.monitor.config import duration, host_port
from llmbuild.monitor.pipeline import assemble, grouped, overall, prepare, publish, say
from llmbuild.monitor.prometheus import Exposition
from llmbuild.monitor.readers import BadRecord, make_reader, sniff
from llmbuild.monitor.report import ReportDir


class Tail:
    """The new complete lines of a file, across truncation and rotation."""

    def __init__(self, path: Path, fmt: str, defaults):
        self.path, self.offset, self.inode, self.partial, self.line_no = path, 0, None, b"", 0
        self.fmt = sniff(path) if fmt == "auto" else fmt
        self.reader = make_reader(self.fmt, path, defaults)
        self.stats = {"path": str(path), "format": self.fmt, "lines": 0, "records": 0, "skipped": 0, "ignored": 0}

    def poll(self) -> tuple[list, list]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return [], []  # rotated away; the new file appears on a later poll
        if self.inode is not None and (st.st_ino != self.inode or st.st_size < self.offset):
            self.offset, self.partial, self.line_no = 0, b"", 0
        self.inode = st.st_ino
        if st.st_size == self.offset:
            return [], []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()  # an unfinished last line waits for its end
        got, skipped = [], []
        before = getattr(self.reader, "ignored", 0)
        for raw in lines:
            self.line_no += 1
            line = raw.decode("utf-8", errors="replace")
            if not line.strip():
                continue
            self.stats["lines"] += 1
            where = f"{self.path.name}:{self.line_no}"
            try:
                ex = self.reader.feed(line, where)
            except BadRecord as e:
                skipped.append((where, str(e)))
                continue
            skipped.extend(self.reader.take_skips(where))
            got.extend(ex)
        self.stats["records"] += len(got)
        self.stats["skipped"] += len(skipped)
        self.stats["ignored"] += getattr(self.reader, "ignored", 0) - before
        return got, skipped


def run_follow(cfg) -> int:
    run = prepare(cfg)
    window_s, interval_s = run.window_s, duration(cfg.interval, "interval")
    tails = [Tail(Path(p).expanduser(), cfg.format, run.defaults) for p in run.paths]
    expo = Exposition()
    server = None
    if cfg.metrics_listen:
        host, port = host_port(cfg.metrics_listen, "metrics_listen")
        try:
            server = expo.serve(host, port)
        except OSError as e:
            raise InvalidInput(f"metrics_listen: cannot listen on {host}:{port} ({e.strerror or e})") from None
        say(f"follow: /metrics on http://{host}:{port}/metrics, window {cfg.window}, every {cfg.interval}")
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    report = ReportDir(run.root, run.rid, live=True)
    live: list = []  # analyses of the responses still inside the window
    skipped_all: list = []
    n_read, ticks, last = 0, 0, None
    try:
        while True:
            now = time.time()
            fresh = []
            for t in tails:
                got, skipped = t.poll()
                n_read += len(got)
                fresh.extend(e for e in got if e.time > now - window_s)
                skipped_all.extend(skipped)
                expo.count_skipped(t.fmt, len(skipped))
            new = metrics.analyze(sampling.sample(fresh, cfg.sample_rate), run.scorer, run.extractor,
                                  cfg.extraction.max_citations)
            expo.count(new, run.scorer.name)
            live = sorted([a for a in live + new if a.ex.time > now - window_s], key=lambda a: a.ex.time)
            windows = [(now - window_s, now, live)]
            data, _groups, results = assemble(run, "follow", [t.stats for t in tails], skipped_all, n_read, live, windows)
            expo.set_rates(grouped(live, cfg.thresholds.confidence), run.scorer.name, results, window_s)
            publish(run, data, windows, report, expo, run_id=f"{run.rid}#{ticks + 1}")
            last = data
            ticks += 1
            h = overall(data).get("rates", {}).get("hallucination_rate", {})
            say(f"follow: {len(live)} responses in the window ({len(new)} new), hallucination_rate "
                f"{'no data' if h.get('value') is None else format(h['value'], '.3f')}, "
                f"{len(data['breaches'])} breaches")
            if (cfg.ticks and ticks >= cfg.ticks) or stop.wait(interval_s):
                break
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        if server is not None:
            server[0].shutdown()
        run.scorer.close()
    if last and last["breaches"]:
        raise thresholds.ThresholdBreached("; ".join(r["reason"] for r in last["breaches"][:3]) +
                                           f"; see {report.final / 'report.md'}")
    return 0
