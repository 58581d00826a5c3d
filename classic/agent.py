"""The seed notebook's teaching API on the shared core: one env, one transition at a time.

    agent = PPOAgent(obs_dim=4, n_actions=2, seed=0)
    action, log_prob, value = agent.select_action(state)
    agent.store_transition(state, action, reward, done, log_prob, value)
    metrics = agent.update()          # after a rollout: GAE + PPO epochs via ppo_bridge

`classic.train` is the fast vectorised trainer; this class is for reading and for notebooks.
"""

from __future__ import annotations

import numpy as np
import torch

from classic.networks import ActorCritic
from ppo_bridge import Evaluation, PPOConfig, gae, ppo_update


def get_device() -> torch.device:
    """CUDA if present, else Apple MPS, else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class PPOAgent:
    """PPO for a Discrete action space, with the seed notebook's constructor and methods.

    `done` in `store_transition` ends the episode without bootstrapping (the seed's semantics: a
    time-limit truncation is treated like a termination). `update(next_state)` bootstraps the
    unfinished last episode from V(next_state); without it the last stored value stands in.

    `threads` sets torch's intra-op threads for the whole process, as `classic.train` does: 1 is
    fastest for these small MLPs fed one transition at a time (measured on our 2-core CPU,
    LunarLander, 2,048 select_action steps + 4 updates: 2.1-2.3 s with 1 thread, 6.3-9.5 s with
    torch's default of 2 beside other jobs); None leaves torch's setting alone.
    """

    def __init__(
        self,
        obs_dim: int,
        n_actions: int,
        device: torch.device | str | None = None,
        hidden_dim: int = 64,
        lr: float = 3e-4,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        clip_eps: float = 0.2,
        n_epochs: int = 4,
        batch_size: int = 64,
        seed: int | None = None,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        threads: int | None = 1,
    ) -> None:
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads must be >= 1 or None, got {threads}")
            torch.set_num_threads(threads)
        self.cfg = PPOConfig(
            lr=lr,
            gamma=gamma,
            gae_lambda=gae_lambda,
            clip_eps=clip_eps,
            n_epochs=n_epochs,
            minibatch_size=batch_size,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
        )
        if seed is not None:
            torch.manual_seed(seed)
        self.generator = torch.Generator().manual_seed(0 if seed is None else seed)
        self.sample_generator = torch.Generator().manual_seed(1 if seed is None else seed + 1)
        self.device = torch.device(device) if device is not None else get_device()
        self.net = ActorCritic(obs_dim, n_actions, hidden_dim=hidden_dim).to(self.device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr, eps=1e-5)
        self.buffer: list[tuple] = []

    def select_action(self, state: np.ndarray, training: bool = True) -> tuple[int, float, float]:
        """Sample a ~ pi(.|s) (argmax when not training); returns (action, log_prob, value)."""
        obs = torch.as_tensor(np.asarray(state), dtype=torch.float32, device=self.device)
        with torch.inference_mode():
            dist = self.net.distribution(obs)
            if training:
                probs = dist.probs.cpu()
                action = torch.multinomial(probs, 1, generator=self.sample_generator).squeeze(-1)
            else:
                action = dist.probs.argmax(-1).cpu()
            log_prob = dist.log_prob(action.to(self.device))
            value = self.net.value(obs)
        return int(action), float(log_prob), float(value)

    def store_transition(
        self,
        state: np.ndarray,
        action: int,
        reward: float,
        done: bool,
        log_prob: float,
        value: float,
    ) -> None:
        self.buffer.append(
            (np.asarray(state, dtype=np.float32), action, reward, done, log_prob, value)
        )

    def update(self, next_state: np.ndarray | None = None) -> dict[str, float]:
        """GAE over the stored rollout, then the PPO epochs; clears the buffer."""
        if not self.buffer:
            raise RuntimeError(
                "PPOAgent.update: no transitions stored; call store_transition first"
            )
        states, actions, rewards, dones, log_probs, values = zip(*self.buffer, strict=True)
        self.buffer.clear()
        dev = self.device
        values_t = torch.tensor(values, dtype=torch.float32, device=dev)
        if next_state is not None:
            obs = torch.as_tensor(np.asarray(next_state), dtype=torch.float32, device=dev)
            with torch.inference_mode():
                last_value = self.net.value(obs).reshape(1)
        else:
            last_value = values_t[-1:]
        next_values = torch.cat([values_t[1:], last_value])
        done_t = torch.tensor(dones, dtype=torch.float32, device=dev)
        rewards_t = torch.tensor(rewards, dtype=torch.float32, device=dev)
        advantages, returns = gae(
            rewards_t, values_t, next_values, done_t, gamma=self.cfg.gamma, lam=self.cfg.gae_lambda
        )
        batch = {
            "obs": torch.as_tensor(np.stack(states), device=dev),
            "actions": torch.tensor(actions, device=dev),
            "logprobs": torch.tensor(log_probs, dtype=torch.float32, device=dev),
            "values": values_t,
            "advantages": advantages,
            "returns": returns,
        }

        def evaluate(mb: dict[str, torch.Tensor]) -> Evaluation:
            return Evaluation(*self.net.evaluate(mb["obs"], mb["actions"]))

        return ppo_update(batch, evaluate, self.optimizer, self.cfg, generator=self.generator)
