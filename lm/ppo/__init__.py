"""Token-level PPO and its critic-free relatives (GRPO, RLOO, REINFORCE++) for a causal LM, on the
ppo_bridge core, one module per part:

    config      `LMPPOConfig`, `ALGO_PRESETS` (each estimator's preset, from the core's table)
    trainer     `LMPPOTrainer`: rollout -> rewards -> advantages -> update, saving, resuming
    checkpoint  `read_checkpoint_state`: a checkpoint's ppo_state.json, validated
"""

from lm.ppo.checkpoint import read_checkpoint_state
from lm.ppo.config import ALGO_PRESETS, LMPPOConfig
from lm.ppo.trainer import LMPPOTrainer

__all__ = ["ALGO_PRESETS", "LMPPOConfig", "LMPPOTrainer", "read_checkpoint_state"]
