"""`python -m lm.dpo`: DPO (or IPO) on preference pairs, by default the toy world's own, offline.

    python -m lm.dpo                                     # the world's pairs, from its SFT policy
    python -m lm.dpo --loss ipo --beta 0.5
    python -m lm.dpo --pairs DIR|FILE.jsonl|DATASET_ID [--policy DIR] [--reward-model DIR]

Pairs use trl's explicit-prompt columns (prompt, chosen, rejected). The reference is the starting
policy; its log-probs of every pair are computed once, before training. Every `LMDPOConfig` field
is a flag. Graded before and after as lm.train grades PPO: responses to held-out prompts sampled
at `temperature`, scored by the gold judge (toy world) and the reward model, with the KL to the
reference in nats per response and the EOS fraction. Writes metrics.csv (trl's DPO metric names),
tb/, curves.png and policy/ to --out; the last stdout line is one JSON object. Bad input exits
with status 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lm.policy import (
    load_causal_lm,
    load_reward_model,
    load_reward_tokenizer,
    load_tokenizer,
    save_policy,
)
from lm.ppo import LMPPOConfig, LMPPOTrainer, MetricsLogger, Rollout
from lm.rollout import RewardFn, model_context, pack_pairs, packed_sequence_logprobs
from lm.train import (
    check_model_source,
    cli_main,
    cycle,
    refuse_dataset_script,
    report,
    world_gold,
    world_prompts,
)
from ppo_bridge import dpo_loss
from ppo_bridge.cli import add_config_arguments, config_overrides
from ppo_bridge.dpo import DPOLoss
from ppo_bridge.rundir import check_run_dir

if TYPE_CHECKING:
    from datasets import Dataset

    from lm.world import World

COLUMNS = ("prompt", "chosen", "rejected")
RUN_MARKERS = ("metrics.csv", "tb", "curves.png", "policy")  # what a run writes to --out


@dataclass
class LMDPOConfig:
    """DPO for a causal LM: `epochs` passes over the pairs in shuffled batches of `batch_size`
    pairs, AdamW without weight decay, the learning rate decayed linearly to 0 (trl's defaults).

    `max_length` caps prompt + completion tokens (None: the model's context); longer pairs keep
    their start, as in trl. `temperature` and `max_new_tokens` only shape the evaluation, which
    samples as lm.train does. IPO, as in trl, compares per-token mean log-probs. beta, lr and
    epochs are tuned for the toy world's tiny GPT-2 (trl's defaults, beta 0.1 and lr 1e-6, suit
    large pretrained models).
    """

    beta: float = 0.3
    loss: DPOLoss = "sigmoid"
    label_smoothing: float = 0.0  # cDPO: assumed probability of a flipped label (sigmoid only)
    lr: float = 2e-4
    epochs: int = 2
    batch_size: int = 32  # pairs per optimizer step
    max_length: int | None = None
    max_grad_norm: float | None = 1.0
    temperature: float = 1.0
    max_new_tokens: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(msg)

        need(self.beta > 0, f"beta must be > 0, got {self.beta}")
        need(self.loss in ("sigmoid", "ipo"), f"loss must be sigmoid or ipo, got {self.loss!r}")
        need(
            0 <= self.label_smoothing < 0.5,
            f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}",
        )
        need(
            self.loss == "sigmoid" or self.label_smoothing == 0,
            "label_smoothing applies to the sigmoid loss only: drop it for --loss ipo",
        )
        need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        need(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        need(
            self.max_length is None or self.max_length >= 2,
            f"max_length must be >= 2 or None (the model's context), got {self.max_length}",
        )
        need(
            self.max_grad_norm is None or self.max_grad_norm > 0,
            f"max_grad_norm must be > 0 or None, got {self.max_grad_norm}",
        )
        need(self.temperature > 0, f"temperature must be > 0, got {self.temperature}")
        need(self.max_new_tokens >= 1, f"max_new_tokens must be >= 1, got {self.max_new_tokens}")

    @property
    def algo(self) -> str:
        """The method's name in reports: "dpo" (sigmoid loss, with or without cDPO) or "ipo"."""
        return "dpo" if self.loss == "sigmoid" else "ipo"


# ------------------------------------------------------------------------------------ the pairs


@dataclass
class TokenizedPairs:
    """Token ids per pair: the prompt (with the tokenizer's special tokens) and both completions."""

    prompt: list[list[int]]
    chosen: list[list[int]]
    rejected: list[list[int]]

    def __len__(self) -> int:
        return len(self.prompt)


def load_pairs(source: str) -> tuple[Dataset, Dataset | None]:
    """(train, test or None) pairs from a `save_to_disk` folder, a JSON-lines file (one object
    per line) or a dataset id; a DatasetDict gives its "train" (else first) and "test" splits."""
    import datasets

    refuse_dataset_script(source, "--pairs")
    path = Path(source)
    if path.is_dir():
        try:
            data = datasets.load_from_disk(source)
        except FileNotFoundError as err:
            raise ValueError(f"--pairs {source} is not a folder written by save_to_disk") from err
    elif path.is_file():
        data = datasets.Dataset.from_list(read_json_lines(path))
    elif source.startswith(("/", ".")) or path.suffix in (".json", ".jsonl"):
        raise ValueError(f"--pairs {source}: no such file or folder")
    else:
        data = datasets.load_dataset(source)
    test = None
    if isinstance(data, datasets.DatasetDict):
        test = data.get("test")
        data = data["train"] if "train" in data else next(iter(data.values()))
    for split in (data, test):
        if split is not None:
            check_columns(split, source)
    return data, test


def read_json_lines(path: Path) -> list[dict]:
    """The objects of a JSON-lines file (blank lines skipped); a ValueError names a bad line."""
    rows = []
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"--pairs {path} is not a UTF-8 text file of JSON lines") from err
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"--pairs {path} line {number} is not JSON ({err.msg})") from err
        if not isinstance(row, dict):
            raise ValueError(f"--pairs {path} line {number} is not a JSON object")
        rows.append(row)
    if not rows:
        raise ValueError(f"--pairs {path} holds no pairs")
    return rows


