"""KL estimators and KL-penalty controllers.

With log r = log pi_ref(x) - log pi(x) for x ~ pi (Schulman, "Approximating KL divergence", 2020):

    k1 = -log r                 unbiased, can be negative per sample
    k2 = 0.5 * (log r)^2        biased, low variance, >= 0
    k3 = (r - 1) - log r        unbiased, >= 0

The controllers give the coefficient beta of the per-token penalty -beta * KL (Ziegler et al. 2019).
"""

from __future__ import annotations

from typing import Literal, Protocol

import numpy as np
from torch import Tensor

KLEstimator = Literal["k1", "k2", "k3"]


def kl_estimate(logprobs: Tensor, ref_logprobs: Tensor, kind: KLEstimator = "k1") -> Tensor:
    """Per-sample estimate of KL(pi || pi_ref) from log-probs of samples drawn from pi."""
    log_r = ref_logprobs - logprobs
    if kind == "k1":
        return -log_r
    if kind == "k2":
        return 0.5 * log_r**2
    if kind == "k3":
        return log_r.exp() - 1.0 - log_r
    raise ValueError(f"kl estimator must be 'k1', 'k2' or 'k3', got {kind!r}")


class KLController(Protocol):
    value: float

    def update(self, current_kl: float, n_steps: int) -> None: ...


class FixedKLController:
    """A constant beta."""

    def __init__(self, beta: float) -> None:
        if beta < 0:
            raise ValueError(f"KL coefficient beta must be >= 0, got {beta}")
        self.value = beta

    def update(self, current_kl: float, n_steps: int) -> None:
        pass


class AdaptiveKLController:
    """Ziegler et al. (2019): steer the measured KL towards `target`.

    e     = clip(KL / target - 1, -0.2, 0.2)
    beta <- beta * (1 + e * n_steps / horizon)
    """

    def __init__(self, init_beta: float, target: float, horizon: int) -> None:
        if init_beta <= 0 or target <= 0 or horizon <= 0:
            raise ValueError(
                "adaptive KL needs init_beta > 0, target > 0 and horizon > 0, got "
                f"{init_beta}, {target}, {horizon}"
            )
        self.value, self.target, self.horizon = init_beta, target, horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        error = float(np.clip(current_kl / self.target - 1.0, -0.2, 0.2))
        self.value *= 1.0 + error * n_steps / self.horizon
