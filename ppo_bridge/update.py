"""The PPO update: n_epochs passes over the batch in shuffled minibatches.

The adapter supplies the batch (a dict of tensors whose first dimension is the sample: an env step
for classic, a response for lm) and `evaluate(minibatch) -> Evaluation`, which re-runs its networks
on the minibatch. Everything else, the losses, advantage normalisation, gradient clipping, the
learning-rate schedule and the target-KL early stop, happens here.

The same loop serves the critic-free methods (GRPO, RLOO, REINFORCE++): a batch without `returns`
has no value loss, and `cfg.kl_coef` > 0 adds the KL to a reference (`ref_logprobs`) to the loss.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import torch
from torch import Tensor

from ppo_bridge.config import PPOConfig
from ppo_bridge.kl import kl_estimate
from ppo_bridge.losses import (
    Reduce,
    clipped_surrogate_loss,
    entropy_bonus,
    explained_variance,
    loss_weights,
    masked_whiten,
    per_agent_sum,
    sequence_log_ratio,
    value_loss,
)


@dataclass
class Evaluation:
    """What the adapter's networks say about a minibatch under the current parameters."""

    logprobs: Tensor  # log pi(a|s), shaped like batch["logprobs"]
    entropy: Tensor  # H(pi(.|s)), same shape
    values: Tensor | None = None  # V(s), same shape; None for a critic-free method


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


def check_batch(batch: Mapping[str, Tensor], cfg: PPOConfig) -> None:
    """KeyError naming what the batch lacks for this config."""
    required = ["logprobs", "advantages"]
    if "returns" in batch:
        required.append("values")  # with a critic: the old values, for value clipping
    if cfg.kl_coef > 0:
        required.append("ref_logprobs")
    missing = [k for k in required if k not in batch]
    if missing:
        raise KeyError(f"ppo_update: the batch lacks {missing}")


def ppo_update(
    batch: Mapping[str, Tensor],
    evaluate: Callable[[dict[str, Tensor]], Evaluation],
    optimizer: torch.optim.Optimizer,
    cfg: PPOConfig,
    *,
    progress: float = 0.0,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    backend: Backend | None = None,
    n_agents: int | None = None,
) -> dict[str, float] | list[dict[str, float]]:
    """Run the PPO epochs on `batch` and return the mean metrics of the minibatch steps taken.

    `batch` holds at least logprobs and advantages (old, detached), `values` and `returns` for a
    critic, `ref_logprobs` when `cfg.kl_coef` > 0, optionally a `mask` of real positions, plus
    whatever `evaluate` needs. `progress` in [0, 1] is the share of training done, for the linear
    learning-rate decay. Each minibatch is whitened and weighted as a whole before it is split
    into `grad_accum_steps` micro-batches, so accumulation is the same step as one big minibatch.
    Raises FloatingPointError on a non-finite loss, before the optimizer step, so no bad parameters
    are ever written.

    `n_agents` = K runs K independent updates as one (classic's many seeds): every batch tensor
    is [K, n, ...], `evaluate` answers [K, mb] tensors, the optimizer's parameters are stacked
    [K, ...] (Adam is elementwise: K independent Adams), `generator` is K generators (one
    minibatch order each), and whitening, loss weights, gradient clipping and the metrics (a list
    of K dicts) are per agent. The loss is the sum of the K agents' losses, so each agent's
    gradient is its own loss's. target_kl is refused: a stopped agent's Adam would still move.
    """
    check_batch(batch, cfg)
    agents = n_agents is not None
    if agents and cfg.target_kl is not None:
        raise ValueError("target_kl stops the epochs of one run; it is not supported for many")
    backend = backend or LocalBackend()
    n = batch["logprobs"].shape[1 if agents else 0]
    cfg.check_batch_size(n)
    mask = batch.get("mask")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    generators = list(generator) if agents else [generator]
    reduce = per_agent_sum if agents else torch.sum

    def per_agent(fn: Callable[..., Tensor], *xs: Tensor | None) -> Tensor:
        """`fn` on each agent's slice, stacked (or on the batch of a single run)."""
        if not agents:
            return fn(*xs)
        return torch.stack(
            [fn(*(None if x is None else x[k] for x in xs)) for k in range(n_agents)]
        )

    lr = cfg.lr * (1.0 - progress) if cfg.anneal_lr else cfg.lr
    for group in optimizer.param_groups:
        group["lr"] = lr

    data = dict(batch)
    if cfg.normalize_advantages == "batch":
        data["advantages"] = per_agent(masked_whiten, data["advantages"], mask)
    micro = cfg.minibatch_size // cfg.grad_accum_steps
    sums: dict[str, Tensor] = {}
    n_updates, early_stop = 0, False

    for epoch in range(cfg.n_epochs):
        orders = torch.stack([torch.randperm(n, generator=g, device="cpu") for g in generators])
        for start in range(0, n, cfg.minibatch_size):
            mb = _take(data, orders[:, start : start + cfg.minibatch_size], agents)
            mb_mask = mb.get("mask")
            if cfg.normalize_advantages == "minibatch":
                mb["advantages"] = per_agent(masked_whiten, mb["advantages"], mb_mask)
            real = mb_mask if mb_mask is not None else torch.ones_like(mb["advantages"])
            weights = per_agent(
                partial(
                    loss_weights,
                    aggregation=cfg.loss_aggregation,
                    norm_constant=cfg.loss_norm_constant,
                ),
                real,
            )
            mb["weights"] = weights.to(mb["advantages"].dtype)
            optimizer.zero_grad(set_to_none=True)
            step_stats: dict[str, Tensor] = {}
            for m in range(0, cfg.minibatch_size, micro):
                part = {
                    k: v[:, m : m + micro] if agents else v[m : m + micro] for k, v in mb.items()
                }
                loss, stats = _minibatch_loss(part, evaluate(part), cfg, reduce)
                if not torch.isfinite(loss).all():
                    raise FloatingPointError(
                        f"non-finite PPO loss at epoch {epoch}, samples {start + m}.."
                        f"{start + m + micro} (policy {stats['policy_loss'].tolist()}, value "
                        f"{stats.get('value_loss', torch.zeros(())).tolist()}): lower lr or check "
                        "rewards/observations for inf/NaN"
                    )
                backend.backward(loss.sum())
                for k, v in stats.items():  # weighted sums: the micro-batches add up
                    step_stats[k] = step_stats.get(k, 0.0) + v
            if cfg.target_kl is not None:
                approx_kl = backend.reduce(step_stats["approx_kl"].reshape(1), "mean").item()
                if approx_kl > 1.5 * cfg.target_kl:
                    optimizer.zero_grad(set_to_none=True)
                    early_stop = True
                    break
            if cfg.max_grad_norm is not None:
                if agents:
                    clip_grad_norm_per_agent_(params, cfg.max_grad_norm)
                else:
                    backend.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            n_updates += 1
            for k, v in step_stats.items():
                sums[k] = sums.get(k, 0.0) + v
        if early_stop:
            break

    extra = dict(n_updates=float(n_updates), early_stop=float(early_stop), lr=lr)
    means = {k: (v / max(n_updates, 1)).reshape(-1).tolist() for k, v in sums.items()}
    results = []
    for i in range(n_agents or 1):
        metrics = {k: v[i] for k, v in means.items()}
        if "returns" in batch:
            values, returns = batch["values"], batch["returns"]
            if agents:
                values, returns = values[i], returns[i]
            metrics["explained_variance"] = explained_variance(values, returns, mask)
        results.append({**metrics, **extra})
    return results if agents else results[0]


