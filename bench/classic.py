"""Ours (classic.train presets) vs Stable-Baselines3 PPO with rl-zoo's tuned hyperparameters.

    python -m bench.classic --env CartPole-v1 --seeds 5
    python -m bench.classic --env LunarLander-v3 --seeds 5 --sb3-seeds 1
    python -m bench.classic --env Pendulum-v1 --seeds 5            # also LunarLanderContinuous-v3
    python -m bench.classic --env HalfCheetah-v5 --seeds 1 --sb3-seeds 1       # also Hopper-v5
    python -m bench.classic --env CartPole-v1 --seeds 8 --batched   # many seeds at once
    python -m bench.classic --env CartPole-v1 --k-table 1,2,4,8,16

Both sides run in this process with torch.set_num_threads(1), seed after seed (ours, then SB3),
and are measured alike: every --eval-every env steps the deterministic policy plays 20 episodes
(classic.evaluate.evaluate_policy, for both); once their mean reaches the threshold it must be
confirmed on the 100 final-evaluation episodes with classic's margin (`classic.train.confirms`:
mean - 2 std / sqrt(100) >= threshold), and training stops. Then both sides are graded on 100
held-out episodes (HELD_OUT_SEED + seed) that neither stop rule saw: a run is solved when that
held-out mean reaches the threshold, and "steps/wall to threshold" (the confirmed stop) count
only for solved runs. MuJoCo envs have no threshold: both sides train their whole budget and
the table compares the held-out return and the wall-clock. Evaluation time is excluded from
every wall-clock. The same-work row runs our trainer with SB3's exact CartPole hyperparameters
for the same number of steps, beside the gradient steps alone (an upper bound for an
eager-PyTorch trainer of this network).
SB3 is a bench-only dependency (pip install stable-baselines3).

--batched: the same seeds trained as one batched run (`classic.train --seeds`), beside each seed
trained alone, graded alike; the ratio is the batched run's training wall-clock (to its last
seed's stop) over the median single run's. --k-table: K = 1, 2, 4, ... seeds at once for a fixed
budget without evaluations: wall-clock and per-seed SPS.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from classic.checkpoint import build_model, load_checkpoint, restore_policy
from classic.config import TrainConfig
from classic.envs import make_vec_env, policy_dims
from classic.evaluate import Policy, evaluate_policy, torch_policy
from classic.train import (
    FINAL_EVAL_SEED,
    PERIODIC_EVAL_SEED,
    Trainer,
    TrainResult,
    confirms,
    train_seeds,
)

# MuJoCo envs have no threshold: the bench compares the final held-out return and the wall-clock.
THRESHOLDS = {
    "CartPole-v1": 475.0,
    "LunarLander-v3": 200.0,
    "Pendulum-v1": -200.0,
    "LunarLanderContinuous-v3": 200.0,
}
HELD_OUT_SEED = 30_000  # + seed: episodes that neither stop rule (periodic, final) ever played
HELD_OUT_EPISODES = 100


def held_out_eval(policy: Policy, env_id: str, seed: int) -> float:
    """The mean deterministic return over the held-out episodes of `seed`."""
    returns = evaluate_policy(policy, env_id, HELD_OUT_EPISODES, seed=HELD_OUT_SEED + seed)
    return float(returns.mean())


def lin(initial: float) -> Callable[[float], float]:
    """rl-zoo's lin_<x>: x * progress_remaining (1 -> 0 over training)."""
    return lambda progress_remaining: progress_remaining * initial


