"""Direct preference optimisation on sequence log-probs: DPO (Rafailov et al. 2023), its
conservative variant cDPO (label smoothing), and IPO (Azar et al. 2023).

With the implicit reward of a response beta * (log pi(y|x) - log pi_ref(y|x)), a pair's margin is
h = (pc - rc) - (pr - rr), where pc, pr are the policy's log-probs of the chosen and the rejected
response and rc, rr the reference's, and the per-pair losses are

    sigmoid:  -(1 - eps) * log sigmoid(beta * h) - eps * log sigmoid(-beta * h)   (eps = 0: DPO)
    ipo:      (h - 1 / (2 * beta))^2

The loss reads whatever log-probs it is given. trl's DPOTrainer (1.16) passes summed token
log-probs for sigmoid and, for ipo, divides each side's log-ratio by its completion length
(per-token means, the form the IPO authors used): pass `logps / n_tokens` to get trl's IPO.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

DPOLoss = Literal["sigmoid", "ipo"]


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
    kind: DPOLoss = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The mean preference loss over [B] pairs, and detached stats with trl's names.

    `label_smoothing` eps (cDPO, sigmoid only) is the assumed probability that a label is flipped,
    in [0, 0.5). Stats: rewards/chosen and rewards/rejected (means of beta * log-ratio),
    rewards/accuracies (fraction with chosen reward > rejected reward), rewards/margins (mean of
    their difference). trl's sigmoid ignores label_smoothing (it keeps eps for its "robust" and
    "exo_pair" losses); the cDPO form here is trl's earlier sigmoid loss.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if not 0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    h = chosen_logratios - rejected_logratios
    if kind == "sigmoid":
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * h)
        if label_smoothing:
            losses = losses - label_smoothing * F.logsigmoid(-beta * h)
    elif kind == "ipo":
        if label_smoothing:
            raise ValueError(
                "label_smoothing applies to the sigmoid loss only: set it to 0 for ipo"
            )
        losses = (h - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"kind must be 'sigmoid' or 'ipo', got {kind!r}")
    with torch.no_grad():
        chosen_rewards = beta * chosen_logratios
        rejected_rewards = beta * rejected_logratios
        stats = {
            "rewards/chosen": chosen_rewards.mean(),
            "rewards/rejected": rejected_rewards.mean(),
            "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean(),
            "rewards/margins": (chosen_rewards - rejected_rewards).mean(),
        }
    return losses.mean(), stats