def _take(data: dict[str, Tensor], idx: Tensor, agents: bool) -> dict[str, Tensor]:
    """The minibatch `idx` ([K, mb] positions, one row per agent; K = 1 for a single run)."""
    if not agents:
        return {k: v[idx[0].to(v.device)] for k, v in data.items()}
    n_agents, n = idx.shape[0], next(iter(data.values())).shape[1]
    flat = (idx + n * torch.arange(n_agents)[:, None]).reshape(-1)  # one gather over K * n rows
    return {
        k: v.reshape(n_agents * n, *v.shape[2:])[flat.to(v.device)].reshape(
            *idx.shape, *v.shape[2:]
        )
        for k, v in data.items()
    }


def clip_grad_norm_per_agent_(params: Sequence[Tensor], max_norm: float) -> Tensor:
    """Gradient clipping of K agents whose parameters are stacked [K, ...]: each agent's gradient
    g_k is scaled by min(1, max_norm / (||g_k|| + 1e-6)), its norm over its own slices (torch's
    clip_grad_norm_ formula, per agent). Returns the K norms."""
    grads = [p.grad for p in params if p.grad is not None]
    # added tensor by tensor, not stacked and summed: the same order for any K, so agent k's
    # norm is the same bits as when it trains alone
    norms = functools.reduce(torch.add, [g.flatten(1).pow(2).sum(1) for g in grads]).sqrt()
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))
    return norms


def _minibatch_loss(
    mb: dict[str, Tensor], ev: Evaluation, cfg: PPOConfig, reduce: Reduce = torch.sum
) -> tuple[Tensor, dict[str, Tensor]]:
    """loss = clipped surrogate + vf_coef * value loss - ent_coef * entropy + kl_coef * KL, each
    the sum (`reduce`: per agent for many) of its per-position terms times `mb["weights"]`; and
    detached stats, weighted alike."""
    w = mb["weights"]
    log_ratio = None
    if cfg.importance_sampling_level == "sequence":
        if "mask" not in mb:
            raise ValueError("importance_sampling_level='sequence' needs the batch's token mask")
        log_ratio = sequence_log_ratio(ev.logprobs, mb["logprobs"], mb["mask"])
    pg_loss, pg_stats = clipped_surrogate_loss(
        ev.logprobs,
        mb["logprobs"],
        mb["advantages"],
        cfg.clip_eps,
        weights=w,
        reduce=reduce,
        clip_eps_high=cfg.clip_eps_high,
        log_ratio=log_ratio,
    )
    entropy = entropy_bonus(ev.entropy, weights=w, reduce=reduce)
    loss = pg_loss - cfg.ent_coef * entropy
    stats = {"policy_loss": pg_loss.detach(), "entropy": entropy.detach(), **pg_stats}
    if "returns" in mb:
        if ev.values is None:
            raise ValueError("the batch has returns but evaluate() gave no values")
        v_loss = value_loss(
            ev.values, mb["values"], mb["returns"], cfg.clip_vf, weights=w, reduce=reduce
        )
        loss = loss + cfg.vf_coef * v_loss
        stats["value_loss"] = v_loss.detach()
        if cfg.clip_vf is not None:
            clipped = ((ev.values - mb["values"]).abs() > cfg.clip_vf).to(w.dtype)
            stats["value_clipfrac"] = reduce(clipped * w).detach()
    if cfg.kl_coef > 0:
        kl = reduce(kl_estimate(ev.logprobs, mb["ref_logprobs"], "k3") * w)
        loss = loss + cfg.kl_coef * kl
        stats["kl"] = kl.detach()
    stats["loss"] = loss.detach()
    return loss, stats
