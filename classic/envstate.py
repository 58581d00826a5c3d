"""The state of a vector env's sub-envs as plain data, so that a resume continues exactly without
pickling (and so without ever unpickling) an env.

Supported env families, by the unwrapped env's class (an allowlist, not a walk over `__dict__`):

- gymnasium's classic control envs (`CLASSIC_CONTROL`): their dynamic attributes (`state`, and
  `steps_beyond_terminated` / `last_u` where they exist); everything else in them is constant.
- gymnasium's MuJoCo envs (`gymnasium.envs.mujoco`, v4 and v5): MuJoCo's integration state
  (`mj_getState(mjSTATE_INTEGRATION)`: time, qpos, qvel, act, solver warm start, controls,
  applied forces, ...), then `mj_forward`; plus the body positions `xpos` and `xipos`, which
  `mj_step` leaves one substep behind and Ant and Humanoid read before their next step.

For each: the env's `np_random` bit-generator state (a dict of ints and strings) and
`TimeLimit._elapsed_steps`; the wrapper stack must be `gym.make`'s (TimeLimit, OrderEnforcing,
PassiveEnvChecker), whose other fields only decide which checks run. Under SAME_STEP autoreset
the vector env itself holds nothing else between steps. Any other env (Box2D's LunarLander, whose
world is a C++ object; custom envs) has no saved state: `save_env_state` returns None.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.wrappers import OrderEnforcing, PassiveEnvChecker, TimeLimit

# unwrapped class (module.name) -> its attributes that change while it runs
CLASSIC_CONTROL: dict[str, tuple[str, ...]] = {
    "gymnasium.envs.classic_control.cartpole.CartPoleEnv": ("state", "steps_beyond_terminated"),
    "gymnasium.envs.classic_control.pendulum.PendulumEnv": ("state", "last_u"),
    "gymnasium.envs.classic_control.acrobot.AcrobotEnv": ("state",),
    "gymnasium.envs.classic_control.mountain_car.MountainCarEnv": ("state",),
    "gymnasium.envs.classic_control.continuous_mountain_car.Continuous_MountainCarEnv": ("state",),
}
MUJOCO = "mujoco"
WRAPPERS = (TimeLimit, OrderEnforcing, PassiveEnvChecker)


def env_family(env: gym.Env) -> str | None:
    """The allowlisted family of `env` (a CLASSIC_CONTROL key or MUJOCO), or None."""
    while isinstance(env, gym.Wrapper):
        if type(env) not in WRAPPERS:
            return None
        env = env.env
    cls = type(env)
    name = f"{cls.__module__}.{cls.__name__}"
    if name in CLASSIC_CONTROL:
        return name
    if cls.__module__.startswith("gymnasium.envs.mujoco.") and cls.__module__.endswith(
        ("_v4", "_v5")
    ):
        return MUJOCO
    return None


def _time_limit(env: gym.Env) -> TimeLimit | None:
    while isinstance(env, gym.Wrapper):
        if isinstance(env, TimeLimit):
            return env
        env = env.env
    return None


def _encode(value: Any) -> Any:
    """None and Python numbers as they are; numpy values (arrays, scalars, tuples of them) as a
    tensor of the same dtype (a 0-d tensor for a scalar)."""
    if value is None or type(value) in (bool, int, float):
        return value
    return torch.from_numpy(np.array(value))


def _decode(value: Any, like: Any) -> Any:
    """Inverse of `_encode`; a tensor must have the shape of `like`, the freshly reset value."""
    if not isinstance(value, torch.Tensor):
        if not (value is None or type(value) in (bool, int, float)):
            raise TypeError(f"env attribute of type {type(value).__name__}")
        return value
    array = value.numpy().copy()
    if like is not None and array.shape != np.shape(like):
        raise ValueError(f"env attribute of shape {array.shape}, expected {np.shape(like)}")
    return array[()] if array.ndim == 0 else array


def _mujoco_state(env: Any) -> dict[str, torch.Tensor]:
    import mujoco

    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    physics = np.empty(mujoco.mj_stateSize(env.model, spec))
    mujoco.mj_getState(env.model, env.data, physics, spec)
    return {
        "physics": torch.from_numpy(physics),
        "xpos": torch.from_numpy(env.data.xpos.copy()),
        "xipos": torch.from_numpy(env.data.xipos.copy()),
    }


def _set_mujoco_state(env: Any, state: dict[str, Any]) -> None:
    import mujoco

    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    physics = state["physics"].numpy()
    size = mujoco.mj_stateSize(env.model, spec)
    if physics.dtype != np.float64 or physics.shape != (size,):
        raise ValueError(f"MuJoCo state of shape {physics.shape}, expected ({size},)")
    mujoco.mj_setState(env.model, env.data, physics.copy(), spec)
    mujoco.mj_forward(env.model, env.data)
    mujoco.mj_rnePostConstraint(env.model, env.data)  # as the env's own step does
    env.data.xpos[:] = state["xpos"].numpy()  # shape-checked by numpy
    env.data.xipos[:] = state["xipos"].numpy()


def save_env_state(envs: gym.vector.SyncVectorEnv) -> list[dict[str, Any]] | None:
    """Each sub-env's state as tensors and plain types; None unless every sub-env is supported."""
    states = []
    for env in envs.envs:
        family = env_family(env)
        if family is None:
            return None
        inner, limit = env.unwrapped, _time_limit(env)
        state: dict[str, Any] = {
            "family": family,
            "np_random": inner.np_random.bit_generator.state,
            "elapsed_steps": None if limit is None else limit._elapsed_steps,
        }
        if family == MUJOCO:
            state.update(_mujoco_state(inner))
        else:
            state["attrs"] = {a: _encode(getattr(inner, a)) for a in CLASSIC_CONTROL[family]}
        states.append(state)
    return states


def load_env_state(envs: gym.vector.SyncVectorEnv, states: list[dict[str, Any]]) -> None:
    """Put `save_env_state`'s result back into `envs` (same env id and count, already reset).

    Raises ValueError, TypeError or KeyError on a state that does not fit these envs.
    """
    if not isinstance(states, list) or len(states) != len(envs.envs):
        raise ValueError(f"env state for {len(states)} envs, expected {len(envs.envs)}")
    for env, state in zip(envs.envs, states, strict=True):
        family = env_family(env)
        if family is None or state["family"] != family:
            raise ValueError(f"env state of {state['family']!r}, expected {family!r}")
        inner, limit = env.unwrapped, _time_limit(env)
        inner.np_random.bit_generator.state = state["np_random"]
        if limit is not None:
            elapsed = state["elapsed_steps"]
            if not isinstance(elapsed, int):
                raise TypeError(f"elapsed_steps of type {type(elapsed).__name__}")
            limit._elapsed_steps = elapsed
        if family == MUJOCO:
            _set_mujoco_state(inner, state)
            continue
        attrs = state["attrs"]
        if set(attrs) != set(CLASSIC_CONTROL[family]):
            raise ValueError(f"env attributes {sorted(attrs)}, expected {CLASSIC_CONTROL[family]}")
        for name, value in attrs.items():
            setattr(inner, name, _decode(value, getattr(inner, name)))
