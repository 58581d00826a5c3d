"""`PPOConfig`: the hyperparameters of the PPO update, validated at construction."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Literal, get_args

from ppo_bridge.losses import LossAggregation

AdvantageNorm = Literal["minibatch", "batch", "off"]


def need(ok: bool, message: str) -> None:
    """A config's check: ValueError(message) unless `ok` (the message says what to change)."""
    if not ok:
        raise ValueError(message)


@dataclass
class PPOConfig:
    """Hyperparameters shared by every adapter. Defaults follow CleanRL / SB3 for classic control.

    loss = policy_loss + vf_coef * value_loss - ent_coef * entropy + kl_coef * KL_k3(pi || ref)

    Without `returns` in the batch the update is critic-free (no value loss); `kl_coef` > 0 puts
    the KL to a reference in the loss (GRPO) and needs `ref_logprobs` in the batch.
    """

    lr: float = 3e-4
    anneal_lr: bool = False  # linear decay to 0 over training (progress 0 -> 1)
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    clip_eps_high: float | None = None  # upper clip 1 + eps_high (DAPO's clip-higher); None = eps
    clip_vf: float | None = None  # value clipping range; None = unclipped value loss
    vf_coef: float = 0.5
    ent_coef: float = 0.0
    n_epochs: int = 10
    minibatch_size: int = 64  # samples per gradient step (env steps, or sequences for lm)
    grad_accum_steps: int = 1  # micro-batches per gradient step
    max_grad_norm: float | None = 0.5
    target_kl: float | None = None  # stop the epochs once approx_kl > 1.5 * target_kl (SB3)
    normalize_advantages: AdvantageNorm = "minibatch"
    loss_aggregation: LossAggregation = "token_mean"  # ppo_bridge.losses.loss_weights
    loss_norm_constant: float | None = None  # C of seq_mean_token_sum (None = padded length)
    kl_coef: float = 0.0  # weight of the k3 KL to the reference in the loss (GRPO's beta)
    # the ratio of each token ("token", PPO) or its sequence's length-normalised one (GSPO)
    importance_sampling_level: Literal["token", "sequence"] = "token"

    def __post_init__(self) -> None:
        for f in fields(self):  # every float field of this config and its subclasses
            value = getattr(self, f.name)
            need(
                not isinstance(value, float) or math.isfinite(value),
                f"{f.name} must be a finite number, got {value}",
            )
        need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(0.0 <= self.gamma <= 1.0, f"gamma must be in [0, 1], got {self.gamma}")
        need(0.0 <= self.gae_lambda <= 1.0, f"gae_lambda must be in [0, 1], got {self.gae_lambda}")
        need(self.clip_eps > 0, f"clip_eps must be > 0, got {self.clip_eps}")
        high = self.clip_eps_high
        need(
            high is None or high >= self.clip_eps,
            f"clip_eps_high must be >= clip_eps ({self.clip_eps}) or None, got {high}",
        )
        need(
            self.importance_sampling_level in ("token", "sequence"),
            f"importance_sampling_level must be token or sequence, got "
            f"{self.importance_sampling_level!r}",
        )
        need(
            self.clip_vf is None or self.clip_vf > 0,
            f"clip_vf must be > 0 or None (no value clipping), got {self.clip_vf}",
        )
        need(self.vf_coef >= 0, f"vf_coef must be >= 0, got {self.vf_coef}")
        need(self.ent_coef >= 0, f"ent_coef must be >= 0, got {self.ent_coef}")
        need(self.n_epochs >= 1, f"n_epochs must be >= 1, got {self.n_epochs}")
        need(self.minibatch_size >= 1, f"minibatch_size must be >= 1, got {self.minibatch_size}")
        need(
            self.grad_accum_steps >= 1 and self.minibatch_size % self.grad_accum_steps == 0,
            f"grad_accum_steps ({self.grad_accum_steps}) must be >= 1 and divide "
            f"minibatch_size ({self.minibatch_size})",
        )
        need(
            self.max_grad_norm is None or self.max_grad_norm > 0,
            f"max_grad_norm must be > 0 or None, got {self.max_grad_norm}",
        )
        need(
            self.target_kl is None or self.target_kl > 0,
            f"target_kl must be > 0 or None, got {self.target_kl}",
        )
        need(
            self.normalize_advantages in ("minibatch", "batch", "off"),
            "normalize_advantages must be 'minibatch', 'batch' or 'off', "
            f"got {self.normalize_advantages!r}",
        )
        need(
            self.loss_aggregation in get_args(LossAggregation),
            f"loss_aggregation must be one of {get_args(LossAggregation)}, "
            f"got {self.loss_aggregation!r}",
        )
        need(
            self.loss_norm_constant is None or self.loss_norm_constant > 0,
            f"loss_norm_constant must be > 0 or None, got {self.loss_norm_constant}",
        )
        need(self.kl_coef >= 0, f"kl_coef must be >= 0, got {self.kl_coef}")

    def check_batch_size(self, batch_size: int) -> None:
        """Raise a clear error unless `batch_size` samples split into whole minibatches."""
        if batch_size < self.minibatch_size or batch_size % self.minibatch_size != 0:
            raise ValueError(
                f"the batch of {batch_size} samples does not split into minibatches of "
                f"{self.minibatch_size}: choose a minibatch_size that divides {batch_size}"
            )
