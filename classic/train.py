"""The fast vectorised PPO trainer for gymnasium envs, on the shared core (ppo_bridge).

    python -m classic.train --env CartPole-v1 --seed 0 --out runs/cartpole [--resume] [--lr 1e-3]
    python -m classic.train --env CartPole-v1 --seeds 0-7 --out runs/cartpole8

Each iteration collects n_steps x n_envs transitions with one batched policy forward per step,
computes GAE with `ppo_bridge.gae` and runs `ppo_bridge.ppo_update`. Under SAME_STEP autoreset
the rollout has no fake transition at an episode boundary, and

    next_values[t, i] = V(s_{t+1, i})            inside an episode
                      = V(final_obs_{t, i})      at a truncation (bootstrapped)
                      = ignored                  at a termination (gae multiplies it by 0)

Many seeds (`--seeds`) train as one: K independent agents stacked in one `ActorCritic` (each
layer one batched matmul) and one Adam over the stacked parameters (elementwise, so K Adams), each
seed with its own envs, normaliser, RNGs, minibatch order, gradient clipping, stop rule and run
folder `DIR/seed-<k>/`. Nothing is shared across seeds but the matmuls: seed k of a K-seed run
is, bit for bit, the single run of seed k. A seed that finishes leaves the batch (its envs stop
and its slice of the model and optimizer is dropped), so it stops costing compute. One seed is the
K = 1 case of the same code.

A run directory gets progress.csv (SB3 column names), tb/ (TensorBoard), checkpoint.pt (atomic),
learning_curve.png and result.json; the last stdout line is the result as JSON (many seeds: an
object with a `runs` list and the total wall_s).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from classic.checkpoint import (
    CHECKPOINT_NAME,
    agent_slice,
    build_model,
    checkpoint_errors,
    load_checkpoint,
    stack_agents,
)
from classic.config import PRESETS, ClassicError, TrainConfig
from classic.evaluate import evaluate_policy, torch_policy
from classic.networks import ActorCritic
from classic.normalize import Normalizer
from classic.run import RUN_FILES, SeedRun, check_out
from ppo_bridge import Evaluation, gae, ppo_update
from ppo_bridge.cli import USER_ERRORS, add_config_arguments, config_overrides, run_command
from ppo_bridge.rundir import RunDirError, run_lock, start_over

PERIODIC_EVAL_SEED = 10_000  # + cfg.seed: the periodic evaluations replay the same episodes
FINAL_EVAL_SEED = 20_000  # + cfg.seed: the final evaluation uses other episodes
MAX_SEEDS = 256
COLLAPSED_ENTROPY = 1e-3  # nats: a discrete policy this sure of one action has stopped exploring
BLOWN_UP_WEIGHT = 1e4  # a tanh / ReLU MLP of healthy PPO keeps its weights far below this


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
    collapsed_at: int | None  # step at which the policy collapsed (checkpoints stopped there)
    history: list[dict[str, float]] = field(repr=False)  # one row per iteration (CSV columns)

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "history"}


class Trainer:
    """K seeds trained as one: their `SeedRun`s, one batched model and one optimizer."""

    def __init__(
        self,
        cfg: TrainConfig | Sequence[TrainConfig],
        out: Path | Sequence[Path | None] | None = None,
        resume: bool = False,
    ) -> None:
        """`cfg` and `out`: one seed's, or one per seed (the same hyperparameters)."""
        single = isinstance(cfg, TrainConfig)
        cfgs = [cfg] if single else list(cfg)
        outs = [out] if single else list(out or [None] * len(cfgs))
        torch.set_num_threads(cfgs[0].threads)
        self.cfg = cfgs[0]  # the hyperparameters of every seed (only the seed differs)
        self.runs: list[SeedRun] = []
        self.before_first_write: Callable[[], object] | None = None  # --overwrite's start-over
        try:
            for c, out in zip(cfgs, outs, strict=True):
                self.runs.append(SeedRun(c, out))
            self.active = list(range(len(self.runs)))  # the seeds in the model, in its order
            self.model = build_model(self.cfg, self.runs[0].dims, [r.sampler for r in self.runs])
            self.optimizer = make_adam(self.model, self.cfg.lr)
            if resume:
                self._restore()
        except BaseException:
            for r in self.runs:
                r.envs.close()
            raise

    @property
    def normalizer(self) -> Normalizer:
        """The first seed's normaliser (the one of a single-seed trainer)."""
        return self.runs[0].normalizer

    # --- checkpoints -------------------------------------------------------------------------

    def _restore(self) -> None:
        """Each seed's checkpoint into its SeedRun; the unfinished seeds' model and optimizer
        slices stacked into the batch (a seed that had finished stays out of it)."""
        states = []
        for r in self.runs:
            path = r.ckpt_path()
            states.append(load_checkpoint(path, env_id=r.cfg.env_id))
            with checkpoint_errors(path):
                r.restore(states[-1])
                if r.finished:
                    r.frozen = (states[-1]["model"], states[-1]["optimizer"])
        self.active = [k for k, r in enumerate(self.runs) if not r.finished]
        steps = {self.runs[k].global_step for k in self.active}
        if len(steps) > 1:
            raise ClassicError(
                f"the unfinished seeds' checkpoints are at different steps {sorted(steps)} (a "
                "save was cut short): resume them one by one with --seed, or start over"
            )
        if not self.active:
            return
        with checkpoint_errors(self.runs[self.active[0]].ckpt_path()):
            self._load_batch(
                [states[k]["model"] for k in self.active],
                [states[k]["optimizer"] for k in self.active],
            )

    def _load_batch(self, models: list[dict[str, Any]], optimizers: list[dict[str, Any]]) -> None:
        """A model and optimizer of the active seeds, from their one-seed state slices."""
        self.model = build_model(self.cfg, self.runs[0].dims, [None] * len(models))
        self.model.load_state_dict(stack_agents(models))
        self.optimizer = make_adam(self.model, self.cfg.lr)
        self.optimizer.load_state_dict(stack_agents(optimizers))
        for p in self.model.parameters():
            for value in self.optimizer.state[p].values():
                if value.dim() and value.shape != p.shape:
                    raise ValueError("optimizer state of another shape than its parameter")

    def _save(self, i: int) -> None:
        """Seed `self.active[i]`'s checkpoint (its slice of the model and the optimizer)."""
        model, optimizer = self.model.state_dict(), self.optimizer.state_dict()
        self.runs[self.active[i]].save(agent_slice(model, i), agent_slice(optimizer, i))

    def agent_model(self, run: SeedRun) -> ActorCritic:
        """The seed's network alone (the model itself when it holds that one seed only)."""
        if run.frozen is not None:
            state = run.frozen[0]
        elif self.model.n_agents == 1:
            return self.model
        else:
            state = self.model.agent_state(self.active.index(self.runs.index(run)))
        model = build_model(self.cfg, run.dims)
        model.load_state_dict(state)
        return model

    # --- one iteration -----------------------------------------------------------------------

    @torch.no_grad()
    def collect(self) -> dict[str, torch.Tensor]:
        """n_steps x n_envs transitions per active seed, GAE included, as [K, n_steps * n_envs]
        batches for `ppo_update`."""
        cfg, model, dev = self.cfg, self.model, self.cfg.device
        runs = [self.runs[k] for k in self.active]
        T, K, N = cfg.n_steps, len(runs), cfg.n_envs
        obs = torch.empty((T, K, N, runs[0].dims["obs_dim"]), device=dev)
        logprobs, values, rewards = (torch.empty((T, K, N), device=dev) for _ in range(3))
        actions: list[torch.Tensor] = []
        terminated = torch.empty((T, K, N), dtype=torch.bool, device=dev)
        truncated = torch.empty((T, K, N), dtype=torch.bool, device=dev)
        final_values = torch.zeros((T, K, N), device=dev)
        samplers = [r.sampler for r in runs]
        resample_every = cfg.sde_sample_freq if cfg.sde_sample_freq > 0 else T
        for t in range(T):
            if cfg.use_sde and t % resample_every == 0:  # gSDE: new exploration matrices
                model.reset_noise(N, samplers)
            obs[t] = torch.from_numpy(np.stack([r.obs for r in runs]))
            action, logprobs[t], values[t] = model.act(obs[t], generators=samplers)
            actions.append(action)
            acts = action.cpu().numpy()
            finals = []  # (seed, env indices, true final observations) of truncated episodes
            for k, r in enumerate(runs):
                reward, term, trunc, idx, final = r.step(acts[k])
                rewards[t, k] = torch.from_numpy(reward)
                terminated[t, k], truncated[t, k] = torch.from_numpy(term), torch.from_numpy(trunc)
                if final is not None:
                    finals.append((k, torch.from_numpy(idx), torch.from_numpy(final)))
            if finals:  # bootstrap a truncated episode from V(true final observation)
                final_obs = torch.zeros_like(obs[t])
                for k, idx, final in finals:
                    final_obs[k, idx] = final.to(dev)
                final_values[t] = torch.where(truncated[t], model.value(final_obs), 0.0)
        last_value = model.value(torch.from_numpy(np.stack([r.obs for r in runs])).to(dev))
        next_values = torch.cat([values[1:], last_value[None]])
        next_values = torch.where(truncated, final_values, next_values)
        advantages, returns = gae(
            rewards, values, next_values, terminated, truncated, gamma=cfg.gamma, lam=cfg.gae_lambda
        )
        for r in runs:
            r.global_step += T * N

        def per_seed(x: torch.Tensor) -> torch.Tensor:  # [T, K, N, ...] -> [K, T * N, ...]
            return x.transpose(0, 1).reshape(K, T * N, *x.shape[3:])

        return {
            "obs": per_seed(obs),
            "actions": per_seed(torch.stack(actions)),
            "logprobs": per_seed(logprobs),
            "values": per_seed(values),
            "advantages": per_seed(advantages),
            "returns": per_seed(returns),
        }

    def update(self, batch: dict[str, torch.Tensor], progress: float) -> list[dict[str, float]]:
        """The PPO epochs of every active seed at once (one metrics dict per seed)."""

        def evaluate(mb: dict[str, torch.Tensor]) -> Evaluation:
            return Evaluation(*self.model.evaluate(mb["obs"], mb["actions"]))

        generators = [self.runs[k].generator for k in self.active]
        return ppo_update(
            batch,
            evaluate,
            self.optimizer,
            self.cfg,
            progress=progress,
            generator=generators,
            n_agents=len(generators),
        )

    def evaluate(self, run: SeedRun, n_episodes: int, seed: int) -> np.ndarray:
        """Deterministic returns of a seed's policy, normaliser frozen (no RNG consumed)."""
        policy = torch_policy(self.agent_model(run), run.normalizer, True, self.cfg.device)
        return evaluate_policy(policy, run.cfg.env_id, n_episodes, seed=seed)

    def final_evaluation(self, run: SeedRun) -> np.ndarray | None:
        """The eval_episodes returns on the final-evaluation seeds (None if eval_episodes = 0)."""
        if not run.cfg.eval_episodes:
            return None
        return self.evaluate(run, run.cfg.eval_episodes, FINAL_EVAL_SEED + run.cfg.seed)

    # --- the loop ----------------------------------------------------------------------------

    def run(self) -> list[TrainResult]:
        """Train every seed until its total_timesteps, or until its target_return is reached.

        A periodic evaluation (eval_every_episodes) that reaches target_return is confirmed on
        the final evaluation's eval_episodes with a margin (`confirms`); only then does the
        seed stop, with that result. A seed that stops leaves the batch.
        """
        cfg = self.cfg
        for r in self.runs:
            r.open_logs()
        results: list[TrainResult | None] = [None] * len(self.runs)
        bar = tqdm(
            total=cfg.total_timesteps,
            initial=min(r.global_step for r in self.runs),
            unit="step",
            disable=not cfg.progress,
        )
        try:
            self._finish_done(results)
            while self.active:
                tic, prev_step = time.perf_counter(), self.runs[self.active[0]].global_step
                metrics = self.update(self.collect(), prev_step / cfg.total_timesteps)
                elapsed = time.perf_counter() - tic
                for i, k in enumerate(self.active):
                    self._after_iteration(self.runs[k], i, metrics[i], prev_step, elapsed)
                best = max(self.runs[k].history[-1]["rollout/ep_rew_mean"] for k in self.active)
                bar.update(self.runs[self.active[0]].global_step - prev_step)
                bar.set_postfix(ep_rew_mean=f"{best:.1f}", seeds=len(self.active), refresh=False)
                self._finish_done(results)
        finally:
            bar.close()
            for r in self.runs:
                r.close()
        return results

    def _after_iteration(
        self, run: SeedRun, i: int, metrics: dict[str, float], prev_step: int, elapsed: float
    ) -> None:
        """Seed bookkeeping: counters, the CSV row, the stop rule's evaluations, checkpoints."""
        cfg = run.cfg
        run.iteration += 1
        run.wall_s += elapsed
        row = run.row(metrics)
        if _crossed(prev_step, run.global_step, cfg.eval_every):
            returns = self.evaluate(run, cfg.eval_every_episodes, PERIODIC_EVAL_SEED + cfg.seed)
            row["eval/mean_reward"], row["eval/std_reward"] = returns.mean(), returns.std()
            if cfg.target_return is not None and returns.mean() >= cfg.target_return:
                confirmed = self.final_evaluation(run)  # screened on a few, confirmed on all
                if confirms(confirmed, cfg.target_return, cfg.confirm_z):
                    run.threshold, run.confirmed = (run.global_step, run.wall_s), confirmed
        if self.before_first_write is not None:
            self.before_first_write()
            self.before_first_write = None
        run.log(row)
        if run.collapsed_at is None:
            self._check_health(run, i, metrics)
        due = _crossed(prev_step, run.global_step, cfg.checkpoint_every) and not run.finished
        if due and run.collapsed_at is None:
            self._save(i)

    def _check_health(self, run: SeedRun, i: int, metrics: dict[str, float]) -> None:
        """Warn once, on one line, when the seed's policy has collapsed: a discrete policy whose
        entropy is ~0 (it always picks one action, so it can no longer explore), or weights that
        have blown up. Its checkpoints stop there: checkpoint.pt keeps the last healthy state."""
        largest = max(float(p.detach()[i].abs().max()) for p in self.model.parameters())
        discrete = "n_actions" in run.dims
        reason = None
        if discrete and metrics["entropy"] < COLLAPSED_ENTROPY:
            reason = f"its entropy is {metrics['entropy']:.1e} nats"
        elif not math.isfinite(largest) or largest > BLOWN_UP_WEIGHT:
            reason = f"its largest weight is {largest:.1e}"
        if reason is None:
            return
        run.collapsed_at = run.global_step
        kept = "no checkpoint was written before it"
        if run.out is not None and (run.out / CHECKPOINT_NAME).exists():
            kept = "checkpoint.pt keeps the last healthy state"
        print(
            f"warning: seed {run.cfg.seed}: the policy collapsed at step {run.global_step} "
            f"({reason}): lower --lr; {kept}",
            file=sys.stderr,
        )

    def _finish_done(self, results: list[TrainResult | None]) -> None:
        """The seeds that are done leave the batch (their slices kept), then each is saved,
        evaluated and written out."""
        done = [i for i, k in enumerate(self.active) if self.runs[k].finished]
        if done:
            model, optimizer = self.model.state_dict(), self.optimizer.state_dict()
            slices = [
                (agent_slice(model, i), agent_slice(optimizer, i)) for i in range(len(self.active))
            ]
            for i in done:
                self.runs[self.active[i]].frozen = slices[i]
            keep = [i for i in range(len(self.active)) if i not in done]
            self.active = [self.active[i] for i in keep]
            if keep:  # the others leave the model (with none left, the last model stays)
                self._load_batch([slices[i][0] for i in keep], [slices[i][1] for i in keep])
        for k, run in enumerate(self.runs):
            if run.frozen is None or results[k] is not None:
                continue
            if run.collapsed_at is None:
                run.save(*run.frozen)
            final = run.confirmed if run.confirmed is not None else self.final_evaluation(run)
            results[k] = _result(run, final)
            run.write_result(results[k].summary())
            run.close()


