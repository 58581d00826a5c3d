"""The run skeleton every lm command shares (lm.train, lm.dpo): one `run(args, command)`.

    check --out -> (--resume: the run's own sources and config) -> load the world, models, data
    -> grade before -> train, with checkpoints -> grade after -> save -> report, plot -> summary

A `Command` says what differs: its config, what it loads and builds (`build` returns the trainer,
a `Method`, and the `Grader`), and what its summary adds. `cli_main` is every command's entry
point; the summary's JSON is the last stdout line of the main process.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from accelerate import Accelerator, PartialState

from lm.checkpoint import checkpoints
from lm.data import cycle
from lm.distributed import cpu_only
from lm.models import check_model_source
from lm.report import Panel, plot_curves, report
from ppo_bridge.cli import run_command
from ppo_bridge.logs import read_metrics
from ppo_bridge.rundir import check_run_dir, run_lock, start_over

if TYPE_CHECKING:
    from lm.world import World

MODEL_FLAGS = (("--policy", "policy"), ("--reward-model", "reward_model"))


class Method(Protocol):
    """What the skeleton needs of a trainer (`LMPPOTrainer`, `LMDPOTrainer`)."""

    accelerator: Accelerator
    iteration: int
    run_info: dict  # JSON kept in every checkpoint: the sources and the "before" grades

    def train(self, on_first_step: Callable[[], None] | None = None) -> list[dict]: ...

    def save(self, out: Path) -> None: ...

    def load_checkpoint(self, folder: Path) -> None: ...


@dataclass(frozen=True)
class Outcome:
    """How a command's grades are kept, summarised and shown: `samples(ro, n)` what the "before"
    grading keeps beside its metrics; `summary(before, after)` the summary's grade keys;
    `show(before, after, ro_after, n)` the printed report."""

    samples: Callable[[Any, int], dict[str, Any]]
    summary: Callable[[dict, dict], dict[str, Any]]
    show: Callable[[dict, dict, Any, int], None]


def _rlhf_samples(ro: Any, n: int) -> dict[str, Any]:
    return {"prompts": ro.prompts[:n], "responses": ro.responses[:n]}


def _rlhf_summary(before: dict, after: dict) -> dict[str, Any]:
    b = before["metrics"]
    return {
        "gold_before": b.get("gold"),
        "gold_after": after.get("gold"),
        "rm_before": b["score"],
        "rm_after": after["score"],
        "kl": after["kl"],
        "eos_fraction": after["eos_fraction"],
        "eos_fraction_before": b["eos_fraction"],
    }


def _rlhf_show(before: dict, after: dict, ro_after: Any, n: int) -> None:
    responses_after = ro_after.responses[: len(before["responses"])]
    m = before["metrics"]
    report(m, after, before["prompts"], before["responses"], responses_after, n)


RLHF = Outcome(_rlhf_samples, _rlhf_summary, _rlhf_show)  # prompts in, graded responses out


def rlhf_inputs(args: argparse.Namespace, command: Command, cfg: Any) -> World | None:
    """lm.train / lm.dpo: check the model flags; the toy world supplies what is not given."""
    for flag, key in MODEL_FLAGS:
        check_model_source(flag, getattr(args, key))
    if args.eval_samples < 1:
        raise ValueError(f"--eval-samples must be >= 1, got {args.eval_samples}")
    if args.policy and args.reward_model and getattr(args, command.data):
        return None
    return load_world(args)


class Grading(Protocol):
    """What grades a method before and after training (a `Grader`, or the trainer itself)."""

    def evaluate(self) -> tuple[dict[str, float], Any]: ...


@dataclass
class Command:
    """What one command adds to the skeleton.

    `sources` are the flags a run is built from (kept in its checkpoints, so --resume takes them
    from there; those in `paths` may name local paths, kept absolute); `data` is the one of them
    that names the data (prompts, pairs); without all of policy, reward model and data, the toy
    world supplies the rest. `read_state(checkpoint)` reads a checkpoint's JSON state (with
    "config" and "run_info"); `make_config(overrides, saved_config)` the config; `build(args, cfg,
    world, out)` the trainer and grader; `summary(method, cfg)` the summary's own fields. The
    parsed args carry `overrides`: the config fields given on the command line.
    """

    name: str
    sources: tuple[str, ...]
    paths: tuple[str, ...]
    data: str
    files: tuple[str, ...]  # what --overwrite deletes (glob patterns); the rest of --out stays
    read_state: Callable[[Path], dict]
    make_config: Callable[[dict[str, Any], dict | None], Any]
    build: Callable[[argparse.Namespace, Any, Any, Path], tuple[Method, Grading]]
    summary: Callable[[Method, Any], dict[str, Any]]
    panels: Sequence[Panel]
    title: str
    xlabel: str = "iteration"
    finish: Callable[[argparse.Namespace, Method, Path], None] | None = None  # after the save
    outcome: Outcome = RLHF
    # checks the flags and loads what `build` needs besides its config (the toy world, or None)
    inputs: Callable[[argparse.Namespace, Command, Any], Any] = rlhf_inputs


def add_run_arguments(parser: argparse.ArgumentParser, default_out: str) -> None:
    """The flags every command shares: the run folder, the toy world, grading and threads."""
    parser.add_argument("--out", default=default_out, help="run folder")
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


def run(args: argparse.Namespace, command: Command) -> dict:
    """Load everything, grade, train, grade again, save; return the summary."""
    start = time.perf_counter()
    out = check_run_dir(
        args.out, resume=args.resume, overwrite=args.overwrite, markers=run_markers(args.out)
    )
    checkpoint, saved = None, None
    if args.resume:
        checkpoint = newest_checkpoint(out)
        saved = command.read_state(checkpoint)
        take_sources(args, checkpoint, saved["run_info"], command.sources)
    try:
        cfg = command.make_config(args.overrides, saved["config"] if saved else None)
    except TypeError as err:  # a saved config with fields this version does not have
        raise ValueError(f"--resume: {checkpoint} has a config of another version: {err}") from None
    world = command.inputs(args, command, cfg)
    method, grader = command.build(args, cfg, world, out)
    acc = method.accelerator
    main = acc.is_main_process
    if checkpoint is not None:  # the reference stays the starting policy loaded above
        method.load_checkpoint(checkpoint)
        if main:
            print(f"resuming from {checkpoint} (iteration {method.iteration})")
    else:
        sources = {k: getattr(args, k) for k in command.sources}
        local_paths = {k: local(sources[k]) for k in command.paths}
        method.run_info["sources"] = {**sources, **local_paths}
        metrics, ro = grader.evaluate()
        method.run_info["before"] = {"metrics": metrics, **command.outcome.samples(ro, args.show)}
    before = method.run_info["before"]

    def first_step_done() -> None:
        """--overwrite: the old run goes only once the new one has a completed iteration."""
        if args.overwrite and main:
            start_over(out, command.files)
        acc.wait_for_everyone()

    with run_lock(out) if main else contextlib.nullcontext():
        train_start = time.perf_counter()
        method.train(on_first_step=first_step_done)
        train_s = time.perf_counter() - train_start
        after, ro_after = grader.evaluate()
        method.save(out / "policy")
        if command.finish is not None:
            command.finish(args, method, out)
        summary = {
            **command.outcome.summary(before, after),
            "iterations": method.iteration,
            "train_s": train_s,
            **command.summary(method, cfg),
            "wall_s": time.perf_counter() - start,
            "num_processes": acc.num_processes,
            "out": str(out),
        }
        if main:
            command.outcome.show(before, after, ro_after, args.show)
            history = read_metrics(out / "metrics.csv")
            plot_curves(history, command.panels, out / "curves.png", command.title, command.xlabel)
            print(f"saved the policy to {out / 'policy'}, logs to {out}")
    return summary


def load_world(args: argparse.Namespace) -> World:
    """The toy world of --world / --world-cache, built once by the main process."""
    from lm.world import WorldConfig, build_world, default_cache_dir

    args.world = args.world or "default"
    args.world_cache = str(Path(args.world_cache or default_cache_dir()).resolve())
    world_cfg = WorldConfig.tiny() if args.world == "tiny" else WorldConfig()
    with PartialState(cpu=cpu_only()).main_process_first():
        return build_world(Path(args.world_cache), world_cfg)


def eval_prompts(args: argparse.Namespace, prompts: list[str]) -> list[str]:
    """The graded prompts: the held-out ones cycled to --eval-samples."""
    return cycle(prompts, args.eval_samples)


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


def take_sources(
    args: argparse.Namespace, checkpoint: Path, run_info: dict, keys: Sequence[str]
) -> None:
    """--resume: the models and data are the run's own, as recorded in its checkpoint."""
    given = [k for k in keys if getattr(args, k) is not None]
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise ValueError(f"--resume takes {flag} from the run's checkpoint: drop {flag}")
    sources = run_info.get("sources")
    if not isinstance(sources, dict) or "before" not in run_info:
        raise ValueError(f"{checkpoint} was not written by this command: it cannot be resumed here")
    for key in keys:
        value = sources.get(key)
        plain = isinstance(value, str | int | float) or (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
        )
        if value is not None and (isinstance(value, bool) or not plain):
            raise ValueError(f"{checkpoint}: its recorded --{key.replace('_', '-')} is damaged")
        setattr(args, key, value)


def local(source: str | None) -> str | None:
    """A local path made absolute (so --resume works from another folder); ids stay as they are."""
    return str(Path(source).resolve()) if source and Path(source).exists() else source


def cli_main(
    parse: Callable[[Sequence[str] | None], argparse.Namespace],
    run: Callable[[argparse.Namespace], dict],
    argv: Sequence[str] | None = None,
) -> int:
    """A command's entry point: sets --threads, runs, prints the summary as the last stdout line
    of the main process; bad input (and a non-finite loss) becomes one line on stderr and
    status 2 (`ppo_bridge.cli.run_command`)."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    args = parse(argv)

    def body() -> dict | None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
        summary = run(args)
        return summary if PartialState().is_main_process else None

    try:
        return run_command(body)
    finally:
        # Under torchrun, shut gloo down while Python is alive: left to interpreter teardown,
        # its worker threads can abort a rank (SIGABRT) after the run has finished.
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
