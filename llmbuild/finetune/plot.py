"""The loss plot: train loss per step and eval loss at its checkpoints, as a PNG in the build folder.

Drawn on matplotlib's Agg canvas directly (no pyplot), so no display is needed and the caller's
matplotlib backend and global state are left alone.
"""

from __future__ import annotations

from pathlib import Path


def loss_png(train_loss: list, eval_loss: list, path: Path, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if train_loss:
        ax.plot([s for s, _ in train_loss], [v for _, v in train_loss], lw=1.2, label="train loss")
    if eval_loss:
        ax.plot([s for s, _ in eval_loss], [v for _, v in eval_loss], "o-", lw=1.2, ms=4, label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss per trained token")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    # no Software/date metadata: the same losses give the same bytes
    fig.savefig(str(path), format="png", metadata={"Software": None})
