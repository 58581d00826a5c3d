"""`ActorCritic`: separate actor and critic MLPs for Discrete (Categorical) and Box (diagonal
Gaussian) action spaces, with the orthogonal initialisation of the PPO implementation details
(Huang et al. 2022): gain sqrt(2) on hidden layers, 0.01 on the policy head, 1.0 on the value head.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Normal


def _layer(n_in: int, n_out: int, gain: float) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def _mlp(n_in: int, hidden: tuple[int, ...], n_out: int, out_gain: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [_layer(n_in, h, math.sqrt(2)), nn.Tanh()]
        n_in = h
    layers.append(_layer(n_in, n_out, out_gain))
    return nn.Sequential(*layers)


class ActorCritic(nn.Module):
    """pi(a|s) and V(s) as two tanh MLPs (default 64-64).

    Give `n_actions` for a Discrete space or `action_dim` for a Box space (exactly one).
    """

    def __init__(
        self,
        obs_dim: int,
        n_actions: int | None = None,
        *,
        action_dim: int | None = None,
        hidden_dim: int = 64,
        n_hidden: int = 2,
        log_std_init: float = 0.0,
    ) -> None:
        super().__init__()
        if (n_actions is None) == (action_dim is None):
            raise ValueError("ActorCritic needs exactly one of n_actions (Discrete) or action_dim")
        if obs_dim < 1 or hidden_dim < 1 or n_hidden < 1:
            raise ValueError(
                f"ActorCritic needs obs_dim, hidden_dim, n_hidden >= 1, got "
                f"{obs_dim}, {hidden_dim}, {n_hidden}"
            )
        hidden = (hidden_dim,) * n_hidden
        self.discrete = n_actions is not None
        n_out = n_actions if self.discrete else action_dim
        self.actor = _mlp(obs_dim, hidden, n_out, out_gain=0.01)
        self.critic = _mlp(obs_dim, hidden, 1, out_gain=1.0)
        self.log_std = None if self.discrete else nn.Parameter(torch.full((n_out,), log_std_init))

    def distribution(self, obs: Tensor) -> Distribution:
        # validate_args=False: the argument checks cost about a third of a small forward pass
        out = self.actor(obs)
        if self.discrete:
            return Categorical(logits=out, validate_args=False)
        return Normal(out, self.log_std.exp().expand_as(out), validate_args=False)

    def value(self, obs: Tensor) -> Tensor:
        return self.critic(obs).squeeze(-1)

    def _log_prob_entropy(self, dist: Distribution, actions: Tensor) -> tuple[Tensor, Tensor]:
        if self.discrete:
            return dist.log_prob(actions), dist.entropy()
        return dist.log_prob(actions).sum(-1), dist.entropy().sum(-1)

    @torch.no_grad()
    def act(self, obs: Tensor, deterministic: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """Sample (or take the mode of) pi(.|s): returns (action, log_prob, value)."""
        dist = self.distribution(obs)
        if deterministic:
            action = dist.probs.argmax(-1) if self.discrete else dist.mean
        else:
            action = dist.sample()
        log_prob, _ = self._log_prob_entropy(dist, action)
        return action, log_prob, self.value(obs)

    def evaluate(self, obs: Tensor, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(log pi(a|s), H(pi(.|s)), V(s)) with gradients, for the PPO update."""
        log_prob, entropy = self._log_prob_entropy(self.distribution(obs), actions)
        return log_prob, entropy, self.value(obs)
