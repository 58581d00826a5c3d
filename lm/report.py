"""What a run shows a person: the before/after table with a few samples, and its curves as a PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

Panel = tuple[str, str, Sequence[str]]  # (title, y label, metric names)

GRADES = [
    ("gold score (0-1)", "gold"),
    ("reward-model score", "score"),
    ("KL to reference (nats)", "kl"),
    ("EOS fraction", "eos_fraction"),
]


def report(
    before: dict[str, float],
    after: dict[str, float],
    prompts: list[str],
    responses_before: list[str],
    responses_after: list[str],
    show: int,
) -> None:
    """Print the before/after table and a few prompts with both responses."""
    print(f"{'':26}{'before':>10}{'after':>10}")
    for label, key in GRADES:
        if key in before:
            print(f"{label:26}{before[key]:>10.3f}{after[key]:>10.3f}")
    samples = zip(prompts, responses_before, responses_after, strict=True)
    for prompt, old, new in list(samples)[:show]:
        print(f"\nprompt: {prompt!r}\n  before: {old!r}\n  after:  {new!r}")


def plot_curves(
    history: list[dict[str, float]],
    panels: Sequence[Panel],
    path: Path,
    title: str,
    xlabel: str = "iteration",
) -> None:
    """One panel per (title, y label, metrics) whose metrics were logged, against `iteration`."""
    from matplotlib.figure import Figure  # a bare Figure: the pyplot backend is left alone

    panels = [p for p in panels if history and all(k in history[0] for k in p[2])]
    fig = Figure(figsize=(4 * max(len(panels), 1) + 1, 4))
    axes = fig.subplots(1, max(len(panels), 1), squeeze=False)[0]
    steps = [m["iteration"] for m in history]
    for ax, (panel_title, ylabel, keys) in zip(axes, panels, strict=False):
        for key in keys:
            ax.plot(steps, [m[key] for m in history], label=key)
        ax.set(title=panel_title, xlabel=xlabel, ylabel=ylabel)
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
