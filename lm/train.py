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
import csv
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from accelerate import PartialState

from lm.checkpoint import checkpoints, delete, remove_folder
from lm.fsdp import fsdp_requested
from lm.lora import add_lora, merge_lora
from lm.policy import load_causal_lm, load_reward_model, load_reward_tokenizer, load_tokenizer
from lm.ppo import LMPPOConfig, LMPPOTrainer, cpu_only, read_checkpoint_state
from ppo_bridge.cli import add_config_arguments, config_overrides
from ppo_bridge.rundir import check_run_dir

if TYPE_CHECKING:
    from lm.world import World

# what a run is built from; kept in its checkpoints, so --resume takes them from there
SOURCES = (
    "policy",
    "reward_model",
    "reward_label",
    "prompts",
    "prompt_column",
    "world",
    "world_cache",
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
    parser.add_argument("--out", default="runs/rlhf", help="run folder")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    parser.add_argument("--world", choices=["default", "tiny"], help="toy world (default: default)")
    parser.add_argument("--world-cache", help="toy world cache (default: lm.world's)")
    parser.add_argument(
        "--eval-samples", type=int, default=128, help="responses (eval prompts cycled) graded"
    )
    parser.add_argument("--show", type=int, default=4, help="sample responses printed")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads per process (1 is fastest for the toy model on a shared CPU)",
    )
    lora = parser.add_argument_group("LoRA (peft): the reference is the policy, adapters off")
    lora.add_argument("--lora-r", type=int, default=0, help="adapter rank; 0 = full fine-tuning")
    lora.add_argument("--lora-alpha", type=float, help="scale alpha / r (default alpha = 2r)")
    lora.add_argument(
        "--lora-dropout", type=float, default=0.0, help="recorded in the adapter; PPO runs in eval"
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
    )
    return parser.parse_args(argv)


def load_prompts(source: str, column: str) -> tuple[list[str], list[str]]:
    """(train prompts, eval prompts) from a .txt file, a `save_to_disk` folder or a dataset id.

    A dataset with a "test" split evaluates on it; otherwise the training prompts are evaluated.
    """
    path = Path(source)
    if path.suffix == ".txt":
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(
                f"--prompts {source} is not UTF-8 text (byte {err.start}): save it as UTF-8"
            ) from None
        except OSError as err:
            raise ValueError(
                f"--prompts {source}: cannot read it ({err.strerror}): pass a readable .txt file"
            ) from None
        lines = [line.strip() for line in text.splitlines()]
        prompts = [line for line in lines if line]
        return prompts, prompts
    import datasets

    refuse_dataset_script(source, "--prompts")
    data = datasets.load_from_disk(source) if path.is_dir() else datasets.load_dataset(source)
    if isinstance(data, datasets.DatasetDict):
        train = data["train"] if "train" in data else next(iter(data.values()))
        test = data.get("test", train)
    else:
        train = test = data
    if column not in train.column_names:
        raise ValueError(
            f"--prompts {source} has no column {column!r} (it has {train.column_names}): "
            "pass --prompt-column"
        )
    return list(train[column]), list(test[column])


def refuse_dataset_script(source: str, flag: str) -> None:
    """A dataset given as a loading script (`x.py`, or a folder holding one) is refused: loading
    data never runs code from it."""
    path = Path(source)
    scripts = [path] if path.suffix == ".py" else sorted(path.glob("*.py")) if path.is_dir() else []
    if scripts:
        raise ValueError(
            f"{flag} {source} is a dataset loading script ({scripts[0].name}): scripts are never "
            "run; pass a data file (.txt, .jsonl), a save_to_disk folder or a hub dataset of data"
        )


