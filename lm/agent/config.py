"""`AgentConfig`: an LM acting over many turns in a text env, as `LMPPOConfig` with an env."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym

from lm.envs import make
from lm.ppo import LMPPOConfig
from ppo_bridge.config import need

Context = Literal["markov", "history"]
SEED_SPACE = 2**31  # training and evaluation env seeds are in [0, 2^31); SFT transcripts above


@dataclass
class AgentConfig(LMPPOConfig):
    """PPO, GRPO, RLOO or REINFORCE++ (`algo`) on episodes of a gymnasium text env.

    A sample is a turn, (context ids, action ids): the context is what the policy reads, the
    action what it samples, ended by EOS or by the `stop` string (or cut at `max_new_tokens`).

        markov   context = prefix + observation + suffix (the latest observation only)
        history  the transcript so far, obs, action, obs, ... (the tokenizer's chat template when
                 it has one and use_chat_template: env = user, agent = assistant)

    An iteration plays `n_envs` episodes to their end (termination; truncation by the env, by
    `max_turns` or by a context that no longer fits the model, which bootstrap). grpo / rloo play
    n_envs / num_generations env seeds num_generations times each (a group). `minibatch_size`
    counts episodes: a minibatch holds all the turns of its episodes (`batch_size` is n_envs).

    `gamma` discounts between turns (between tokens too with `per_token_gamma`), `gae_lambda`
    applies at every action token. beta, kl_target and kl_horizon count per episode (nats of KL
    summed over its action tokens; episodes). `missing_eos_penalty` is subtracted from the reward
    of a turn cut at max_new_tokens before its stop string or EOS. `reward_scale` brings an env's
    returns to the scale the lm defaults are tuned for (scores ~1: value clipping at clip_vf, beta);
    env/return is logged unscaled.

    Seeds: evaluation plays seeds eval_seed .. eval_seed + eval_episodes - 1; training seeds are
    drawn from [0, 2^31) by a generator seeded with `seed`, redrawn when they fall in that block,
    so training never plays an evaluation episode.
    """

    env_id: str = "ppo_bridge/GuessNumber-v0"
    env_kwargs: str = "{}"  # a JSON object for gymnasium.make, e.g. '{"turn_penalty": 0.05}'
    n_envs: int = 16  # episodes per iteration (seeds x num_generations for grpo / rloo)
    context: Context = "history"
    use_chat_template: bool = True  # history / markov rendered with the tokenizer's template
    prefix: str = ""  # before each observation
    suffix: str = "\n"  # after each observation: the cue to act
    stop: str | None = "\n"  # a turn also ends where its text first contains this
    max_turns: int = 500  # turns per episode before truncation
    reward_scale: float = 1.0  # the env's rewards are multiplied by this in training
    per_token_gamma: bool = False  # discount every action token, not only turn ends
    eval_episodes: int = 64
    eval_seed: int = 1_000_000

    gamma: float = 0.99
    max_new_tokens: int = 8  # per turn
    minibatch_size: int = 8  # episodes
    batch_size: int = 16  # = n_envs (set from it)
    beta: float = 0.05
    kl_target: float | None = None  # fixed beta by default
    missing_eos_penalty: float | None = None

    def __post_init__(self) -> None:
        from lm.agent.credit import AGENT_CREDIT

        need(
            self.algo in AGENT_CREDIT,
            f"lm.agent has no multi-turn {self.algo!r}: pass one of {', '.join(AGENT_CREDIT)}",
        )
        need(self.n_envs >= 1, f"n_envs must be >= 1, got {self.n_envs}")
        need(
            self.n_envs % self.num_generations == 0,
            f"n_envs ({self.n_envs}) must hold whole groups: make it a multiple of "
            f"num_generations ({self.num_generations})",
        )
        need(
            self.n_envs % self.minibatch_size == 0,
            f"n_envs ({self.n_envs}) must be a multiple of minibatch_size ({self.minibatch_size} "
            "episodes)",
        )
        self.batch_size = self.n_envs
        super().__post_init__()
        need(
            self.context in ("markov", "history"),
            f"context must be 'markov' or 'history', got {self.context!r}",
        )
        need(self.stop is None or self.stop != "", "stop must be a non-empty string or None")
        try:
            kwargs = json.loads(self.env_kwargs)
        except ValueError as err:
            raise ValueError(f"env_kwargs is not JSON ({err}): pass an object") from None
        need(isinstance(kwargs, dict), f"env_kwargs must be a JSON object, got {self.env_kwargs}")
        need(self.max_turns >= 1, f"max_turns must be >= 1, got {self.max_turns}")
        need(self.reward_scale > 0, f"reward_scale must be > 0, got {self.reward_scale}")
        need(self.eval_episodes >= 1, f"eval_episodes must be >= 1, got {self.eval_episodes}")
        need(
            self.eval_seed >= 0 and self.eval_seed + self.eval_episodes <= SEED_SPACE,
            f"eval_seed must be in [0, 2^31 - eval_episodes], got {self.eval_seed}",
        )

    def make_env(self) -> gym.Env:
        """The text env `env_id` with `env_kwargs` (`lm.envs.make`: a one-line error if unknown
        or not a text env)."""
        return make(self.env_id, **json.loads(self.env_kwargs))

    def eval_seeds(self) -> list[int]:
        """The held-out env seeds: a block that the training seed stream skips."""
        return list(range(self.eval_seed, self.eval_seed + self.eval_episodes))


# Each built-in env's departures from the defaults (flags override them): a Calculator action
# holds a tag and an expression; a CartPole observation is a state, so markov is its natural view
# (a 500-turn history would overflow any small model's context), and its +1 per step makes
# returns of ~30-100, which value clipping at 0.2 lets V approach only 0.2 per iteration.
ENV_PRESETS: dict[str, dict[str, Any]] = {
    "ppo_bridge/Calculator-v0": dict(max_new_tokens=24),
    "ppo_bridge/TextCartPole-v0": dict(context="markov", reward_scale=0.01),
}
