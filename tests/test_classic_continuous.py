"""The continuous-control presets (Box actions): each trains a few iterations with its own
network, normalisers and envs, resumes bit-identically, and is benchmarked against rl-zoo."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces
from test_classic_train import assert_same_rows, rows_without_time

from bench.classic import THRESHOLDS, ZOO, run_sb3
from classic.config import PRESETS, TrainConfig
from classic.envs import make_vec_env
from classic.evaluate import write_gif
from classic.train import train


def continuous(env_id: str) -> bool:
    envs = make_vec_env(env_id, 1)
    envs.close()
    return isinstance(envs.single_action_space, spaces.Box)


CONTINUOUS = [env_id for env_id in PRESETS if continuous(env_id)]


def tiny(env_id: str, total_timesteps: int) -> TrainConfig:
    """The preset with 16 steps per env per rollout (its n_envs, network and normalisers)."""
    cfg = TrainConfig.for_env(env_id)
    return TrainConfig.for_env(
        env_id,
        n_steps=16,
        minibatch_size=cfg.n_envs * 8,
        total_timesteps=total_timesteps * cfg.n_envs * 16,
        anneal_lr=False,
        eval_every=0,
        target_return=None,
        eval_episodes=0,
        progress=False,
        tensorboard=False,
    )


def test_the_continuous_presets_are_the_issue_s_four():
    assert sorted(CONTINUOUS) == [
        "HalfCheetah-v5",
        "Hopper-v5",
        "LunarLanderContinuous-v3",
        "Pendulum-v1",
    ]
    assert set(CONTINUOUS) <= set(ZOO)  # each is benchmarked against rl-zoo's tuned SB3
    assert THRESHOLDS["Pendulum-v1"] == -200 and THRESHOLDS["LunarLanderContinuous-v3"] == 200


@pytest.mark.parametrize("env_id", CONTINUOUS)
def test_preset_trains_and_resumes(env_id, tmp_path, capsys):
    """3 iterations; then 2 and a resumed third equal them (Box2D: the resumed run goes on with
    fresh episodes, so only the step counts and finite, changing losses are compared)."""
    whole = train(tiny(env_id, 3))
    train(tiny(env_id, 2), tmp_path)
    capsys.readouterr()
    resumed = train(tiny(env_id, 3), tmp_path, resume=True)
    assert resumed.total_steps == whole.total_steps == 3 * tiny(env_id, 1).total_timesteps
    assert len(resumed.history) == 1
    row = resumed.history[0]
    assert np.isfinite(row["train/loss"]) and row["train/approx_kl"] > 0
    if "fresh episodes" in capsys.readouterr().err:  # Box2D: no env state to restore
        assert env_id.startswith("LunarLander")
    else:
        assert_same_rows(rows_without_time(resumed.history), rows_without_time(whole.history[2:]))
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    action_shape = make_vec_env(env_id, 1).single_action_space.shape
    assert state["model"]["log_std"].shape == (1, *action_shape)  # one agent's state-free log-std


def test_sb3_side_with_vecnormalize_is_graded_on_frozen_stats():
    """rl-zoo's Hopper entry (normalize: true, ReLU 256-256): one 512-step rollout, then the
    held-out grading; the frozen observation statistics are those the training collected."""
    r = run_sb3("Hopper-v5", 0, budget=512, eval_every=0, final_episodes=0)
    assert r["total_steps"] == 512 and np.isfinite(r["held_out_eval"])


def test_mujoco_gif(tmp_path):
    """write_gif (classic.evaluate --gif) renders a MuJoCo env headless: MUJOCO_GL defaults to
    egl. Full-throttle actions make Hopper fall within a few dozen frames."""
    gif = tmp_path / "hopper.gif"
    frames = write_gif(lambda obs: np.ones((len(obs), 3)), "Hopper-v5", str(gif), seed=0)
    assert 1 < frames < 1000 and gif.stat().st_size > 0
