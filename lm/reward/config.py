"""What a reward-model run is: `LMRewardConfig`."""

from __future__ import annotations

from dataclasses import dataclass

from ppo_bridge.config import need


@dataclass
class LMRewardConfig:
    """A Bradley-Terry reward model trained with trl's `RewardTrainer` on preference pairs:

        loss = -log sigmoid(r(x, y_c) - r(x, y_r) - margin) + c * mean((r_c + r_r)^2)

    with `margin` a pair's optional "margin" column (trl's) and c `center_rewards_coefficient`
    (None: off), r the logit of a fresh one-label head on the model. AdamW, the learning rate
    warmed up over `warmup_ratio` of the steps then decayed by a cosine (the toy world's recipe);
    `batch_size` pairs per step and process. `save_every` N keeps a resumable trainer checkpoint
    every N steps (the newest `save_total_limit`).
    """

    epochs: int = 2
    batch_size: int = 32
    lr: float = 1e-3
    warmup_ratio: float = 0.1
    max_length: int | None = None  # prompt + completion tokens; None: the model's context
    center_rewards_coefficient: float | None = None
    seed: int = 0
    save_every: int = 0
    save_total_limit: int | None = 2

    def __post_init__(self) -> None:
        need(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        need(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(0 <= self.warmup_ratio < 1, f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        need(
            self.max_length is None or self.max_length >= 2,
            f"max_length must be >= 2 or None (the model's context), got {self.max_length}",
        )
        c = self.center_rewards_coefficient
        need(c is None or c >= 0, f"center_rewards_coefficient must be >= 0 or None, got {c}")
        need(self.save_every >= 0, f"save_every must be >= 0, got {self.save_every}")
        need(
            self.save_total_limit is None or self.save_total_limit >= 1,
            f"save_total_limit must be >= 1 or None (keep all), got {self.save_total_limit}",
        )
