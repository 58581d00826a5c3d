"""Multi-turn GAE against first principles: lambda-returns over each episode's agent tokens, the
classic one-token-per-step case, the single-turn LM case, and the per-step gamma of `gae`."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ppo_bridge import gae, multi_turn_gae
from ppo_bridge.estimators import sequence_gae


def reference(r, v, mask, turn_end, term, trunc, boot, gamma, lam, per_token_gamma):
    """Lambda-returns from the definition, one episode at a time over its agent tokens k only:

    G_k = r_k + g_k ((1 - lam) V_{k+1} + lam G_{k+1}),  G_last = r + g (0 if terminated else boot),
    A_k = G_k - V_k,  g_k = gamma at a turn end (or at every token), 1 inside a turn.
    """
    T, N = r.shape
    adv, ret = np.zeros((T, N)), np.zeros((T, N))
    for n in range(N):
        episodes, current = [], []
        for t in range(T):
            if mask[t, n]:
                current.append(t)
                if term[t, n] or trunc[t, n]:
                    episodes.append(current)
                    current = []
        if current:  # the rollout stopped mid-episode
            episodes.append(current)
        for ep in episodes:
            g = [gamma if per_token_gamma or turn_end[t, n] else 1.0 for t in ep]
            last = ep[-1]
            G = r[last, n] + g[-1] * (0.0 if term[last, n] else boot[last, n])
            ret[last, n] = G
            for k in reversed(range(len(ep) - 1)):
                t, t_next = ep[k], ep[k + 1]
                G = r[t, n] + g[k] * ((1 - lam) * v[t_next, n] + lam * G)
                ret[t, n] = G
            adv[ep, n] = ret[ep, n] - v[ep, n]
    return adv, ret


@st.composite
def multi_turn_rollouts(draw):
    """[T, N] columns of episodes one after another (turns of agent tokens, env-token spans between
    them), the last one possibly cut mid-episode; bootstrap is NaN where it is not needed."""
    columns = []  # per column, tokens as (agent, turn_end, terminated, truncated, needs_bootstrap)
    for _ in range(draw(st.integers(1, 3))):
        col = [(False,) * 5] * draw(st.integers(0, 2))  # an observation before the first turn
        n_episodes = draw(st.integers(0, 3))
        for i in range(n_episodes):
            ends = ["terminated", "truncated"] + (["cut"] if i == n_episodes - 1 else [])
            end = draw(st.sampled_from(ends))
            n_turns = draw(st.integers(1, 3))
            for turn in range(n_turns):
                length = draw(st.integers(1, 3))
                col += [(True, False, False, False, False)] * (length - 1)
                if turn < n_turns - 1:
                    col.append((True, True, False, False, False))
                elif end == "cut":  # stopped at a turn end, or in the middle of a turn
                    col.append((True, draw(st.booleans()), False, False, True))
                else:
                    col.append(
                        (True, True, end == "terminated", end == "truncated", end != "terminated")
                    )
                col += [(False,) * 5] * draw(st.integers(0, 2))  # the environment's reply
        columns.append(col)
    T = max(1, *map(len, columns))
    flags = np.array([col + [(False,) * 5] * (T - len(col)) for col in columns], dtype=bool)
    mask, turn_end, term, trunc, needs_bootstrap = flags.transpose(2, 1, 0)  # each [T, N]

    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    r, v = rng.normal(size=(2, T, len(columns)))
    boot = np.where(needs_bootstrap, rng.normal(size=r.shape), np.nan)
    gamma, lam = draw(st.floats(0, 1)), draw(st.floats(0, 1))
    return r, v, mask, turn_end, term, trunc, boot, gamma, lam, draw(st.booleans())


@settings(max_examples=300, deadline=None)
@given(multi_turn_rollouts())
def test_multi_turn_gae_matches_lambda_returns_over_agent_tokens(data):
    r, v, mask, turn_end, term, trunc, boot, gamma, lam, per_token_gamma = data
    adv, ret = multi_turn_gae(
        *map(torch.tensor, (r, v, mask, turn_end, term, trunc, boot)),
        gamma=gamma,
        lam=lam,
        per_token_gamma=per_token_gamma,
    )
    expected_adv, expected_ret = reference(*data)
    np.testing.assert_allclose(adv.numpy(), expected_adv, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ret.numpy(), expected_ret, rtol=1e-9, atol=1e-9)
    assert (adv[~mask] == 0).all() and (ret[~mask] == 0).all()


def test_multi_turn_gae_by_hand():
    """env | a a* | env env | a a*(terminated) | env, values 0, rewards 1 and 4 on the turn ends."""
    mask = torch.tensor([0, 1, 1, 0, 0, 1, 1, 0], dtype=torch.bool)[:, None]
    turn_end = torch.tensor([0, 0, 1, 0, 0, 0, 1, 0], dtype=torch.bool)[:, None]
    term = torch.tensor([0, 0, 0, 0, 0, 0, 1, 0], dtype=torch.bool)[:, None]
    r = torch.tensor([9.0, 0, 1, 9, 9, 0, 4, 9])[:, None]  # env-token rewards are ignored
    v = torch.zeros_like(r)
    per_turn, _ = multi_turn_gae(r, v, mask, turn_end, term, gamma=0.5, lam=1.0)
    per_token, _ = multi_turn_gae(
        r, v, mask, turn_end, term, gamma=0.5, lam=1.0, per_token_gamma=True
    )
    assert per_turn[:, 0].tolist() == [0, 3, 3, 0, 0, 4, 4, 0]  # 1 + 0.5 * 4 across the turn end
    assert per_token[:, 0].tolist() == [0, 1, 2, 0, 0, 2, 4, 0]


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 10),
    st.integers(1, 4),
    st.integers(0, 2**32 - 1),
    st.floats(0, 1),
    st.floats(0, 1),
    st.booleans(),
)
def test_one_token_per_step_is_classic_gae(T, N, seed, gamma, lam, per_token_gamma):
    """Every position an agent token and a turn end: a classic [T, N] rollout."""
    rng = np.random.default_rng(seed)
    r, v, boot = (torch.tensor(x) for x in rng.normal(size=(3, T, N)))
    term = torch.tensor(rng.random((T, N)) < 0.2)
    trunc = torch.tensor(rng.random((T, N)) < 0.2) & ~term
    end = torch.zeros(T, N, dtype=torch.bool)
    end[-1] = True
    needs_bootstrap = trunc | (end & ~term)
    next_values = torch.cat([v[1:], v[:1]])  # the next step's value (any at a termination)
    next_values = torch.where(needs_bootstrap, boot, next_values)
    expected = gae(r, v, next_values, term, trunc, gamma=gamma, lam=lam)
    ones = torch.ones(T, N, dtype=torch.bool)
    bootstrap = torch.where(needs_bootstrap, boot, torch.nan)
    actual = multi_turn_gae(
        r, v, ones, ones, term, trunc, bootstrap, gamma, lam, per_token_gamma=per_token_gamma
    )
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)


def test_single_turn_is_lm_sequence_gae():
    torch.manual_seed(0)
    B, R = 5, 7
    rewards, values = torch.randn(B, R), torch.randn(B, R)
    lengths = torch.tensor([1, 3, 7, 4, 6])
    mask = torch.arange(R) < lengths[:, None]
    last = torch.nn.functional.one_hot(lengths - 1, R).bool()
    expected = sequence_gae(rewards, values, mask, gamma=1.0, lam=0.95)
    adv, ret = multi_turn_gae(rewards.T, values.T, mask.T, last.T, last.T, gamma=1.0, lam=0.95)
    torch.testing.assert_close((adv.T, ret.T), expected)


def test_bad_inputs_raise_clear_errors():
    z, b = torch.zeros(3, 2), torch.zeros(3, 2, dtype=torch.bool)
    agent = ~b
    last = b.clone()
    last[-1] = True
    with pytest.raises(ValueError, match="share one shape"):
        multi_turn_gae(z, z, agent[:, :1], last, last)
    with pytest.raises(ValueError, match="share one shape"):
        multi_turn_gae(z[:, 0], z[:, 0], agent[:, 0], last[:, 0], last[:, 0])
    with pytest.raises(
        ValueError, match=r"missing at truncated tokens \[t, n\] \[\[2, 0\], \[2, 1\]\]"
    ):
        multi_turn_gae(z, z, agent, last, b, truncated=last)
    with pytest.raises(ValueError, match=r"missing at truncated tokens \[t, n\] \[\[2, 1\]\]"):
        multi_turn_gae(
            z, z, agent, last, b, last, torch.tensor([[0.0, 0.0]] * 2 + [[1.0, torch.nan]])
        )
    with pytest.raises(ValueError, match=r"cut mid-episode\) \[\[2, 0\], \[2, 1\]\]"):
        multi_turn_gae(z, z, agent, last, b)
    with pytest.raises(ValueError, match="turn_end is set on an environment token"):
        multi_turn_gae(z, z, agent & ~last, last, last)
    with pytest.raises(ValueError, match="must be set on turn_end tokens"):
        multi_turn_gae(z, z, agent, b, last)
    with pytest.raises(ValueError, match="tensor gamma must be shaped like rewards"):
        gae(z, z, z, b, gamma=torch.full((3, 1), 0.9))


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 12),
    st.integers(1, 4),
    st.integers(0, 2**32 - 1),
    st.sampled_from([0.0, 0.5, 0.9, 0.97, 0.99, 1.0]),
    st.sampled_from([0.0, 0.5, 0.9, 0.95, 1.0]),
)
def test_gae_tensor_gamma_is_bit_identical_to_the_float(T, N, seed, gamma, lam):
    """In float64, where the tensor holds the Python float exactly."""
    rng = np.random.default_rng(seed)
    r, v, nv = (torch.tensor(x) for x in rng.normal(size=(3, T, N)))
    term, trunc, pad = (torch.tensor(rng.random((T, N)) < p) for p in (0.2, 0.2, 0.3))
    args = (r, v, nv, term, trunc, ~pad)
    expected = gae(*args, gamma=gamma, lam=lam)
    actual = gae(*args, gamma=torch.full_like(r, gamma), lam=lam)
    assert all(torch.equal(a, e) for a, e in zip(actual, expected, strict=True))
