"""Generalised advantage estimation (Schulman et al. 2016) over a time-major batch.

One formula serves both worlds:

- classic: T steps x N envs, with episodes that end by termination or by truncation;
- lm: T response tokens x B prompts, with right padding after the last real token.

    delta_t = r_t + gamma_t * (1 - terminated_t) * V(s'_t) - V(s_t)
    A_t     = delta_t + gamma_t * lambda * (1 - done_t) * A_{t+1},  done_t = term_t or trunc_t

`gamma` is one float, or a tensor of per-step discounts gamma_t (`multi_turn_gae` discounts once
per turn of a multi-turn LM episode, not once per token).

`next_values[t]` is V(s'_t), the value of the observation that *followed* step t: the next step's
value inside an episode, the value of the true final observation at a truncation (we bootstrap from
it), anything at a termination (it is multiplied by zero). Positions where `mask` is 0 are padding:
they get zero advantage and return, and the recursion carries A_{t+1} across them unchanged, so a
padded sequence gives the same numbers as the same sequence with its padding removed.
"""

from __future__ import annotations

import torch
from torch import Tensor


def gae(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    truncated: Tensor | None = None,
    mask: Tensor | None = None,
    gamma: float | Tensor = 0.99,
    lam: float = 0.95,
) -> tuple[Tensor, Tensor]:
    """Return `(advantages, returns)`, both shaped like `rewards` (time first), returns = A + V.

    All inputs share the shape `[T, ...]`; `terminated`, `truncated` and `mask` may be bool or 0/1;
    `gamma` is a float or a per-step tensor of that shape.
    """
    if not (rewards.shape == values.shape == next_values.shape == terminated.shape):
        raise ValueError(
            "gae: rewards, values, next_values and terminated must share one shape, got "
            f"{tuple(rewards.shape)}, {tuple(values.shape)}, {tuple(next_values.shape)}, "
            f"{tuple(terminated.shape)}"
        )
    term = terminated.to(rewards.dtype)
    done = term if truncated is None else torch.clamp(term + truncated.to(rewards.dtype), max=1.0)
    real = torch.ones_like(rewards) if mask is None else mask.to(rewards.dtype)
    if isinstance(gamma, Tensor):
        if gamma.shape != rewards.shape:
            raise ValueError(
                f"gae: a tensor gamma must be shaped like rewards {tuple(rewards.shape)}, "
                f"got {tuple(gamma.shape)}"
            )
        gamma = gamma.to(rewards.dtype)

    deltas = rewards + gamma * (1.0 - term) * next_values - values
    decay = gamma * lam * (1.0 - done)  # the share of A_{t+1} that flows back into A_t
    advantages = torch.zeros_like(rewards)
    carry = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        a_t = deltas[t] + decay[t] * carry
        carry = real[t] * a_t + (1.0 - real[t]) * carry
        advantages[t] = real[t] * a_t
    returns = (advantages + values) * real
    return advantages, returns
