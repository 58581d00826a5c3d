"""What a PPO checkpoint folder holds besides the policy (see `LMPPOTrainer.save_checkpoint`):
`ppo_state.json`, validated field by field when read back, and the optimizer file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lm.checkpoint import read_state

PPO_STATE_FILE = "ppo_state.json"


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


# field -> what it must be; checked before anything is used
PPO_STATE: dict[str, tuple[str, Any]] = {
    "iteration": ("an integer >= 0", _count),
    "beta": ("a number >= 0", lambda v: isinstance(v, int | float) and v >= 0),
    "prompt_queue": ("a list of prompt indices", lambda v: isinstance(v, list)),
    "num_processes": ("an integer >= 1", lambda v: _count(v) and v >= 1),
    "scaler": ("an object or null", lambda v: v is None or isinstance(v, dict)),
    "config": ("an object", lambda v: isinstance(v, dict)),
    "run_info": ("an object", lambda v: isinstance(v, dict)),
}


def read_checkpoint_state(folder: Path, n_prompts: int | None = None) -> dict:
    """The `ppo_state.json` of a checkpoint, every field checked (prompt indices against
    `n_prompts` when given), or a one-line ValueError naming what is wrong."""
    state = read_state(folder, PPO_STATE_FILE, PPO_STATE)
    queue = state["prompt_queue"]
    if not all(_count(i) and (n_prompts is None or i < n_prompts) for i in queue):
        raise ValueError(
            f"checkpoint {folder}: {PPO_STATE_FILE} has a prompt_queue entry that is not a prompt "
            "index of this run: it is damaged; resume an intact checkpoint"
        )
    return state