# rl-zoo hyperparams/ppo.yml (https://github.com/DLR-RM/rl-baselines3-zoo), PPO section;
# LunarLander(Continuous)-v3 use the -v2 entries, HalfCheetah-v5 and Hopper-v5 the -v3 entries (the
# tuned MuJoCo set). n_timesteps is the budget of both sides. normalize: VecNormalize (obs and
# reward); the SB3 policy is evaluated on observations normalised with the frozen statistics.
_ZOO_MUJOCO_NET = dict(
    log_std_init=-2,
    ortho_init=False,
    activation_fn=torch.nn.ReLU,
    net_arch=dict(pi=[256, 256], vf=[256, 256]),
)
_ZOO_LUNAR = dict(  # LunarLander-v2 and LunarLanderContinuous-v2
    n_envs=16,
    n_timesteps=1_000_000,
    n_steps=1024,
    batch_size=64,
    gae_lambda=0.98,
    gamma=0.999,
    n_epochs=4,
    ent_coef=0.01,
)
ZOO: dict[str, dict[str, Any]] = {
    "CartPole-v1": dict(
        n_envs=8,
        n_timesteps=100_000,
        n_steps=32,
        batch_size=256,
        gae_lambda=0.8,
        gamma=0.98,
        n_epochs=20,
        ent_coef=0.0,
        learning_rate=lin(0.001),
        clip_range=lin(0.2),
    ),
    "LunarLander-v3": _ZOO_LUNAR,
    "Pendulum-v1": dict(
        n_envs=4,
        n_timesteps=100_000,
        n_steps=1024,
        gae_lambda=0.95,
        gamma=0.9,
        n_epochs=10,
        ent_coef=0.0,
        learning_rate=1e-3,
        clip_range=0.2,
        use_sde=True,
        sde_sample_freq=4,
    ),
    "LunarLanderContinuous-v3": _ZOO_LUNAR,  # rl-zoo's entry repeats LunarLander's values
    "HalfCheetah-v5": dict(
        normalize=True,
        n_envs=1,
        n_timesteps=1_000_000,
        batch_size=64,
        n_steps=512,
        gamma=0.98,
        learning_rate=2.0633e-05,
        ent_coef=0.000401762,
        clip_range=0.1,
        n_epochs=20,
        gae_lambda=0.92,
        max_grad_norm=0.8,
        vf_coef=0.58096,
        policy_kwargs=_ZOO_MUJOCO_NET,
    ),
    "Hopper-v5": dict(
        normalize=True,
        n_envs=1,
        n_timesteps=1_000_000,
        batch_size=32,
        n_steps=512,
        gamma=0.999,
        learning_rate=9.80828e-05,
        ent_coef=0.00229519,
        clip_range=0.2,
        n_epochs=5,
        gae_lambda=0.99,
        max_grad_norm=0.7,
        vf_coef=0.835671,
        policy_kwargs=_ZOO_MUJOCO_NET,
    ),
}


def zoo_as_ours(env_id: str, **overrides: Any) -> TrainConfig:
    """Our TrainConfig doing SB3's work: rl-zoo's hyperparameters, SB3's defaults where the entry
    is silent, its network (policy_kwargs) and VecNormalize (the clip is not annealed)."""
    z = ZOO[env_id]
    lr, clip = z.get("learning_rate", 3e-4), z.get("clip_range", 0.2)
    net = z.get("policy_kwargs", {})
    arch = net.get("net_arch", dict(pi=[64, 64]))["pi"]
    return TrainConfig(
        env_id=env_id,
        n_envs=z["n_envs"],
        n_steps=z.get("n_steps", 2048),
        minibatch_size=z.get("batch_size", 64),
        n_epochs=z.get("n_epochs", 10),
        gamma=z.get("gamma", 0.99),
        gae_lambda=z.get("gae_lambda", 0.95),
        ent_coef=z.get("ent_coef", 0.0),
        vf_coef=z.get("vf_coef", 0.5),
        max_grad_norm=z.get("max_grad_norm", 0.5),
        clip_eps=clip(1.0) if callable(clip) else clip,
        lr=lr(1.0) if callable(lr) else lr,
        anneal_lr=callable(lr),
        hidden_dim=arch[0],
        n_hidden=len(arch),
        activation="relu" if net.get("activation_fn") is torch.nn.ReLU else "tanh",
        ortho_init=net.get("ortho_init", True),
        log_std_init=float(net.get("log_std_init", 0.0)),
        use_sde=z.get("use_sde", False),
        sde_sample_freq=z.get("sde_sample_freq", -1),
        norm_obs=z.get("normalize", False),
        norm_reward=z.get("normalize", False),
        **overrides,
    )


