"""Token-level PPO and its critic-free relatives (GRPO, RLOO, REINFORCE++) for a causal LM, on the
ppo_bridge core, one module per part:

    config      `LMPPOConfig`, `ALGO_PRESETS` (each algorithm's departures from PPO), `cpu_only`
    trainer     `LMPPOTrainer`: rollout -> rewards -> advantages -> update, evaluation, saving
    checkpoint  `read_checkpoint_state`, `OPTIMIZER_FILE`: a checkpoint's files besides the policy
    logs        `MetricsLogger`: metrics.csv and TensorBoard
"""

from lm.ppo.checkpoint import OPTIMIZER_FILE, read_checkpoint_state
from lm.ppo.config import ALGO_PRESETS, Algo, LMPPOConfig, cpu_only
from lm.ppo.logs import MetricsLogger
from lm.ppo.trainer import LMPPOTrainer, Rollout

__all__ = [
    "ALGO_PRESETS",
    "OPTIMIZER_FILE",
    "Algo",
    "LMPPOConfig",
    "LMPPOTrainer",
    "MetricsLogger",
    "Rollout",
    "cpu_only",
    "read_checkpoint_state",
]