def check_columns(pairs: Dataset, source: str) -> None:
    """Refuse pairs without trl's three text columns, or with no preference in them."""
    missing = [c for c in COLUMNS if c not in pairs.column_names]
    if missing:
        raise ValueError(
            f"--pairs {source} lacks the column(s) {', '.join(missing)} (it has "
            f"{pairs.column_names}): pass pairs with columns prompt, chosen and rejected"
        )
    if len(pairs) == 0:
        raise ValueError(f"--pairs {source} holds no pairs")
    if not all(isinstance(pairs[0][c], str) for c in COLUMNS):
        raise ValueError(
            f"--pairs {source}: prompt, chosen and rejected must be text (conversational pairs "
            "are not supported)"
        )
    if list(pairs["chosen"]) == list(pairs["rejected"]):
        raise ValueError(
            f"--pairs {source}: chosen == rejected in every pair, so there is no preference to "
            "learn: check the columns"
        )


def pairs_of_world(world: World) -> tuple[Dataset, Dataset]:
    """The pairs the world's reward model was trained (train) and tested (test) on, with the
    prompt made explicit: the longest world prompt that begins both texts (the world stores
    trl's implicit-prompt format; trl's character-level `extract_prompt` would cut mid-word
    when both responses start alike)."""
    import datasets

    train, test = world_prompts(world)
    prompts = sorted(set(train + test), key=len, reverse=True)

    def explicit(row: dict[str, str]) -> dict[str, str]:
        chosen, rejected = row["chosen"], row["rejected"]
        prompt = next(p for p in prompts if chosen.startswith(p) and rejected.startswith(p))
        return {
            "prompt": prompt,
            "chosen": chosen[len(prompt) :],
            "rejected": rejected[len(prompt) :],
        }

    saved = datasets.load_from_disk(str(world.pairs))
    train_pairs, test_pairs = (
        datasets.Dataset.from_list([explicit(row) for row in saved[split]])
        for split in ("train", "test")
    )
    return train_pairs, test_pairs


