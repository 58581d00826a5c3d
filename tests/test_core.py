"""The PPO core against first principles: GAE by brute force, the clip's gradient, KL estimators,
controllers, config validation and the update loop."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ppo_bridge import (
    AdaptiveKLController,
    Evaluation,
    FixedKLController,
    PPOConfig,
    clipped_surrogate_loss,
    gae,
    group_advantages,
    kl_estimate,
    loss_weights,
    masked_mean,
    masked_whiten,
    ppo_update,
    value_loss,
)


def brute_force_gae(r, v, nv, term, trunc, gamma, lam):
    """A_t = sum_l (gamma lam)^l delta_{t+l}, summed up to the first episode end (inclusive)."""
    T = len(r)
    delta = [r[t] + gamma * (1 - term[t]) * nv[t] - v[t] for t in range(T)]
    adv = []
    for t in range(T):
        total, coef = 0.0, 1.0
        for k in range(t, T):
            total += coef * delta[k]
            if term[k] or trunc[k]:
                break
            coef *= gamma * lam
        adv.append(total)
    return adv


@st.composite
def rollouts(draw):
    """Random [T, N] rollouts with terminations, truncations, optional padding, gamma and lambda."""
    T, N = draw(st.integers(1, 12)), draw(st.integers(1, 4))

    def grid(elements):
        return np.array(draw(st.lists(elements, min_size=T * N, max_size=T * N))).reshape(T, N)

    floats = st.floats(-5, 5, allow_nan=False, width=32)
    rare = st.sampled_from([False, False, False, True])
    mask = grid(st.sampled_from([True, True, True, False])) if draw(st.booleans()) else None
    gamma = draw(st.sampled_from([0.0, 0.5, 0.9, 0.99, 1.0]))
    lam = draw(st.sampled_from([0.0, 0.5, 0.95, 1.0]))
    return grid(floats), grid(floats), grid(floats), grid(rare), grid(rare), mask, gamma, lam


@settings(max_examples=200, deadline=None)
@given(rollouts())
def test_gae_matches_brute_force_with_terminations_truncations_and_padding(data):
    r, v, nv, term, trunc, pad, gamma, lam = data
    mask = None if pad is None else ~pad
    t = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    adv, ret = gae(
        t(r), t(v), t(nv), t(term), t(trunc), None if mask is None else t(mask), gamma, lam
    )
    T, N = r.shape
    for n in range(N):
        keep = np.arange(T) if mask is None else np.flatnonzero(mask[:, n])
        expected = brute_force_gae(
            r[keep, n], v[keep, n], nv[keep, n], term[keep, n], trunc[keep, n], gamma, lam
        )
        np.testing.assert_allclose(adv[keep, n].numpy(), expected, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(ret[keep, n].numpy(), np.array(expected) + v[keep, n], atol=1e-9)
        if mask is not None:
            padded = np.flatnonzero(~mask[:, n])
            assert (adv[padded, n] == 0).all() and (ret[padded, n] == 0).all()


def test_gae_truncation_bootstraps_and_termination_does_not():
    r = torch.tensor([[1.0], [1.0]])
    v = torch.tensor([[0.0], [0.0]])
    nv = torch.tensor([[10.0], [10.0]])  # V of the true next / final observation
    zero, one = torch.tensor([[0.0], [0.0]]), torch.tensor([[0.0], [1.0]])
    adv_trunc, _ = gae(r, v, nv, terminated=zero, truncated=one, gamma=0.5, lam=1.0)
    adv_term, _ = gae(r, v, nv, terminated=one, truncated=zero, gamma=0.5, lam=1.0)
    assert adv_trunc[1, 0] == pytest.approx(1 + 0.5 * 10)
    assert adv_term[1, 0] == pytest.approx(1.0)
    assert adv_trunc[0, 0] == pytest.approx(
        (1 + 0.5 * 10) + 0.5 * (1 + 0.5 * 10)
    )  # delta_0 + g*l*A_1


def test_gae_lambda_zero_is_one_step_td_and_lambda_one_is_monte_carlo():
    torch.manual_seed(0)
    r, v = torch.randn(6, 1), torch.randn(6, 1)
    nv = torch.cat([v[1:], torch.zeros(1, 1)])
    term = torch.zeros(6, 1)
    term[-1] = 1
    td, _ = gae(r, v, nv, term, gamma=0.9, lam=0.0)
    torch.testing.assert_close(td, r + 0.9 * nv * (1 - term) - v)
    _, mc_returns = gae(r, v, nv, term, gamma=0.9, lam=1.0)
    discounted = [sum(0.9**k * r[t + k, 0].item() for k in range(6 - t)) for t in range(6)]
    torch.testing.assert_close(mc_returns[:, 0], torch.tensor(discounted), atol=1e-5, rtol=1e-5)


def test_gae_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="share one shape"):
        gae(torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(2, 3))


@pytest.mark.parametrize("adv", [1.0, -1.0])
def test_clip_loss_has_zero_gradient_outside_trust_region_on_the_clipped_side(adv):
    eps = 0.2
    old = torch.zeros(4)
    # ratios: inside, outside on the clipped side, outside on the unclipped side
    ratio = torch.tensor([1.05, 1.5, 0.5, 1.0]) if adv > 0 else torch.tensor([1.05, 0.5, 1.5, 1.0])
    logp = ratio.log().requires_grad_()
    loss, stats = clipped_surrogate_loss(logp, old, torch.full((4,), adv), eps)
    loss.backward()
    grad = logp.grad
    assert grad[1] == 0.0  # beyond 1+eps with A>0, or below 1-eps with A<0: clipped, no gradient
    assert grad[0] != 0.0 and grad[2] != 0.0  # inside, and on the side where min keeps r*A
    assert stats["clipfrac"].item() == pytest.approx(0.5)


def test_clip_loss_value_matches_formula_and_ignores_padding():
    logp, old = torch.tensor([0.3, -0.4, 0.0]), torch.zeros(3)
    adv, mask = torch.tensor([2.0, -1.0, 100.0]), torch.tensor([1.0, 1.0, 0.0])
    loss, _ = clipped_surrogate_loss(logp, old, adv, 0.2, mask)
    r = logp.exp()
    expected = -torch.minimum(r * adv, r.clamp(0.8, 1.2) * adv)[:2].mean()
    assert loss.item() == pytest.approx(expected.item())


def test_value_loss_clipping_takes_the_pessimistic_branch():
    v_old, ret = torch.tensor([0.0]), torch.tensor([1.0])
    v_new = torch.tensor([0.9])
    assert value_loss(v_new, v_old, ret).item() == pytest.approx(0.5 * 0.01)
    assert value_loss(v_new, v_old, ret, clip_eps=0.2).item() == pytest.approx(0.5 * 0.64)


def test_masked_mean_and_whiten_ignore_padding():
    x = torch.tensor([[1.0, 2.0, 99.0], [3.0, 4.0, -99.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    assert masked_mean(x, mask).item() == pytest.approx(2.5)
    w = masked_whiten(x, mask)
    assert w[:, 2].abs().sum() == 0
    assert masked_mean(w, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert w[mask.bool()].std().item() == pytest.approx(1.0, abs=1e-5)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-20, 20), min_size=1, max_size=50), st.integers(0, 10_000))
def test_k3_is_nonnegative_and_k1_k3_agree_on_average(logps, seed):
    lp = torch.tensor(logps, dtype=torch.float64)
    ref = lp + torch.randn(
        len(logps), generator=torch.Generator().manual_seed(seed), dtype=lp.dtype
    )
    assert (kl_estimate(lp, ref, "k3") >= 0).all()
    assert (kl_estimate(lp, ref, "k2") >= 0).all()


def test_kl_estimators_are_unbiased_for_categoricals():
    p = torch.tensor([0.7, 0.2, 0.1])
    q = torch.tensor([0.3, 0.3, 0.4])
    exact = (p * (p / q).log()).sum().item()
    x = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    lp, lq = p.log()[x], q.log()[x]
    assert kl_estimate(lp, lq, "k1").mean().item() == pytest.approx(exact, rel=0.02)
    assert kl_estimate(lp, lq, "k3").mean().item() == pytest.approx(exact, rel=0.02)
    with pytest.raises(ValueError, match="k1"):
        kl_estimate(lp, lq, "k4")


def test_kl_controllers():
    fixed = FixedKLController(0.1)
    fixed.update(100.0, 1000)
    assert fixed.value == 0.1
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    ctl.update(12.0, 1000)  # far above target: error clipped to +0.2
    assert ctl.value == pytest.approx(0.1 * (1 + 0.2 * 1000 / 10_000))
    ctl.update(3.0, 1000)  # below target: beta shrinks
    assert ctl.value < 0.1 * 1.02
    with pytest.raises(ValueError):
        AdaptiveKLController(0.1, target=0.0, horizon=10)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"clip_eps": 0.0}, "clip_eps"),
        ({"clip_eps": -0.1}, "clip_eps"),
        ({"gamma": 1.5}, "gamma"),
        ({"gae_lambda": -0.1}, "gae_lambda"),
        ({"lr": 0}, "lr"),
        ({"n_epochs": 0}, "n_epochs"),
        ({"minibatch_size": 64, "grad_accum_steps": 3}, "grad_accum_steps"),
        ({"target_kl": 0.0}, "target_kl"),
        ({"normalize_advantages": "yes"}, "normalize_advantages"),
        ({"lr": float("inf")}, "lr must be a finite number"),
        ({"clip_vf": float("nan")}, "clip_vf must be a finite number"),
        ({"loss_aggregation": "sum"}, "loss_aggregation"),
        ({"kl_coef": -1.0}, "kl_coef"),
    ],
)
def test_config_rejects_bad_values_with_a_clear_message(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PPOConfig(**kwargs)


def test_config_rejects_a_batch_that_does_not_split_into_minibatches():
    with pytest.raises(ValueError, match="does not split into minibatches of 64"):
        PPOConfig(minibatch_size=64).check_batch_size(100)


def _regression_problem(seed: int = 0):
    """A one-state bandit: action 1 pays 1, action 0 pays 0; PPO should raise pi(1)."""
    torch.manual_seed(seed)
    logits = torch.nn.Parameter(torch.zeros(2))
    value = torch.nn.Parameter(torch.zeros(1))
    n = 256
    actions = torch.randint(0, 2, (n,))
    old_logp = torch.log_softmax(logits.detach(), -1)[actions]
    rewards = actions.float()
    batch = {
        "actions": actions,
        "logprobs": old_logp,
        "values": torch.zeros(n),
        "advantages": rewards - 0.5,
        "returns": rewards,
    }

    def evaluate(mb):
        logp_all = torch.log_softmax(logits, -1)
        ent = -(logp_all.exp() * logp_all).sum().expand(len(mb["actions"]))
        return Evaluation(logp_all[mb["actions"]], ent, value.expand(len(mb["actions"])))

    opt = torch.optim.Adam([logits, value], lr=0.05)
    return logits, batch, evaluate, opt


def test_ppo_update_improves_the_policy_and_reports_metrics():
    logits, batch, evaluate, opt = _regression_problem()
    cfg = PPOConfig(n_epochs=4, minibatch_size=64, lr=0.05)
    metrics = ppo_update(batch, evaluate, opt, cfg, generator=torch.Generator().manual_seed(0))
    assert torch.softmax(logits, -1)[1] > 0.6
    for key in ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac"):
        assert math.isfinite(metrics[key])
    assert metrics["n_updates"] == 4 * 256 / 64
    assert "explained_variance" in metrics


def test_ppo_update_target_kl_stops_early_and_lr_anneals():
    logits, batch, evaluate, opt = _regression_problem()
    cfg = PPOConfig(n_epochs=50, minibatch_size=64, lr=0.5, target_kl=0.01, anneal_lr=True)
    metrics = ppo_update(batch, evaluate, opt, cfg, progress=0.5)
    assert metrics["early_stop"] == 1.0
    assert metrics["n_updates"] < 50 * 4
    assert metrics["lr"] == pytest.approx(0.25)


def test_ppo_update_raises_on_non_finite_loss_before_stepping():
    logits, batch, evaluate, opt = _regression_problem()
    batch["returns"] = batch["returns"].clone()
    batch["returns"][0] = float("nan")
    before = logits.detach().clone()
    with pytest.raises(FloatingPointError, match="non-finite"):
        ppo_update(batch, evaluate, opt, PPOConfig(minibatch_size=256, normalize_advantages="off"))
    torch.testing.assert_close(logits.detach(), before)


def _token_problem(seed: int = 0, n: int = 8, t: int = 5):
    """A [n, t] padded token batch of a per-position softmax policy over 3 actions."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.nn.Parameter(torch.randn(n, t, 3, generator=gen))
    values = torch.nn.Parameter(torch.zeros(n, t))
    actions = torch.randint(0, 3, (n, t), generator=gen)
    lengths = torch.randint(1, t + 1, (n,), generator=gen)
    mask = (torch.arange(t)[None, :] < lengths[:, None]).float()
    old_logp = torch.log_softmax(logits.detach(), -1).gather(-1, actions[..., None])[..., 0]
    batch = {
        "idx": torch.arange(n),
        "actions": actions,
        "logprobs": old_logp - 0.1 * torch.randn(n, t, generator=gen),
        "ref_logprobs": old_logp + 0.1 * torch.randn(n, t, generator=gen),
        "values": torch.randn(n, t, generator=gen),
        "advantages": torch.randn(n, t, generator=gen) * mask,
        "returns": torch.randn(n, t, generator=gen),
        "mask": mask,
    }

    def evaluate(mb):
        logp_all = torch.log_softmax(logits[mb["idx"]], -1)
        logp = logp_all.gather(-1, mb["actions"][..., None])[..., 0]
        entropy = -(logp_all.exp() * logp_all).sum(-1)
        return Evaluation(logp, entropy, values[mb["idx"]])

    return [logits, values], batch, evaluate


