"""`ActorCritic`: separate actor and critic MLPs for Discrete (Categorical) and Box (diagonal
Gaussian) action spaces, with the orthogonal initialisation of the PPO implementation details
(Huang et al. 2022): gain sqrt(2) on hidden layers, 0.01 on the policy head, 1.0 on the value head.

Box actions explore with a state-independent std (CleanRL) or, with `sde=True`, with generalized
state-dependent exploration (gSDE, Raffin et al. 2022, as SB3's `use_sde`): the noise is a linear
function of the actor's last hidden features z(s), a = mu(s) + z(s) E with E ~ N(0, sigma^2) a
[hidden, action] matrix drawn per env and kept for a few steps, so a = N(mu(s), z(s)^2 sigma^2).

One `ActorCritic` holds `n_agents` independent networks with their parameters stacked [K, ...]
(each layer one batched matmul), so K seeds train as one model: their inputs are [K, ..., obs]
and nothing mixes across agents. With K = 1 (the default) any leading shape goes, [obs] or
[B, obs], as with plain `nn.Linear` layers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Normal

Generators = Sequence[torch.Generator | None]
ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}


class AgentLinear(nn.Module):
    """K independent linear layers, y_k = x_k W_k + b_k, as one `baddbmm`.

    weight [K, n_in, n_out], bias [K, 1, n_out]; input [K, ..., n_in] ([..., n_in] when K = 1).
    """

    def __init__(self, n_in: int, n_out: int, n_agents: int = 1) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_agents, n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(n_agents, 1, n_out))

    def reset_(self, gain: float | None, generators: Generators) -> None:
        """Orthogonal weights with `gain` (as nn.init.orthogonal_ on nn.Linear's [n_out, n_in])
        and zero bias; gain None: nn.Linear's own init, weight and bias ~ U(+-1/sqrt(n_in))."""
        bound = 1 / math.sqrt(self.weight.shape[1])
        with torch.no_grad():
            for k, g in enumerate(generators):
                w = torch.empty(self.weight.shape[2], self.weight.shape[1])
                if gain is None:
                    self.weight[k] = w.uniform_(-bound, bound, generator=g).T
                    self.bias[k].uniform_(-bound, bound, generator=g)
                else:
                    self.weight[k] = nn.init.orthogonal_(w, gain, generator=g).T
                    self.bias[k].zero_()

    def forward(self, x: Tensor) -> Tensor:
        k, n_in, n_out = self.weight.shape
        x3 = x if x.dim() == 3 and x.shape[0] == k else x.reshape(k, -1, n_in)
        if n_out == 1:  # bmm's one-column kernel rounds differently for K > 1 than for K = 1:
            weight, bias = self.weight.expand(k, n_in, 2), self.bias.expand(k, 1, 2)  # 2 agree
            out = torch.baddbmm(bias, x3, weight)[..., :1]
        else:
            out = torch.baddbmm(self.bias, x3, self.weight)
        return out if x3 is x else out.reshape(*x.shape[:-1], n_out)


class ActorCritic(nn.Module):
    """pi(a|s) and V(s) as two MLPs (default tanh 64-64), for `n_agents` independent agents.

    `ortho_init=False` keeps nn.Linear's default init instead (SB3's `ortho_init=False`, which
    rl-zoo's MuJoCo entries use).

    Give `n_actions` for a Discrete space or `action_dim` for a Box space (exactly one).
    `generators` (one per agent) seed each agent's initialisation; None draws from torch's
    global RNG.
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
        sde: bool = False,
        activation: str = "tanh",
        ortho_init: bool = True,
        n_agents: int = 1,
        generators: Generators | None = None,
    ) -> None:
        super().__init__()
        if (n_actions is None) == (action_dim is None):
            raise ValueError("ActorCritic needs exactly one of n_actions (Discrete) or action_dim")
        if sde and n_actions is not None:
            raise ValueError("use_sde (gSDE) needs a Box action space; this env's is Discrete")
        if obs_dim < 1 or hidden_dim < 1 or n_hidden < 1 or n_agents < 1:
            raise ValueError(
                f"ActorCritic needs obs_dim, hidden_dim, n_hidden, n_agents >= 1, got "
                f"{obs_dim}, {hidden_dim}, {n_hidden}, {n_agents}"
            )
        generators = [None] * n_agents if generators is None else list(generators)
        if len(generators) != n_agents:
            raise ValueError(f"{len(generators)} generators for {n_agents} agents")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.n_agents, self.discrete, self.sde = n_agents, n_actions is not None, sde
        self.activation = ACTIVATIONS[activation]
        n_out = n_actions if self.discrete else action_dim
        sizes = [obs_dim, *(hidden_dim,) * n_hidden]
        self.actor = self._mlp(sizes, n_out)
        self.critic = self._mlp(sizes, 1)
        log_std_shape = (n_agents, hidden_dim, n_out) if sde else (n_agents, n_out)
        self.log_std = (
            None if self.discrete else nn.Parameter(torch.full(log_std_shape, float(log_std_init)))
        )
        self.exploration: Tensor | None = None  # gSDE's E, [K, n_envs, hidden, action]
        for net, out_gain in ((self.actor, 0.01), (self.critic, 1.0)):
            layers = [m for m in net if isinstance(m, AgentLinear)]
            for i, layer in enumerate(layers):  # agent k draws from generators[k] only
                gain = out_gain if i == len(layers) - 1 else math.sqrt(2)
                layer.reset_(gain if ortho_init else None, generators)

    def _mlp(self, sizes: list[int], n_out: int) -> nn.Sequential:
        layers: list[nn.Module] = []
        for n_in, h in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [AgentLinear(n_in, h, self.n_agents), self.activation()]
        layers.append(AgentLinear(sizes[-1], n_out, self.n_agents))
        return nn.Sequential(*layers)

    def _per_agent(self, t: Tensor, like: Tensor) -> Tensor:
        """A per-agent [K, *d] tensor shaped to broadcast against `like` [K, ..., *d]."""
        if self.n_agents == 1:
            return t[0]
        return t.view(self.n_agents, *([1] * (like.dim() - t.dim())), *t.shape[1:])

    def distribution(self, obs: Tensor) -> Distribution:
        return self._distribution(obs)[0]

    def _distribution(self, obs: Tensor) -> tuple[Distribution, Tensor | None]:
        """pi(.|s), and under gSDE the actor's last hidden features z(s) (detached, as SB3's
        default: the noise does not train the features)."""
        # validate_args=False: the argument checks cost about a third of a small forward pass
        if not self.sde:
            out = self.actor(obs)
            if self.discrete:
                return Categorical(logits=out, validate_args=False), None
            std = self._per_agent(self.log_std, out).exp().expand_as(out)
            return Normal(out, std, validate_args=False), None
        *body, head = self.actor
        latent = obs
        for layer in body:
            latent = layer(latent)
        mean, latent = head(latent), latent.detach()
        std = self._per_agent(self.log_std.exp(), latent[..., None])  # sigma [K, hidden, action]
        variance = (latent[..., None] ** 2 * std**2).sum(-2)
        return Normal(mean, (variance + 1e-6).sqrt(), validate_args=False), latent

    @torch.no_grad()
    def reset_noise(self, n_envs: int, generators: Generators | None = None) -> None:
        """Draw gSDE's exploration matrices E ~ N(0, sigma^2), one per env and agent (agent k's
        from generators[k]); `act` uses them until the next call."""
        k, hidden, n_out = self.log_std.shape
        z = self._noise(torch.Size((k, n_envs, hidden, n_out)), generators)
        self.exploration = z.to(self.log_std.device) * self.log_std.exp()[:, None]

    def value(self, obs: Tensor) -> Tensor:
        return self.critic(obs).squeeze(-1)

    def _log_prob_entropy(self, dist: Distribution, actions: Tensor) -> tuple[Tensor, Tensor]:
        if self.discrete:
            return dist.log_prob(actions), dist.entropy()
        return dist.log_prob(actions).sum(-1), dist.entropy().sum(-1)

    def _noise(self, shape: torch.Size, generators: Generators | None) -> Tensor:
        """Exponential(1) noise (Discrete) or N(0, 1) noise (Box) of `shape`, agent k's slice
        drawn from generators[k] (so an agent's actions never depend on the others)."""

        def draw(size: Sequence[int], g: torch.Generator | None) -> Tensor:
            x = torch.empty(size)
            return x.exponential_(generator=g) if self.discrete else x.normal_(generator=g)

        if generators is None:
            return draw(shape, None)
        return torch.stack([draw(shape[1:], g) for g in generators])

    @torch.no_grad()
    def act(
        self, obs: Tensor, deterministic: bool = False, generators: Generators | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Sample (or take the mode of) pi(.|s): returns (action, log_prob, value).

        Sampling: a ~ Categorical(p) as argmax_i p_i / E_i with E_i ~ Exp(1) (torch.multinomial's
        own method), a ~ N(mu, sigma) as mu + sigma * z; the noise comes from `generators`, one
        per agent (input [K, ..., obs]), or from torch's global RNG. Under gSDE the noise is
        z(s) E with the matrices of the last `reset_noise` (obs [K, n_envs, obs]).
        """
        dist, latent = self._distribution(obs)
        if deterministic:
            action = dist.probs.argmax(-1) if self.discrete else dist.mean
        elif self.sde:  # a = mu(s) + z(s) E, E of the env (and agent) that s came from
            if self.exploration is None:
                raise RuntimeError("gSDE: call reset_noise(n_envs) before sampling actions")
            exploration = self.exploration[0] if self.n_agents == 1 else self.exploration
            action = dist.mean + (latent[..., None] * exploration).sum(-2)
        elif self.discrete:
            noise = self._noise(dist.probs.shape, generators).to(obs.device)
            action = (dist.probs / noise).argmax(-1)
        else:
            noise = self._noise(dist.mean.shape, generators).to(obs.device)
            action = dist.mean + dist.stddev * noise
        log_prob, _ = self._log_prob_entropy(dist, action)
        return action, log_prob, self.value(obs)

    def evaluate(self, obs: Tensor, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(log pi(a|s), H(pi(.|s)), V(s)) with gradients, for the PPO update."""
        log_prob, entropy = self._log_prob_entropy(self.distribution(obs), actions)
        return log_prob, entropy, self.value(obs)

    def agent_state(self, k: int) -> dict[str, Tensor]:
        """Agent k's parameters as the state dict of a one-agent ActorCritic (copies)."""
        return {name: t[k : k + 1].clone() for name, t in self.state_dict().items()}
