"""One seed's share of a training run: its envs, normaliser, RNGs, counters, episode statistics,
logs and stop rule. `classic.train.Trainer` steps the K seeds of a run together, through one
batched model; everything here is per seed, so seed k's run folder is an ordinary run folder.
"""

from __future__ import annotations

import json
import sys
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch

from classic.checkpoint import CHECKPOINT_NAME, FORMAT, build_normalizer, save_checkpoint
from classic.config import ClassicError, TrainConfig
from classic.envs import env_actions, make_vec_env, policy_dims
from classic.envstate import load_env_state, save_env_state
from classic.normalize import tensor_to_array
from classic.plots import plot_learning_curve
from ppo_bridge.logs import MetricsLogger
from ppo_bridge.rundir import check_run_dir

RUN_MARKERS = (CHECKPOINT_NAME, "progress.csv", "result.json")  # a folder holding one holds a run
RUN_FILES = (*RUN_MARKERS, "learning_curve.png", "tb")  # what --overwrite deletes
# A checkpoint can only be resumed by a config that agrees on these.
RESUME_FIXED = ("env_id", "n_envs", "hidden_dim", "n_hidden", "norm_obs", "norm_reward")
METRIC_COLUMNS = {"clipfrac": "clip_fraction", "lr": "learning_rate"}  # core name -> SB3 name
TRAIN_METRICS = [
    "loss",
    "policy_loss",
    "value_loss",
    "entropy",
    "approx_kl",
    "clipfrac",
    "ratio",
    "explained_variance",
    "n_updates",
    "early_stop",
    "lr",
    "value_clipfrac",
]
CSV_COLUMNS = [
    "time/total_timesteps",
    "time/iterations",
    "time/fps",
    "time/time_elapsed",
    "rollout/ep_rew_mean",
    "rollout/ep_len_mean",
    *(f"train/{METRIC_COLUMNS.get(k, k)}" for k in TRAIN_METRICS),
    "eval/mean_reward",
    "eval/std_reward",
]