def run(args: argparse.Namespace) -> dict:
    """Load everything, evaluate, train, evaluate again, save; return the summary."""
    start = time.perf_counter()
    out = check_run_dir(
        args.out, resume=args.resume, overwrite=args.overwrite, markers=run_markers(args.out)
    )
    checkpoint, saved = None, {}
    if args.resume:
        checkpoint = newest_checkpoint(out)
        saved = read_checkpoint_state(checkpoint)
        take_sources(args, checkpoint, saved["run_info"])
    for flag, name in (("--policy", args.policy), ("--reward-model", args.reward_model)):
        check_model_source(flag, name)
    if args.merge_lora and not args.lora_r:
        raise ValueError("--merge-lora merges LoRA adapters: pass --lora-r too")
    if args.resume and args.lora_r:
        raise ValueError("--resume of a LoRA run is not supported yet: start it over (--overwrite)")
    if args.merge_lora and fsdp_requested():
        raise ValueError(
            "--merge-lora does not run under FSDP: merge the saved adapter afterwards, "
            "PeftModel.from_pretrained(base, 'OUT/policy').merge_and_unload()"
        )
    overrides = config_overrides(args, LMPPOConfig)
    try:
        if saved:
            cfg = LMPPOConfig(**{**saved["config"], **overrides})
        else:
            cfg = LMPPOConfig.for_algo(overrides.pop("algo", "ppo"), **overrides)
    except TypeError as err:  # a saved config with fields this version does not have
        raise ValueError(f"--resume: {checkpoint} has a config of another version: {err}") from None
    prompts = load_prompts(args.prompts, args.prompt_column or "prompt") if args.prompts else None
    world = None
    if not (args.policy and args.reward_model and args.prompts):
        from lm.world import WorldConfig, build_world, default_cache_dir

        args.world = args.world or "default"
        args.world_cache = str(Path(args.world_cache or default_cache_dir()).resolve())
        world_cfg = WorldConfig.tiny() if args.world == "tiny" else WorldConfig()
        with PartialState(cpu=cpu_only()).main_process_first():
            world = build_world(Path(args.world_cache), world_cfg)
    policy_name = args.policy or str(world.sft_dir)
    reward_name = args.reward_model or str(world.reward_model_dir)
    tokenizer, policy = load_tokenizer(policy_name), load_causal_lm(policy_name)
    if args.lora_r:
        policy = add_lora(
            policy, args.lora_r, args.lora_alpha, args.lora_dropout, args.lora_target_modules
        )
    reward_model, reward_label = load_reward_model(reward_name, args.reward_label)
    reward_tokenizer = load_reward_tokenizer(reward_name)
    train_prompts, eval_prompts = prompts or world_prompts(world)
    trainer = LMPPOTrainer(
        cfg,
        policy,
        tokenizer,
        train_prompts,
        reward_model=reward_model,
        reward_tokenizer=reward_tokenizer,
        reward_label=reward_label,
        gold_fn=world_gold if world is not None else None,
        out_dir=out,
    )
    main_process = trainer.accelerator.is_main_process
    eval_prompts = cycle(eval_prompts, args.eval_samples)
    if checkpoint is not None:  # the reference stays the starting policy loaded above
        trainer.load_checkpoint(checkpoint)
        if main_process:
            print(f"resuming from {checkpoint} (iteration {trainer.iteration})")
    else:
        sources = {k: getattr(args, k) for k in SOURCES}
        trainer.run_info["sources"] = {**sources, **{k: local(sources[k]) for k in PATHS}}
        metrics, ro = trainer.evaluate(eval_prompts)
        trainer.run_info["before"] = {
            "metrics": metrics,
            "prompts": ro.prompts[: args.show],
            "responses": ro.responses[: args.show],
        }
    before = trainer.run_info["before"]
    if args.overwrite:
        if main_process:
            start_over(out)
        trainer.accelerator.wait_for_everyone()
    ppo_start = time.perf_counter()
    trainer.train()
    ppo_s = time.perf_counter() - ppo_start
    after, ro_after = trainer.evaluate(eval_prompts)
    trainer.save(out / "policy")
    if args.merge_lora:
        merge_lora(trainer.policy)
        trainer.save(out / "policy-merged")

    summary = {
        "gold_before": before["metrics"].get("gold"),
        "gold_after": after.get("gold"),
        "rm_before": before["metrics"]["score"],
        "rm_after": after["score"],
        "kl": after["kl"],
        "eos_fraction": after["eos_fraction"],
        "eos_fraction_before": before["metrics"]["eos_fraction"],
        "algo": cfg.algo,
        "iterations": trainer.iteration,
        "ppo_s": ppo_s,
        "wall_s": time.perf_counter() - start,
        "num_processes": trainer.accelerator.num_processes,
        "out": str(out),
    }
    if main_process:
        shown = len(before["responses"])
        report(
            before["metrics"],
            after,
            before["prompts"],
            before["responses"],
            ro_after.responses[:shown],
            args.show,
        )
        plot(read_metrics(out / "metrics.csv"), out / "curves.png")
        print(f"saved the policy to {out / 'policy'}, logs to {out}")
    return summary


def run_markers(out: str) -> list[str]:
    """What makes --out hold a run: its logs, its policy or any checkpoint."""
    return ["metrics.csv", "tb", "policy", *(p.name for p in checkpoints(Path(out)))]


def newest_checkpoint(out: Path) -> Path:
    """The checkpoint --resume continues (the newest; each is complete, being saved atomically)."""
    found = checkpoints(out)
    if not found:
        raise ValueError(
            f"--resume: {out} has no checkpoint-<iteration> folder (runs write them with "
            "--save-every N): pass --overwrite to start it over"
        )
    return found[-1]


def take_sources(args: argparse.Namespace, checkpoint: Path, run_info: dict) -> None:
    """--resume: the models and prompts are the run's own, as recorded in its checkpoint."""
    given = [k for k in SOURCES if getattr(args, k) is not None]
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise ValueError(f"--resume takes {flag} from the run's checkpoint: drop {flag}")
    if not isinstance(run_info.get("sources"), dict) or "before" not in run_info:
        raise ValueError(f"{checkpoint} was not written by lm.train: it cannot be resumed here")
    for key in SOURCES:
        setattr(args, key, run_info["sources"].get(key))


