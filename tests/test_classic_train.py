"""The classic trainer, checkpoints, evaluation and CLIs (CartPole runs of a few seconds)."""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from classic import evaluate as evaluate_cli
from classic import train as train_cli
from classic.checkpoint import load_checkpoint, restore_policy
from classic.config import TrainConfig
from classic.evaluate import evaluate_policy, torch_policy
from classic.train import Trainer, confirms, train

QUIET = dict(progress=False, tensorboard=False)


class CountEnv(gym.Env):
    """obs = [steps taken]; a constant reward; terminates after `terminate_at` steps if given."""

    observation_space = spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, terminate_at=None, obs_space=None, action_space=None, reward=1.0):
        self.terminate_at, self.reward = terminate_at, reward
        self.observation_space = obs_space or CountEnv.observation_space
        self.action_space = action_space or CountEnv.action_space
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        terminated = self.terminate_at is not None and self.t >= self.terminate_at
        return np.array([self.t], np.float32), self.reward, terminated, False, {}


gym.register("test/CountTrunc-v0", entry_point=CountEnv, max_episode_steps=3)
gym.register("test/CountTerm-v0", entry_point=CountEnv, kwargs={"terminate_at": 3})
gym.register(
    "test/ImageObs-v0",
    entry_point=CountEnv,
    kwargs={"obs_space": spaces.Box(0, 255, (8, 8, 3), np.uint8)},
)
gym.register("test/NanReward-v0", entry_point=CountEnv, kwargs={"reward": float("nan")})
gym.register(
    "test/MultiDiscrete-v0",
    entry_point=CountEnv,
    kwargs={"action_space": spaces.MultiDiscrete([2, 3])},
)


def cartpole(**overrides) -> TrainConfig:
    """The CartPole preset without periodic evaluation, quiet, for short runs."""
    base = dict(eval_every=0, target_return=None, eval_episodes=10, **QUIET)
    return TrainConfig.for_env("CartPole-v1", **{**base, **overrides})


def rows_without_time(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in r.items() if k.startswith(("train/", "rollout/"))} for r in history]


def assert_same_rows(a: list[dict[str, float]], b: list[dict[str, float]]) -> None:
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        assert ra.keys() == rb.keys()
        for k in ra:
            assert ra[k] == rb[k] or (math.isnan(ra[k]) and math.isnan(rb[k])), k


# --- learning, determinism --------------------------------------------------------------------


def test_short_cartpole_run_learns():
    result = train(cartpole(total_timesteps=30_000, eval_episodes=20))
    assert result.total_steps >= 30_000
    assert result.eval_mean >= 150, result.summary()


def test_same_seed_gives_identical_metrics():
    a = train(cartpole(total_timesteps=4_096, seed=3)).history
    b = train(cartpole(total_timesteps=4_096, seed=3)).history
    c = train(cartpole(total_timesteps=4_096, seed=4)).history
    assert_same_rows(rows_without_time(a), rows_without_time(b))
    assert rows_without_time(a) != rows_without_time(c)


# --- the stop rule -----------------------------------------------------------------------------


def returns_with(mean: float, std: float, n: int) -> np.ndarray:
    """n returns with exactly this mean and (n - 1) standard deviation."""
    x = np.random.default_rng(0).normal(size=n)
    return mean + std * (x - x.mean()) / x.std(ddof=1)