@pytest.mark.parametrize("norm", ["minibatch", "batch", "off"])
@pytest.mark.parametrize("aggregation", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum"])
def test_gradient_accumulation_is_one_big_step(norm, aggregation):
    """Micro-batches of 1 to 8 sequences of unequal length give the step of one minibatch of 8."""
    results = []
    for accum in (1, 2, 8):
        params, batch, evaluate = _token_problem()
        opt = torch.optim.SGD(params, lr=0.1)
        cfg = PPOConfig(
            n_epochs=1,
            minibatch_size=8,
            grad_accum_steps=accum,
            normalize_advantages=norm,
            loss_aggregation=aggregation,
            clip_vf=0.2,
            ent_coef=0.01,
            kl_coef=0.05,
            max_grad_norm=None,
        )
        metrics = ppo_update(batch, evaluate, opt, cfg, generator=torch.Generator().manual_seed(0))
        results.append(([p.detach().clone() for p in params], metrics))
    (ref_params, ref_metrics), *others = results
    for got_params, metrics in others:
        for a, b in zip(ref_params, got_params, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        for key in ("policy_loss", "value_loss", "entropy", "kl", "approx_kl", "clipfrac"):
            assert metrics[key] == pytest.approx(ref_metrics[key], rel=1e-5, abs=1e-7), key
    assert not torch.equal(ref_params[0], _token_problem()[0][0].detach())  # it did move


def test_loss_weights_by_hand():
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0], [10.0, 100.0, 100.0, 100.0]])
    token_mean = (x * loss_weights(mask, "token_mean")).sum()
    assert token_mean.item() == pytest.approx((1 + 2 + 3 + 10) / 4)
    seq_mean = (x * loss_weights(mask, "seq_mean_token_mean")).sum()
    assert seq_mean.item() == pytest.approx(((1 + 2 + 3) / 3 + 10 / 1) / 2)
    dr_grpo = (x * loss_weights(mask, "seq_mean_token_sum")).sum()
    assert dr_grpo.item() == pytest.approx((6 / 4 + 10 / 4) / 2)  # C = padded length 4
    dr_grpo_c = (x * loss_weights(mask, "seq_mean_token_sum", norm_constant=16)).sum()
    assert dr_grpo_c.item() == pytest.approx((6 / 16 + 10 / 16) / 2)
    flat = torch.ones(4)  # classic: one position per sample, every aggregation is the mean
    for kind in ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum"):
        torch.testing.assert_close(loss_weights(flat, kind), torch.full((4,), 0.25))
    with pytest.raises(ValueError, match="aggregation"):
        loss_weights(mask, "sum")