class SeedRun:
    """One seed: envs (seeded by cfg.seed), normaliser, the action sampler (which also draws the
    seed's network initialisation) and minibatch generator, counters, episode statistics, logs."""

    def __init__(self, cfg: TrainConfig, out: Path | None = None) -> None:
        self.cfg, self.out = cfg, out
        self.envs = make_vec_env(cfg.env_id, cfg.n_envs)
        self.envs.action_space.seed(cfg.seed)
        self.dims = policy_dims(self.envs)
        self.normalizer = build_normalizer(cfg, self.dims)
        self.sampler = torch.Generator().manual_seed(cfg.seed)  # initialisation, then actions
        self.generator = torch.Generator().manual_seed(cfg.seed)  # minibatch shuffling
        self.global_step = self.iteration = 0
        self.wall_s = 0.0
        self.threshold: tuple[int, float] | None = None
        self.confirmed: np.ndarray | None = None  # the confirmation that stopped the run
        self.collapsed_at: int | None = None  # the step the policy collapsed at (see train.py)
        self.ep_return = np.zeros(cfg.n_envs)
        self.ep_length = np.zeros(cfg.n_envs, np.int64)
        self.recent_returns: deque[float] = deque(maxlen=100)
        self.recent_lengths: deque[int] = deque(maxlen=100)
        self.history: list[dict[str, float]] = []
        self.obs = self.normalizer.obs(self.envs.reset(seed=cfg.seed)[0], update=True)
        self.logger: MetricsLogger | None = None
        self.start_step, self.start_wall = 0, 0.0
        # (model, optimizer) state slices of a seed that has left the batch (it is done)
        self.frozen: tuple[dict[str, Any], dict[str, Any]] | None = None

    @property
    def finished(self) -> bool:
        """The budget is spent, or target_return was reached and confirmed."""
        reached = self.cfg.target_return is not None and self.threshold is not None
        return reached or self.global_step >= self.cfg.total_timesteps

    def open_logs(self) -> None:
        """Start logging from the current step (after a restore: keep the rows up to it)."""
        self.start_step, self.start_wall = self.global_step, self.wall_s
        resume_step = self.global_step if self.iteration else None
        self.logger = None
        if self.out is not None:
            self.logger = MetricsLogger(
                self.out,
                csv_name="progress.csv",
                step_key="time/total_timesteps",
                resume_step=resume_step,
                columns=CSV_COLUMNS,
                tensorboard=self.cfg.tensorboard,
                tb_skip=("time/total",),
            )

    # --- the env side of one rollout step ----------------------------------------------------

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, ...]:
        """Step the envs; returns (normalised reward, terminated, truncated, indices of the
        truncated envs, their normalised true final observations)."""
        space, norm = self.envs.single_action_space, self.normalizer
        next_obs, reward, term, trunc, info = self.envs.step(env_actions(space, actions))
        self._track_episodes(reward, term | trunc)
        scaled = norm.reward(reward, term | trunc)
        self.obs = norm.obs(next_obs, update=True)
        idx = np.flatnonzero(trunc)
        final_obs = norm.obs(np.stack(info["final_obs"][idx])) if len(idx) else None
        return scaled, term, trunc, idx, final_obs

    def _track_episodes(self, reward: np.ndarray, done: np.ndarray) -> None:
        self.ep_return += reward
        self.ep_length += 1
        for i in np.flatnonzero(done):
            self.recent_returns.append(float(self.ep_return[i]))
            self.recent_lengths.append(int(self.ep_length[i]))
            self.ep_return[i], self.ep_length[i] = 0.0, 0

    def row(self, metrics: dict[str, float]) -> dict[str, float]:
        """The progress.csv row of the iteration just done."""
        elapsed = self.wall_s - self.start_wall
        row = {
            "time/total_timesteps": self.global_step,
            "time/iterations": self.iteration,
            "time/fps": round((self.global_step - self.start_step) / max(elapsed, 1e-9)),
            "time/time_elapsed": round(self.wall_s, 3),
            "rollout/ep_rew_mean": float(np.mean(self.recent_returns))
            if self.recent_returns
            else np.nan,
            "rollout/ep_len_mean": float(np.mean(self.recent_lengths))
            if self.recent_lengths
            else np.nan,
        }
        row.update({f"train/{METRIC_COLUMNS.get(k, k)}": v for k, v in metrics.items()})
        return row

    def log(self, row: dict[str, float]) -> None:
        self.history.append(row)
        if self.logger is not None:
            self.logger.log(row)

    # --- checkpoints -------------------------------------------------------------------------

    def ckpt_path(self) -> Path:
        if self.out is None:
            raise ClassicError("resume needs a run directory (--out)")
        return self.out / CHECKPOINT_NAME

    def state_dict(self, model: dict[str, Any], optimizer: dict[str, Any]) -> dict[str, Any]:
        """Everything a resume needs, with this seed's `model` and `optimizer` slices, as
        tensors and plain types (see classic.checkpoint)."""
        return {
            "format": FORMAT,
            "config": self.cfg.to_dict(),
            "dims": self.dims,
            "model": model,
            "optimizer": optimizer,
            "normalizer": self.normalizer.state_dict(),
            "global_step": self.global_step,
            "iteration": self.iteration,
            "wall_s": float(self.wall_s),
            "threshold": None if self.threshold is None else list(self.threshold),
            "sampler": self.sampler.get_state(),
            "generator": self.generator.get_state(),
            "obs": torch.from_numpy(self.obs.copy()),
            "episodes": {
                "return": torch.from_numpy(self.ep_return.copy()),
                "length": torch.from_numpy(self.ep_length.copy()),
                "recent_returns": list(self.recent_returns),
                "recent_lengths": list(self.recent_lengths),
            },
            "envs": save_env_state(self.envs),
        }

    def save(self, model: dict[str, Any], optimizer: dict[str, Any]) -> None:
        if self.out is not None:
            save_checkpoint(self.ckpt_path(), self.state_dict(model, optimizer))

    def restore(self, state: dict[str, Any]) -> None:
        """Load a checkpoint's state except the model and optimizer (the Trainer stacks those);
        its envs too where saved, else start fresh episodes."""
        cfg, n = self.cfg, self.cfg.n_envs
        saved = state["config"]
        for key in RESUME_FIXED:
            if saved.get(key) != getattr(cfg, key):
                raise ClassicError(
                    f"the checkpoint in {self.out} was trained with {key}={saved.get(key)!r}, not "
                    f"{getattr(cfg, key)!r}: resume with the same value or use a new --out"
                )
        if state["dims"] != self.dims:
            raise ValueError(f"dims {state['dims']}, this env has {self.dims}")
        self.normalizer.load_state_dict(state["normalizer"])
        self.global_step, self.iteration = state["global_step"], state["iteration"]
        self.wall_s, threshold = state["wall_s"], state["threshold"]
        self.threshold = None if threshold is None else (int(threshold[0]), threshold[1])
        self.sampler.set_state(state["sampler"])
        self.generator.set_state(state["generator"])
        episodes = state["episodes"]
        self.ep_return = tensor_to_array(episodes["return"], (n,), np.float64)
        self.ep_length = tensor_to_array(episodes["length"], (n,), np.int64)
        self.recent_returns = deque(map(float, episodes["recent_returns"]), maxlen=100)
        self.recent_lengths = deque(map(int, episodes["recent_lengths"]), maxlen=100)
        if state["envs"] is not None:
            load_env_state(self.envs, state["envs"])
            self.obs = tensor_to_array(state["obs"], self.obs.shape, np.float32)
            return
        # not saved (e.g. Box2D): fresh episodes, seeded by the seed and the step count
        print(
            f"note: {cfg.env_id}'s env state is not saved in checkpoints (see classic.envstate): "
            f"resuming at step {self.global_step} with fresh episodes, from the restored policy, "
            "normaliser and RNG",
            file=sys.stderr,
        )
        seed = int(np.random.SeedSequence([cfg.seed, self.global_step]).generate_state(1)[0])
        self.normalizer.returns[:] = 0.0  # the discounted returns of the episodes cut short
        self.obs = self.normalizer.obs(self.envs.reset(seed=seed)[0])
        self.ep_return[:], self.ep_length[:] = 0.0, 0

    def close(self) -> None:
        if self.logger is not None:
            self.logger.close()
        self.envs.close()

    def write_result(self, summary: dict[str, Any]) -> None:
        """learning_curve.png and result.json, once the seed is done."""
        if self.out is None:
            return
        csv_path = self.out / "progress.csv"
        if csv_path.exists():
            plot_learning_curve(
                csv_path,
                self.out / "learning_curve.png",
                f"PPO on {self.cfg.env_id}, seed {self.cfg.seed}",
            )
        (self.out / "result.json").write_text(json.dumps(summary, indent=2) + "\n")


def check_out(out: str | Path, *, resume: bool, overwrite: bool) -> Path:
    """The run folder guard (ppo_bridge.rundir), plus: the checkpoint's path is not a folder.

    Creates nothing; a folder that holds a run is entered only with `resume` or `overwrite`.
    """
    ckpt = Path(out) / CHECKPOINT_NAME
    if ckpt.is_dir():
        raise ClassicError(
            f"{ckpt} is a folder: the run's checkpoint is written there; move it, or pass "
            "another --out"
        )
    return check_run_dir(out, resume=resume, overwrite=overwrite, markers=RUN_MARKERS)
