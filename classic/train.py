"""The fast vectorised PPO trainer for gymnasium envs, on the shared core (ppo_bridge).

    python -m classic.train --env CartPole-v1 --seed 0 --out runs/cartpole [--resume] [--lr 1e-3]

Each iteration collects n_steps x n_envs transitions with one batched policy forward per step,
computes GAE with `ppo_bridge.gae` and runs `ppo_bridge.ppo_update`. Under SAME_STEP autoreset
the rollout has no fake transition at an episode boundary, and

    next_values[t, i] = V(s_{t+1, i})            inside an episode
                      = V(final_obs_{t, i})      at a truncation (bootstrapped)
                      = ignored                  at a termination (gae multiplies it by 0)

The run directory gets progress.csv (SB3 column names), tb/ (TensorBoard), checkpoint.pt
(atomic), learning_curve.png and result.json; the last stdout line is the result as JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from classic.checkpoint import (
    CHECKPOINT_NAME,
    FORMAT,
    build_policy,
    checkpoint_errors,
    load_checkpoint,
    save_checkpoint,
)
from classic.config import PRESETS, ClassicError, TrainConfig
from classic.envs import env_actions, make_vec_env, policy_dims
from classic.envstate import load_env_state, save_env_state
from classic.evaluate import evaluate_policy, torch_policy
from classic.normalize import tensor_to_array
from classic.plots import plot_learning_curve
from ppo_bridge import Evaluation, gae, ppo_update
from ppo_bridge.cli import add_config_arguments, config_overrides
from ppo_bridge.rundir import check_run_dir

PERIODIC_EVAL_SEED = 10_000  # + cfg.seed: the periodic evaluations replay the same episodes
FINAL_EVAL_SEED = 20_000  # + cfg.seed: the final evaluation uses other episodes
RUN_MARKERS = (CHECKPOINT_NAME, "progress.csv", "result.json")  # a folder holding one holds a run
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


@dataclass
class TrainResult:
    """What `train` returns; `summary()` is the JSON line of the CLI."""

    env: str
    seed: int
    total_steps: int
    wall_s: float  # training wall-clock, evaluations excluded
    eval_mean: float | None
    eval_std: float | None
    eval_episodes: int
    threshold_steps: int | None  # first evaluation >= target_return (periodic, then confirmed)
    threshold_wall_s: float | None
    sps: float  # env steps per second of training wall-clock (this process only)
    out: str | None
    history: list[dict[str, float]] = field(repr=False)  # one row per iteration (CSV columns)

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "history"}


class RunLogger:
    """progress.csv and TensorBoard scalars, one row per iteration.

    Nothing is written before the first row, so a run (or a resume) that fails before its first
    iteration leaves the folder as it was. Then a resumed run keeps the rows up to the
    checkpoint's step (later ones were never checkpointed: they are done again), rewritten to a
    temporary file and renamed over progress.csv in one step, and appends from there;
    TensorBoard purges the later steps likewise.
    """

    def __init__(self, out: Path | None, tensorboard: bool, resume_step: int | None) -> None:
        self.csv_path = out / "progress.csv" if out else None
        self.tensorboard, self.resume_step = tensorboard, resume_step
        self.writer = None
        self._file = None

    def _open(self) -> None:
        path, resume_step = self.csv_path, self.resume_step
        kept: list[dict[str, str]] = []
        if resume_step is not None and path.exists():
            with open(path, newline="") as f:
                for row in csv.DictReader(f):
                    step = row.get("time/total_timesteps") or ""
                    if step.isdigit() and int(step) <= resume_step:
                        kept.append(row)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, CSV_COLUMNS, restval="", extrasaction="ignore")
            writer.writeheader()
            writer.writerows(kept)
        os.replace(tmp, path)
        self._file = open(path, "a", newline="")  # noqa: SIM115 (closed in close())
        self._csv = csv.DictWriter(self._file, CSV_COLUMNS, restval="")
        if self.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(path.parent / "tb"), purge_step=resume_step)

    def log(self, row: dict[str, float]) -> None:
        if self.csv_path is None:
            return
        if self._file is None:
            self._open()
        self._csv.writerow(row)
        self._file.flush()
        if self.writer is not None:
            step = int(row["time/total_timesteps"])
            for key, value in row.items():
                if not key.startswith("time/total"):
                    self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self.writer is not None:
            self.writer.close()


class Trainer:
    """The state of one run: envs, model, optimizer, normaliser, RNGs, counters, episode stats."""

    def __init__(self, cfg: TrainConfig, out: Path | None = None, resume: bool = False) -> None:
        self.cfg, self.out = cfg, out
        torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.envs = make_vec_env(cfg.env_id, cfg.n_envs)
        self.envs.action_space.seed(cfg.seed)
        self.dims = policy_dims(self.envs)
        self.model, self.normalizer = build_policy(cfg, self.dims)
        # fused: one kernel for all parameters, about 20% faster steps for these small MLPs
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, eps=1e-5, fused=True)
        self.generator = torch.Generator().manual_seed(cfg.seed)  # minibatch shuffling
        self.global_step = self.iteration = 0
        self.wall_s = 0.0
        self.threshold: tuple[int, float] | None = None
        self.ep_return = np.zeros(cfg.n_envs)
        self.ep_length = np.zeros(cfg.n_envs, np.int64)
        self.recent_returns: deque[float] = deque(maxlen=100)
        self.recent_lengths: deque[int] = deque(maxlen=100)
        self.history: list[dict[str, float]] = []
        self.obs = self.normalizer.obs(self.envs.reset(seed=cfg.seed)[0], update=True)
        if resume:
            try:
                self._restore(load_checkpoint(self._ckpt_path(), env_id=cfg.env_id))
            except ClassicError:
                self.envs.close()
                raise

    # --- checkpoints -------------------------------------------------------------------------

    def _ckpt_path(self) -> Path:
        if self.out is None:
            raise ClassicError("resume needs a run directory (--out)")
        return self.out / CHECKPOINT_NAME

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs, as tensors and plain types (see classic.checkpoint)."""
        return {
            "format": FORMAT,
            "config": self.cfg.to_dict(),
            "dims": self.dims,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "normalizer": self.normalizer.state_dict(),
            "global_step": self.global_step,
            "iteration": self.iteration,
            "wall_s": float(self.wall_s),
            "threshold": None if self.threshold is None else list(self.threshold),
            "torch_rng": torch.get_rng_state(),
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

    def _restore(self, state: dict[str, Any]) -> None:
        """Load a checkpoint's state; its envs too where saved, else start fresh episodes."""
        path, cfg, n = self._ckpt_path(), self.cfg, self.cfg.n_envs
        saved = state["config"]
        for key in RESUME_FIXED:
            if saved.get(key) != getattr(cfg, key):
                raise ClassicError(
                    f"the checkpoint in {self.out} was trained with {key}={saved.get(key)!r}, not "
                    f"{getattr(cfg, key)!r}: resume with the same value or use a new --out"
                )
        with checkpoint_errors(path):
            if state["dims"] != self.dims:
                raise ValueError(f"dims {state['dims']}, this env has {self.dims}")
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            for p in self.model.parameters():
                for value in self.optimizer.state[p].values():
                    if value.dim() and value.shape != p.shape:
                        raise ValueError("optimizer state of another shape than its parameter")
            self.normalizer.load_state_dict(state["normalizer"])
            self.global_step, self.iteration = state["global_step"], state["iteration"]
            self.wall_s, threshold = state["wall_s"], state["threshold"]
            self.threshold = None if threshold is None else (int(threshold[0]), threshold[1])
            torch.set_rng_state(state["torch_rng"])
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

    def save(self) -> None:
        if self.out is not None:
            save_checkpoint(self._ckpt_path(), self.state_dict())

    # --- one iteration -----------------------------------------------------------------------

    @torch.no_grad()
    def collect(self) -> dict[str, torch.Tensor]:
        """n_steps x n_envs transitions, GAE included, flattened to a batch for `ppo_update`."""
        cfg, model, norm, dev = self.cfg, self.model, self.normalizer, self.cfg.device
        T, N = cfg.n_steps, cfg.n_envs
        obs = torch.empty((T, N, self.dims["obs_dim"]), device=dev)
        logprobs, values, rewards = (torch.empty((T, N), device=dev) for _ in range(3))
        actions: list[torch.Tensor] = []
        terminated = torch.empty((T, N), dtype=torch.bool, device=dev)
        truncated = torch.empty((T, N), dtype=torch.bool, device=dev)
        final_values = torch.zeros((T, N), device=dev)
        space = self.envs.single_action_space
        for t in range(T):
            obs[t] = torch.from_numpy(self.obs)
            action, logprobs[t], values[t] = model.act(obs[t])
            actions.append(action)
            next_obs, reward, term, trunc, info = self.envs.step(
                env_actions(space, action.cpu().numpy())
            )
            self._track_episodes(reward, term | trunc)
            rewards[t] = torch.from_numpy(norm.reward(reward, term | trunc))
            terminated[t], truncated[t] = torch.from_numpy(term), torch.from_numpy(trunc)
            self.obs = norm.obs(next_obs, update=True)
            if trunc.any():  # bootstrap a truncated episode from V(true final observation)
                idx = np.flatnonzero(trunc)
                final_obs = norm.obs(np.stack(info["final_obs"][idx]))
                final_values[t, torch.from_numpy(idx)] = model.value(
                    torch.from_numpy(final_obs).to(dev)
                )
        last_value = model.value(torch.from_numpy(self.obs).to(dev))
        next_values = torch.cat([values[1:], last_value[None]])
        next_values = torch.where(truncated, final_values, next_values)
        advantages, returns = gae(
            rewards, values, next_values, terminated, truncated, gamma=cfg.gamma, lam=cfg.gae_lambda
        )
        self.global_step += T * N
        acts = torch.stack(actions)
        return {
            "obs": obs.reshape(T * N, -1),
            "actions": acts.reshape(T * N, *acts.shape[2:]),
            "logprobs": logprobs.reshape(-1),
            "values": values.reshape(-1),
            "advantages": advantages.reshape(-1),
            "returns": returns.reshape(-1),
        }

    def _track_episodes(self, reward: np.ndarray, done: np.ndarray) -> None:
        self.ep_return += reward
        self.ep_length += 1
        for i in np.flatnonzero(done):
            self.recent_returns.append(float(self.ep_return[i]))
            self.recent_lengths.append(int(self.ep_length[i]))
            self.ep_return[i], self.ep_length[i] = 0.0, 0

    def update(self, batch: dict[str, torch.Tensor], progress: float) -> dict[str, float]:
        def evaluate(mb: dict[str, torch.Tensor]) -> Evaluation:
            return Evaluation(*self.model.evaluate(mb["obs"], mb["actions"]))

        return ppo_update(
            batch, evaluate, self.optimizer, self.cfg, progress=progress, generator=self.generator
        )

    def evaluate(self, n_episodes: int, seed: int) -> np.ndarray:
        """Deterministic returns with frozen normaliser statistics (no RNG consumed)."""
        policy = torch_policy(self.model, self.normalizer, True, self.cfg.device)
        return evaluate_policy(policy, self.cfg.env_id, n_episodes, seed=seed)

    def final_evaluation(self) -> np.ndarray | None:
        """The eval_episodes returns on the final-evaluation seeds (None if eval_episodes = 0)."""
        if not self.cfg.eval_episodes:
            return None
        return self.evaluate(self.cfg.eval_episodes, FINAL_EVAL_SEED + self.cfg.seed)

    # --- the loop ----------------------------------------------------------------------------

    def run(self) -> TrainResult:
        """Train until total_timesteps, or until target_return is reached.

        A periodic evaluation (eval_every_episodes) that reaches target_return is confirmed on
        the final evaluation's eval_episodes with a margin (`confirms`); only then does training
        stop, with that result.
        """
        cfg = self.cfg
        logger = RunLogger(self.out, cfg.tensorboard, self.global_step if self.iteration else None)
        bar = tqdm(
            total=cfg.total_timesteps,
            initial=self.global_step,
            unit="step",
            disable=not cfg.progress,
        )
        start_step, start_wall = self.global_step, self.wall_s
        confirmed: np.ndarray | None = None
        try:
            while self.global_step < cfg.total_timesteps and not self._target_reached():
                tic, prev_step = time.perf_counter(), self.global_step
                metrics = self.update(self.collect(), prev_step / cfg.total_timesteps)
                self.iteration += 1
                self.wall_s += time.perf_counter() - tic
                row = self._row(metrics, start_step, start_wall)
                if _crossed(prev_step, self.global_step, cfg.eval_every):
                    returns = self.evaluate(cfg.eval_every_episodes, PERIODIC_EVAL_SEED + cfg.seed)
                    row["eval/mean_reward"], row["eval/std_reward"] = returns.mean(), returns.std()
                    if cfg.target_return is not None and returns.mean() >= cfg.target_return:
                        confirmed = self.final_evaluation()  # screened on a few, confirmed on all
                        if confirms(confirmed, cfg.target_return, cfg.confirm_z):
                            self.threshold = (self.global_step, self.wall_s)
                        else:
                            confirmed = None
                self.history.append(row)
                logger.log(row)
                bar.update(self.global_step - prev_step)
                bar.set_postfix(ep_rew_mean=f"{row['rollout/ep_rew_mean']:.1f}", refresh=False)
                if _crossed(prev_step, self.global_step, cfg.checkpoint_every):
                    self.save()
        finally:
            bar.close()
            logger.close()
        self.save()
        if self.out is not None and logger.csv_path.exists():
            plot_learning_curve(
                logger.csv_path,
                self.out / "learning_curve.png",
                f"PPO on {cfg.env_id}, seed {cfg.seed}",
            )
        final = confirmed if confirmed is not None else self.final_evaluation()
        trained = self.wall_s - start_wall
        result = TrainResult(
            env=cfg.env_id,
            seed=cfg.seed,
            total_steps=self.global_step,
            wall_s=round(self.wall_s, 3),
            eval_mean=None if final is None else float(final.mean()),
            eval_std=None if final is None else float(final.std()),
            eval_episodes=cfg.eval_episodes,
            threshold_steps=None if self.threshold is None else self.threshold[0],
            threshold_wall_s=None if self.threshold is None else round(self.threshold[1], 3),
            sps=round((self.global_step - start_step) / max(trained, 1e-9), 1),
            out=None if self.out is None else str(self.out),
            history=self.history,
        )
        if self.out is not None:
            (self.out / "result.json").write_text(json.dumps(result.summary(), indent=2) + "\n")
        self.envs.close()
        return result

    def _target_reached(self) -> bool:
        return self.cfg.target_return is not None and self.threshold is not None

    def _row(
        self, metrics: dict[str, float], start_step: int, start_wall: float
    ) -> dict[str, float]:
        elapsed = self.wall_s - start_wall
        row = {
            "time/total_timesteps": self.global_step,
            "time/iterations": self.iteration,
            "time/fps": round((self.global_step - start_step) / max(elapsed, 1e-9)),
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


def confirms(returns: np.ndarray, target: float, z: float) -> bool:
    """The confirmation of the stop rule: the lower confidence bound of the mean return reaches
    the target, mean - z * std / sqrt(n) >= target (std with n - 1; see TrainConfig)."""
    n = len(returns)
    return n >= 2 and returns.mean() - z * returns.std(ddof=1) / np.sqrt(n) >= target


def _crossed(prev: int, now: int, every: int) -> bool:
    """Whether a multiple of `every` (> 0) lies in (prev, now]."""
    return every > 0 and now // every > prev // every


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


def _start_over(out: Path) -> None:
    """Remove the files of the run in `out` (--overwrite); other files in it stay."""
    for name in (*RUN_MARKERS, "learning_curve.png", "progress.csv.tmp", "checkpoint.pt.tmp"):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "tb", ignore_errors=True)


def train(
    cfg: TrainConfig, out: str | Path | None = None, resume: bool = False, overwrite: bool = False
) -> TrainResult:
    """Train PPO as `cfg` says; with `out`, write logs, checkpoints and the plot there.

    `resume=True` continues from `out/checkpoint.pt` (model, optimizer, normaliser, RNGs, step
    count and, for the env families of classic.envstate, the envs: then the run continues
    exactly as if uninterrupted; other envs start fresh episodes). A folder that already holds
    a run needs `resume` or `overwrite` (start over: its run files go, once the env is made).
    Nothing is created before the config, the folder and the env have been checked.
    """
    out_path = None if out is None else check_out(out, resume=resume, overwrite=overwrite)
    trainer = Trainer(cfg, out_path, resume)
    if out_path is not None:
        try:
            if overwrite:
                _start_over(out_path)
            out_path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            trainer.envs.close()
            raise ClassicError(f"cannot use --out {out_path}: {err}: pass another --out") from err
    return trainer.run()


# --- CLI -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """One flag per TrainConfig field (defaults come from the env's preset), plus run flags."""
    parser = argparse.ArgumentParser(
        prog="python -m classic.train",
        description="Train PPO on a gymnasium env. Presets: " + ", ".join(PRESETS),
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--out", help="run directory (logs, checkpoint, plot); none = no files")
    parser.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    parser.add_argument(
        "--overwrite", action="store_true", help="start over in an --out that holds a run"
    )
    add_config_arguments(
        parser, TrainConfig, aliases={"env_id": "--env"}, default_note=" (before the preset)"
    )
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Preset of the env + flags; with --resume, the checkpoint's config + flags."""
    overrides = config_overrides(args, TrainConfig)
    out = getattr(args, "out", None)
    if getattr(args, "resume", False):
        if out is None:
            raise ClassicError("--resume needs --out (the run directory to continue)")
        saved = load_checkpoint(out, env_id=overrides.get("env_id"))["config"]
        return TrainConfig.from_dict({**saved, **overrides})
    return TrainConfig.for_env(overrides.pop("env_id", TrainConfig.env_id), **overrides)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = getattr(args, "out", None)
    resume, overwrite = getattr(args, "resume", False), getattr(args, "overwrite", False)
    try:
        if out is None and overwrite:
            raise ClassicError("--overwrite needs --out (the run folder to start over in)")
        if out is not None:
            check_out(out, resume=resume, overwrite=overwrite)
        cfg = config_from_args(args)
        result = train(cfg, out, resume, overwrite)
    except (ClassicError, ValueError, FloatingPointError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result.summary()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