def make_adam(model: ActorCritic, lr: float) -> torch.optim.Optimizer:
    """Adam over the stacked parameters. foreach, not fused: the fused kernel rounds an element
    differently in its vector body than in its scalar tail, so an agent's update would depend on
    K (a 2-action head bias is 2 numbers alone, 16 as one of 8 seeds); foreach's is the same for
    all (tested), at ~10% of a one-seed minibatch step."""
    return torch.optim.Adam(model.parameters(), lr=lr, eps=1e-5, foreach=True)


def _result(run: SeedRun, final: np.ndarray | None) -> TrainResult:
    cfg = run.cfg
    trained = run.wall_s - run.start_wall
    return TrainResult(
        env=cfg.env_id,
        seed=cfg.seed,
        total_steps=run.global_step,
        wall_s=round(run.wall_s, 3),
        eval_mean=None if final is None else float(final.mean()),
        eval_std=None if final is None else float(final.std()),
        eval_episodes=cfg.eval_episodes,
        threshold_steps=None if run.threshold is None else run.threshold[0],
        threshold_wall_s=None if run.threshold is None else round(run.threshold[1], 3),
        sps=round((run.global_step - run.start_step) / max(trained, 1e-9), 1),
        out=None if run.out is None else str(run.out),
        collapsed_at=run.collapsed_at,
        history=run.history,
    )


