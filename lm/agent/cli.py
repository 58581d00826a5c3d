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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lm.agent.builtin import BuiltinSpec, build_policy
from lm.agent.config import ENV_PRESETS, AgentConfig
from lm.agent.report import PANELS, report
from lm.agent.trainer import AgentRollout, AgentTrainer, read_agent_state
from lm.models import check_model_source, load_causal_lm, load_tokenizer
from lm.run import Command, Outcome, cli_main
from lm.run import run as run_skeleton
from lm.world import default_cache_dir
from ppo_bridge.cli import add_config_arguments, config_overrides

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
    args = parser.parse_args(argv)
    args.overrides = config_overrides(args, AgentConfig)
    return args


def make_config(overrides: dict[str, Any], saved: dict | None) -> AgentConfig:
    """The run's config: a checkpoint's with the flags given over it, or defaults < algo preset <
    env preset < flags."""
    if "batch_size" in overrides:
        raise ValueError("--batch-size: an iteration plays --n-envs episodes: pass --n-envs")
    if saved:
        return AgentConfig(**{**saved, **overrides})
    overrides = dict(overrides)
    env_preset = ENV_PRESETS.get(overrides.get("env_id", AgentConfig.env_id), {})
    return AgentConfig.for_algo(overrides.pop("algo", "ppo"), **{**env_preset, **overrides})


def inputs(args: argparse.Namespace, command: Command, cfg: AgentConfig) -> None:
    """Check the env (an unknown or non-text env stops here, before any model) and the flags."""
    cfg.make_env().close()
    check_model_source("--policy", args.policy)
    if args.sft_turns is not None and args.sft_turns < 0:
        raise ValueError(f"--sft-turns must be >= 0, got {args.sft_turns}")


def build(
    args: argparse.Namespace, cfg: AgentConfig, world: None, out: Path
) -> tuple[AgentTrainer, AgentTrainer]:
    """The policy (--policy, else the env's built-in one, built once into the cache and then
    recorded as the run's --policy, so that --resume reloads that very folder) as the trainer,
    which also grades itself on the held-out env seeds."""
    if args.policy is None:
        cache = Path(args.cache or default_cache_dir()).expanduser().resolve()
        sft_turns = BuiltinSpec.sft_turns if args.sft_turns is None else args.sft_turns
        spec = BuiltinSpec(sft_turns=sft_turns, optimal_share=args.sft_optimal_share)
        args.policy = str(build_policy(cfg, cache, spec))
    tokenizer, policy = load_tokenizer(args.policy), load_causal_lm(args.policy)
    trainer = AgentTrainer(cfg, policy, tokenizer, out_dir=out)
    return trainer, trainer


def _summary(before: dict, after: dict) -> dict[str, Any]:
    b = before["metrics"]
    return {
        **{f"{k}_before": b[k] for k in ("return", "success", "turns")},
        **{f"{k}_after": after[k] for k in ("return", "success", "turns")},
        "invalid_before": b["invalid_actions"],
        "invalid_after": after["invalid_actions"],
        "kl": after["kl"],
    }


def _show(before: dict, after: dict, ro_after: AgentRollout, n: int) -> None:
    shown = before["transcripts"]
    report(before["metrics"], after, shown, ro_after.transcripts[: len(shown)])


EPISODES = Outcome(
    samples=lambda ro, n: {"transcripts": ro.transcripts[:n]}, summary=_summary, show=_show
)

COMMAND = Command(
    name="lm.agent",
    sources=SOURCES,
    paths=("policy",),
    data="policy",
    files=FILES,
    read_state=read_agent_state,
    make_config=make_config,
    build=build,
    summary=lambda trainer, cfg: {"algo": cfg.algo, "env": cfg.env_id},
    panels=PANELS,
    title="lm.agent: an LM acting in a gymnasium text env",
    outcome=EPISODES,
    inputs=inputs,
)


def run(args: argparse.Namespace) -> dict:
    """Load or build the policy, evaluate, train, evaluate again, save; return the summary."""
    return run_skeleton(args, COMMAND)


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
