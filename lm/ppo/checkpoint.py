"""What a PPO checkpoint folder holds besides the policy (see `LMPPOTrainer.save_checkpoint`):
the optimizer file and `ppo_state.json`, read back with a one-line error."""

from __future__ import annotations

import json
from pathlib import Path

from lm.policy import PPO_STATE_FILE

OPTIMIZER_FILE = "optimizer.pt"


def read_checkpoint_state(folder: Path) -> dict:
    """The `ppo_state.json` of a checkpoint, or a one-line ValueError naming what is wrong."""
    path = folder / PPO_STATE_FILE
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"checkpoint {folder}: cannot read {path.name} ({err})") from None
    need = ("iteration", "beta", "prompt_queue", "num_processes", "scaler", "config", "run_info")
    missing = [k for k in need if not isinstance(state, dict) or k not in state]
    if missing:
        raise ValueError(f"checkpoint {folder}: {path.name} lacks {missing}: resume an intact one")
    return state