def test_critic_free_update_moves_the_policy_without_a_value_loss():
    logits, batch, evaluate, opt = _regression_problem()
    del batch["values"], batch["returns"]

    def actor_only(mb):
        ev = evaluate(mb)
        return Evaluation(ev.logprobs, ev.entropy)

    metrics = ppo_update(batch, actor_only, opt, PPOConfig(n_epochs=4, minibatch_size=64, lr=0.05))
    assert torch.softmax(logits, -1)[1] > 0.6
    assert "value_loss" not in metrics and "explained_variance" not in metrics


def test_kl_in_the_loss_pulls_towards_the_reference():
    """With zero advantages, only kl_coef * k3 KL(pi || ref) moves the policy: towards ref."""
    finals = {}
    for kl_coef in (0.0, 1.0):
        logits, batch, evaluate, opt = _regression_problem()
        ref = torch.log_softmax(torch.tensor([2.0, -2.0]), -1)
        batch = {k: v for k, v in batch.items() if k not in ("values", "returns")}
        batch["advantages"] = torch.zeros(256)
        batch["ref_logprobs"] = ref[batch["actions"]]

        def actor_only(mb, evaluate=evaluate):
            ev = evaluate(mb)
            return Evaluation(ev.logprobs, ev.entropy)

        cfg = PPOConfig(n_epochs=4, minibatch_size=64, lr=0.05, kl_coef=kl_coef)
        metrics = ppo_update(batch, actor_only, opt, cfg)
        finals[kl_coef] = torch.softmax(logits.detach(), -1)[0].item()
        assert ("kl" in metrics) == (kl_coef > 0)
    assert finals[0.0] == pytest.approx(0.5)
    assert finals[1.0] > 0.6
    with pytest.raises(KeyError, match="ref_logprobs"):
        _, batch, evaluate, opt = _regression_problem()
        ppo_update(batch, evaluate, opt, PPOConfig(minibatch_size=64, kl_coef=0.1))


