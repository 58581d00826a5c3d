"""The learning-curve PNG of a run, drawn from its progress.csv.

It draws on a bare `matplotlib.figure.Figure`, so importing it leaves the pyplot backend alone
(notebooks keep their inline plots).
"""

from __future__ import annotations

import csv
import os

from matplotlib.figure import Figure


def _column(rows: list[dict[str, str]], key: str) -> tuple[list[float], list[float]]:
    pairs = [(float(r["time/total_timesteps"]), float(r[key])) for r in rows if r.get(key)]
    return [x for x, _ in pairs], [y for _, y in pairs]


def plot_learning_curve(
    csv_path: str | os.PathLike[str], png_path: str | os.PathLike[str], title: str
) -> None:
    """Mean training-episode return (last 100 episodes) and periodic eval returns vs env steps."""
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.plot(*_column(rows, "rollout/ep_rew_mean"), label="training episodes (last 100, mean)")
    x, y = _column(rows, "eval/mean_reward")
    if x:
        ax.plot(x, y, "o-", label="deterministic evaluation (mean)")
    ax.set_title(title)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episode return (sum of rewards)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
