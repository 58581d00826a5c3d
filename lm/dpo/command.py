"""`python -m lm.dpo`: DPO (or IPO) on preference pairs, by default the toy world's own, offline.

    python -m lm.dpo                                     # the world's pairs, from its SFT policy
    python -m lm.dpo --loss ipo --beta 0.5
    python -m lm.dpo --pairs DIR|FILE.jsonl|DATASET_ID [--policy DIR] [--reward-model DIR]
    torchrun --nproc_per_node 2 -m lm.dpo ...            # 2 processes (DDP)

Pairs use trl's explicit-prompt columns (prompt, chosen, rejected). The reference is the starting
policy; its log-probs of every pair are computed once, before training. Every `LMDPOConfig` field
is a flag. Graded before and after as lm.train grades PPO (`lm.grading.Grader`): responses to
held-out prompts sampled at `temperature`, scored by the gold judge (toy world) and the reward
model, with the KL to the reference in nats per response and the EOS fraction. Writes metrics.csv
(trl's DPO metric names), tb/, curves.png and policy/ (a plain model folder) to --out, and
checkpoint-<step>/ with --save-every N; --resume continues the newest bit for bit. The last stdout
line is one JSON object. Bad input exits with status 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lm.data import load_pairs
from lm.dpo.config import LMDPOConfig
from lm.dpo.pairs import tokenize_pairs
from lm.dpo.trainer import LMDPOTrainer, read_dpo_state
from lm.grading import Grader, reference_grader
from lm.models import (
    load_causal_lm,
    load_reward_model,
    load_reward_tokenizer,
    load_tokenizer,
    model_context,
)
from lm.rollout import SamplingArgs
from lm.run import Command, add_run_arguments, cli_main, eval_prompts
from lm.run import run as run_skeleton
from ppo_bridge.cli import add_config_arguments, config_overrides

SOURCES = ("policy", "reward_model", "reward_label", "pairs", "world", "world_cache")
PATHS = ("policy", "reward_model", "pairs")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lm.dpo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", help="save_to_disk folder, .jsonl file or dataset id")
    parser.add_argument("--policy", help="HF id or folder of a causal LM (default: toy SFT)")
    parser.add_argument("--reward-model", help="HF id or folder of a sequence classifier (grading)")
    parser.add_argument("--reward-label", metavar="N|NAME", help="the classifier's logit to grade")
    add_run_arguments(parser, "runs/dpo")
    add_config_arguments(parser.add_argument_group("LMDPOConfig"), LMDPOConfig)
    args = parser.parse_args(argv)
    args.overrides = config_overrides(args, LMDPOConfig)
    return args


def make_config(overrides: dict[str, Any], saved: dict | None) -> LMDPOConfig:
    return LMDPOConfig(**{**(saved or {}), **overrides})


def build(
    args: argparse.Namespace, cfg: LMDPOConfig, world: Any, out: Path
) -> tuple[LMDPOTrainer, Grader]:
    """The pairs (tokenized as trl does), the policy as the trainer, and a grader with a frozen
    copy of the starting policy as the reference."""
    if args.pairs:
        train_pairs, test_pairs = load_pairs(args.pairs)
        held_out = test_pairs if test_pairs is not None else train_pairs
        prompts = sorted(set(held_out["prompt"]))
    else:
        from lm.world import pairs_of_world, world_prompts

        train_pairs, _ = pairs_of_world(world)
        prompts = world_prompts(world)[1]
    policy_name = args.policy or str(world.sft_dir)
    reward_name = args.reward_model or str(world.reward_model_dir)
    tokenizer, policy = load_tokenizer(policy_name), load_causal_lm(policy_name)
    reward_model, reward_label = load_reward_model(reward_name, args.reward_label)
    reward_tokenizer = load_reward_tokenizer(reward_name)
    context = model_context(policy)
    if cfg.max_length is not None and cfg.max_length > context:
        raise ValueError(
            f"--max-length {cfg.max_length} exceeds the policy's context of {context}: lower it"
        )
    pairs = tokenize_pairs(tokenizer, train_pairs, cfg.max_length or context)
    trainer = LMDPOTrainer(cfg, policy, tokenizer, pairs, out_dir=out)
    gold_fn = None
    if world is not None:
        from lm.world import world_gold as gold_fn
    grader = reference_grader(  # its reference: a copy of the starting policy
        trainer.accelerator,
        trainer.policy,
        tokenizer,
        eval_prompts(args, prompts),
        SamplingArgs(cfg.temperature, cfg.max_new_tokens),
        reward_model=reward_model,
        reward_tokenizer=reward_tokenizer,
        reward_label=reward_label,
        gold_fn=gold_fn,
    )
    return trainer, grader


def summary(trainer: LMDPOTrainer, cfg: LMDPOConfig) -> dict[str, Any]:
    return {
        "pairs": len(trainer.pairs),
        "steps": trainer.iteration,
        "reward_accuracy": trainer.last_metrics.get("rewards/accuracies"),
        "reference_s": trainer.seconds_reference,
        "algo": cfg.algo,
    }


COMMAND = Command(
    name="lm.dpo",
    sources=SOURCES,
    paths=PATHS,
    data="pairs",
    files=("checkpoint-*", "policy", "tb", "metrics.csv", "curves.png"),
    read_state=read_dpo_state,
    make_config=make_config,
    build=build,
    summary=summary,
    panels=[
        ("Loss", "loss", ["loss"]),
        ("Implicit reward margin", "beta * log-ratio margin", ["rewards/margins"]),
        ("Reward accuracy", "fraction of pairs ranked right", ["rewards/accuracies"]),
        ("Sequence log-probs", "log pi(y | x)", ["logps/chosen", "logps/rejected"]),
    ],
    title="lm.dpo: preference optimisation on fixed pairs",
    xlabel="optimizer step",
)


def run(args: argparse.Namespace) -> dict:
    """Check, load, grade, train, grade again, save; return the summary."""
    return run_skeleton(args, COMMAND)


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
