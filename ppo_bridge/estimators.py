"""Advantage estimators by name: the one table that `--algo`'s choices, presets and dispatch read.

Each estimator maps a batch of B right-padded sequences to per-token advantages (and, for a
critic, returns). Inputs are [B, R]: `rewards` (the per-token rewards: -beta * KL on each token,
the score added on the last real one), `mask` (1 on real tokens), `values` (the critic's V(s_t),
None without a critic); consecutive rows form groups of `group_size` samples of one prompt.

    ppo           A = GAE(gamma, lambda) on V; returns = A + V for the value loss
    grpo          A_i = (R_i - mean_g R) / std_g R on every token, R_i = sum_t r_t
    rloo          A_i = R_i - mean_{j != i} R_j on every token (Ahmadian et al. 2024)
    reinforce_pp  G_t = sum_k gamma^k r_{t+k} (GAE with V = 0, lambda = 1), whitened over the
                  real tokens of the global batch (Hu 2025)
    reinforce_pp_baseline  G_t - mean_g G_0 (the group's mean return as the baseline), then
                  whitened over the real tokens of the global batch (OpenRLHF's
                  "reinforce_baseline"; theirs centres the score before the KL shaping)

Adding an estimator = a function here with the `Advantages` signature, one `ESTIMATORS` entry and
its test; `lm.train --algo NAME` then offers it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from ppo_bridge.critic_free import group_advantages
from ppo_bridge.gae import gae
from ppo_bridge.losses import masked_whiten


@dataclass(frozen=True)
class EstimatorArgs:
    """What an estimator may use besides the tensors."""

    gamma: float = 1.0
    lam: float = 0.95
    group_size: int = 1
    scale_rewards: bool = True  # group estimators: divide by the group's std
    reduce_sum: Callable[[Tensor], Tensor] | None = None  # sum over processes (global whitening)


class Advantages(Protocol):
    def __call__(
        self, rewards: Tensor, mask: Tensor, values: Tensor | None, args: EstimatorArgs
    ) -> tuple[Tensor, Tensor | None]: ...


def sequence_gae(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """The core's `gae` over right-padded sequences: [B, R] in, [B, R] (advantages, returns) out.

    The episode terminates at the last real token (the score lands there: no bootstrap); the next
    state's value inside a sequence is the next token's value.
    """
    real = mask.to(rewards.dtype)
    next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)
    terminated = torch.zeros_like(rewards)
    last = real.sum(1).long() - 1
    terminated[torch.arange(rewards.shape[0], device=rewards.device), last] = 1.0
    adv, ret = gae(
        rewards.T, values.T, next_values.T, terminated.T, mask=real.T, gamma=gamma, lam=lam
    )
    return adv.T.contiguous(), ret.T.contiguous()


def gae_advantages(
    rewards: Tensor, mask: Tensor, values: Tensor | None, args: EstimatorArgs
) -> tuple[Tensor, Tensor]:
    """PPO: GAE on the critic's values."""
    if values is None:
        raise ValueError("the ppo estimator needs the critic's values")
    return sequence_gae(rewards, values, mask, args.gamma, args.lam)


def _group(baseline: str) -> Advantages:
    def advantages(
        rewards: Tensor, mask: Tensor, values: Tensor | None, args: EstimatorArgs
    ) -> tuple[Tensor, None]:
        scale = "std" if args.scale_rewards else "none"
        adv = group_advantages(rewards.sum(1), args.group_size, baseline, scale)
        return adv[:, None] * mask, None

    advantages.__doc__ = f"One group advantage ({baseline} baseline) per sequence, on its tokens."
    return advantages


def reinforce_pp_returns(rewards: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """G_t = sum_k gamma^k r_{t+k} within each sequence: `sequence_gae` with V = 0, lambda = 1."""
    return sequence_gae(rewards, torch.zeros_like(rewards), mask, gamma, 1.0)[1]


def reinforce_pp_advantages(
    rewards: Tensor, mask: Tensor, values: Tensor | None, args: EstimatorArgs
) -> tuple[Tensor, None]:
    """REINFORCE++: the discounted returns, whitened over the real tokens of the global batch."""
    returns = reinforce_pp_returns(rewards, mask, args.gamma)
    return masked_whiten(returns, mask, reduce_sum=args.reduce_sum), None


def reinforce_pp_baseline_advantages(
    rewards: Tensor, mask: Tensor, values: Tensor | None, args: EstimatorArgs
) -> tuple[Tensor, None]:
    """REINFORCE++-baseline: the returns less their group's mean return, globally whitened."""
    returns = reinforce_pp_returns(rewards, mask, args.gamma)
    baseline = returns[:, 0].reshape(-1, args.group_size).mean(1, keepdim=True)
    centred = (returns - baseline.repeat_interleave(args.group_size, 0)) * mask
    return masked_whiten(centred, mask, reduce_sum=args.reduce_sum), None


@dataclass(frozen=True)
class Estimator:
    """One row of the table: the function, whether it trains a critic, the smallest group it can
    use, and the config fields it departs from PPO's defaults with (its preset)."""

    advantages: Advantages
    critic: bool = False
    min_group_size: int = 1
    preset: Mapping[str, Any] = field(default_factory=dict)


ESTIMATORS: dict[str, Estimator] = {
    "ppo": Estimator(gae_advantages, critic=True),
    "grpo": Estimator(
        _group("mean"),
        min_group_size=2,
        preset=dict(
            num_generations=4, normalize_advantages="off", loss_aggregation="seq_mean_token_mean"
        ),
    ),
    "rloo": Estimator(
        _group("leave_one_out"),
        min_group_size=2,
        preset=dict(num_generations=4, scale_rewards=False, normalize_advantages="off"),
    ),
    "reinforce_pp": Estimator(reinforce_pp_advantages, preset=dict(normalize_advantages="off")),
    "reinforce_pp_baseline": Estimator(
        reinforce_pp_baseline_advantages,
        min_group_size=2,
        preset=dict(num_generations=4, normalize_advantages="off"),
    ),
}


def get_estimator(name: str) -> Estimator:
    """The table's entry for `name`; a one-line ValueError listing the names for any other."""
    if name not in ESTIMATORS:
        raise ValueError(f"unknown algo {name!r}: pass one of {', '.join(ESTIMATORS)}")
    return ESTIMATORS[name]
