"""`python -m lm.reward`: train a reward model on preference pairs, for `lm.train --reward-model`.

    python -m lm.reward                                  # the toy world's pairs, from its SFT
    python -m lm.reward --pairs FILE.jsonl|DIR|DATASET_ID --model DIR|HF_ID --out runs/rm
    python -m lm.train --reward-model runs/rm/reward_model ...

Pairs use trl's columns (prompt, chosen, rejected, and an optional numeric margin), read and
checked as `lm.dpo --pairs` reads them; a "test" split (else the toy world's held-out pairs, else
none) measures the held-out pair accuracy: the fraction of pairs whose chosen completion scores
above the rejected one, scored as lm.train scores responses. Every `LMRewardConfig` field is a
flag. Writes metrics.csv (trl's names), tb/, trainer/ (trl's checkpoints, with --save-every N) and
reward_model/ (a sequence classifier with its tokenizer) to --out; --resume continues trl's newest
checkpoint. The last stdout line is one JSON object. Bad input exits with status 2 and one line.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import AutoConfig, TrainerCallback

from lm.checkpoint import save_model
from lm.data import load_pairs
from lm.models import check_model_source, load_reward_tokenizer, pretrained
from lm.reward.config import LMRewardConfig
from lm.reward.trainer import train_reward_model
from lm.rewards import score_texts
from lm.run import cli_main, load_world
from ppo_bridge.atomic import remove_folder
from ppo_bridge.cli import add_config_arguments, config_overrides
from ppo_bridge.logs import MetricsLogger
from ppo_bridge.rundir import check_run_dir, run_lock, start_over

FILES = ("trainer", "reward_model", "tb", "metrics.csv")  # what a run writes; --overwrite deletes


class LogToRunFolder(TrainerCallback):
    """trl's training logs as the run folder's metrics.csv and tb/, one row per logged step."""

    def __init__(self, out: Path, resume_step: int | None) -> None:
        self.logger = MetricsLogger(out, step_key="step", resume_step=resume_step)

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
        if logs and "loss" in logs:
            self.logger.log({"step": float(state.global_step), **logs})

    def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
        self.logger.close()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lm.reward", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--pairs", help="save_to_disk folder, .jsonl file or dataset id")
    parser.add_argument(
        "--model", help="HF id or folder of the model to start from (default: toy SFT)"
    )
    parser.add_argument("--out", default="runs/reward", help="run folder")
    parser.add_argument("--resume", action="store_true", help="continue trl's newest checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    parser.add_argument("--world", choices=["default", "tiny"], help="toy world (default: default)")
    parser.add_argument("--world-cache", help="toy world cache (default: lm.world's)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    add_config_arguments(parser.add_argument_group("LMRewardConfig"), LMRewardConfig)
    args = parser.parse_args(argv)
    args.overrides = config_overrides(args, LMRewardConfig)
    return args


def pair_accuracy(model: Any, tokenizer: Any, pairs: Any) -> float:
    """Held-out accuracy: the fraction of pairs whose chosen text scores above the rejected."""
    eos = tokenizer.eos_token or ""
    prompt = pairs["prompt"] if "prompt" in pairs.column_names else [""] * len(pairs)

    def texts(column: str) -> list[str]:
        return [
            p + c + ("" if c.endswith(eos) else eos)
            for p, c in zip(prompt, pairs[column], strict=True)
        ]

    chosen = score_texts(model, tokenizer, texts("chosen"))
    rejected = score_texts(model, tokenizer, texts("rejected"))
    return sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(pairs)


def newest_complete(trainer_dir: Path) -> Path:
    """trl's newest checkpoint that was written whole (the Trainer writes its trainer_state.json
    last, and not atomically: a kill can leave a newer folder without it, or with half of it);
    the incomplete newer ones are removed, to be written again."""
    import json

    found = sorted(
        (p for p in trainer_dir.glob("checkpoint-*") if p.name[11:].isdigit()),
        key=lambda p: int(p.name[11:]),
        reverse=True,
    )
    for i, folder in enumerate(found):
        try:
            json.loads((folder / "trainer_state.json").read_text())
        except (OSError, ValueError):
            continue
        for incomplete in found[:i]:
            remove_folder(incomplete)
        return folder
    raise ValueError(
        f"--resume: {trainer_dir} has no complete checkpoint (runs write them with --save-every N)"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Check, load, train, measure, save; return the summary."""
    import datasets

    start = time.perf_counter()
    out = check_run_dir(
        args.out, resume=args.resume, overwrite=args.overwrite, markers=("trainer", "reward_model")
    )
    checkpoint = newest_complete(out / "trainer") if args.resume else None
    check_model_source("--model", args.model)
    cfg = LMRewardConfig(**args.overrides)
    world = None
    if not (args.pairs and args.model):
        world = load_world(args)
    if args.pairs:
        train_pairs, test_pairs = load_pairs(args.pairs)
    else:
        saved = datasets.load_from_disk(str(world.pairs))  # trl's implicit-prompt pairs
        train_pairs, test_pairs = saved["train"], saved["test"]
    model_name = args.model or str(world.sft_dir)
    tokenizer = load_reward_tokenizer(model_name)
    config = pretrained(AutoConfig, model_name, "--model")
    context = int(config.get_text_config().max_position_embeddings)
    if cfg.max_length is not None and cfg.max_length > context:
        raise ValueError(f"--max-length {cfg.max_length} exceeds the model's context of {context}")
    with run_lock(out):
        if args.overwrite:
            start_over(out, FILES)
        resume_step = int(checkpoint.name.split("-")[1]) if checkpoint else None
        train_start = time.perf_counter()
        model = train_reward_model(
            model_name,
            tokenizer,
            train_pairs,
            cfg,
            out / "trainer",
            max_length=cfg.max_length or context,
            resume_from=checkpoint,
            callbacks=[LogToRunFolder(out, resume_step)],
        )
        train_s = time.perf_counter() - train_start
        accuracy = pair_accuracy(model, tokenizer, test_pairs) if test_pairs is not None else None
        save_model(model, tokenizer, out / "reward_model")
    summary = {
        "accuracy": accuracy,
        "pairs": len(train_pairs),
        "test_pairs": None if test_pairs is None else len(test_pairs),
        "train_s": train_s,
        "wall_s": time.perf_counter() - start,
        "reward_model": str(out / "reward_model"),
        "out": str(out),
    }
    print(f"held-out pair accuracy {accuracy}; saved the reward model to {out / 'reward_model'}")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
