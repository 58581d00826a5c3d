"""The PPO loss terms as masked, pure functions.

Every loss term takes an optional `mask` (1 = real position, 0 = padding) so that the same code
averages over a flat batch of env steps (mask None) and over the real tokens of padded responses,
or explicit `weights` (`loss_weights`) that choose the aggregation and make micro-batches add up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor


def masked_mean(x: Tensor, mask: Tensor | None = None, dim: int | None = None) -> Tensor:
    """Mean of `x` over the positions where `mask` is 1 (all positions if `mask` is None)."""
    if mask is None:
        return x.mean() if dim is None else x.mean(dim)
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_var(x: Tensor, mask: Tensor | None = None, unbiased: bool = True) -> Tensor:
    """Variance of `x` over the real positions, with Bessel's correction by default."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = x.numel() if mask is None else mask.sum()
        var = var * n / max(n - 1, 1)
    return var


def masked_whiten(
    x: Tensor,
    mask: Tensor | None = None,
    shift_mean: bool = True,
    eps: float = 1e-8,
    reduce_sum: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Advantage normalisation: (x - mean) / (std + eps) over real positions; padding stays 0.

    `reduce_sum` (a sum over processes) makes mean and std those of the global batch.
    """
    m = torch.ones_like(x) if mask is None else mask.to(x.dtype)
    reduce = reduce_sum or (lambda t: t)
    total, n = reduce(torch.stack([(x * m).sum(), m.sum()]))
    mean = total / n.clamp(min=1.0)
    var = reduce(((x - mean) ** 2 * m).sum()) / n.clamp(min=1.0)
    var = var * n / (n - 1).clamp(min=1.0)  # Bessel's correction
    whitened = (x - mean) / (var.sqrt() + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened if mask is None else whitened * m


LossAggregation = Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum"]


def loss_weights(
    mask: Tensor,
    aggregation: LossAggregation = "token_mean",
    norm_constant: float | None = None,
) -> Tensor:
    """Per-position weights w such that a loss term is sum(w * x): how positions are averaged.

    With m the mask [B, T] of real positions ([B] = one position per sample, as in classic):

        token_mean          w = m / sum(m)               every real token counts once (PPO, DAPO)
        seq_mean_token_mean w = m / (B * len_b)          every sequence counts once (GRPO)
        seq_mean_token_sum  w = m / (B * C)              Dr. GRPO; C = norm_constant, default T

    The weights of a minibatch, sliced into micro-batches, make gradient accumulation the same
    update as one step on the whole minibatch.
    """
    m = mask.to(torch.float32) if not mask.is_floating_point() else mask
    m = m[:, None] if m.dim() == 1 else m
    n_seq = m.shape[0]
    if aggregation == "token_mean":
        w = m / m.sum().clamp(min=1.0)
    elif aggregation == "seq_mean_token_mean":
        w = m / (n_seq * m.sum(1, keepdim=True).clamp(min=1.0))
    elif aggregation == "seq_mean_token_sum":
        w = m / (n_seq * (norm_constant if norm_constant is not None else m.shape[1]))
    else:
        raise ValueError(
            "loss aggregation must be 'token_mean', 'seq_mean_token_mean' or "
            f"'seq_mean_token_sum', got {aggregation!r}"
        )
    return w.reshape(mask.shape)


Reduce = Callable[[Tensor], Tensor]


def per_agent_sum(x: Tensor) -> Tensor:
    """The `reduce` of K independent agents' terms [K, ...]: one sum per agent, shape [K]."""
    return x.flatten(1).sum(1)


def _weights(x: Tensor, mask: Tensor | None, weights: Tensor | None) -> Tensor:
    """`weights` if given, else the token mean over `mask` (all positions if None)."""
    if weights is not None:
        return weights
    return loss_weights(torch.ones_like(x) if mask is None else mask).to(x.dtype)


def clipped_surrogate_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    clip_eps: float,
    mask: Tensor | None = None,
    weights: Tensor | None = None,
    reduce: Reduce = torch.sum,
    clip_eps_high: float | None = None,
    log_ratio: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO's clipped surrogate, as a loss to minimise:

        r = pi_new(a|s) / pi_old(a|s)
        L = -E[min(r A, clip(r, 1 - eps, 1 + eps_high) A)]      eps_high = eps unless given

    (`clip_eps_high` > eps is DAPO's clip-higher.) Outside the trust region on the side where
    clipping binds the gradient is exactly zero. `log_ratio`, when given, is log r itself (GSPO's
    sequence-level ratio, `sequence_log_ratio`), in place of logprobs - old_logprobs. Also returns
    `clipfrac` (share of positions where the clip binds), `approx_kl` (k3 estimate of
    KL(old || new)) and `ratio` (mean r), all detached. `reduce` sums the weighted terms: over
    all positions, or per agent (`per_agent_sum`).
    """
    high = clip_eps if clip_eps_high is None else clip_eps_high
    if log_ratio is None:
        log_ratio = logprobs - old_logprobs
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + high)
    w = _weights(ratio, mask, weights)
    loss = reduce(torch.maximum(unclipped, clipped) * w)
    with torch.no_grad():
        outside = (ratio < 1.0 - clip_eps) | (ratio > 1.0 + high)
        stats = {
            "clipfrac": reduce(outside.to(ratio.dtype) * w),
            "approx_kl": reduce(((ratio - 1.0) - log_ratio) * w),
            "ratio": reduce(ratio * w),
        }
    return loss, stats


def sequence_log_ratio(logprobs: Tensor, old_logprobs: Tensor, mask: Tensor) -> Tensor:
    """GSPO's (Zheng et al. 2025) sequence-level log importance ratio, on every token of the
    sequence: log s_i = (1 / |y_i|) sum_t (log pi(y_t) - log pi_old(y_t)) over its real tokens
    (trl's `importance_sampling_level="sequence"`). [B, T] in, [B, T] out."""
    real = mask.to(logprobs.dtype)
    per_seq = ((logprobs - old_logprobs) * real).sum(-1) / real.sum(-1).clamp(min=1.0)
    return per_seq[..., None].expand_as(logprobs)


def value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    clip_eps: float | None = None,
    mask: Tensor | None = None,
    weights: Tensor | None = None,
    reduce: Reduce = torch.sum,
) -> Tensor:
    """Squared-error value loss, 0.5 * (V - R)^2, optionally clipped around the old values:

    V_clip = V_old + clip(V - V_old, -eps, eps)
    L_V    = 0.5 * E[max((V - R)^2, (V_clip - R)^2)]
    """
    err = (values - returns) ** 2
    if clip_eps is not None:
        v_clipped = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
        err = torch.maximum(err, (v_clipped - returns) ** 2)
    return 0.5 * reduce(err * _weights(err, mask, weights))


def entropy_bonus(
    entropy: Tensor,
    mask: Tensor | None = None,
    weights: Tensor | None = None,
    reduce: Reduce = torch.sum,
) -> Tensor:
    """Mean policy entropy H(pi(.|s)) over real positions; the loss subtracts ent_coef times it."""
    return reduce(entropy * _weights(entropy, mask, weights))


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor | None = None) -> float:
    """1 - Var[R - V] / Var[R]: 1 = perfect critic, 0 = a constant guess, NaN if Var[R]=0."""
    var_returns = masked_var(returns, mask)
    if var_returns.item() == 0.0:
        return float("nan")
    return float(1.0 - masked_var(returns - values, mask) / var_returns)
