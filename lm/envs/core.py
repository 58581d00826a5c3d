"""The text-env contract: Text spaces, the checks that enforce them, and a scripted episode runner.

A text env is a plain `gymnasium.Env` whose observation and action spaces are `spaces.Text`:
`reset(seed=...) -> (obs: str, info)` and `step(action: str) -> (obs, reward, terminated,
truncated, info)`. An LM emits any string, so the env, not the caller, judges an action: a bad one
gets a penalty and/or an "invalid" observation, and `info["invalid_action"]` says so (it is in
every step's info). Where the task can be won, the last step's info holds `info["success"]`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
from gymnasium import spaces

# Printable ASCII (space to ~) plus newline: what an LM's text decodes to, minus control bytes.
CHARSET = "".join(chr(c) for c in range(32, 127)) + "\n"
OBS_MAX_CHARS = 1024
ACTION_MAX_CHARS = 512
_EDGE_PUNCTUATION = ".,;:!?\"'`()[]"  # not + or -: they may sign a number

Policy = Callable[[str, dict[str, Any]], str]  # (observation, info) -> action text


def observation_space(max_length: int = OBS_MAX_CHARS) -> spaces.Text:
    """The observation space of the text envs here: 1 to `max_length` characters of CHARSET."""
    return spaces.Text(max_length, charset=CHARSET)


def action_space() -> spaces.Text:
    """The action space of every text env here: 0 to 512 characters (an LM may say nothing)."""
    return spaces.Text(ACTION_MAX_CHARS, min_length=0, charset=CHARSET)


def first_word(action: str) -> str:
    """The action's first whitespace-separated word, lower-cased, surrounding punctuation stripped.

    "  Left.\\n" and "left because the pole leans" both read as "left".
    """
    words = action.split()
    return words[0].strip(_EDGE_PUNCTUATION).lower() if words else ""


def env_name(env: gym.Env) -> str:
    """The env's registered id, or its class name when it was built without gymnasium.make."""
    return env.spec.id if env.spec is not None else type(env.unwrapped).__name__


def is_text_env(env: gym.Env) -> bool:
    """Whether both of the env's spaces are `gymnasium.spaces.Text`."""
    return isinstance(env.observation_space, spaces.Text) and isinstance(
        env.action_space, spaces.Text
    )


def can_wrap(env: gym.Env) -> bool:
    """Whether TextWrapper can render the env: flat Box observations, Discrete actions."""
    obs = env.observation_space
    return (
        isinstance(obs, spaces.Box)
        and len(obs.shape) == 1
        and isinstance(env.action_space, spaces.Discrete)
    )


def not_text_message(env: gym.Env) -> str:
    """The one line that says which of the env's spaces is not Text and what to do about it."""
    kind, space = (
        ("observation", env.observation_space)
        if not isinstance(env.observation_space, spaces.Text)
        else ("action", env.action_space)
    )
    fix = (
        "wrap it with lm.envs.TextWrapper (or build it with lm.envs.make) or pass a text env"
        if can_wrap(env)
        else "pass a text env (lm.envs.TextWrapper renders only flat Box observations with "
        "Discrete actions)"
    )
    return f"env {env_name(env)} has a {type(space).__name__} {kind} space, not Text: {fix}"


def check_text_env(env: gym.Env) -> None:
    """Raise a one-line ValueError, saying what to change, unless both spaces are Text."""
    if not is_text_env(env):
        raise ValueError(not_text_message(env))


@dataclass
class Episode:
    """One played episode: observations[t] is what the policy saw before actions[t]."""

    observations: list[str] = field(default_factory=list)  # T + 1: the last one follows the end
    actions: list[str] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    terminated: bool = False
    truncated: bool = False
    info: dict[str, Any] = field(default_factory=dict)  # the last step's info

    @property
    def success(self) -> bool:
        return bool(self.info.get("success", False))

    @property
    def turns(self) -> int:
        return len(self.actions)


def play_episode(env: gym.Env, policy: Policy, seed: int | None = None) -> Episode:
    """Run `policy` on `env` from `reset(seed=seed)` to the end: scripted play, SFT transcripts."""
    check_text_env(env)
    obs, info = env.reset(seed=seed)
    episode = Episode(observations=[obs])
    while not (episode.terminated or episode.truncated):
        action = policy(obs, info)
        obs, reward, episode.terminated, episode.truncated, info = env.step(action)
        episode.actions.append(action)
        episode.observations.append(obs)
        episode.rewards.append(float(reward))
    episode.info = info
    return episode