def tokenize_pairs(
    tokenizer: PreTrainedTokenizerBase, pairs: Dataset, max_length: int
) -> TokenizedPairs:
    """trl's recipe: EOS is appended to a completion that lacks it; the completion is what follows
    the common prefix of the tokenized prompt and prompt + completion; each sequence keeps its
    first `max_length` tokens, and pairs whose prompt alone fills them are dropped. An empty
    prompt is refused (the first completion token would have nothing to be predicted from)."""
    from trl.data_utils import common_prefix_length

    eos = tokenizer.eos_token

    def with_eos(text: str) -> str:
        return text if text.endswith(eos) else text + eos

    prompts, chosen, rejected = (list(pairs[c]) for c in COLUMNS)
    ids = tokenizer(
        prompts
        + [p + with_eos(c) for p, c in zip(prompts, chosen, strict=True)]
        + [p + with_eos(r) for p, r in zip(prompts, rejected, strict=True)]
    )["input_ids"]
    n = len(prompts)
    out = TokenizedPairs([], [], [])
    for i, (prompt, c, r) in enumerate(zip(ids[:n], ids[n : 2 * n], ids[2 * n :], strict=True)):
        start = min(common_prefix_length(prompt, c), common_prefix_length(prompt, r))
        if start == 0:
            raise ValueError(f"--pairs: pair {i} has no prompt tokens: give every pair a prompt")
        if start >= max_length:
            continue
        out.prompt.append(prompt[:start])
        out.chosen.append(c[start:max_length])
        out.rejected.append(r[start:max_length])
    if not out.prompt:
        raise ValueError(f"every prompt fills --max-length {max_length}: raise it")
    return out


# ---------------------------------------------------------------------------------- the trainer


def make_grader(
    cfg: LMDPOConfig,
    policy: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    eval_prompts: Sequence[str],
    reward_model: PreTrainedModel,
    reward_tokenizer: PreTrainedTokenizerBase | None = None,
    gold_fn: RewardFn | None = None,
    reward_label: int = 0,
) -> LMPPOTrainer:
    """An `LMPPOTrainer` used only for its `evaluate` (lm.train's report): it samples at
    cfg.temperature, scores, and measures the KL to a frozen copy of `policy` as it is now; its
    own policy wraps `policy` itself, so it grades whatever `policy` becomes."""
    grading = LMPPOConfig(
        temperature=cfg.temperature,
        max_new_tokens=cfg.max_new_tokens,
        kl_target=None,
        seed=cfg.seed,
    )
    return LMPPOTrainer(
        grading,
        policy,
        tokenizer,
        eval_prompts,
        reward_model=reward_model,
        reward_tokenizer=reward_tokenizer,
        reward_label=reward_label,
        gold_fn=gold_fn,
    )