@pytest.mark.parametrize(("confirm_mean", "stops"), [(476.0, False), (478.0, True)])
def test_a_lucky_crossing_does_not_stop_training(monkeypatch, confirm_mean, stops):
    """Every 20-episode screen crosses 475. A 100-episode confirmation with mean 476, std 10
    also reaches 475 (the old rule stopped there) but its lower bound 476 - 2 * 10 / 10 = 474
    does not: training runs its whole budget. With mean 478 (bound 476) it stops at once."""
    evaluations = []

    def stub(self, run, n_episodes, seed):
        evaluations.append(n_episodes)
        return returns_with(490.0 if n_episodes == 20 else confirm_mean, 10.0, n_episodes)

    monkeypatch.setattr(Trainer, "evaluate", stub)
    cfg = cartpole(n_envs=2, n_steps=64, minibatch_size=64, total_timesteps=1_024)
    result = train(replace(cfg, eval_every=128, target_return=475.0, eval_episodes=100))
    if stops:
        assert result.threshold_steps == result.total_steps == 128
        assert evaluations == [20, 100]
    else:
        assert result.threshold_steps is None and result.total_steps == 1_024
        assert evaluations == [20, 100] * 8 + [100]  # screened and refused at every check
    assert confirms(returns_with(478.0, 10.0, 100), 475.0, 2.0)
    assert not confirms(returns_with(476.0, 10.0, 100), 475.0, 2.0)
    assert confirms(returns_with(476.0, 10.0, 100), 475.0, 0.0)  # z = 0: the old rule


# --- rollout correctness under autoreset -------------------------------------------------------


@pytest.mark.parametrize("env_id", ["test/CountTrunc-v0", "test/CountTerm-v0"])
def test_truncation_bootstrapped_termination_not_no_fake_transition(env_id):
    """With lambda = 0, returns_t = r_t + gamma * (1 - term_t) * next_values_t exactly."""
    gamma = 0.9
    cfg = TrainConfig(
        env_id=env_id, n_envs=2, n_steps=8, minibatch_size=16, gamma=gamma, gae_lambda=0.0, **QUIET
    )
    trainer = Trainer(cfg)
    batch = trainer.collect()
    obs = batch["obs"].reshape(8, 2)
    returns = batch["returns"].reshape(8, 2)
    with torch.no_grad():
        value = {k: trainer.model.value(torch.tensor([[float(k)]])).item() for k in range(4)}
    # Episodes are 0 -> 1 -> 2 -> (3 = final obs, then reset to 0): the final observation is
    # never stored as the start of a transition.
    assert obs.flatten().tolist() == [float(t % 3) for t in range(8) for _ in range(2)]
    for t in range(8):
        for i in range(2):
            k = int(obs[t, i])
            if k < 2:  # inside the episode: V of the next observation, not of a reset one
                expected = 1.0 + gamma * value[k + 1]
            elif env_id == "test/CountTrunc-v0":  # truncated: bootstrap from V(final obs)
                expected = 1.0 + gamma * value[3]
            else:  # terminated: no bootstrap
                expected = 1.0
            assert returns[t, i].item() == pytest.approx(expected, abs=1e-5), (t, i, k)


def test_evaluate_policy_counts_exact_episodes():
    policy = lambda obs: np.zeros(len(obs), np.int64)  # noqa: E731
    returns = evaluate_policy(policy, "test/CountTerm-v0", 7, seed=0, n_envs=3)
    assert returns.tolist() == [3.0] * 7


# --- checkpoints, resume, normalisation --------------------------------------------------------


def test_checkpoint_save_load_same_actions(tmp_path):
    trainer = Trainer(cartpole(total_timesteps=2_048, eval_episodes=0), tmp_path)
    trainer.run()
    cfg, model, normalizer = restore_policy(load_checkpoint(tmp_path))
    assert cfg == trainer.cfg
    obs = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    for deterministic in (True, False):
        torch.manual_seed(0)
        ours = torch_policy(trainer.model, trainer.normalizer, deterministic)(obs)
        torch.manual_seed(0)
        loaded = torch_policy(model, normalizer, deterministic)(obs)
        np.testing.assert_array_equal(ours, loaded)


