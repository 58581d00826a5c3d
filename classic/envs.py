"""Gymnasium vector envs for the trainer and the evaluator, with the space checks.

We use SAME_STEP autoreset: when sub-env i ends at step t, `step` already returns the first
observation of its next episode, and the true final observation is `infos["final_obs"][i]`. So a
rollout never holds a fake transition across the boundary, and a truncated episode can be
bootstrapped from V(final obs).
"""

from __future__ import annotations

import difflib
import importlib
from functools import partial

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from classic.config import ClassicError


def check_env_id(env_id: str) -> None:
    """Raise ClassicError unless `env_id` is registered with gymnasium, suggesting close ids.

    gymnasium's `module:EnvId` form imports `module` first (which registers EnvId), so users
    train their own envs with `--env mypkg.envs:MyEnv-v0`."""
    module, _, name = env_id.rpartition(":")
    if module:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ClassicError(
                f"--env {env_id}: cannot import {module!r} ({err}): in 'module:EnvId' the module "
                "must be importable (on sys.path) and register EnvId"
            ) from None
    if name in gym.registry:
        return
    close = difflib.get_close_matches(name, list(gym.registry), n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ClassicError(
        f"unknown env id {env_id!r}: {hint}pass a registered gymnasium id "
        "(e.g. CartPole-v1, LunarLander-v3, Pendulum-v1), see gymnasium.pprint_registry()"
    )


def check_spaces(obs_space: gym.Space, action_space: gym.Space) -> None:
    """Raise ClassicError unless obs is a flat Box and actions are Discrete or a flat Box."""
    if not (isinstance(obs_space, spaces.Box) and len(obs_space.shape) == 1):
        raise ClassicError(
            f"unsupported observation space {obs_space}: classic handles flat Box observations "
            "only (wrap the env with gymnasium.wrappers.FlattenObservation)"
        )
    discrete = isinstance(action_space, spaces.Discrete) and action_space.start == 0
    flat_box = isinstance(action_space, spaces.Box) and len(action_space.shape) == 1
    if not (discrete or flat_box):
        raise ClassicError(
            f"unsupported action space {action_space}: classic handles Discrete (starting at 0) "
            "and flat Box action spaces only"
        )


def make_vec_env(
    env_id: str, n_envs: int, render_mode: str | None = None
) -> gym.vector.SyncVectorEnv:
    """`n_envs` copies of `env_id` stepped in this process, SAME_STEP autoreset, spaces checked.

    Sub-envs are built from `functools.partial`, so the vector env pickles when its envs do.
    """
    check_env_id(env_id)
    kwargs = {} if render_mode is None else {"render_mode": render_mode}
    make = partial(gym.make, env_id, **kwargs)
    try:
        envs = gym.vector.SyncVectorEnv(
            [make] * n_envs, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
        )
    except gym.error.Error as err:
        raise ClassicError(f"cannot make {env_id!r}: {err}") from err
    try:
        check_spaces(envs.single_observation_space, envs.single_action_space)
    except ClassicError:
        envs.close()
        raise
    return envs


def policy_dims(envs: gym.vector.VectorEnv) -> dict[str, int]:
    """ActorCritic's size arguments: obs_dim plus n_actions (Discrete) or action_dim (Box)."""
    obs_dim = int(envs.single_observation_space.shape[0])
    space = envs.single_action_space
    if isinstance(space, spaces.Discrete):
        return {"obs_dim": obs_dim, "n_actions": int(space.n)}
    return {"obs_dim": obs_dim, "action_dim": int(space.shape[0])}


def env_actions(space: gym.Space, actions: np.ndarray) -> np.ndarray:
    """What the env receives: Discrete actions as-is, Box actions clipped to the bounds.

    The unclipped Gaussian sample is what the rollout stores, so its log-prob stays exact.
    """
    if isinstance(space, spaces.Box):
        return np.clip(actions, space.low, space.high)
    return actions