class LMDPOTrainer:
    """DPO on `policy` (any causal LM, trained in place) from tokenized preference pairs.

    The reference is the policy as it starts: the sequence log-probs of every pair under it are
    computed once, here. Evaluation goes through `make_grader`, so that lm.train and lm.dpo
    report alike.
    """

    def __init__(
        self,
        cfg: LMDPOConfig,
        policy: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        pairs: TokenizedPairs,
        eval_prompts: Sequence[str],
        *,
        reward_model: PreTrainedModel,
        reward_tokenizer: PreTrainedTokenizerBase | None = None,
        reward_label: int = 0,
        gold_fn: RewardFn | None = None,
        out_dir: str | Path | None = None,
    ) -> None:
        self.cfg, self.policy, self.tokenizer, self.pairs = cfg, policy, tokenizer, pairs
        self.grader = make_grader(
            cfg, policy, tokenizer, eval_prompts, reward_model, reward_tokenizer, gold_fn,
            reward_label,
        )  # fmt: skip
        self.device = self.grader.accelerator.device
        self.width = model_context(policy)  # of the packed rows
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.steps_per_epoch = math.ceil(len(pairs) / cfg.batch_size)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=0.0)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: 1 - step / self.total_steps
        )
        self.shuffle_gen = torch.Generator().manual_seed(cfg.seed)
        self.step_count = 0
        start = time.perf_counter()
        with torch.no_grad():
            ref = [
                self.logprobs(range(i, min(i + cfg.batch_size, len(pairs))))[0]
                for i in range(0, len(pairs), cfg.batch_size)
            ]
        self.ref_chosen = torch.cat([r.chunk(2)[0] for r in ref])
        self.ref_rejected = torch.cat([r.chunk(2)[1] for r in ref])
        self.seconds_reference = time.perf_counter() - start

    def logprobs(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Policy sequence log-probs and completion lengths, [chosen; rejected] ([2b] each), of
        the pairs `indices`, in one forward pass over them packed (`pack_pairs`)."""
        p = self.pairs
        packed = pack_pairs(
            [p.prompt[i] for i in indices],
            [p.chosen[i] for i in indices],
            [p.rejected[i] for i in indices],
            self.tokenizer.pad_token_id,
            self.width,
        )
        return packed_sequence_logprobs(self.policy, packed.to(self.device))

    def step(self, indices: Sequence[int]) -> dict[str, float]:
        """One optimizer step on the pairs `indices`; returns its metrics (trl's names)."""
        cfg = self.cfg
        logps, lengths = self.logprobs(indices)
        chosen, rejected = logps.chunk(2)
        index = torch.as_tensor(list(indices))
        ref_chosen, ref_rejected = self.ref_chosen[index], self.ref_rejected[index]
        args = (chosen, rejected, ref_chosen, ref_rejected)
        if cfg.loss == "ipo":  # trl's IPO: each log-ratio divided by its completion length
            args = tuple(a / n for a, n in zip(args, lengths.chunk(2) * 2, strict=True))
        loss, stats = dpo_loss(*args, cfg.beta, cfg.loss, cfg.label_smoothing)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite DPO loss at step {self.step_count + 1}: lower --lr or check the pairs"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.policy.parameters(), cfg.max_grad_norm or math.inf
        )
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.step_count += 1
        return {
            "iteration": float(self.step_count),
            "epoch": self.step_count / self.steps_per_epoch,
            "loss": loss.item(),
            **{k: v.item() for k, v in stats.items()},
            "logps/chosen": chosen.mean().item(),
            "logps/rejected": rejected.mean().item(),
            "grad_norm": grad_norm.item(),
            "learning_rate": lr,
        }

    def train(
        self, on_step: Callable[[dict[str, float]], bool] | None = None
    ) -> list[dict[str, float]]:
        """All epochs; logs CSV + TensorBoard; returns the metrics per step.

        Each row also holds `time/elapsed`, the seconds since `train` began. `on_step(metrics)`,
        if given, runs after each step and stops training by returning True.
        """
        cfg = self.cfg
        self.policy.train(False)  # no dropout: the log-probs are those of the evaluated policy
        logger = MetricsLogger(self.out_dir) if self.out_dir else None
        history: list[dict[str, float]] = []
        start = time.perf_counter()
        try:
            for _ in range(cfg.epochs):
                order = torch.randperm(len(self.pairs), generator=self.shuffle_gen).tolist()
                for i in range(0, len(order), cfg.batch_size):
                    metrics = self.step(order[i : i + cfg.batch_size])
                    metrics["time/elapsed"] = time.perf_counter() - start
                    history.append(metrics)
                    if logger:
                        logger.log(metrics)
                    if on_step is not None and on_step(metrics):
                        return history
        finally:
            if logger:
                logger.close()
        return history

    def evaluate(self, prompts: Sequence[str]) -> tuple[dict[str, float], Rollout]:
        """The grader's evaluation of the current policy (see `LMPPOTrainer.evaluate`)."""
        return self.grader.evaluate(prompts)

    def save(self, out: str | Path) -> None:
        """The policy (`save_pretrained` + tokenizer) atomically; `lm.policy.save_policy` also
        writes the grader's (untrained, zero) value head and the config to ppo_state.json."""
        state = {"config": asdict(self.cfg), "algo": self.cfg.algo, "steps": self.step_count}
        save_policy(self.grader.policy, self.tokenizer, out, state)


# ---------------------------------------------------------------------------------- the command


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lm.dpo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", help="save_to_disk folder, .jsonl file or dataset id")
    parser.add_argument("--policy", help="HF id or folder of a causal LM (default: toy SFT)")
    parser.add_argument("--reward-model", help="HF id or folder of a 1-label classifier (grading)")
    parser.add_argument("--out", default="runs/dpo", help="run folder")
    parser.add_argument("--overwrite", action="store_true", help="start over in a used --out")
    parser.add_argument("--world", choices=["default", "tiny"], default="default", help="toy world")
    parser.add_argument("--world-cache", help="toy world cache (default: lm.world's)")
    parser.add_argument(
        "--eval-samples", type=int, default=128, help="responses (eval prompts cycled) graded"
    )
    parser.add_argument("--show", type=int, default=4, help="sample responses printed")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    add_config_arguments(parser.add_argument_group("LMDPOConfig"), LMDPOConfig)
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    """Check, load, evaluate, train, evaluate again, save; return the summary."""
    start = time.perf_counter()
    out = check_run_dir(
        args.out, resume=False, overwrite=args.overwrite, markers=RUN_MARKERS, resumable=False
    )
    for flag, name in (("--policy", args.policy), ("--reward-model", args.reward_model)):
        check_model_source(flag, name)
    cfg = LMDPOConfig(**config_overrides(args, LMDPOConfig))
    if args.eval_samples < 1:
        raise ValueError(f"--eval-samples must be >= 1, got {args.eval_samples}")
    world = None
    if not (args.policy and args.reward_model and args.pairs):
        from lm.world import WorldConfig, build_world, default_cache_dir

        world_cfg = WorldConfig.tiny() if args.world == "tiny" else WorldConfig()
        world = build_world(Path(args.world_cache or default_cache_dir()), world_cfg)
    if args.pairs:
        train_pairs, test_pairs = load_pairs(args.pairs)
        held_out = test_pairs if test_pairs is not None else train_pairs
        eval_prompts = sorted(set(held_out["prompt"]))
    else:
        train_pairs, _ = pairs_of_world(world)
        eval_prompts = world_prompts(world)[1]
    policy_name = args.policy or str(world.sft_dir)
    reward_name = args.reward_model or str(world.reward_model_dir)
    tokenizer, policy = load_tokenizer(policy_name), load_causal_lm(policy_name)
    reward_model, reward_label = load_reward_model(reward_name)
    reward_tokenizer = load_reward_tokenizer(reward_name)
    context = model_context(policy)
    if cfg.max_length is not None and cfg.max_length > context:
        raise ValueError(
            f"--max-length {cfg.max_length} exceeds the policy's context of {context}: lower it"
        )
    pairs = tokenize_pairs(tokenizer, train_pairs, cfg.max_length or context)
    trainer = LMDPOTrainer(
        cfg,
        policy,
        tokenizer,
        pairs,
        eval_prompts,
        reward_model=reward_model,
        reward_tokenizer=reward_tokenizer,
        reward_label=reward_label,
        gold_fn=world_gold if world is not None else None,
        out_dir=out,
    )
    if args.overwrite:  # start over: the previous run's logs would mix with this one's
        for name in RUN_MARKERS[:3]:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    eval_prompts = cycle(eval_prompts, args.eval_samples)
    before, ro_before = trainer.evaluate(eval_prompts)
    train_start = time.perf_counter()
    history = trainer.train()
    train_s = time.perf_counter() - train_start
    after, ro_after = trainer.evaluate(eval_prompts)
    trainer.save(out / "policy")
    report(before, after, ro_before.prompts, ro_before.responses, ro_after.responses, args.show)
    plot(history, out / "curves.png")
    print(f"saved the policy to {out / 'policy'}, logs to {out}")
    last = history[-1]
    return {
        "gold_before": before.get("gold"),
        "gold_after": after.get("gold"),
        "rm_before": before["score"],
        "rm_after": after["score"],
        "kl": after["kl"],
        "eos_fraction": after["eos_fraction"],
        "eos_fraction_before": before["eos_fraction"],
        "pairs": len(pairs),
        "steps": trainer.step_count,
        "reward_accuracy": last["rewards/accuracies"],
        "reference_s": trainer.seconds_reference,
        "train_s": train_s,
        "wall_s": time.perf_counter() - start,
        "algo": cfg.algo,
        "out": str(out),
    }


def plot(history: list[dict[str, float]], path: Path) -> None:
    """Loss, implicit-reward margin and accuracy, and the sequence log-probs per step, as a PNG."""
    from matplotlib.figure import Figure  # a bare Figure: the pyplot backend is left alone

    steps = [m["iteration"] for m in history]
    fig = Figure(figsize=(16, 4))
    axes = fig.subplots(1, 4)
    panels = [
        ("Loss", "loss", ["loss"]),
        ("Implicit reward margin", "beta * log-ratio margin", ["rewards/margins"]),
        ("Reward accuracy", "fraction of pairs ranked right", ["rewards/accuracies"]),
        ("Sequence log-probs", "log pi(y | x)", ["logps/chosen", "logps/rejected"]),
    ]
    for ax, (title, ylabel, keys) in zip(axes, panels, strict=True):
        for key in keys:
            ax.plot(steps, [m[key] for m in history], label=key)
        ax.set(title=title, xlabel="optimizer step", ylabel=ylabel)
        ax.grid(alpha=0.3)
    axes[-1].legend()
    fig.suptitle("lm.dpo: preference optimisation on fixed pairs")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
