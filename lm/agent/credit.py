"""Credit assignment over turns, from the core's pieces, on [E, K, R] tensors (episode, turn,
action token; a turn's tokens right-padded, an episode's turns after one another).

Rewards (`turn_rewards`): the project's `per_token_rewards` on each turn, r_t = -beta * KL_t on
every action token plus the turn's score on its last one: the env's reward for that turn (minus a
penalty for a cut action) and, on the episode's last turn, the episode's score from reward
functions. Advantages:

    ppo           `multi_turn_gae` over each episode's action tokens in time order (gamma between
                  turns, 1 within unless per_token_gamma; bootstrapped from V of the observation
                  that followed a truncation), scattered back to the turns' tokens
    reinforce_pp  the same with V = 0 and lambda = 1: discounted returns, whitened globally
    grpo / rloo   `group_advantages` of the episode returns (sum of rewards) over the G episodes
                  of one env seed, on every action token of the episode
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lm.agent.rollout import Episode
from lm.rewards import per_token_rewards
from ppo_bridge import group_advantages, masked_whiten, multi_turn_gae
from ppo_bridge.critic_free import Baseline, Scale
from ppo_bridge.kl import KLEstimator


@dataclass
class EpisodeEnds:
    """Where turns and episodes end, [E, K, R] bool, for `multi_turn_gae`."""

    turn_end: Tensor  # each turn's last action token
    terminated: Tensor  # the last token of an episode that terminated
    truncated: Tensor  # the last token of an episode that was truncated (or overflowed)


def episode_ends(episodes: list[Episode], mask: Tensor) -> EpisodeEnds:
    """The turn and episode ends of `episodes`, whose action-token mask is `mask` [E, K, R]."""
    lengths = mask.sum(-1).long()  # [E, K]
    turn_end = torch.zeros(mask.shape, dtype=torch.bool, device=mask.device)
    real = lengths > 0
    e, k = real.nonzero().T
    turn_end[e, k, lengths[e, k] - 1] = True
    last = torch.zeros_like(turn_end)
    turns = torch.tensor([ep.turns for ep in episodes], device=mask.device) - 1
    rows = torch.arange(len(episodes), device=mask.device)
    last[rows, turns] = turn_end[rows, turns]
    term = torch.tensor([ep.terminated for ep in episodes], device=mask.device)[:, None, None]
    return EpisodeEnds(turn_end, last & term, last & ~term)


def turn_rewards(
    logprobs: Tensor,
    ref_logprobs: Tensor,
    mask: Tensor,
    turn_scores: Tensor,
    beta: float,
    kind: KLEstimator = "k1",
) -> tuple[Tensor, Tensor]:
    """(rewards, KL_t), [E, K, R]: `per_token_rewards` of every turn with its score [E, K]."""
    flat = [x.flatten(0, 1) for x in (logprobs, ref_logprobs, turn_scores, mask)]
    rewards, kl = per_token_rewards(*flat, beta, kind)
    return rewards.view_as(mask), kl.view_as(mask)


def gae_advantages(
    rewards: Tensor,
    values: Tensor,
    mask: Tensor,
    ends: EpisodeEnds,
    bootstrap: Tensor,
    gamma: float,
    lam: float,
    per_token_gamma: bool = False,
) -> tuple[Tensor, Tensor]:
    """(advantages, returns) [E, K, R] from `multi_turn_gae` over each episode's action tokens.

    An episode is a column of K * R positions; the padding after each turn's last token plays the
    part of environment tokens (mask 0: skipped). `bootstrap` [E] is V of the observation that
    followed a truncation (read where truncated only).
    """
    shape = mask.shape
    boot = torch.where(ends.truncated, bootstrap[:, None, None], torch.nan)
    columns = [x.flatten(1).T for x in (rewards, values, mask, ends.turn_end)]
    columns += [x.flatten(1).T for x in (ends.terminated, ends.truncated, boot)]
    adv, ret = multi_turn_gae(*columns, gamma=gamma, lam=lam, per_token_gamma=per_token_gamma)
    return adv.T.reshape(shape), ret.T.reshape(shape)


def reinforce_pp_advantages(
    rewards: Tensor,
    mask: Tensor,
    ends: EpisodeEnds,
    gamma: float,
    per_token_gamma: bool = False,
) -> Tensor:
    """G_t = the discounted sum of the later rewards of the episode (GAE with V = 0, lambda = 1),
    whitened over every action token of the batch."""
    zeros = torch.zeros_like(rewards)
    returns = gae_advantages(
        rewards, zeros, mask, ends, zeros[:, 0, 0], gamma, 1.0, per_token_gamma
    )[1]
    return masked_whiten(returns, mask)


def group_episode_advantages(
    rewards: Tensor, mask: Tensor, group_size: int, baseline: Baseline, scale: Scale
) -> Tensor:
    """The group advantage of each episode's return (consecutive groups of `group_size`
    episodes share an env seed) on every one of its action tokens."""
    adv = group_advantages(rewards.sum((1, 2)), group_size, baseline, scale)
    return adv[:, None, None] * mask


Credit = Callable[[Tensor, Tensor, Tensor, EpisodeEnds, Tensor, Any], tuple[Tensor, Tensor | None]]


def _ppo(rewards, values, mask, ends, bootstrap, cfg) -> tuple[Tensor, Tensor]:  # noqa: ANN001
    return gae_advantages(
        rewards, values, mask, ends, bootstrap, cfg.gamma, cfg.gae_lambda, cfg.per_token_gamma
    )


def _reinforce_pp(rewards, values, mask, ends, bootstrap, cfg) -> tuple[Tensor, None]:  # noqa: ANN001
    return reinforce_pp_advantages(rewards, mask, ends, cfg.gamma, cfg.per_token_gamma), None


def _group(baseline: Baseline) -> Credit:
    def credit(rewards, values, mask, ends, bootstrap, cfg) -> tuple[Tensor, None]:  # noqa: ANN001
        scale = "std" if cfg.scale_rewards else "none"
        return group_episode_advantages(rewards, mask, cfg.num_generations, baseline, scale), None

    return credit


# The multi-turn form of each estimator of the core's table (ppo_bridge.ESTIMATORS) that lm.agent
# has: (rewards, values, mask, ends, bootstrap, cfg) -> (advantages, returns or None), [E, K, R].
AGENT_CREDIT: dict[str, Credit] = {
    "ppo": _ppo,
    "grpo": _group("mean"),
    "rloo": _group("leave_one_out"),
    "reinforce_pp": _reinforce_pp,
}
