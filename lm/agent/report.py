"""What `python -m lm.agent` shows: the before/after table, transcripts, and curves.png."""

from __future__ import annotations

ROWS = (
    ("return", "return"),
    ("success", "success"),
    ("turns", "turns"),
    ("invalid actions (share)", "invalid_actions"),
    ("truncated (share)", "truncated"),
    ("KL to reference (nats/ep)", "kl"),
)
PANELS = [
    ("Episode return", "mean return per episode", ["env/return"]),
    ("Success", "share of episodes", ["env/success"]),
    ("Turns per episode", "turns", ["env/turns"]),
    ("KL to the reference", "nats per episode", ["objective/kl"]),
]  # for lm.report.plot_curves


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
