"""`python -m lm.train`: PPO (or GRPO, RLOO, REINFORCE++) on a causal LM, by default the toy
RLHF world, offline.

    python -m lm.train                                   # build/load the toy world, run PPO
    python -m lm.train --algo grpo --num-generations 4   # grpo | rloo | reinforce_pp
    python -m lm.train --policy DIR --reward-model DIR --prompts FILE.txt|DIR|DATASET_ID
    torchrun --nproc_per_node 2 -m lm.train ...          # 2 processes (each its own prompt shard)

Every `LMPPOConfig` field is a flag: `--batch-size 32`, `--kl-target none`, `--normalize-scores`;
`--algo` picks the method and its preset (`lm.ppo.ALGO_PRESETS`), which other flags override.
Whatever of policy / reward model / prompts is not given comes from the toy world. The reward model
is any sequence classifier (`--reward-label` picks its logit); an encoder, or one whose tokenizer
differs from the policy's, scores the decoded text re-encoded with its own tokenizer.
Prints before/after metrics and samples, writes metrics.csv, tb/, curves.png and policy/ to --out
(and checkpoint-<iteration>/ with --save-every N); the last stdout line is one JSON object. An --out
that holds a run needs --resume (continue from its newest checkpoint, with its own models, prompts
and config; config flags given override it) or --overwrite (start over). Bad input exits with
status 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lm.data import load_prompts
from lm.fsdp import fsdp_requested
from lm.grading import Grader
from lm.lora import add_lora, merge_lora
from lm.models import load_causal_lm, load_reward_model, load_reward_tokenizer, load_tokenizer
from lm.ppo import LMPPOConfig, LMPPOTrainer, read_checkpoint_state
from lm.run import Command, add_run_arguments, cli_main, eval_prompts
from lm.run import run as run_skeleton
from ppo_bridge import ESTIMATORS
from ppo_bridge.cli import add_config_arguments, config_overrides

# what a run is built from; kept in its checkpoints, so --resume takes them from there
SOURCES = (
    "policy",
    "reward_model",
    "reward_label",
    "prompts",
    "prompt_column",
    "world",
    "world_cache",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "lora_target_modules",
)
PATHS = ("policy", "reward_model", "prompts")  # those that may name a local path (world_cache does)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lm.train", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--policy", help="HF id or folder of a causal LM (default: toy SFT)")
    parser.add_argument(
        "--reward-model", help="HF id or folder of a sequence classifier (decoder or encoder)"
    )
    parser.add_argument(
        "--reward-label",
        metavar="N|NAME",
        help="the classifier's logit to reward, by index or config.id2label name (e.g. POSITIVE); "
        "needed when it has several labels",
    )
    parser.add_argument("--prompts", help=".txt (one per line), save_to_disk folder or dataset id")
    parser.add_argument("--prompt-column", help="column of a prompts dataset (default: prompt)")
    add_run_arguments(parser, "runs/rlhf")
    lora = parser.add_argument_group("LoRA (peft): the reference is the policy, adapters off")
    lora.add_argument("--lora-r", type=int, help="adapter rank; none or 0 = full fine-tuning")
    lora.add_argument("--lora-alpha", type=float, help="scale alpha / r (default alpha = 2r)")
    lora.add_argument(
        "--lora-dropout", type=float, help="recorded in the adapter (default 0); PPO runs in eval"
    )
    lora.add_argument(
        "--lora-target-modules",
        nargs="+",
        metavar="NAME",
        help="module names to adapt (default: every linear layer but the output head)",
    )
    lora.add_argument(
        "--merge-lora",
        action="store_true",
        help="also write policy-merged/: the adapters folded into a plain model",
    )
    add_config_arguments(
        parser.add_argument_group("LMPPOConfig"),
        LMPPOConfig,
        default_note=" (before the --algo preset)",
        choices={"algo": list(ESTIMATORS)},
    )
    args = parser.parse_args(argv)
    args.overrides = config_overrides(args, LMPPOConfig)
    return args


def make_config(overrides: dict[str, Any], saved: dict | None) -> LMPPOConfig:
    """The saved config (--resume) or the --algo preset, with the flags given over it."""
    if saved is not None:
        return LMPPOConfig(**{**saved, **overrides})
    overrides = dict(overrides)
    return LMPPOConfig.for_algo(overrides.pop("algo", "ppo"), **overrides)


def build(
    args: argparse.Namespace, cfg: LMPPOConfig, world: Any, out: Path
) -> tuple[LMPPOTrainer, Grader]:
    """The policy (LoRA-wrapped with --lora-r), reward model and prompts, as the trainer."""
    if args.merge_lora and not args.lora_r:
        raise ValueError("--merge-lora merges LoRA adapters: pass --lora-r too")
    if args.merge_lora and fsdp_requested():
        raise ValueError(
            "--merge-lora does not run under FSDP: merge the saved adapter afterwards, "
            "PeftModel.from_pretrained(base, 'OUT/policy').merge_and_unload()"
        )
    prompts = load_prompts(args.prompts, args.prompt_column or "prompt") if args.prompts else None
    policy_name = args.policy or str(world.sft_dir)
    reward_name = args.reward_model or str(world.reward_model_dir)
    tokenizer, policy = load_tokenizer(policy_name), load_causal_lm(policy_name)
    if args.lora_r:
        torch.manual_seed(cfg.seed)  # lora_A starts at random: the same seed, the same adapter
        policy = add_lora(
            policy, args.lora_r, args.lora_alpha, args.lora_dropout or 0.0, args.lora_target_modules
        )
    reward_model, reward_label = load_reward_model(reward_name, args.reward_label)
    reward_tokenizer = load_reward_tokenizer(reward_name)
    if prompts is None:
        from lm.world import world_prompts

        prompts = world_prompts(world)
    train_prompts, test_prompts = prompts
    gold_fn = None
    if world is not None:
        from lm.world import world_gold as gold_fn
    trainer = LMPPOTrainer(
        cfg,
        policy,
        tokenizer,
        train_prompts,
        reward_model=reward_model,
        reward_tokenizer=reward_tokenizer,
        reward_label=reward_label,
        gold_fn=gold_fn,
        out_dir=out,
    )
    return trainer, trainer.grader(eval_prompts(args, test_prompts))


def merge(args: argparse.Namespace, trainer: LMPPOTrainer, out: Path) -> None:
    """--merge-lora: also write policy-merged/, the adapters folded into the weights."""
    if args.merge_lora:
        merge_lora(trainer.policy)
        trainer.save(out / "policy-merged")


COMMAND = Command(
    name="lm.train",
    sources=SOURCES,
    paths=PATHS,
    data="prompts",
    files=("checkpoint-*", "policy", "policy-merged", "tb", "metrics.csv", "curves.png"),
    read_state=read_checkpoint_state,
    make_config=make_config,
    build=build,
    summary=lambda trainer, cfg: {"algo": cfg.algo},
    panels=[
        ("Reward-model score", "mean RM score per response (logit)", ["objective/scores"]),
        ("Gold score", "mean gold score per response (0-1)", ["objective/gold"]),
        ("KL to the reference policy", "KL (nats per response)", ["objective/kl"]),
    ],
    title="lm.train: PPO on sampled responses",
    xlabel="PPO iteration",
    finish=merge,
)


def run(args: argparse.Namespace) -> dict:
    """Load everything, evaluate, train, evaluate again, save; return the summary."""
    summary = run_skeleton(args, COMMAND)
    summary["ppo_s"] = summary["train_s"]  # the name this summary had first
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
