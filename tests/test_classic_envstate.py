"""Env state saved as plain data (classic.envstate): a restored env continues bit-identically."""

from __future__ import annotations

import io

import gymnasium as gym
import numpy as np
import pytest
import torch

from classic.envs import make_vec_env
from classic.envstate import env_family, load_env_state, save_env_state

EXACT = [
    "CartPole-v1",
    "Pendulum-v1",
    "Acrobot-v1",
    "MountainCar-v0",
    "MountainCarContinuous-v0",
    "HalfCheetah-v5",
    "Hopper-v5",
    "Walker2d-v5",
    "Ant-v5",  # reads data.xpos before its step: the saved xpos matters
    "Humanoid-v5",  # reads data.xipos likewise
    "Reacher-v5",
]


def safe_round_trip(obj):
    """What a checkpoint does: torch.save, then torch.load(weights_only=True)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def steps(envs, actions):
    out = []
    for a in actions:
        obs, reward, term, trunc, info = envs.step(a)
        ended = info["final_obs"][term | trunc] if "final_obs" in info else []
        final = [np.asarray(o) for o in ended]
        out.append((obs.copy(), reward.copy(), term.copy(), trunc.copy(), final))
    return out


@pytest.mark.parametrize("env_id", EXACT)
def test_restored_env_continues_bit_identically(env_id, tmp_path, monkeypatch):
    """Save mid-episode, restore into fresh envs reset with another seed, step both alike: the
    same observations, rewards, terminations, truncations (the TimeLimit counter) and the same
    next episodes after autoreset (np_random)."""
    monkeypatch.chdir(tmp_path)  # MuJoCo writes its warnings to ./MUJOCO_LOG.TXT
    after = 60
    before = gym.spec(env_id).max_episode_steps - after // 2  # the time limit falls in `after`
    envs = make_vec_env(env_id, 2)
    envs.reset(seed=1)
    envs.action_space.seed(2)
    actions = [envs.action_space.sample() for _ in range(before + after)]
    steps(envs, actions[:before])
    state = safe_round_trip(save_env_state(envs))
    assert state is not None
    restored = make_vec_env(env_id, 2)
    restored.reset(seed=99)
    load_env_state(restored, state)
    a, b = steps(envs, actions[before:]), steps(restored, actions[before:])
    assert any(r[2].any() or r[3].any() for r in a), "no episode ended"
    for ra, rb in zip(a, b, strict=True):
        for xa, xb in zip(ra[:4], rb[:4], strict=True):
            np.testing.assert_array_equal(xa, xb)
        for xa, xb in zip(ra[4], rb[4], strict=True):
            np.testing.assert_array_equal(xa, xb)


def test_unsupported_envs_have_no_state():
    envs = make_vec_env("LunarLander-v3", 1)  # Box2D: the world is a C++ object
    envs.reset(seed=0)
    assert save_env_state(envs) is None
    wrapped = gym.wrappers.ClipReward(gym.make("CartPole-v1"), -1, 1)  # not gym.make's stack
    assert env_family(wrapped) is None
    assert env_family(gym.make("CartPole-v1")) is not None


def test_a_state_that_does_not_fit_is_refused():
    envs = make_vec_env("CartPole-v1", 2)
    envs.reset(seed=0)
    state = save_env_state(envs)
    other = make_vec_env("Pendulum-v1", 2)
    other.reset(seed=0)
    with pytest.raises(ValueError, match="expected"):
        load_env_state(other, state)
    with pytest.raises(ValueError, match="2 envs"):
        load_env_state(make_vec_env("CartPole-v1", 3), state)
    state[0]["attrs"]["state"] = torch.zeros(7, dtype=torch.float64)
    with pytest.raises(ValueError, match="shape"):
        load_env_state(envs, state)
