"""The built-in text envs' gymnasium ids, and `make`: any id to a text env, or a one-line error."""

from __future__ import annotations

import difflib
import importlib
from typing import Any

import gymnasium as gym

from lm.envs.core import can_wrap, is_text_env, not_text_message
from lm.envs.wrapper import TextWrapper

# id -> (entry point, default kwargs). No max_episode_steps: each env truncates itself (the inner
# CartPole-v1 keeps its own 500-step TimeLimit, which counts valid actions only).
BUILTINS: dict[str, tuple[str, dict[str, Any]]] = {
    "ppo_bridge/TextCartPole-v0": ("lm.envs.wrapper:wrap_text", {"inner_id": "CartPole-v1"}),
    "ppo_bridge/GuessNumber-v0": ("lm.envs.guess_number:GuessNumberEnv", {}),
    "ppo_bridge/Calculator-v0": ("lm.envs.calculator:CalculatorEnv", {}),
}
BUILTIN_IDS = tuple(BUILTINS)


def register() -> None:
    """Register the built-ins with gymnasium (once: importing lm.envs calls this)."""
    for env_id, (entry_point, kwargs) in BUILTINS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, kwargs=kwargs)


def _check_id(env_id: str) -> None:
    """Raise a one-line ValueError unless `env_id` is registered (after importing its module)."""
    module, _, name = env_id.rpartition(":")
    if module:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            raise ValueError(
                f"cannot import {err.name!r} for env id {env_id!r}: in 'module:EnvId', module "
                "must be importable (on sys.path) and register EnvId"
            ) from None
    try:
        gym.spec(name)
    except gym.error.Error:
        close = difflib.get_close_matches(name, list(gym.registry), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ValueError(
            f"unknown env id {env_id!r}: {hint}pass a built-in ({', '.join(BUILTIN_IDS)}), a "
            "gymnasium id (e.g. CartPole-v1) or 'module:EnvId' for an env your module registers"
        ) from None


def make(env_id: str, **kwargs: Any) -> gym.Env:
    """`gymnasium.make(env_id, **kwargs)` as a text env.

    Text envs come back as they are; numeric envs with flat Box observations and Discrete actions
    come back through TextWrapper (default options); anything else, and an unknown id, raises a
    one-line ValueError. `module:EnvId` ids import `module` first, as in gymnasium.
    """
    _check_id(env_id)
    env = gym.make(env_id, **kwargs)
    if is_text_env(env):
        return env
    if can_wrap(env):
        return TextWrapper(env)
    message = not_text_message(env)
    env.close()
    raise ValueError(message)
