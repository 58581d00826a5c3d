"""What `python -m lm.agent` shows: the before/after table, transcripts, and curves.png."""

from __future__ import annotations

from pathlib import Path

ROWS = (
    ("return", "return"),
    ("success", "success"),
    ("turns", "turns"),
    ("invalid actions (share)", "invalid_actions"),
    ("truncated (share)", "truncated"),
    ("KL to reference (nats/ep)", "kl"),
)
PANELS = (
    ("env/return", "Episode return"),
    ("env/success", "Success"),
    ("env/turns", "Turns per episode"),
    ("objective/kl", "KL to the reference (nats per episode)"),
)


def report(
    before: dict[str, float],
    after: dict[str, float],
    transcripts_before: list[str],
    transcripts_after: list[str],
) -> None:
    """Print the held-out metrics before and after training and the same seeds' transcripts."""
    print(f"{'held-out episodes':28}{'before':>10}{'after':>10}")
    for label, key in ROWS:
        print(f"{label:28}{before[key]:>10.3f}{after[key]:>10.3f}")
    for i, (old, new) in enumerate(zip(transcripts_before, transcripts_after, strict=True)):
        print(f"\n--- held-out episode {i}, before ---\n{old}\n--- after ---\n{new}")


def plot(history: list[dict[str, float]], path: Path, title: str) -> None:
    """Return, success, turns and KL per iteration, as a PNG."""
    from matplotlib.figure import Figure  # a bare Figure: the pyplot backend is left alone

    fig = Figure(figsize=(5 * len(PANELS), 4))
    axes = fig.subplots(1, len(PANELS), squeeze=False)[0]
    iterations = [m["iteration"] for m in history]
    for ax, (key, label) in zip(axes, PANELS, strict=True):
        ax.plot(iterations, [m[key] for m in history])
        ax.set(title=label, xlabel="iteration")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