def gradient_step_floor_sps(cfg: TrainConfig, repeats: int = 2) -> float:
    """An upper bound on the same-work SPS of any eager-PyTorch trainer with this network.

    Times only the gradient steps that `cfg` implies (n_epochs * batch / minibatch per
    iteration), each a forward of actor and critic on a fixed minibatch, a plain policy-gradient
    + value loss, backward, gradient clipping and fused Adam: no env, no rollout forwards, no
    shuffling or bookkeeping. Best of `repeats`, returned as env steps per second.
    """
    torch.manual_seed(cfg.seed)
    envs = make_vec_env(cfg.env_id, 1)
    dims = policy_dims(envs)
    envs.close()
    model = build_model(cfg, dims)  # the trainer's network for this config
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=1e-5, fused=True)
    n = cfg.minibatch_size
    obs = torch.randn(n, dims["obs_dim"])
    actions = model.act(obs)[0]
    advantages, returns = torch.randn(n), torch.randn(n)
    iterations = -(-cfg.total_timesteps // cfg.batch_size)
    steps = iterations * cfg.n_epochs * (cfg.batch_size // n)
    best = float("inf")
    for _ in range(repeats):
        tic = time.perf_counter()
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            logprobs, entropy, values = model.evaluate(obs, actions)
            loss = -(logprobs * advantages).mean() + 0.5 * ((values - returns) ** 2).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
        best = min(best, time.perf_counter() - tic)
    return iterations * cfg.batch_size / best


def run_ours(cfg: TrainConfig, held_out: bool = True) -> dict[str, Any]:
    """Our trainer on `cfg`, then (`held_out`) its final policy on the held-out episodes."""
    trainer = Trainer(cfg)
    r = trainer.run()[0]
    policy = torch_policy(trainer.model, trainer.normalizer, True, cfg.device)
    return ours_row("ours", r, held_out_eval(policy, cfg.env_id, cfg.seed) if held_out else None)


def ours_row(side: str, r: TrainResult, held_out: float | None) -> dict[str, Any]:
    """The bench row of one of our runs (the same keys as run_sb3's)."""
    return {
        "side": side,
        "seed": r.seed,
        "steps_to_threshold": r.threshold_steps,
        "wall_to_threshold": r.threshold_wall_s,
        "final_eval": r.eval_mean,
        "held_out_eval": held_out,
        "total_steps": r.total_steps,
        "wall_s": r.wall_s,
        "sps": r.sps,
    }


def run_sb3(
    env_id: str,
    seed: int,
    *,
    budget: int,
    eval_every: int,
    screen_episodes: int = 20,
    final_episodes: int = 100,
    held_out: bool = True,
) -> dict[str, Any]:
    """SB3 PPO with the rl-zoo hyperparameters and our evaluation protocol (eval_every 0: none),
    the same stop rule as ours (`confirms`, with our default margin), graded on the held-out
    episodes."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    target = THRESHOLDS.get(env_id)
    zoo = {k: v for k, v in ZOO[env_id].items() if k not in ("n_envs", "n_timesteps", "normalize")}

    class Threshold(BaseCallback):
        """Evaluate every eval_every steps (time excluded); stop once the threshold is confirmed."""

        def __init__(self) -> None:
            super().__init__()
            self.eval_s, self.next_eval, self.hit, self.final = 0.0, eval_every, None, None

        def _on_training_start(self) -> None:
            self.start = time.perf_counter()

        def _on_step(self) -> bool:
            if target is None or not eval_every or self.num_timesteps < self.next_eval:
                return True
            self.next_eval += eval_every
            tic = time.perf_counter()
            screen = evaluate_policy(
                policy, env_id, screen_episodes, seed=PERIODIC_EVAL_SEED + seed
            )
            if screen.mean() >= target:
                final = evaluate_policy(policy, env_id, final_episodes, seed=FINAL_EVAL_SEED + seed)
                if confirms(final, target, TrainConfig.confirm_z):
                    self.hit = (self.num_timesteps, tic - self.start - self.eval_s)
                    self.final = final
            self.eval_s += time.perf_counter() - tic
            return self.hit is None

    torch.set_num_threads(1)
    envs = make_vec_env(env_id, n_envs=ZOO[env_id]["n_envs"], seed=seed)
    if ZOO[env_id].get("normalize"):
        envs = VecNormalize(envs, gamma=zoo.get("gamma", 0.99))  # as rl-zoo
    model = PPO("MlpPolicy", envs, seed=seed, device="cpu", verbose=0, **zoo)

    def policy(obs: np.ndarray) -> np.ndarray:
        if isinstance(envs, VecNormalize):
            obs = envs.normalize_obs(obs)  # frozen statistics: normalize_obs does not update
        return model.predict(obs, deterministic=True)[0]

    callback = Threshold()
    tic = time.perf_counter()
    model.learn(total_timesteps=budget, callback=callback)
    wall = time.perf_counter() - tic - callback.eval_s
    final = callback.final
    if final is None and final_episodes:
        final = evaluate_policy(policy, env_id, final_episodes, seed=FINAL_EVAL_SEED + seed)
    return {
        "side": "sb3",
        "seed": seed,
        "steps_to_threshold": None if callback.hit is None else callback.hit[0],
        "wall_to_threshold": None if callback.hit is None else round(callback.hit[1], 3),
        "final_eval": None if final is None else float(final.mean()),
        "held_out_eval": held_out_eval(policy, env_id, seed) if held_out else None,
        "total_steps": model.num_timesteps,
        "wall_s": round(wall, 3),
        "sps": round(model.num_timesteps / wall, 1),
    }


def run_batched(cfg: TrainConfig, seeds: list[int]) -> tuple[list[dict[str, Any]], float]:
    """`seeds` as one batched run (the many-seeds trainer), each graded on its held-out episodes
    from its run folder; returns the per-seed rows and the process wall-clock (evaluations
    included)."""
    with tempfile.TemporaryDirectory() as tmp:
        tic = time.perf_counter()
        results = train_seeds(cfg, seeds, tmp)
        process_wall = time.perf_counter() - tic
        rows = []
        for r in results:
            _, model, normalizer = restore_policy(load_checkpoint(r.out))
            policy = torch_policy(model, normalizer, True, cfg.device)
            rows.append(ours_row("ours, batched", r, held_out_eval(policy, cfg.env_id, r.seed)))
    return rows, process_wall


def batched_report(cfg: TrainConfig, seeds: list[int]) -> str:
    """The batched run of `seeds` beside each seed alone (markdown)."""
    alone = []
    for seed in seeds:
        tic = time.perf_counter()
        alone.append(run_ours(replace(cfg, seed=seed)))
        alone[-1]["process_wall"] = time.perf_counter() - tic
        print(json.dumps(alone[-1]), flush=True)
    batched, process_wall = run_batched(cfg, seeds)
    for row in batched:
        print(json.dumps(row), flush=True)
    target = THRESHOLDS[cfg.env_id]
    solved = lambda rows: sum(r["held_out_eval"] >= target for r in rows)  # noqa: E731
    one = statistics.median(r["wall_s"] for r in alone)
    many = max(r["wall_s"] for r in batched)  # the batched run's training ends with its last seed
    same = all(
        (a["total_steps"], a["final_eval"]) == (b["total_steps"], b["final_eval"])
        for a, b in zip(alone, batched, strict=True)
    )
    lines = [
        f"{cfg.env_id}, {len(seeds)} seeds, threshold {target:g} on {HELD_OUT_EPISODES} held-out "
        "episodes",
        "",
        "| run | solved (held-out) | training wall (s) | process wall incl. evaluations (s) |",
        "|---|---|---|---|",
        f"| each seed alone | {solved(alone)}/{len(seeds)} | median {one:.1f}, sum "
        f"{sum(r['wall_s'] for r in alone):.1f} | "
        f"sum {sum(r['process_wall'] for r in alone):.1f} |",
        f"| one batched run | {solved(batched)}/{len(seeds)} | {many:.1f} (to the last seed's "
        f"stop) | {process_wall:.1f} |",
        "",
        f"batched / median single run (training wall): **{many / one:.2f}x**; per-seed runs "
        f"identical to the single runs (steps, confirmation eval): {same}",
    ]
    return "\n".join(lines)


def k_table(cfg: TrainConfig, ks: list[int]) -> str:
    """Fixed budget, no evaluation: K seeds at once for each K (markdown)."""
    cfg = replace(cfg, target_return=None, eval_every=0, eval_episodes=0)
    lines = [
        f"{cfg.env_id}, {cfg.total_timesteps:,} steps per seed, no evaluations",
        "",
        f"| K seeds | wall (s) | wall / K={ks[0]} | per-seed SPS | total SPS |",
        "|---|---|---|---|---|",
    ]
    train_seeds(replace(cfg, total_timesteps=2 * cfg.batch_size), [0])  # warm-up, not timed
    base = None
    for k in ks:
        tic = time.perf_counter()
        train_seeds(cfg, list(range(k)))
        wall = time.perf_counter() - tic
        base = base or wall  # the first K of the list (K = 1 in the README's table)
        lines.append(
            f"| {k} | {wall:.1f} | {wall / base:.2f} | {cfg.total_timesteps / wall:,.0f} | "
            f"{k * cfg.total_timesteps / wall:,.0f} |"
        )
        print(lines[-1], flush=True)
    return "\n".join(lines)


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r[key] is not None]
    return statistics.median(values) if values else None


def _fmt(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def table(runs: list[dict[str, Any]], env_id: str) -> str:
    """Per-run rows, then per-side medians and the ours/SB3 ratios (markdown).

    Solved: the held-out mean reaches the threshold. The medians of steps and wall to threshold
    are over the solved runs only (a confirmed stop that fails on held-out episodes is a miss).
    """
    target = THRESHOLDS[env_id]
    lines = [
        f"{env_id}, threshold {target:g}: confirmed with a margin on 100 deterministic episodes, "
        f"graded on {HELD_OUT_EPISODES} held-out episodes",
        "",
        "| side | seed | steps to threshold | wall to threshold (s) | confirmation eval (100 ep) "
        "| held-out eval (100 ep) | SPS |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r['side']} | {r['seed']} | {_fmt(r['steps_to_threshold'], 0)} | "
            f"{_fmt(r['wall_to_threshold'], 2)} | {_fmt(r['final_eval'])} | "
            f"{_fmt(r['held_out_eval'])} | {_fmt(r['sps'], 0)} |"
        )
    lines += [
        "",
        "| side | solved (held-out) | median steps | median wall (s) | median SPS |",
        "|---|---|---|---|---|",
    ]
    med = {}
    for side in ("ours", "sb3"):
        rs = [r for r in runs if r["side"] == side]
        if not rs:
            continue
        solved = [r for r in rs if r["held_out_eval"] is not None and r["held_out_eval"] >= target]
        med[side] = {k: _median(solved, k) for k in ("steps_to_threshold", "wall_to_threshold")}
        med[side]["sps"] = _median(rs, "sps")
        lines.append(
            f"| {side} | {len(solved)}/{len(rs)} | {_fmt(med[side]['steps_to_threshold'], 0)} | "
            f"{_fmt(med[side]['wall_to_threshold'], 2)} | {_fmt(med[side]['sps'], 0)} |"
        )
    if len(med) == 2:
        ratios = [
            _fmt(med["ours"][k] / med["sb3"][k], 2) if med["ours"][k] and med["sb3"][k] else "-"
            for k in ("steps_to_threshold", "wall_to_threshold", "sps")
        ]
        lines.append(f"| ours/SB3 | | {ratios[0]} | {ratios[1]} | {ratios[2]} |")
    return "\n".join(lines)


def return_table(runs: list[dict[str, Any]], env_id: str) -> str:
    """For envs without a threshold (MuJoCo): the held-out return and wall-clock of each run at
    the full budget, per-side medians and the ours/SB3 ratios (markdown)."""
    lines = [
        f"{env_id}: final policy graded on {HELD_OUT_EPISODES} held-out deterministic episodes",
        "",
        "| side | seed | steps | wall (s) | held-out eval (100 ep) | SPS |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r['side']} | {r['seed']} | {r['total_steps']:,} | {_fmt(r['wall_s'], 1)} | "
            f"{_fmt(r['held_out_eval'])} | {_fmt(r['sps'], 0)} |"
        )
    lines += ["", "| side | median held-out eval | median wall (s) |", "|---|---|---|"]
    med = {}
    for side in ("ours", "sb3"):
        rs = [r for r in runs if r["side"] == side]
        if rs:
            med[side] = {k: _median(rs, k) for k in ("held_out_eval", "wall_s")}
            lines.append(
                f"| {side} | {_fmt(med[side]['held_out_eval'])} | {_fmt(med[side]['wall_s'], 1)} |"
            )
    if len(med) == 2:
        ratio = [med["ours"][k] / med["sb3"][k] for k in ("held_out_eval", "wall_s")]
        lines.append(f"| ours/SB3 | {ratio[0]:.2f} | {ratio[1]:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--env", default="CartPole-v1", choices=sorted(ZOO))
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 for ours")
    parser.add_argument("--sb3-seeds", type=int, help="seeds for SB3 (default: --seeds)")
    parser.add_argument("--skip-sb3", action="store_true")
    parser.add_argument("--ours-budget", type=int, help="env steps (default: our preset's)")
    parser.add_argument("--sb3-budget", type=int, help="env steps (default: rl-zoo n_timesteps)")
    parser.add_argument("--eval-every", type=int, help="env steps (default: our preset's)")
    parser.add_argument(
        "--same-work-steps",
        type=int,
        help="ours and SB3 on rl-zoo's hyperparameters for this many steps, side by side "
        "(default: 100,000 for CartPole-v1, else none; 0 skips it)",
    )
    parser.add_argument(
        "--batched", action="store_true", help="seeds 0..N-1 batched vs alone (no SB3)"
    )
    parser.add_argument("--k-table", help="e.g. 1,2,4,8,16: K seeds at once, fixed budget")
    parser.add_argument("--k-steps", type=int, default=20_480, help="budget per seed, --k-table")
    args = parser.parse_args()
    torch.set_num_threads(1)
    preset = TrainConfig.for_env(args.env)
    eval_every = args.eval_every or preset.eval_every
    quiet = dict(progress=False, tensorboard=False)
    if args.k_table:
        cfg = replace(preset, total_timesteps=args.k_steps, **quiet)
        print("\n" + k_table(cfg, [int(k) for k in args.k_table.split(",")]))
        return
    if args.batched:
        budget = args.ours_budget or preset.total_timesteps
        cfg = replace(preset, total_timesteps=budget, eval_every=eval_every, **quiet)
        print("\n" + batched_report(cfg, list(range(args.seeds))))
        return
    sb3_seeds = (
        0 if args.skip_sb3 else (args.sb3_seeds if args.sb3_seeds is not None else args.seeds)
    )
    runs = []
    for seed in range(max(args.seeds, sb3_seeds)):
        if seed < args.seeds:
            cfg = TrainConfig.for_env(
                args.env,
                seed=seed,
                total_timesteps=args.ours_budget or preset.total_timesteps,
                eval_every=eval_every,
                progress=False,
                tensorboard=False,
            )
            runs.append(run_ours(cfg))
            print(json.dumps(runs[-1]), flush=True)
        if seed < sb3_seeds:
            budget = args.sb3_budget or ZOO[args.env]["n_timesteps"]
            runs.append(run_sb3(args.env, seed, budget=budget, eval_every=eval_every))
            print(json.dumps(runs[-1]), flush=True)
    print()
    print(table(runs, args.env) if args.env in THRESHOLDS else return_table(runs, args.env))
    n = args.same_work_steps
    if n is None:
        n = 100_000 if args.env == "CartPole-v1" else 0
    if n:
        cfg = zoo_as_ours(
            args.env, total_timesteps=n, eval_episodes=0, progress=False, tensorboard=False
        )
        ours = run_ours(cfg, held_out=False)
        floor = gradient_step_floor_sps(cfg)
        print(f"\nsame work (rl-zoo's {args.env} hyperparameters, {n:,} steps, seed 0):")
        print(f"  ours {ours['sps']:,.0f} SPS")
        print(f"  gradient steps alone (no env, no PPO bookkeeping) {floor:,.0f} SPS")
        if not args.skip_sb3:
            sb3 = run_sb3(args.env, 0, budget=n, eval_every=0, final_episodes=0, held_out=False)
            print(f"  SB3 {sb3['sps']:,.0f} SPS")
            print(
                f"  ours/SB3 {ours['sps'] / sb3['sps']:.2f}x, "
                f"gradient steps alone/SB3 {floor / sb3['sps']:.2f}x"
            )


if __name__ == "__main__":
    main()
