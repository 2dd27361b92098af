"""Trend plots: one PNG per metric from the history, the rate as a line and its interval as a band."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from llmbuild.monitor.metrics import METRICS


def trend_plots(history, stream: str, scorer: str, out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    written = []
    for metric in METRICS:
        series = history.series(stream, scorer, metric)
        points = {g: [p for p in pts if p[2] is not None] for g, pts in series.items()}
        points = {g: p for g, p in points.items() if p}
        if not points:
            continue
        fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
        for group, pts in sorted(points.items()):
            x = [datetime.fromtimestamp(p[1], tz=UTC) for p in pts]
            v, lo, hi = [p[2] for p in pts], [p[3] for p in pts], [p[4] for p in pts]
            (line,) = ax.plot(x, v, marker="o", ms=3, label=group)
            ax.fill_between(x, lo, hi, alpha=0.2, color=line.get_color(), linewidth=0)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{metric} ({scorer}): {METRICS[metric]}", fontsize=9)
        ax.set_ylabel("rate, 95% interval", fontsize=8)
        locator = mdates.AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        path = out_dir / f"trend-{metric}.png"
        tmp = out_dir / f".trend-{metric}.png.tmp"
        fig.savefig(tmp, format="png")
        plt.close(fig)
        tmp.replace(path)
        written.append(path.name)
    return written
