"""TextWrapper: a numeric gymnasium env (flat Box observations, Discrete actions) as a text env.

Observation: every number rendered at a fixed precision with an explicit sign, e.g. CartPole's
`x=+0.02 v=-0.31 a=+0.05 w=+0.44`. The sign and the fixed number of decimals give every value
the same shape (and, for |value| < 10, the same width), so a tokenizer splits each one into the
same token pattern and the LM can learn positions, not spellings.

Action: a word per discrete action (CartPole "left"/"right", otherwise the index "0", "1", ...,
even when the Discrete space starts elsewhere). Parsing reads the first word, case-insensitive,
surrounding punctuation stripped. Anything else is invalid: the inner env is NOT stepped, the
observation is repeated, the reward is `-invalid_penalty`, and after `max_invalid` consecutive
invalid actions the episode is truncated, so it cannot hang. The inner env's own TimeLimit (500
steps for CartPole-v1) counts valid actions only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from lm.envs.core import (
    OBS_MAX_CHARS,
    action_space,
    can_wrap,
    env_name,
    first_word,
    is_text_env,
    not_text_message,
    observation_space,
)

# Short names per env (keyed by gymnasium's EnvSpec.name, so every version shares them).
OBS_NAMES: dict[str, tuple[str, ...]] = {
    "CartPole": ("x", "v", "a", "w"),  # cart position, cart velocity, pole angle, angular velocity
}
ACTION_WORDS: dict[str, tuple[str, ...]] = {"CartPole": ("left", "right")}
TEMPLATE = "{name}={value:+.{precision}f}"


class TextWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Text observations and word actions over a numeric env; see the module docstring.

    `invalid_penalty` defaults to 1.0 (reward -1): an invalid action must cost at least as much as
    the worst valid step of the built-in Discrete envs (CartPole pays +1 per step, MountainCar and
    Acrobot -1), or a policy could gain by stalling. `names` / `words` override the defaults;
    `template` formats one value (fields name, value, precision) and `sep` joins them.
    """

    def __init__(
        self,
        env: gym.Env,
        names: Sequence[str] | None = None,
        words: Sequence[str] | None = None,
        precision: int = 2,
        template: str = TEMPLATE,
        sep: str = " ",
        invalid_penalty: float = 1.0,
        max_invalid: int = 3,
    ) -> None:
        if is_text_env(env):
            raise ValueError(
                f"env {env_name(env)} is a text env already: use it without TextWrapper"
            )
        if not can_wrap(env):
            raise ValueError(not_text_message(env))
        gym.utils.RecordConstructorArgs.__init__(
            self,
            names=names,
            words=words,
            precision=precision,
            template=template,
            sep=sep,
            invalid_penalty=invalid_penalty,
            max_invalid=max_invalid,
        )
        gym.Wrapper.__init__(self, env)
        dim, n = env.observation_space.shape[0], env.action_space.n
        spec = env.unwrapped.spec  # not env.spec: that would cache a spec gymnasium.make replaces
        spec_name = spec.name if spec is not None else None
        self.names = tuple(names or OBS_NAMES.get(spec_name, [f"o{i}" for i in range(dim)]))
        self.words = tuple(
            w.lower() for w in (words or ACTION_WORDS.get(spec_name, [str(i) for i in range(n)]))
        )
        if len(self.names) != dim:
            raise ValueError(f"names has {len(self.names)} entries for {dim} observation values")
        if (
            len(self.words) != n
            or len(set(self.words)) != n
            or not all(w.isalnum() for w in self.words)
        ):
            raise ValueError(f"words must be {n} distinct alphanumeric words, not {self.words}")
        if max_invalid < 1:
            raise ValueError(f"max_invalid must be at least 1, not {max_invalid}")
        self.precision, self.template, self.sep = precision, template, sep
        self.invalid_penalty, self.max_invalid = float(invalid_penalty), max_invalid
        # 32 characters per value is room for "o12=+1234567.89 "; small envs get the default.
        self.observation_space = observation_space(max(OBS_MAX_CHARS, 32 * dim))
        self.action_space = action_space()
        start = int(env.action_space.start)
        self._actions = {w: start + i for i, w in enumerate(self.words)}
        self._obs, self._invalid_streak = "", 0

    def format_obs(self, obs: np.ndarray) -> str:
        """The text of a numeric observation (-0.00 is written +0.00, so the sign is meaningful)."""
        values = (round(float(v), self.precision) + 0.0 for v in np.asarray(obs).ravel())
        return self.sep.join(
            self.template.format(name=name, value=value, precision=self.precision)
            for name, value in zip(self.names, values, strict=True)
        )

    def parse_action(self, action: str) -> int | None:
        """The inner env's action for `action`, or None when it names none."""
        return self._actions.get(first_word(action))

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._obs, self._invalid_streak = self.format_obs(obs), 0
        return self._obs, dict(info)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        inner = self.parse_action(action)
        if inner is None:
            self._invalid_streak += 1
            truncated = self._invalid_streak >= self.max_invalid
            return self._obs, -self.invalid_penalty, False, truncated, {"invalid_action": True}
        obs, reward, terminated, truncated, info = self.env.step(inner)
        self._obs, self._invalid_streak = self.format_obs(obs), 0
        return self._obs, float(reward), terminated, truncated, {**info, "invalid_action": False}


def wrap_text(inner_id: str, render_mode: str | None = None, **kwargs: Any) -> TextWrapper:
    """`gymnasium.make(inner_id)` through TextWrapper(**kwargs): the entry point of built-ins."""
    return TextWrapper(gym.make(inner_id, render_mode=render_mode), **kwargs)
