"""Generalised advantage estimation (Schulman et al. 2016) over a time-major batch.

One formula serves every caller:

- classic: T steps x N envs, with episodes that end by termination or by truncation;
- lm: T response tokens x B prompts, with right padding after the last real token;
- multi-turn lm: T tokens x N columns of episodes, the agent's tokens between the environment's
  (`multi_turn_gae` builds V(s'_t) and a per-turn gamma_t from them, then calls `gae`).

    delta_t = r_t + gamma_t * (1 - terminated_t) * V(s'_t) - V(s_t)
    A_t     = delta_t + gamma_t * lambda * (1 - done_t) * A_{t+1},  done_t = term_t or trunc_t

`next_values[t]` is V(s'_t), the value of the observation that *followed* step t: the next step's
value inside an episode, the value of the true final observation at a truncation (we bootstrap from
it), anything at a termination (it is multiplied by zero). Positions where `mask` is 0 are padding:
they get zero advantage and return, and the recursion carries A_{t+1} across them unchanged, so a
padded sequence gives the same numbers as the same sequence with its padding removed. `gamma` is
one float or a tensor of per-step discounts gamma_t.
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


def multi_turn_gae(
    rewards: Tensor,
    values: Tensor,
    mask: Tensor,
    turn_end: Tensor,
    terminated: Tensor,
    truncated: Tensor | None = None,
    bootstrap: Tensor | None = None,
    gamma: float = 1.0,
    lam: float = 0.95,
    per_token_gamma: bool = False,
) -> tuple[Tensor, Tensor]:
    """`gae` over the agent tokens (mask 1) of multi-turn episodes, skipping environment tokens.

        V(s'_t) = V at the next agent token of the column, or bootstrap_t where the episode is
                  truncated or the column ends mid-episode (0 at a termination)
        gamma_t = gamma at a turn's last agent token (at every agent token if per_token_gamma),
                  1 inside a turn; lambda applies at every agent token

    All inputs are [T, N], time first (an LM's [B, L] transposed). A column holds episodes one
    after another: `terminated` / `truncated` mark the last agent token of an episode (a turn end)
    and nothing crosses them. `bootstrap` is V of the observation that followed, read only where it
    is needed (NaN elsewhere is fine). Rewards count on agent tokens only (put an environment's
    reward on the turn end before it); environment tokens get zero advantage and return.
    """
    named = {"rewards": rewards, "values": values, "mask": mask, "turn_end": turn_end}
    named |= {"terminated": terminated, "truncated": truncated, "bootstrap": bootstrap}
    shapes = {name: tuple(x.shape) for name, x in named.items() if x is not None}
    if rewards.dim() != 2 or len(set(shapes.values())) != 1:
        raise ValueError(f"multi_turn_gae: all inputs must share one shape [T, N], got {shapes}")
    agent, turn_end, term = mask.bool(), turn_end.bool(), terminated.bool()
    trunc = torch.zeros_like(term) if truncated is None else truncated.bool()
    if (turn_end & ~agent).any():
        raise ValueError("multi_turn_gae: turn_end is set on an environment token (mask 0)")
    if ((term | trunc) & ~turn_end).any():
        raise ValueError(
            "multi_turn_gae: terminated / truncated must be set on turn_end tokens (an episode "
            "ends with the last agent token of its last turn)"
        )

    # the column's next agent token strictly after t (T where there is none): a reverse cummin
    T = rewards.shape[0]
    steps = torch.arange(T, device=rewards.device)[:, None].expand_as(rewards)
    later = torch.cat([torch.where(agent, steps, T)[1:], torch.full_like(steps[:1], T)])
    next_step = later.flip(0).cummin(0).values.flip(0)
    next_values = values.gather(0, next_step.clamp(max=T - 1))

    needs_bootstrap = agent & ~term & (trunc | (next_step == T))
    given = torch.zeros_like(agent) if bootstrap is None else torch.isfinite(bootstrap)
    missing = needs_bootstrap & ~given
    if missing.any():
        raise ValueError(
            "multi_turn_gae: bootstrap (V of the observation that followed) is missing at "
            f"truncated tokens [t, n] {(missing & trunc).nonzero().tolist()[:5]} and at columns' "
            "last agent tokens that are neither terminated nor truncated (a rollout cut "
            f"mid-episode) {(missing & ~trunc).nonzero().tolist()[:5]}"
        )
    if bootstrap is not None:
        next_values = torch.where(needs_bootstrap, bootstrap.to(values.dtype), next_values)

    gammas = torch.full_like(rewards, gamma)
    if not per_token_gamma:
        gammas[~turn_end] = 1.0  # no discount between the tokens of one turn
    return gae(rewards, values, next_values, term, trunc, mask=agent, gamma=gammas, lam=lam)
