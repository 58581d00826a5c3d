"""`python -m bench.lm_scale`: PPO at GPT-2-124M shape, full fine-tuning vs LoRA, with and without
gradient checkpointing.

The policy is a randomly initialised GPT-2 (12 layers, 768 wide, 12 heads by default) with the toy
world's tokenizer (its recipe, trained here in seconds: no trl, no cache), so the vocabulary is
small and the transformer blocks hold nearly all the weights; the reward model has the same shape.
Each mode runs `LMPPOTrainer` for a few iterations in its own subprocess, so its peak resident
memory (`ru_maxrss`) is its own. Prints a table (peak RSS, seconds per phase, response tokens/s;
peak GPU memory on a GPU) and, last, one JSON object keyed by mode.

    python -m bench.lm_scale                                    # the 124M shape, 4 modes
    python -m bench.lm_scale --layers 2 --width 64 --heads 2    # a quick look
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Sequence

import torch

# mode -> (LoRA rank, 0 = full fine-tuning; gradient checkpointing)
MODES = {"full": (0, False), "lora": (16, False), "full_gc": (0, True), "lora_gc": (16, True)}
PHASES = ("generate", "score", "update")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.lm_scale", description=__doc__)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--prompts", type=int, default=16, help="responses per iteration")
    parser.add_argument("--new-tokens", type=int, default=16, help="max new tokens per response")
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--mode", choices=list(MODES), help=argparse.SUPPRESS)  # one subprocess
    args = parser.parse_args(argv)
    for name in ("layers", "width", "heads", "prompts", "new_tokens", "iterations", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.width % args.heads:
        parser.error(f"--width ({args.width}) must be a multiple of --heads ({args.heads})")
    return args


def run_mode(args: argparse.Namespace) -> dict[str, float]:
    """Build the two models, run PPO for `args.iterations`, return this process's figures."""
    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    from lm.lora import add_lora
    from lm.ppo import LMPPOConfig, LMPPOTrainer
    from lm.world import WorldConfig, all_prompts, make_corpus, train_tokenizer

    hf_logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    lora_r, checkpointing = MODES[args.mode]
    world = WorldConfig()
    corpus = make_corpus(world.n_texts, world.mix, world.seed)
    tokenizer = train_tokenizer([r.prompt + r.response for r in corpus], world.vocab_size, 128)
    shape = dict(
        vocab_size=len(tokenizer),
        n_positions=128,
        n_embd=args.width,
        n_layer=args.layers,
        n_head=args.heads,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    policy = GPT2LMHeadModel(GPT2Config(**shape))
    reward_model = GPT2ForSequenceClassification(GPT2Config(**shape, num_labels=1))
    if lora_r:
        policy = add_lora(policy, lora_r)
    cfg = LMPPOConfig(
        batch_size=args.prompts,
        minibatch_size=args.prompts,
        total_iterations=args.iterations,
        max_new_tokens=args.new_tokens,
        gradient_checkpointing=checkpointing,
    )
    prompts = all_prompts()
    trainer = LMPPOTrainer(cfg, policy, tokenizer, prompts, reward_model=reward_model)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    history = trainer.train()
    iteration_s = sum(m["time/iteration"] for m in history)
    tokens = sum(m["objective/response_tokens"] * args.prompts for m in history)
    result = {
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "tokens_per_s": tokens / iteration_s,
        **{f"{p}_s": sum(m[f"time/{p}"] for m in history) / len(history) for p in PHASES},
        "iteration_s": iteration_s / len(history),
        "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "total_params": sum(p.numel() for p in trainer.policy.parameters()),
    }
    if torch.cuda.is_available():
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        result["device"] = torch.cuda.get_device_name()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.mode:
        print(json.dumps(run_mode(args)))
        return 0
    size = ["--layers", args.layers, "--width", args.width, "--heads", args.heads]
    size += ["--prompts", args.prompts, "--new-tokens", args.new_tokens]
    size += ["--iterations", args.iterations, "--threads", args.threads]
    results: dict[str, dict[str, float]] = {}
    for mode in args.modes:
        start = time.perf_counter()
        cmd = [sys.executable, "-m", "bench.lm_scale", "--mode", mode, *map(str, size)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            print(f"error: mode {mode} failed (exit {proc.returncode}), see above", file=sys.stderr)
            return 1
        results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"[{mode}] done in {time.perf_counter() - start:.0f}s", file=sys.stderr)
    report(results, args)
    print(json.dumps(results))
    return 0


def report(results: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    """The table, with LoRA's memory and speed against full fine-tuning's where both ran."""
    gpu = any("peak_gpu_mb" in r for r in results.values())
    print(
        f"PPO, {args.layers} layers x {args.width} wide x {args.heads} heads, {args.prompts} "
        f"responses x {args.new_tokens} new tokens, {args.iterations} iterations, "
        f"{results[next(iter(results))].get('device', f'CPU, {args.threads} thread(s)')}"
    )
    header = f"{'mode':9}{'trainable':>12}{'peak RSS MB':>13}"
    header += f"{'peak GPU MB':>13}" if gpu else ""
    header += "".join(f"{p + ' s':>11}" for p in PHASES) + f"{'iter s':>9}{'tokens/s':>10}"
    print(header)
    for mode, r in results.items():
        row = f"{mode:9}{r['trainable_params'] / 1e6:>11.2f}M{r['peak_rss_mb']:>13.0f}"
        row += f"{r['peak_gpu_mb']:>13.0f}" if gpu else ""
        row += "".join(f"{r[p + '_s']:>11.2f}" for p in PHASES)
        print(row + f"{r['iteration_s']:>9.2f}{r['tokens_per_s']:>10.1f}")
    for suffix in ("", "_gc"):
        full, lora = results.get("full" + suffix), results.get("lora" + suffix)
        if full and lora:
            memory = "peak_gpu_mb" if gpu else "peak_rss_mb"
            print(
                f"lora{suffix} / full{suffix}: {memory} {lora[memory] / full[memory]:.2f}x "
                f"(target <= 0.6), tokens/s {lora['tokens_per_s'] / full['tokens_per_s']:.2f}x "
                "(target >= 1)"
            )


if __name__ == "__main__":
    sys.exit(main())