def test_resume_equals_uninterrupted_run(tmp_path):
    cfg = cartpole(total_timesteps=4_096, anneal_lr=False, checkpoint_every=0)
    first = train(cfg, tmp_path)
    resumed = train(cartpole(total_timesteps=8_192, anneal_lr=False), tmp_path, resume=True)
    whole = train(cartpole(total_timesteps=8_192, anneal_lr=False))
    assert first.total_steps == 4_096 and resumed.total_steps == 8_192
    assert_same_rows(rows_without_time(resumed.history), rows_without_time(whole.history[8:]))
    with open(tmp_path / "progress.csv", newline="") as f:
        steps = [int(r["time/total_timesteps"]) for r in csv.DictReader(f)]
    assert steps == [512 * k for k in range(1, 17)]


def test_obs_normalisation_stats_saved_and_frozen_at_evaluation(tmp_path):
    trainer = Trainer(cartpole(total_timesteps=2_048, norm_obs=True, norm_reward=True), tmp_path)
    trainer.run()
    state = load_checkpoint(tmp_path)
    _, model, normalizer = restore_policy(state)
    assert state["normalizer"]["obs_rms"]["count"] > 2_000
    np.testing.assert_array_equal(normalizer.obs_rms.mean, trainer.normalizer.obs_rms.mean)
    obs = np.ones((3, 4), np.float32)
    np.testing.assert_array_equal(normalizer.obs(obs), trainer.normalizer.obs(obs))
    assert not np.allclose(normalizer.obs(obs), obs)
    before = normalizer.state_dict()
    evaluate_policy(torch_policy(model, normalizer), "CartPole-v1", 3, seed=0)
    np.testing.assert_array_equal(normalizer.obs_rms.mean, before["obs_rms"]["mean"])
    assert normalizer.obs_rms.count == before["obs_rms"]["count"]


def test_continuous_actions_smoke():
    result = train(
        TrainConfig.for_env("Pendulum-v1", total_timesteps=2_048, eval_episodes=2, **QUIET)
    )
    assert result.total_steps == 2_048 and np.isfinite(result.eval_mean)


# --- CLIs ---------------------------------------------------------------------------------------

TINY = ["--total-timesteps", "1024", "--eval-episodes", "2", "--no-progress", "--no-tensorboard"]


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_cli_train_resume_evaluate_gif(tmp_path, capsys):
    run = tmp_path / "run"
    assert train_cli.main(["--env", "CartPole-v1", "--seed", "1", "--out", str(run), *TINY]) == 0
    out = last_json(capsys)
    assert {"env", "seed", "total_steps", "wall_s", "eval_mean", "eval_std"} <= out.keys()
    assert out["total_steps"] == 1024
    for name in ("checkpoint.pt", "progress.csv", "learning_curve.png", "result.json"):
        assert (run / name).is_file(), name
    argv = ["--out", str(run), "--resume", "--total-timesteps", "2048", "--no-progress"]
    assert train_cli.main(argv) == 0
    assert last_json(capsys)["total_steps"] == 2048
    gif = tmp_path / "episode.gif"
    argv = [str(run), "--episodes", "5", "--seed", "123", "--gif", str(gif)]
    assert evaluate_cli.main(argv) == 0
    out = last_json(capsys)
    assert out["env"] == "CartPole-v1" and out["episodes"] == 5
    assert {"mean_return", "std_return"} <= out.keys()
    assert gif.stat().st_size > 0


def test_gif_says_nothing_but_its_result_or_one_error_line(tmp_path, capsys):
    """A GIF run prints no SDL or imageio noise: nothing on stderr when it works, one `error:`
    line (and no 'Exception ignored' traceback) when the path cannot be written."""
    import subprocess
    import sys

    run = tmp_path / "run"
    assert train_cli.main(["--env", "CartPole-v1", "--seed", "1", "--out", str(run), *TINY]) == 0
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "SDL_VIDEODRIVER")}
    base = [sys.executable, "-m", "classic.evaluate", str(run), "--episodes", "1"]
    for gif, ok in ((tmp_path / "e.gif", True), (tmp_path / "no" / "such" / "e.gif", False)):
        done = subprocess.run([*base, "--gif", str(gif)], capture_output=True, text=True, env=env)
        if ok:
            assert done.returncode == 0 and done.stderr == "" and gif.stat().st_size > 0, done
        else:
            assert done.returncode == 2 and not gif.exists()
            (line,) = done.stderr.strip().splitlines()
            assert line.startswith("error: --gif") and "not a writable folder" in line


