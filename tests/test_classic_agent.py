"""The seed notebook's teaching API (PPOAgent, ActorCritic, get_device) on the shared core."""

import re
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import seed_train_ppo  # tests/seed_train_ppo.py
import torch

from classic import ActorCritic, PPOAgent, get_device

SEED_NOTEBOOK = Path(__file__).resolve().parents[2] / "shared/seeds/000_cba39af557d9bd57.txt"


def test_select_store_update_round_trip():
    agent = PPOAgent(obs_dim=4, n_actions=2, device="cpu", batch_size=16, n_epochs=2, seed=0)
    env = gym.make("CartPole-v1")
    state, _ = env.reset(seed=0)
    before = [p.detach().clone() for p in agent.net.parameters()]
    for _ in range(64):
        action, log_prob, value = agent.select_action(state)
        assert action in (0, 1) and log_prob <= 0.0 and isinstance(value, float)
        next_state, reward, terminated, truncated, _ = env.step(action)
        agent.store_transition(state, action, reward, terminated or truncated, log_prob, value)
        state = next_state if not (terminated or truncated) else env.reset()[0]
    metrics = agent.update(next_state=state)
    assert {"policy_loss", "value_loss", "entropy"} <= metrics.keys()
    assert metrics["n_updates"] == 2 * 64 / 16
    assert agent.buffer == []
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.net.parameters(), strict=True))
    greedy = agent.select_action(state, training=False)[0]
    logits = agent.net.actor(torch.as_tensor(state, dtype=torch.float32))
    assert greedy == int(logits.argmax())


def test_update_errors_are_clear():
    agent = PPOAgent(obs_dim=4, n_actions=2, device="cpu", batch_size=64)
    with pytest.raises(RuntimeError, match="no transitions"):
        agent.update()
    for _ in range(10):
        agent.store_transition(np.zeros(4), 0, 1.0, False, -0.69, 0.0)
    with pytest.raises(ValueError, match="does not split into minibatches of 64"):
        agent.update()


def test_same_seed_same_metrics():
    def run():
        agent = PPOAgent(obs_dim=4, n_actions=2, device="cpu", batch_size=32, seed=3)
        env = gym.make("CartPole-v1")
        state, _ = env.reset(seed=3)
        for _ in range(128):
            action, log_prob, value = agent.select_action(state)
            state, reward, term, trunc, _ = env.step(action)
            agent.store_transition(state, action, reward, term or trunc, log_prob, value)
            if term or trunc:
                state, _ = env.reset()
        return agent.update()

    assert run() == run()


def test_actor_critic_and_device():
    assert isinstance(get_device(), torch.device)
    net = ActorCritic(8, action_dim=2)
    action, log_prob, value = net.act(torch.zeros(5, 8))
    assert action.shape == (5, 2) and log_prob.shape == (5,) and value.shape == (5,)
    with pytest.raises(ValueError, match="exactly one"):
        ActorCritic(4)


def _seed_cell() -> str:
    """The seed notebook's `train_ppo` cell, as text."""
    text = SEED_NOTEBOOK.read_text()
    return re.search(r"^def train_ppo.*?(?=^In \[None\])", text, re.S | re.M).group(0)


@pytest.mark.skipif(not SEED_NOTEBOOK.exists(), reason="the seed notebook lives in ../shared")
def test_seed_train_ppo_copy_is_the_seed_cell():
    copy = Path(seed_train_ppo.__file__).read_text()
    assert copy.endswith(_seed_cell().rstrip("\n") + "\n")


def test_seed_notebook_train_ppo_cell_runs_and_learns():
    torch.set_num_threads(1)
    agent, metrics = seed_train_ppo.train_ppo(
        env_id="CartPole-v1", n_iterations=12, rollout_steps=2048, hidden_dim=64, lr=3e-4,
        gamma=0.99, gae_lambda=0.95, clip_eps=0.2, n_epochs=4, batch_size=64, seed=42,
    )  # fmt: skip
    assert isinstance(agent, PPOAgent)
    assert len(metrics["policy_losses"]) == 12
    # Random play averages ~22 steps; after 12 updates the seed's own settings are well above it.
    assert np.mean(metrics["rewards"][-10:]) > 100


def test_threads_are_set_like_classic_train():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        PPOAgent(obs_dim=4, n_actions=2, device="cpu", threads=None)
        assert torch.get_num_threads() == 2  # None: torch's setting is left alone
        PPOAgent(obs_dim=4, n_actions=2, device="cpu")
        assert torch.get_num_threads() == 1  # the default, as classic.train's
        with pytest.raises(ValueError, match="threads"):
            PPOAgent(obs_dim=4, n_actions=2, device="cpu", threads=0)
    finally:
        torch.set_num_threads(before)
