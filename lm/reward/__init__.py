"""Reward models from preference pairs (trl's `RewardTrainer`, Bradley-Terry), one module per part:

config   `LMRewardConfig`
trainer  `train_reward_model` (also how the toy world trains its own)
command  `python -m lm.reward`: the run folder, held-out pair accuracy, reward_model/
"""

from lm.reward.config import LMRewardConfig
from lm.reward.trainer import train_reward_model

__all__ = ["LMRewardConfig", "train_reward_model"]