def local(source: str | None) -> str | None:
    """A local path made absolute (so --resume works from another folder); ids stay as they are."""
    return str(Path(source).resolve()) if source and Path(source).exists() else source


def start_over(out: Path) -> None:
    """--overwrite, once everything has loaded: delete the previous run's files (its checkpoints
    would otherwise be what a later --resume continues)."""
    for folder in [*checkpoints(out), out / "policy", out / "tb"]:
        if folder.is_dir():
            remove_folder(folder)
    for name in ("metrics.csv", "curves.png"):
        if (out / name).exists():
            delete(out / name)


def read_metrics(path: Path) -> list[dict[str, float]]:
    """The rows of metrics.csv (all iterations of the run, resumed ones included)."""
    with path.open(newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def check_model_source(flag: str, name: str | None) -> None:
    """A name that starts like a local path ("/", ".") must be a folder, before anything loads.

    Anything else is left to `from_pretrained` as a hub id (which may contain "/" too).
    """
    if name and name.startswith(("/", ".")) and not Path(name).is_dir():
        raise ValueError(
            f"{flag} {name}: no such folder; pass a folder written by save_pretrained "
            "or a hub id such as gpt2"
        )


def cycle(prompts: list[str], n: int) -> list[str]:
    """The first n prompts of prompts repeated (so a small test split still gives n samples)."""
    if n < 1:
        raise ValueError(f"--eval-samples must be >= 1, got {n}")
    return (prompts * -(-n // max(len(prompts), 1)))[:n]


def world_prompts(world: World) -> tuple[list[str], list[str]]:
    """The toy world's (train, test) prompts."""
    import datasets

    prompts = datasets.load_from_disk(str(world.prompts))
    return list(prompts["train"]["prompt"]), list(prompts["test"]["prompt"])


def world_gold(prompts: list[str], responses: list[str]) -> list[float]:
    """The toy world's gold judge, which grades the response (the prompts carry no sentiment)."""
    from lm.world import gold_scores

    return list(gold_scores(responses))


def report(
    before: dict[str, float],
    after: dict[str, float],
    prompts: list[str],
    responses_before: list[str],
    responses_after: list[str],
    show: int,
) -> None:
    """Print the before/after table and a few prompts with both responses."""
    rows = [("gold score (0-1)", "gold"), ("reward-model score", "score")]
    rows += [("KL to reference (nats)", "kl"), ("EOS fraction", "eos_fraction")]
    print(f"{'':26}{'before':>10}{'after':>10}")
    for label, key in rows:
        if key in before:
            print(f"{label:26}{before[key]:>10.3f}{after[key]:>10.3f}")
    for prompt, old, new in list(zip(prompts, responses_before, responses_after, strict=True))[
        :show
    ]:
        print(f"\nprompt: {prompt!r}\n  before: {old!r}\n  after:  {new!r}")


def plot(history: list[dict[str, float]], path: Path) -> None:
    """Reward-model score, gold score (if judged) and KL per iteration, as a PNG."""
    from matplotlib.figure import Figure  # a bare Figure: the pyplot backend is left alone

    panels = [
        ("objective/scores", "Reward-model score", "mean RM score per response (logit)"),
        ("objective/gold", "Gold score", "mean gold score per response (0-1)"),
        ("objective/kl", "KL to the reference policy", "KL (nats per response)"),
    ]
    panels = [p for p in panels if history and p[0] in history[0]]
    fig = Figure(figsize=(5 * len(panels), 4))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    iterations = [m["iteration"] for m in history]
    for ax, (key, title, ylabel) in zip(axes, panels, strict=True):
        ax.plot(iterations, [m[key] for m in history])
        ax.set(title=title, xlabel="PPO iteration", ylabel=ylabel)
        ax.grid(alpha=0.3)
    fig.suptitle("lm.train: PPO on sampled responses")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def cli_main(
    parse: Callable[[Sequence[str] | None], argparse.Namespace],
    run: Callable[[argparse.Namespace], dict],
    argv: Sequence[str] | None = None,
) -> int:
    """A command's entry point (lm.train, lm.dpo): sets --threads, runs, prints the summary as the
    last stdout line of the main process; bad input (and a non-finite loss) becomes one line on
    stderr and status 2."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    args = parse(argv)
    try:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
        summary = run(args)
        if PartialState().is_main_process:
            print(json.dumps(summary))
        return 0
    except (ValueError, OSError, FloatingPointError) as err:
        message = str(err).strip().splitlines() or [type(err).__name__]
        print(f"error: {message[0]}", file=sys.stderr)
        return 2
    finally:
        # Under torchrun, shut gloo down while Python is alive: left to interpreter teardown,
        # its worker threads can abort a rank (SIGABRT) after the run has finished.
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