def brute_force_group_advantages(scores, g, baseline, scale, eps):
    out = []
    for i, r in enumerate(scores):
        group = scores[i // g * g : i // g * g + g]
        others = [s for j, s in enumerate(group) if j != i % g]
        base = sum(group) / g if baseline == "mean" else sum(others) / len(others)
        adv = r - base
        if scale == "std":
            mean = sum(group) / g
            adv /= math.sqrt(sum((s - mean) ** 2 for s in group) / (g - 1)) + eps
        out.append(adv)
    return out


@settings(max_examples=60, deadline=None)
@given(
    g=st.integers(2, 6),
    n_groups=st.integers(1, 4),
    baseline=st.sampled_from(["mean", "leave_one_out"]),
    scale=st.sampled_from(["std", "none"]),
    data=st.data(),
)
def test_group_advantages_against_brute_force(g, n_groups, baseline, scale, data):
    scores = data.draw(
        st.lists(st.floats(-10, 10, width=32), min_size=g * n_groups, max_size=g * n_groups)
    )
    got = group_advantages(torch.tensor(scores, dtype=torch.float64), g, baseline, scale, 1e-4)
    want = brute_force_group_advantages(scores, g, baseline, scale, 1e-4)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-9, atol=1e-9)


def test_group_advantages_errors():
    with pytest.raises(ValueError, match="do not split into groups of 4"):
        group_advantages(torch.zeros(6), 4)
    with pytest.raises(ValueError, match="num_generations >= 2"):
        group_advantages(torch.zeros(6), 1, "leave_one_out", "none")
    torch.testing.assert_close(group_advantages(torch.ones(3), 1, "mean", "none"), torch.zeros(3))


def test_masked_whiten_over_processes_uses_global_statistics():
    """Two processes holding the same shard: reduce_sum doubles every sum, as an all-reduce
    would; each shard must come out as it does in the whitened concatenation."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 5, generator=gen)
    mask = (torch.rand(4, 5, generator=gen) > 0.3).float()
    whole = masked_whiten(torch.cat([x, x]), torch.cat([mask, mask]))
    shard = masked_whiten(x, mask, reduce_sum=lambda t: 2 * t)
    torch.testing.assert_close(shard, whole[:4])
    assert not torch.allclose(shard, masked_whiten(x, mask))  # Bessel's n differs: 2n, not n