def test_a_collapsing_policy_is_one_warning_and_keeps_its_healthy_checkpoint(tmp_path):
    """lr 50 drives CartPole's policy to one action (entropy ~0): one warning line, the run
    finishes, and checkpoint.pt stays the last one written before the collapse."""
    import subprocess
    import sys

    out = tmp_path / "run"
    argv = ["--env", "CartPole-v1", "--lr", "0.0003", "--total-timesteps", "1024"]
    argv += ["--target-return", "none", "--eval-episodes", "2", "--no-progress", "--out", str(out)]
    assert train_cli.main(argv) == 0  # a healthy first part, checkpointed
    healthy = (out / "checkpoint.pt").read_bytes()
    argv = ["--out", str(out), "--resume", "--total-timesteps", "8192", "--lr", "50"]
    argv += ["--checkpoint-every", "1024", "--no-progress"]
    done = subprocess.run(
        [sys.executable, "-m", "classic.train", *argv], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "the policy collapsed at step" in warnings[0], done.stderr
    assert "checkpoint.pt keeps the last healthy state" in warnings[0]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["collapsed_at"] is not None
    assert (out / "checkpoint.pt").read_bytes() == healthy


def assert_one_line_error(capsys, code: int, *needles: str) -> None:
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and "Traceback" not in err
    for needle in needles:
        assert needle in err, err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--env", "CartPol-v1"], "unknown env id"),
        (["--env", "test/ImageObs-v0"], "unsupported observation space"),
        (["--env", "test/MultiDiscrete-v0"], "unsupported action space"),
        (["--minibatch-size", "100"], "minibatch"),
        (["--gamma", "1.5"], "gamma"),
        (["--n-envs", "0"], "n_envs"),
        (["--target-return", "400", "--eval-every", "0"], "eval_every"),
        (["--eval-episodes", "0"], "eval_episodes >= 2"),
        (["--confirm-z", "-1"], "confirm_z"),
    ],
)
def test_cli_train_bad_input(argv, needle, capsys):
    assert_one_line_error(capsys, train_cli.main([*TINY, *argv]), needle)


def test_cli_checkpoint_errors(tmp_path, capsys):
    run = str(tmp_path / "cartpole")
    assert train_cli.main(["--env", "CartPole-v1", "--out", run, *TINY]) == 0
    capsys.readouterr()
    code = train_cli.main(["--env", "Pendulum-v1", "--out", run, "--resume", *TINY])
    assert_one_line_error(capsys, code, "trained on CartPole-v1")
    code = train_cli.main(["--out", run, "--resume", "--n-envs", "4", *TINY])
    assert_one_line_error(capsys, code, "n_envs")
    code = evaluate_cli.main([run, "--env", "LunarLander-v3"])
    assert_one_line_error(capsys, code, "trained on CartPole-v1")
    empty = str(tmp_path / "empty")
    assert_one_line_error(capsys, evaluate_cli.main([empty]), "no checkpoint")
    code = train_cli.main(["--out", empty, "--resume", *TINY])
    assert_one_line_error(capsys, code, "no checkpoint")


@pytest.mark.filterwarnings("ignore:.*NaN value")
def test_cli_non_finite_loss_stops_before_writing_a_checkpoint(tmp_path, capsys):
    run = tmp_path / "nan"
    code = train_cli.main(["--env", "test/NanReward-v0", "--out", str(run), *TINY])
    assert_one_line_error(capsys, code, "non-finite PPO loss")
    assert not (run / "checkpoint.pt").exists()
