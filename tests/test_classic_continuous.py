"""The continuous-control presets (Box actions): each trains a few iterations with its own
network, normalisers and envs, resumes bit-identically, and is benchmarked against rl-zoo."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from gymnasium import spaces
from test_classic_train import assert_same_rows, rows_without_time
from torch.distributions import Normal

from bench.classic import THRESHOLDS, ZOO, run_sb3, zoo_as_ours
from classic import evaluate as evaluate_cli
from classic import train as train_cli
from classic.config import PRESETS, TrainConfig
from classic.envs import make_vec_env
from classic.evaluate import write_gif
from classic.networks import ActorCritic
from classic.train import train, train_seeds


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
    cfg = tiny(env_id, 1)
    hidden = (cfg.hidden_dim,) if cfg.use_sde else ()  # gSDE: a sigma per feature and action
    assert state["model"]["log_std"].shape == (1, *hidden, *action_shape)  # one agent's


def test_gsde_samples_mean_plus_features_times_its_matrix():
    """a = mu(s) + z(s) E with E fixed between reset_noise calls (one per env), and the log-prob
    is that of N(mu(s), z(s)^2 sigma^2): the noise of a state is a function of the state."""
    torch.manual_seed(0)
    model = ActorCritic(3, action_dim=2, sde=True, log_std_init=-1.0)
    model.reset_noise(4, [torch.Generator().manual_seed(1)])
    obs = torch.randn(4, 3)
    a1, logp, _ = model.act(obs)
    assert torch.equal(model.act(obs)[0], a1)  # same states, same matrices: same actions
    *body, head = model.actor
    z = body[3](body[2](body[1](body[0](obs))))
    expected = head(z) + torch.einsum("nh,nha->na", z, model.exploration[0])
    torch.testing.assert_close(a1, expected)
    std = ((z**2) @ model.log_std[0].exp() ** 2 + 1e-6).sqrt()
    torch.testing.assert_close(logp, Normal(head(z), std).log_prob(a1).sum(-1))
    a2 = model.act(obs + 0.5)[0] - head(body[3](body[2](body[1](body[0](obs + 0.5)))))
    assert not torch.allclose(a2, a1 - head(z))  # another state, another noise
    model.reset_noise(4, [torch.Generator().manual_seed(2)])
    assert not torch.equal(model.act(obs)[0], a1)
    with pytest.raises(ValueError, match="gSDE.*Box"):
        ActorCritic(3, n_actions=2, sde=True)


def test_gsde_seeds_batched_are_their_single_runs():
    """The exploration matrices of seed k come from seed k's sampler only."""
    cfg = replace(tiny("Pendulum-v1", 2), use_sde=True, sde_sample_freq=4, eval_episodes=2)
    many = train_seeds(cfg, [0, 3])
    one = train(replace(cfg, seed=3))
    assert_same_rows(rows_without_time(many[1].history), rows_without_time(one.history))
    assert many[1].eval_mean == one.eval_mean != many[0].eval_mean


def test_gsde_run_evaluates_sampling_too(tmp_path, capsys):
    """classic.evaluate --stochastic on a gSDE run folder: the loaded policy has no rollout
    matrices, so each step draws its own; the sampled returns differ from the mode's."""
    train(replace(tiny("Pendulum-v1", 1), use_sde=True), tmp_path)
    capsys.readouterr()
    returns = {}
    for flags in ([], ["--stochastic"]):
        assert evaluate_cli.main([str(tmp_path), "--episodes", "2", "--seed", "5", *flags]) == 0
        returns[bool(flags)] = json.loads(capsys.readouterr().out.splitlines()[-1])["mean_return"]
    assert np.isfinite(returns[True]) and returns[True] != returns[False]


def test_gsde_on_a_discrete_env_is_one_error_line(capsys):
    assert train_cli.main(["--env", "CartPole-v1", "--use-sde", "--total-timesteps", "64"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Box" in err[0]


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


def test_relu_and_nn_linear_init_as_sb3_ortho_init_false():
    """rl-zoo's MuJoCo networks: ReLU, and nn.Linear's U(+-1/sqrt(n_in)) for weights and biases
    (each agent from its own generator); the default stays tanh with orthogonal init."""
    g = [torch.Generator().manual_seed(s) for s in (0, 1)]
    model = ActorCritic(
        17,
        action_dim=6,
        hidden_dim=256,
        activation="relu",
        ortho_init=False,
        n_agents=2,
        generators=g,
    )
    assert any(isinstance(m, torch.nn.ReLU) for m in model.actor)
    first = model.actor[0]
    bound = 1 / 17**0.5
    assert first.weight.abs().max() <= bound and first.weight.abs().max() > 0.9 * bound
    assert first.bias.abs().max() <= bound and (first.bias != 0).all()
    assert not torch.equal(first.weight[0], first.weight[1])
    default = ActorCritic(17, action_dim=6)
    assert any(isinstance(m, torch.nn.Tanh) for m in default.actor)
    w = default.actor[0].weight[0]  # [17, 64]: orthogonal rows, gain sqrt(2)
    torch.testing.assert_close(w @ w.T, 2 * torch.eye(17), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="activation"):
        ActorCritic(3, action_dim=1, activation="gelu")


def test_zoo_as_ours_is_rl_zoo_s_mujoco_entry():
    """The same-work config: rl-zoo's HalfCheetah values, network and VecNormalize."""
    cfg = zoo_as_ours("HalfCheetah-v5")
    assert (cfg.n_envs, cfg.n_steps, cfg.minibatch_size, cfg.n_epochs) == (1, 512, 64, 20)
    assert (cfg.gamma, cfg.gae_lambda, cfg.clip_eps, cfg.lr, cfg.anneal_lr) == (
        0.98,
        0.92,
        0.1,
        2.0633e-05,
        False,
    )
    assert (cfg.hidden_dim, cfg.n_hidden, cfg.activation, cfg.ortho_init) == (256, 2, "relu", False)
    assert cfg.log_std_init == -2 and cfg.norm_obs and cfg.norm_reward and cfg.max_grad_norm == 0.8
    pendulum = zoo_as_ours("Pendulum-v1")
    assert pendulum.use_sde and pendulum.sde_sample_freq == 4 and pendulum.lr == 1e-3
