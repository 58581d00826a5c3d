"""`python -m lm.agent`: an LM trained to act over many turns in a gymnasium text env.

    python -m lm.agent                                        # GuessNumber, built-in tiny policy
    python -m lm.agent --env ppo_bridge/TextCartPole-v0 --algo grpo
    python -m lm.agent --env module:EnvId --policy DIR --context markov --stop none

Every `AgentConfig` field is a flag (`--n-envs 32`, `--max-turns 20`, `--no-per-token-gamma`);
`--algo` picks the method (`lm.agent.credit.AGENT_CREDIT`) and its preset (the core's estimator
table), the env its own (ENV_PRESETS); other flags override both. Without --policy the env's
built-in tiny policy is built once into the cache (lm.agent.builtin). Evaluates on held-out env
seeds before and after training, writes metrics.csv, tb/, curves.png and policy/ to --out
(checkpoint-<iteration>/ with --save-every N); the last stdout line is one JSON object. An --out
that holds a run needs --resume (continue from its newest checkpoint, bit-identically) or
--overwrite. Bad input exits with status 2 and one line on stderr, and writes nothing to --out.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from lm.agent.builtin import BuiltinSpec, build_policy
from lm.agent.config import ENV_PRESETS, AgentConfig
from lm.agent.report import PANELS, report
from lm.agent.trainer import AgentTrainer, read_agent_state
from lm.models import check_model_source, load_causal_lm, load_tokenizer
from lm.report import plot_curves
from lm.run import cli_main, local, newest_checkpoint, run_markers, take_sources
from lm.world import default_cache_dir
from ppo_bridge.cli import add_config_arguments, config_overrides
from ppo_bridge.logs import read_metrics
from ppo_bridge.rundir import check_run_dir, run_lock, start_over

SOURCES = (
    "policy",
    "cache",
    "sft_turns",
    "sft_optimal_share",
)  # what the run's models come from: --resume's own
FILES = ("checkpoint-*", "policy", "tb", "metrics.csv", "curves.png")  # what --overwrite deletes


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lm.agent", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--policy", help="folder of a causal LM (default: the built-in policy)")
    parser.add_argument("--cache", help="built-in policy cache (default: $PPO_BRIDGE_CACHE)")
    parser.add_argument(
        "--sft-turns",
        type=int,
        help=f"built-in policy: scripted turns to fine-tune on, 0 = random (default "
        f"{BuiltinSpec.sft_turns})",
    )
    parser.add_argument(
        "--sft-optimal-share",
        type=float,
        help="built-in policy: share of SFT episodes played by the env's optimal scripted policy "
        "(default: GuessNumber 0, Calculator 0.2)",
    )
    parser.add_argument("--out", default="runs/agent", help="run folder")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    parser.add_argument("--show", type=int, default=3, help="held-out transcripts printed")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    add_config_arguments(
        parser.add_argument_group("AgentConfig"),
        AgentConfig,
        aliases={"env_id": "--env"},
        default_note=" (before the --algo and env presets)",
    )
    return parser.parse_args(argv)


def make_config(args: argparse.Namespace, saved: dict) -> AgentConfig:
    """The run's config: a checkpoint's with the flags given over it, or defaults < algo preset <
    env preset < flags."""
    overrides = config_overrides(args, AgentConfig)
    if "batch_size" in overrides:
        raise ValueError("--batch-size: an iteration plays --n-envs episodes: pass --n-envs")
    if saved:
        return AgentConfig(**{**saved["config"], **overrides})
    env_preset = ENV_PRESETS.get(overrides.get("env_id", AgentConfig.env_id), {})
    return AgentConfig.for_algo(overrides.pop("algo", "ppo"), **{**env_preset, **overrides})


def run(args: argparse.Namespace) -> dict:
    """Load or build the policy, evaluate, train, evaluate again, save; return the summary."""
    start = time.perf_counter()
    out = check_run_dir(
        args.out, resume=args.resume, overwrite=args.overwrite, markers=run_markers(args.out)
    )
    checkpoint, saved = None, {}
    if args.resume:
        checkpoint = newest_checkpoint(out)
        saved = read_agent_state(checkpoint)
        take_sources(args, checkpoint, saved["run_info"], SOURCES)
    cfg = make_config(args, saved)
    cfg.make_env().close()  # an unknown or non-text env stops here, before any model
    check_model_source("--policy", args.policy)
    if args.sft_turns is not None and args.sft_turns < 0:
        raise ValueError(f"--sft-turns must be >= 0, got {args.sft_turns}")
    args.cache = str(Path(args.cache or default_cache_dir()).expanduser().resolve())
    args.sft_turns = BuiltinSpec.sft_turns if args.sft_turns is None else args.sft_turns
    # the built-in policy is that of the run's first config (a resumed run's flags may differ)
    built_for = AgentConfig(**saved["config"]) if saved else cfg
    policy_dir = args.policy or str(
        build_policy(
            built_for,
            Path(args.cache),
            BuiltinSpec(sft_turns=args.sft_turns, optimal_share=args.sft_optimal_share),
        )
    )
    tokenizer, policy = load_tokenizer(policy_dir), load_causal_lm(policy_dir)
    trainer = AgentTrainer(cfg, policy, tokenizer, out_dir=out)
    if checkpoint is not None:  # the reference stays the starting policy loaded above
        trainer.load_checkpoint(checkpoint)
        print(f"resuming from {checkpoint} (iteration {trainer.iteration})")
    else:
        sources = {k: getattr(args, k) for k in SOURCES}
        trainer.run_info["sources"] = {**sources, "policy": local(args.policy)}
        metrics, ro = trainer.evaluate()
        trainer.run_info["before"] = {
            "metrics": metrics,
            "transcripts": ro.transcripts[: args.show],
        }
    before = trainer.run_info["before"]

    def first_step_done() -> None:
        """--overwrite: the old run goes only once the new one has a completed iteration."""
        if args.overwrite:
            start_over(out, FILES)

    with run_lock(out):
        train_start = time.perf_counter()
        trainer.train(on_first_step=first_step_done)
        train_s = time.perf_counter() - train_start
        after, ro_after = trainer.evaluate()
        trainer.save(out / "policy")
    shown = before["transcripts"]
    report(before["metrics"], after, shown, ro_after.transcripts[: len(shown)])
    title = f"lm.agent {cfg.algo} on {cfg.env_id} ({cfg.context})"
    plot_curves(read_metrics(out / "metrics.csv"), PANELS, out / "curves.png", title)
    print(f"saved the policy to {out / 'policy'}, logs to {out}")
    b = before["metrics"]
    return {
        "return_before": b["return"],
        "return_after": after["return"],
        "success_before": b["success"],
        "success_after": after["success"],
        "turns_before": b["turns"],
        "turns_after": after["turns"],
        "invalid_before": b["invalid_actions"],
        "invalid_after": after["invalid_actions"],
        "kl": after["kl"],
        "train_s": train_s,
        "wall_s": time.perf_counter() - start,
        "algo": cfg.algo,
        "env": cfg.env_id,
        "iterations": trainer.iteration,
        "out": str(out),
    }


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
