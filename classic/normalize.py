"""Running observation and reward normalisation (the formulas of SB3's VecNormalize), in numpy.

    obs'    = clip((obs - mean_obs) / sqrt(var_obs + eps), -clip_obs, clip_obs)
    R_t     = gamma * R_{t-1} * (1 - done_{t-1}) + r_t        (discounted return per env)
    reward' = clip(r_t / sqrt(var_R + eps), -clip_reward, clip_reward)

The statistics are updated during training only; they are saved in the checkpoint (as float64
tensors) and used frozen at evaluation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def tensor_to_array(value: Any, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """A loaded tensor as a numpy array of `dtype`; ValueError unless it has exactly `shape`."""
    if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(shape):
        found = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"expected a tensor of shape {tuple(shape)}, found {found}")
    return value.detach().cpu().numpy().astype(dtype, copy=True)


class RunningMeanStd:
    """Mean and variance of a stream of batches, merged with Chan et al.'s parallel formula."""

    def __init__(self, shape: tuple[int, ...] = ()) -> None:
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = 1e-4

    def update(self, x: np.ndarray) -> None:
        """Merge a batch `x` of shape [n, *shape]."""
        b_mean, b_var, b_count = x.mean(0), x.var(0), x.shape[0]
        delta, total = b_mean - self.mean, self.count + b_count
        m2 = self.var * self.count + b_var * b_count + delta**2 * self.count * b_count / total
        self.mean = self.mean + delta * b_count / total
        self.var = m2 / total
        self.count = total

    def state_dict(self) -> dict[str, Any]:
        return {
            "mean": torch.from_numpy(np.array(self.mean, np.float64)),
            "var": torch.from_numpy(np.array(self.var, np.float64)),
            "count": float(self.count),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        count = state["count"]
        if type(count) is not float or not count > 0:
            raise ValueError(f"a running count must be a float > 0, found {count!r}")
        self.mean = tensor_to_array(state["mean"], np.shape(self.mean), np.float64)
        self.var = tensor_to_array(state["var"], np.shape(self.var), np.float64)
        self.count = count


class Normalizer:
    """Observation and reward normalisation for `n_envs` parallel envs; each part can be off."""

    def __init__(
        self,
        obs_shape: tuple[int, ...],
        n_envs: int,
        *,
        norm_obs: bool,
        norm_reward: bool,
        gamma: float,
        clip_obs: float = 10.0,
        clip_reward: float = 10.0,
        eps: float = 1e-8,
    ) -> None:
        self.norm_obs, self.norm_reward = norm_obs, norm_reward
        self.gamma, self.clip_obs, self.clip_reward, self.eps = gamma, clip_obs, clip_reward, eps
        self.obs_rms = RunningMeanStd(obs_shape)
        self.ret_rms = RunningMeanStd()
        self.returns = np.zeros(n_envs, np.float64)

    def obs(self, obs: np.ndarray, update: bool = False) -> np.ndarray:
        """Normalised float32 observations [n, *obs_shape]; `update` merges them in first."""
        if not self.norm_obs:
            return obs.astype(np.float32, copy=False)
        if update:
            self.obs_rms.update(obs)
        out = (obs - self.obs_rms.mean) / np.sqrt(self.obs_rms.var + self.eps)
        return np.clip(out, -self.clip_obs, self.clip_obs).astype(np.float32)

    def reward(self, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
        """Scaled float32 rewards; updates the return statistics (call during training only)."""
        if not self.norm_reward:
            return reward.astype(np.float32, copy=False)
        self.returns = self.returns * self.gamma + reward
        self.ret_rms.update(self.returns)
        self.returns[done] = 0.0
        out = reward / np.sqrt(self.ret_rms.var + self.eps)
        return np.clip(out, -self.clip_reward, self.clip_reward).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        return {
            "obs_rms": self.obs_rms.state_dict(),
            "ret_rms": self.ret_rms.state_dict(),
            "returns": torch.from_numpy(self.returns.copy()),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.obs_rms.load_state_dict(state["obs_rms"])
        self.ret_rms.load_state_dict(state["ret_rms"])
        self.returns = tensor_to_array(state["returns"], self.returns.shape, np.float64)