def confirms(returns: np.ndarray, target: float, z: float) -> bool:
    """The confirmation of the stop rule: the lower confidence bound of the mean return reaches
    the target, mean - z * std / sqrt(n) >= target (std with n - 1; see TrainConfig)."""
    n = len(returns)
    return n >= 2 and returns.mean() - z * returns.std(ddof=1) / np.sqrt(n) >= target


def _crossed(prev: int, now: int, every: int) -> bool:
    """Whether a multiple of `every` (> 0) lies in (prev, now]."""
    return every > 0 and now // every > prev // every


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
    return train_runs([cfg], [out], resume, overwrite)[0]


def train_seeds(
    cfg: TrainConfig,
    seeds: Sequence[int],
    out: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> list[TrainResult]:
    """`train` for each seed in `seeds` (cfg.seed is replaced), all in one batched model; seed
    k's run folder is `out/seed-<k>`."""
    cfgs = [replace(cfg, seed=s) for s in seeds]
    outs = [None if out is None else Path(out) / f"seed-{s}" for s in seeds]
    return train_runs(cfgs, outs, resume, overwrite)


def train_runs(
    cfgs: Sequence[TrainConfig],
    outs: Sequence[str | Path | None],
    resume: bool = False,
    overwrite: bool = False,
) -> list[TrainResult]:
    """The seeds `cfgs` (same hyperparameters) into their run folders `outs`, as one Trainer."""
    paths = [
        None if out is None else check_out(out, resume=resume, overwrite=overwrite) for out in outs
    ]
    trainer = Trainer(cfgs, paths, resume)
    with contextlib.ExitStack() as locks:
        for path in paths:
            if path is None:
                continue
            try:
                locks.enter_context(run_lock(path))  # this process owns the folder from here
            except OSError as err:
                for r in trainer.runs:
                    r.envs.close()
                raise ClassicError(f"cannot use --out {path}: {err}: pass another --out") from err
            except RunDirError:
                for r in trainer.runs:
                    r.envs.close()
                raise
        if overwrite:  # the old runs go once the new ones have done an iteration
            trainer.before_first_write = lambda: [start_over(p, RUN_FILES) for p in paths if p]
        return trainer.run()


def parse_seeds(spec: str) -> list[int]:
    """'0-7' -> [0, ..., 7]; '0,3,5' -> [0, 3, 5] (ranges and commas mix: '0-2,9')."""
    seeds: list[int] = []
    for part in spec.split(","):
        found = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if found is None:
            raise ClassicError(
                f"--seeds {spec!r}: {part!r} is not a seed or a range: write e.g. 0-7 or 0,3,5"
            )
        lo, hi = int(found[1]), int(found[2] or found[1])
        if hi < lo:
            raise ClassicError(
                f"--seeds {spec!r}: the range {part.strip()} is empty: write {hi}-{lo}"
            )
        seeds += range(lo, hi + 1)
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ClassicError(f"--seeds {spec!r} names seed(s) {repeated} twice: give each once")
    if len(seeds) > MAX_SEEDS:
        raise ClassicError(f"--seeds {spec!r} gives {len(seeds)} seeds: at most {MAX_SEEDS}")
    return seeds


# --- CLI -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """One flag per TrainConfig field (defaults come from the env's preset), plus run flags."""
    parser = argparse.ArgumentParser(
        prog="python -m classic.train",
        description="Train PPO on a gymnasium env. Presets: " + ", ".join(PRESETS),
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--out", help="run directory (logs, checkpoint, plot); none = no files")
    parser.add_argument(
        "--seeds",
        help="train many seeds as one batched model, e.g. 0-7 or 0,3,5 (runs in OUT/seed-<k>)",
    )
    parser.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    parser.add_argument(
        "--overwrite", action="store_true", help="start over in an --out that holds a run"
    )
    add_config_arguments(
        parser, TrainConfig, aliases={"env_id": "--env"}, default_note=" (before the preset)"
    )
    return parser


def config_from_args(args: argparse.Namespace, seeds: list[int] | None = None) -> TrainConfig:
    """Preset of the env + flags; with --resume, the checkpoint's config + flags (many seeds:
    the first seed's)."""
    overrides = config_overrides(args, TrainConfig)
    out = getattr(args, "out", None)
    if getattr(args, "resume", False):
        if out is None:
            raise ClassicError("--resume needs --out (the run directory to continue)")
        run = out if seeds is None else Path(out) / f"seed-{seeds[0]}"
        saved = load_checkpoint(run, env_id=overrides.get("env_id"))["config"]
        return TrainConfig.from_dict({**saved, **overrides})
    return TrainConfig.for_env(overrides.pop("env_id", TrainConfig.env_id), **overrides)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: run(args), (ClassicError, *USER_ERRORS))


def run(args: argparse.Namespace) -> dict:
    """Check the flags and run folders, train, and return the summary."""
    out = getattr(args, "out", None)
    resume, overwrite = getattr(args, "resume", False), getattr(args, "overwrite", False)
    if out is None and overwrite:
        raise ClassicError("--overwrite needs --out (the run folder to start over in)")
    seeds = getattr(args, "seeds", None)
    if seeds is not None:
        if hasattr(args, "seed"):
            raise ClassicError("give --seed (one run) or --seeds (many), not both")
        seeds = parse_seeds(seeds)
    if seeds is not None and out is not None:
        for s in seeds:
            check_out(Path(out) / f"seed-{s}", resume=resume, overwrite=overwrite)
    elif out is not None:
        check_out(out, resume=resume, overwrite=overwrite)
    cfg = config_from_args(args, seeds)
    if seeds is not None and cfg.target_kl is not None:
        raise ClassicError(
            "--seeds trains with the epochs of every seed at once: drop target_kl (set "
            "--target-kl none), or train the seeds one by one with --seed"
        )
    tic = time.perf_counter()
    if seeds is None:
        return train(cfg, out, resume, overwrite).summary()
    results = train_seeds(cfg, seeds, out, resume, overwrite)
    wall = round(time.perf_counter() - tic, 3)
    return {"runs": [r.summary() for r in results], "wall_s": wall}


if __name__ == "__main__":
    sys.exit(main())
