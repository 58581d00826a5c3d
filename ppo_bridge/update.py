"""The PPO update: n_epochs passes over the batch in shuffled minibatches.

The adapter supplies the batch (a dict of tensors whose first dimension is the sample: an env step
for classic, a response for lm) and `evaluate(minibatch) -> Evaluation`, which re-runs its networks
on the minibatch. Everything else, the losses, advantage normalisation, gradient clipping, the
learning-rate schedule and the target-KL early stop, happens here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from ppo_bridge.config import PPOConfig
from ppo_bridge.losses import (
    clipped_surrogate_loss,
    entropy_bonus,
    explained_variance,
    masked_mean,
    masked_whiten,
    value_loss,
)

REQUIRED_KEYS = ("logprobs", "values", "advantages", "returns")


@dataclass
class Evaluation:
    """What the adapter's networks say about a minibatch under the current parameters."""

    logprobs: Tensor  # log pi(a|s), shaped like batch["logprobs"]
    entropy: Tensor  # H(pi(.|s)), same shape
    values: Tensor  # V(s), same shape


class Backend(Protocol):
    """The three calls that differ between one process and `accelerate` (whose Accelerator fits)."""

    def backward(self, loss: Tensor) -> None: ...

    def clip_grad_norm_(self, parameters: Iterable[Tensor], max_norm: float) -> Tensor: ...

    def reduce(self, tensor: Tensor, reduction: str = "mean") -> Tensor: ...


class LocalBackend:
    """Single process: plain autograd and torch's gradient clipping."""

    def backward(self, loss: Tensor) -> None:
        loss.backward()

    def clip_grad_norm_(self, parameters: Iterable[Tensor], max_norm: float) -> Tensor:
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)

    def reduce(self, tensor: Tensor, reduction: str = "mean") -> Tensor:
        return tensor


def ppo_update(
    batch: Mapping[str, Tensor],
    evaluate: Callable[[dict[str, Tensor]], Evaluation],
    optimizer: torch.optim.Optimizer,
    cfg: PPOConfig,
    *,
    progress: float = 0.0,
    generator: torch.Generator | None = None,
    backend: Backend | None = None,
) -> dict[str, float]:
    """Run the PPO epochs on `batch` and return the mean metrics of the minibatch steps taken.

    `batch` holds at least logprobs, values, advantages and returns (old, detached), optionally a
    `mask` of real positions, plus whatever `evaluate` needs. `progress` in [0, 1] is the share of
    training done, for the linear learning-rate decay. Raises FloatingPointError on a non-finite
    loss, before the optimizer step, so no bad parameters are ever written.
    """
    missing = [k for k in REQUIRED_KEYS if k not in batch]
    if missing:
        raise KeyError(f"ppo_update: the batch lacks {missing}")
    backend = backend or LocalBackend()
    n = batch["logprobs"].shape[0]
    cfg.check_batch_size(n)
    mask = batch.get("mask")
    params = [p for group in optimizer.param_groups for p in group["params"]]

    lr = cfg.lr * (1.0 - progress) if cfg.anneal_lr else cfg.lr
    for group in optimizer.param_groups:
        group["lr"] = lr

    data = dict(batch)
    if cfg.normalize_advantages == "batch":
        data["advantages"] = masked_whiten(data["advantages"], mask)
    micro = cfg.minibatch_size // cfg.grad_accum_steps
    sums: dict[str, float] = {}
    n_updates, early_stop = 0, False

    for epoch in range(cfg.n_epochs):
        order = torch.randperm(n, generator=generator, device="cpu")
        for start in range(0, n, cfg.minibatch_size):
            optimizer.zero_grad(set_to_none=True)
            step_stats: dict[str, Tensor] = {}
            for m in range(start, start + cfg.minibatch_size, micro):
                idx = order[m : m + micro]
                mb = {k: v[idx.to(v.device)] for k, v in data.items()}
                loss, stats = _minibatch_loss(mb, evaluate(mb), cfg)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"non-finite PPO loss at epoch {epoch}, samples {m}..{m + micro} "
                        f"(policy {stats['policy_loss']:.4g}, value {stats['value_loss']:.4g}): "
                        "lower lr or check rewards/observations for inf/NaN"
                    )
                backend.backward(loss / cfg.grad_accum_steps)
                for k, v in stats.items():
                    step_stats[k] = step_stats.get(k, 0.0) + v / cfg.grad_accum_steps
            approx_kl = backend.reduce(step_stats["approx_kl"].reshape(1), "mean").item()
            if cfg.target_kl is not None and approx_kl > 1.5 * cfg.target_kl:
                optimizer.zero_grad(set_to_none=True)
                early_stop = True
                break
            if cfg.max_grad_norm is not None:
                backend.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            n_updates += 1
            for k, v in step_stats.items():
                sums[k] = sums.get(k, 0.0) + float(v)
        if early_stop:
            break

    metrics = {k: v / max(n_updates, 1) for k, v in sums.items()}
    metrics.update(
        explained_variance=explained_variance(batch["values"], batch["returns"], mask),
        n_updates=float(n_updates),
        early_stop=float(early_stop),
        lr=lr,
    )
    return metrics


def _minibatch_loss(
    mb: dict[str, Tensor], ev: Evaluation, cfg: PPOConfig
) -> tuple[Tensor, dict[str, Tensor]]:
    """loss = clipped surrogate + vf_coef * value loss - ent_coef * entropy, and detached stats."""
    mask = mb.get("mask")
    adv = mb["advantages"]
    if cfg.normalize_advantages == "minibatch":
        adv = masked_whiten(adv, mask)
    pg_loss, pg_stats = clipped_surrogate_loss(ev.logprobs, mb["logprobs"], adv, cfg.clip_eps, mask)
    v_loss = value_loss(ev.values, mb["values"], mb["returns"], cfg.clip_vf, mask)
    entropy = entropy_bonus(ev.entropy, mask)
    loss = pg_loss + cfg.vf_coef * v_loss - cfg.ent_coef * entropy
    stats = {
        "policy_loss": pg_loss.detach(),
        "value_loss": v_loss.detach(),
        "entropy": entropy.detach(),
        "loss": loss.detach(),
        **pg_stats,
    }
    if cfg.clip_vf is not None:
        stats["value_clipfrac"] = masked_mean(
            ((ev.values - mb["values"]).abs() > cfg.clip_vf).to(adv.dtype), mask
        ).detach()
    return loss, stats
