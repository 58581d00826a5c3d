"""The estimator table: every registered name against its definition, written out here by hand."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lm.ppo import ALGO_PRESETS, LMPPOConfig
from ppo_bridge import ESTIMATORS, EstimatorArgs, get_estimator


def lambda_returns(r: list[float], v: list[float], gamma: float, lam: float) -> list[float]:
    """GAE of one sequence from its definition: A_t = sum_k (gamma lam)^k delta_{t+k}, with the
    sequence terminating after its last token (V after it = 0)."""
    n = len(r)
    deltas = [r[t] + gamma * (v[t + 1] if t + 1 < n else 0.0) - v[t] for t in range(n)]
    return [sum((gamma * lam) ** k * deltas[t + k] for k in range(n - t)) for t in range(n)]


def reference(name: str, rewards, mask, values, args: EstimatorArgs) -> torch.Tensor:
    """Each estimator's advantages, one sequence (or group) at a time, from the formulas."""
    out = torch.zeros_like(rewards)
    lengths = mask.sum(1).long().tolist()
    totals = [float(rewards[i, :n].sum()) for i, n in enumerate(lengths)]
    g = args.group_size
    for i, n in enumerate(lengths):
        r = rewards[i, :n].tolist()
        group = totals[i // g * g : i // g * g + g]
        mean = sum(group) / g
        if name == "ppo":
            out[i, :n] = torch.tensor(
                lambda_returns(r, values[i, :n].tolist(), args.gamma, args.lam)
            )
        elif name == "grpo":
            std = (sum((x - mean) ** 2 for x in group) / (g - 1)) ** 0.5  # Bessel's, as trl
            out[i, :n] = (totals[i] - mean) / (std + 1e-4 if args.scale_rewards else 1.0)
        elif name == "rloo":
            others = (sum(group) - totals[i]) / (g - 1)
            std = (sum((x - mean) ** 2 for x in group) / (g - 1)) ** 0.5
            out[i, :n] = (totals[i] - others) / (std + 1e-4 if args.scale_rewards else 1.0)
        elif name == "reinforce_pp":
            out[i, :n] = torch.tensor(
                [sum(args.gamma**k * r[t + k] for k in range(n - t)) for t in range(n)]
            )
        elif name == "reinforce_pp_baseline":
            starts = [
                sum(args.gamma**k * float(rewards[j, k]) for k in range(lengths[j]))
                for j in range(i // g * g, i // g * g + g)
            ]
            out[i, :n] = (
                torch.tensor(
                    [sum(args.gamma**k * r[t + k] for k in range(n - t)) for t in range(n)]
                )
                - sum(starts) / g
            )
    if name in ("reinforce_pp", "reinforce_pp_baseline"):  # whitened over every real token
        real = out[mask.bool()]
        out = torch.where(mask.bool(), (out - real.mean()) / (real.std() + 1e-8), 0.0)
    return out


REFERENCES = {"ppo", "grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline"}


def test_every_registered_estimator_has_a_reference_here() -> None:
    assert set(ESTIMATORS) == REFERENCES  # a new estimator needs its definition in this file


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(sorted(REFERENCES)),
    groups=st.integers(1, 3),
    group_size=st.integers(2, 4),
    width=st.integers(1, 6),
    gamma=st.floats(0.5, 1.0),
    lam=st.floats(0.0, 1.0),
    scale=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_estimator_matches_its_definition(
    name: str,
    groups: int,
    group_size: int,
    width: int,
    gamma: float,
    lam: float,
    scale: bool,
    seed: int,
) -> None:
    gen = torch.Generator().manual_seed(seed)
    b = groups * group_size
    rewards = torch.randn(b, width, generator=gen, dtype=torch.float64)
    values = torch.randn(b, width, generator=gen, dtype=torch.float64)
    lengths = torch.randint(1, width + 1, (b,), generator=gen)
    mask = (torch.arange(width)[None, :] < lengths[:, None]).double()
    rewards, values = rewards * mask, values * mask
    args = EstimatorArgs(gamma=gamma, lam=lam, group_size=group_size, scale_rewards=scale)
    estimator = get_estimator(name)
    adv, returns = estimator.advantages(rewards, mask, values if estimator.critic else None, args)
    expected = reference(name, rewards, mask, values, args)
    torch.testing.assert_close(adv * mask, expected * mask, atol=1e-6, rtol=1e-6)
    if estimator.critic:
        torch.testing.assert_close(returns, (adv + values) * mask)
    else:
        assert returns is None


def test_unknown_names_cannot_fall_through_to_another_method() -> None:
    with pytest.raises(ValueError, match="unknown algo 'ppo2': pass one of ppo, grpo, rloo"):
        get_estimator("ppo2")
    with pytest.raises(ValueError, match="unknown algo"):
        LMPPOConfig(algo="ppo2")
    with pytest.raises(ValueError, match="unknown algo"):
        LMPPOConfig.for_algo("GRPO")


def test_presets_critic_and_group_sizes_come_from_the_table() -> None:
    assert {name: dict(e.preset) for name, e in ESTIMATORS.items()} == ALGO_PRESETS
    for name, estimator in ESTIMATORS.items():
        cfg = LMPPOConfig.for_algo(name)
        assert cfg.critic == estimator.critic
        assert cfg.num_generations >= estimator.min_group_size
        assert all(getattr(cfg, k) == v for k, v in estimator.preset.items())
    with pytest.raises(ValueError, match="num_generations must be >= 2"):
        LMPPOConfig(algo="rloo", num_generations=1)


def test_clip_higher_and_the_sequence_ratio_against_their_definitions() -> None:
    """DAPO's clip-higher bounds r to [1 - eps, 1 + eps_high]; GSPO's ratio is one per sequence,
    exp(mean_t log r_t), on all of its tokens; both against the formulas by hand."""
    from ppo_bridge import clipped_surrogate_loss, sequence_log_ratio

    old = torch.zeros(2, 3, dtype=torch.float64)
    new = torch.tensor([[0.5, -0.5, 0.1], [0.3, 0.0, 9.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.float64)
    adv = torch.tensor([[1.0, -1.0, 1.0], [2.0, 2.0, 0.0]], dtype=torch.float64)
    loss, stats = clipped_surrogate_loss(new, old, adv, 0.2, mask=mask, clip_eps_high=0.28)
    r = new.exp()
    expected = -torch.minimum(r * adv, r.clamp(0.8, 1.28) * adv)
    assert loss.item() == pytest.approx(float((expected * mask).sum() / mask.sum()))
    outside = ((r < 0.8) | (r > 1.28)).double()
    assert stats["clipfrac"].item() == pytest.approx(float((outside * mask).sum() / mask.sum()))
    seq = sequence_log_ratio(new, old, mask)
    torch.testing.assert_close(seq[0], torch.full((3,), (0.5 - 0.5 + 0.1) / 3, dtype=seq.dtype))
    torch.testing.assert_close(seq[1], torch.full((3,), 0.3 / 2, dtype=seq.dtype))  # pad left out


def test_an_unknown_algo_on_the_command_line_is_one_line(tmp_path, capsys) -> None:  # noqa: ANN001
    from lm.train import main

    assert main(["--algo", "ppo2", "--world", "tiny", "--out", str(tmp_path / "run")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == f"error: unknown algo 'ppo2': pass one of {', '.join(ESTIMATORS)}"
    assert not (tmp_path / "run").exists()
