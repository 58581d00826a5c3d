"""Many seeds as one batched model (`classic.train --seeds`): seed k of a K-seed run is the
single run of seed k, bit for bit; seeds finish on their own; run folders, resume, bad input."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from classic import evaluate as evaluate_cli
from classic import train as train_cli
from classic.checkpoint import load_checkpoint
from classic.config import TrainConfig
from classic.networks import ActorCritic
from classic.train import Trainer, make_adam, parse_seeds, train, train_seeds
from ppo_bridge import Evaluation, PPOConfig, ppo_update

QUIET = dict(progress=False, tensorboard=False)
TINY = ["--total-timesteps", "1024", "--eval-episodes", "4", "--no-progress", "--no-tensorboard"]


def cartpole(**overrides) -> TrainConfig:
    base = dict(eval_every=0, target_return=None, eval_episodes=4, **QUIET)
    return TrainConfig.for_env("CartPole-v1", **{**base, **overrides})


def rows(result) -> list[dict[str, float]]:
    """The learning rows without wall-clock columns, NaN made comparable."""
    return [
        {k: (None if v != v else v) for k, v in r.items() if not k.startswith("time/")}
        for r in result.history
    ]


K = 9  # 9 two-action head biases are 18 numbers: a vector kernel's body and its tail


def test_core_updates_k_agents_as_k_separate_updates():
    """ppo_update with n_agents = K moves each stacked agent exactly as its own update would."""
    torch.manual_seed(0)
    g = [torch.Generator().manual_seed(s) for s in range(K)]
    many = ActorCritic(4, 2, n_agents=K, generators=g)
    ones = [ActorCritic(4, 2) for _ in range(K)]
    for k, one in enumerate(ones):
        one.load_state_dict(many.agent_state(k))
    n = 64
    batch = {
        "obs": torch.randn(K, n, 4),
        "actions": torch.randint(0, 2, (K, n)),
        "logprobs": torch.randn(K, n) - 0.7,
        "values": torch.randn(K, n),
        "returns": torch.randn(K, n),
        "advantages": torch.randn(K, n) * torch.logspace(-1, 1, K)[:, None],
    }
    cfg = PPOConfig(minibatch_size=16, n_epochs=2, max_grad_norm=0.1)

    def update(model, data, gens, n_agents):
        opt = make_adam(model, 1e-3)
        evaluate = lambda mb: Evaluation(*model.evaluate(mb["obs"], mb["actions"]))  # noqa: E731
        return ppo_update(data, evaluate, opt, cfg, generator=gens, n_agents=n_agents)

    metrics = update(many, batch, [torch.Generator().manual_seed(9 + k) for k in range(K)], K)
    assert len(metrics) == K
    for k, one in enumerate(ones):
        data = {key: v[k : k + 1] for key, v in batch.items()}
        alone = update(one, data, [torch.Generator().manual_seed(9 + k)], 1)[0]
        assert alone == metrics[k]
        for name, t in one.state_dict().items():
            assert torch.equal(t[0], many.state_dict()[name][k]), name
    assert metrics[0]["policy_loss"] != metrics[1]["policy_loss"]


def test_seed_k_of_a_batched_run_is_its_single_run_bit_for_bit():
    cfg = cartpole(total_timesteps=2_048, n_envs=4, n_steps=64, minibatch_size=128)
    seeds = [0, 3, 5, *range(10, 16)]
    many = train_seeds(cfg, seeds)
    assert [r.seed for r in many] == seeds
    for k in (0, 5):
        alone = train(replace(cfg, seed=k))
        batched = next(r for r in many if r.seed == k)
        assert rows(batched) == rows(alone)
        assert batched.eval_mean == alone.eval_mean
    assert len({str(rows(r)) for r in many}) == len(seeds)  # K seeds, K different runs


def test_a_finished_seed_leaves_the_batch(monkeypatch):
    """Seed 1's screen and confirmation pass at the first check; seeds 0 and 2 never do. Seed 1
    stops there and the model drops its slice; the others train their whole budget."""
    calls = []

    def stub(self, run, n_episodes, seed):
        calls.append((run.cfg.seed, self.model.n_agents))
        return np.full(n_episodes, 500.0 if run.cfg.seed == 1 else 10.0) + np.arange(n_episodes)

    monkeypatch.setattr(Trainer, "evaluate", stub)
    cfg = cartpole(total_timesteps=2_048, eval_every=512, target_return=475.0)
    results = train_seeds(cfg, [0, 1, 2])
    assert [r.total_steps for r in results] == [2_048, 512, 2_048]
    assert results[1].threshold_steps == 512 and results[0].threshold_steps is None
    # the first check: 3 screens and seed 1's confirmation, with 3 agents in the model; after
    # it, seed 1 is gone: 2 agents
    assert sorted(calls[:4]) == [(0, 3), (1, 3), (1, 3), (2, 3)]
    assert {n for _, n in calls[4:]} == {2} and 1 not in {s for s, _ in calls[4:]}


def test_resume_after_a_seed_finished_continues_the_others(monkeypatch, tmp_path):
    """Seed 1 stopped at its first check (its Adam has taken fewer steps than the others'): a
    resume leaves it out of the batch and continues seeds 0 and 2."""

    def stub(self, run, n_episodes, seed):
        return np.full(n_episodes, 500.0 if run.cfg.seed == 1 else 10.0) + np.arange(n_episodes)

    monkeypatch.setattr(Trainer, "evaluate", stub)
    cfg = cartpole(total_timesteps=1_024, eval_every=512, target_return=475.0)
    first = train_seeds(cfg, [0, 1, 2], tmp_path)
    assert [r.total_steps for r in first] == [1_024, 512, 1_024]
    resumed = train_seeds(replace(cfg, total_timesteps=2_048), [0, 1, 2], tmp_path, resume=True)
    assert [r.total_steps for r in resumed] == [2_048, 512, 2_048]
    assert load_checkpoint(tmp_path / "seed-1")["global_step"] == 512


def test_cli_seeds_run_folders_json_evaluate_and_resume(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["--env", "CartPole-v1", "--seeds", "0-1", "--out", str(out), "--no-anneal-lr"]
    assert train_cli.main([*argv, *TINY]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["seed"] for r in summary["runs"]] == [0, 1] and summary["wall_s"] > 0
    keys = {"env", "total_steps", "eval_mean", "threshold_steps", "out"}
    assert keys <= summary["runs"][0].keys()
    for k in (0, 1):
        run = out / f"seed-{k}"
        for name in ("checkpoint.pt", "progress.csv", "learning_curve.png", "result.json"):
            assert (run / name).is_file(), name
        assert load_checkpoint(run)["config"]["seed"] == k
        assert evaluate_cli.main([str(run), "--episodes", "2", "--seed", "7"]) == 0
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["episodes"] == 2
    # resume both seeds to 2048 steps: the same as a batched run of 2048 from the start
    argv = ["--out", str(out), "--seeds", "0-1", "--resume", "--total-timesteps", "2048"]
    assert train_cli.main([*argv, "--no-progress"]) == 0
    resumed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["runs"]
    whole = train_seeds(cartpole(total_timesteps=2_048, anneal_lr=False), [0, 1])
    for r, w in zip(resumed, whole, strict=True):
        assert r["total_steps"] == 2_048
        assert (r["eval_mean"], r["eval_std"]) == (w.eval_mean, w.eval_std)
    code = train_cli.main(["--env", "CartPole-v1", "--seeds", "0-1", "--out", str(out), *TINY])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "seed-0" in err and "--resume" in err


@pytest.mark.parametrize(
    ("spec", "needle"),
    [("0-", "not a seed or a range"), ("a", "not a seed"), ("3-1", "empty"), ("1,2,1", "twice")],
)
def test_bad_seeds_are_one_line_errors(spec, needle, capsys):
    code = train_cli.main(["--env", "CartPole-v1", "--seeds", spec, *TINY])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: ")
    assert needle in err, err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [(["--seed", "1"], "not both"), (["--target-kl", "0.02"], "target_kl")],
)
def test_seeds_with_a_conflicting_flag_is_refused(argv, needle, capsys):
    code = train_cli.main(["--env", "CartPole-v1", "--seeds", "0-1", *argv, *TINY])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and needle in err, err


def test_parse_seeds_forms():
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds("0,3,5") == [0, 3, 5]
    assert parse_seeds("7") == [7]
    assert parse_seeds("0-1, 9") == [0, 1, 9]
