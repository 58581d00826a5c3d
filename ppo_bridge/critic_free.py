"""Advantages without a critic: group baselines (GRPO, Dr. GRPO, RLOO).

For B = prompts x group_size sampled responses with scalar scores r (consecutive rows share a
prompt), the baseline is estimated from the other responses to the same prompt:

    mean           A_i = r_i - mean_g(r)                              (Dr. GRPO; GRPO with "std")
    leave_one_out  A_i = r_i - mean_{j != i} r_j                       (RLOO, Ahmadian et al. 2024)
                       = G / (G - 1) * (r_i - mean_g(r))
    scale "std"    A_i <- A_i / (std_g(r) + eps)                       (GRPO; Bessel's std, as trl)

`ppo_bridge.estimators` registers these by name beside GAE and REINFORCE++.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

Baseline = Literal["mean", "leave_one_out"]
Scale = Literal["std", "none"]


def group_advantages(
    scores: Tensor,
    group_size: int,
    baseline: Baseline = "mean",
    scale: Scale = "std",
    eps: float = 1e-4,
) -> Tensor:
    """[B] advantages of [B] scores in consecutive groups of `group_size` (see the module doc).

    ValueError when B is not a multiple of group_size, or a group is too small for the estimator
    (leave-one-out and "std" need group_size >= 2).
    """
    if baseline not in ("mean", "leave_one_out") or scale not in ("std", "none"):
        raise ValueError(
            f"baseline must be 'mean' or 'leave_one_out' and scale 'std' or 'none', "
            f"got {baseline!r}, {scale!r}"
        )
    if group_size < 1 or scores.shape[0] % group_size != 0:
        raise ValueError(
            f"{scores.shape[0]} scores do not split into groups of {group_size}: the batch must "
            "hold whole groups (prompts x num_generations)"
        )
    if group_size < 2 and (baseline == "leave_one_out" or scale == "std"):
        raise ValueError(
            f"a group of {group_size} response has no other response to compare with: "
            f"{baseline} baseline / {scale} scale need num_generations >= 2"
        )
    groups = scores.reshape(-1, group_size)
    mean = groups.mean(1, keepdim=True)
    adv = groups - mean
    if baseline == "leave_one_out":
        adv = adv * group_size / (group_size - 1)
    if scale == "std":
        adv = adv / (groups.std(1, keepdim=True) + eps)
    return adv.reshape(scores.shape)
