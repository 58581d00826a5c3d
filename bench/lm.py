"""Benchmark of the LM adapter on the toy RLHF world: our PPO, GRPO, RLOO and REINFORCE++ (each
with `lm.train --algo X`'s defaults) vs trl's GRPOTrainer and RLOOTrainer, and our DPO vs trl's
DPOTrainer.

    python -m bench.lm                      # ours ppo, grpo (+ trl's), rloo (+ trl's),
                                            # reinforce_pp, then ours vs trl's DPO (run_dpo)
    python -m bench.lm --algos grpo,rloo --budget 300
    python -m bench.lm --algos ppo --skip-trl

Every RL run starts from the same SFT policy and optimise the same reward (the world's reward model,
read at the last token of BOS + prompt + response [+ EOS], exactly as lm.ppo scores), on the same
training prompts, with 64 sampled responses per generation and the same update work (n_epochs
passes in minibatches of minibatch_size), temperature, response budget, learning rate and KL
coefficient as our run of the same name; everything else is trl's default (4 responses per prompt,
as ours; trl's beta is fixed where ours is adaptive, and trl's GRPO puts it in the loss).
"Time to target" is the wall-clock from the start of training until the mean gold score of 3
consecutive generation batches first reaches --target; each trl run stops there or at --budget
seconds. Then every policy is graded on the held-out prompts by one function (gold, RM, KL to the
SFT policy in nats per response, EOS fraction). Run on a shared 2-core CPU: figures are noisy.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, TrainerCallback

from lm.data import cycle
from lm.grading import Grader, reference_grader
from lm.models import PolicyWithValueHead, load_causal_lm, load_reward_model, load_tokenizer
from lm.ppo import LMPPOConfig, LMPPOTrainer
from lm.rewards import reward_model_scores
from lm.rollout import SamplingArgs
from lm.sampling import left_pad
from lm.world import build_world, default_cache_dir, gold_scores, world_gold, world_prompts

WINDOW = 3  # generation batches averaged for "reached the target"


def time_to_target(golds: list[float], seconds: list[float], target: float) -> float | None:
    """Seconds until the mean gold of WINDOW consecutive generation batches first reaches target
    (a single batch of 64 is too noisy a criterion), or None."""
    for i in range(WINDOW - 1, len(golds)):
        if sum(golds[i - WINDOW + 1 : i + 1]) / WINDOW >= target:
            return seconds[i]
    return None


def run_ours(world, cfg: LMPPOConfig, target: float, out: Path) -> tuple[dict, LMPPOTrainer]:
    """Our full default run, recording when the training batches first reach `target` gold."""
    tokenizer = load_tokenizer(str(world.sft_dir))
    train, _ = world_prompts(world)
    trainer = LMPPOTrainer(
        cfg,
        load_causal_lm(str(world.sft_dir)),
        tokenizer,
        train,
        reward_model=load_reward_model(str(world.reward_model_dir))[0],
        gold_fn=world_gold,
        out_dir=out,
    )
    history = trainer.train()
    reached = time_to_target(
        [m["objective/gold"] for m in history], [m["time/elapsed"] for m in history], target
    )
    phases = ("time/generate", "time/score", "time/update", "time/iteration", "perf/tokens_per_s")
    mean = {k: sum(m[k] for m in history) / len(history) for k in phases}
    result = {
        "time_to_target_s": reached,
        "train_s": history[-1]["time/elapsed"],
        "steps": len(history),
        "phases": mean,
        "batch_gold_last": history[-1]["objective/gold"],
    }
    return result, trainer


class GoldTracker(TrainerCallback):
    """A trl reward function (the RM, scored like ours) that also records the gold of each batch,
    and a callback that stops training at the target gold or the time budget."""

    def __init__(self, world, target: float, budget_s: float) -> None:
        self.tokenizer = load_tokenizer(str(world.reward_model_dir))
        self.rm = load_reward_model(str(world.reward_model_dir))[0].eval()
        self.target, self.budget_s = target, budget_s
        self.start = time.perf_counter()
        self.batch_gold: list[float] = []
        self.batch_time: list[float] = []
        self.reached: float | None = None
        self.__name__ = "reward_model"  # trl logs rewards under the function's name

    @torch.no_grad()
    def __call__(self, prompts: list[str], completions: list[str], completion_ids, **_) -> list:
        ids = [
            self.tokenizer(p)["input_ids"] + list(c)
            for p, c in zip(prompts, completion_ids, strict=True)
        ]
        input_ids, mask = left_pad(ids, self.tokenizer.pad_token_id)
        gold = sum(gold_scores(completions)) / len(completions)
        self.batch_gold.append(gold)
        self.batch_time.append(time.perf_counter() - self.start)
        self.reached = time_to_target(self.batch_gold, self.batch_time, self.target)
        return reward_model_scores(self.rm, input_ids, mask).tolist()

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
        if self.reached is not None or time.perf_counter() - self.start > self.budget_s:
            control.should_training_stop = True


def run_trl(world, kind: str, cfg: LMPPOConfig, target: float, budget_s: float):
    """trl's RLOO or GRPO on the same policy, prompts, reward and batch, until target or budget."""
    from datasets import load_from_disk
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    config_cls, trainer_cls = {
        "rloo": (RLOOConfig, RLOOTrainer),
        "grpo": (GRPOConfig, GRPOTrainer),
    }[kind]
    tracker = GoldTracker(world, target, budget_s)
    with tempfile.TemporaryDirectory() as tmp:
        args = config_cls(
            output_dir=tmp,
            # one generation batch = our batch (64 completions: 16 prompts x 4), then the same
            # update work as ours: n_epochs passes in minibatches of minibatch_size
            per_device_train_batch_size=cfg.minibatch_size,
            steps_per_generation=cfg.batch_size // cfg.minibatch_size,
            num_iterations=cfg.n_epochs,
            num_generations=cfg.num_generations,
            max_completion_length=cfg.max_new_tokens,
            temperature=cfg.temperature,
            learning_rate=cfg.lr,
            beta=cfg.beta,
            max_steps=100_000,  # the callback stops the run
            logging_strategy="no",
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            bf16=False,
            gradient_checkpointing=False,
            disable_dropout=True,
            seed=cfg.seed,
        )
        trainer = trainer_cls(
            model=AutoModelForCausalLM.from_pretrained(world.sft_dir, trust_remote_code=False),
            reward_funcs=tracker,
            args=args,
            train_dataset=load_from_disk(str(world.prompts))["train"],
            processing_class=load_tokenizer(str(world.sft_dir)),
            callbacks=[tracker],
        )
        start = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - start
        result = {
            "time_to_target_s": tracker.reached,
            "train_s": train_s,
            "steps": trainer.state.global_step,
            "batch_gold_last": tracker.batch_gold[-1],
        }
        return result, trainer.model


def held_out(grader: Grader, model) -> dict[str, float]:
    """Grade `model`'s weights on the grader's held-out prompts with our evaluation (KL to the
    SFT reference), loaded into the grader's own policy."""
    policy = grader.policy
    (policy.lm if isinstance(policy, PolicyWithValueHead) else policy).load_state_dict(
        model.state_dict()
    )
    return grader.evaluate()[0]


class HeldOutCurve:
    """Held-out gold, RM score and KL every `every` optimizer steps of a DPO run, on a clock that
    leaves the evaluations out; `reached` is the training seconds at the first evaluation whose
    gold is >= target. The clock starts at construction, so build the trainer after it (both
    sides then pay their tokenisation and reference log-probs)."""

    def __init__(self, target: float, every: int, budget_s: float) -> None:
        self.target, self.every, self.budget_s = target, every, budget_s
        self.points: list[dict[str, float]] = []
        self.reached: float | None = None
        self.paused = 0.0
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start - self.paused

    def check(
        self, step: int, evaluate: Callable[[], dict[str, float]], final: bool = False
    ) -> bool:
        """Evaluate at every `every`-th step (and at the end: `final`, seeded); True = stop."""
        if step % self.every == 0 or final:
            seconds, start = self.elapsed(), time.perf_counter()
            if final:
                torch.manual_seed(0)  # both sides' final grades draw the same random numbers
            metrics = evaluate()
            self.points.append({"step": step, "train_s": seconds, **metrics})
            if self.reached is None and metrics["gold"] >= self.target:
                self.reached = seconds
            self.paused += time.perf_counter() - start
        return self.elapsed() > self.budget_s


class StepHook(TrainerCallback):
    """Runs a `HeldOutCurve` after each of trl's optimizer steps on trl's model."""

    def __init__(self, curve: HeldOutCurve, grader: Grader) -> None:
        self.curve, self.grader = curve, grader

    def on_step_end(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
        if self.curve.check(state.global_step, lambda: held_out(self.grader, model)):
            control.should_training_stop = True


def run_dpo(world, target: float, budget_s: float, every: int, skip_trl: bool, out: Path) -> dict:
    """lm.dpo's trainer vs trl's DPOTrainer, both with LMDPOConfig's defaults (beta, lr, epochs,
    pairs per step, linear decay, no weight decay, grad clip), from the world's SFT policy on its
    own preference pairs (explicit prompts), the reference log-probs computed once on both sides
    (trl: precompute_ref_log_probs). Held-out gold / KL every `every` steps, and at the end with
    the same seed, through the same grader (lm.train's evaluation)."""
    from trl import DPOConfig, DPOTrainer

    from lm.dpo import LMDPOConfig, LMDPOTrainer, tokenize_pairs
    from lm.models import model_context
    from lm.world import pairs_of_world

    cfg = LMDPOConfig()
    train_pairs = pairs_of_world(world)[0]
    test_prompts = cycle(world_prompts(world)[1], 128)
    tokenizer = load_tokenizer(str(world.sft_dir))
    reward_model = load_reward_model(str(world.reward_model_dir))[0]
    results = {}

    curve = HeldOutCurve(target, every, budget_s)
    policy = load_causal_lm(str(world.sft_dir))
    pairs = tokenize_pairs(tokenizer, train_pairs, model_context(policy))
    trainer = LMDPOTrainer(cfg, policy, tokenizer, pairs, out_dir=out / "dpo_ours")
    sampling = SamplingArgs(cfg.temperature, cfg.max_new_tokens)
    grader = reference_grader(
        trainer.accelerator, trainer.policy, tokenizer, test_prompts, sampling,
        reward_model=reward_model, gold_fn=world_gold,
    )  # fmt: skip
    setup_s = curve.elapsed()  # loading, tokenising, the reference log-probs
    history = []
    while trainer.iteration < trainer.total_steps:
        history.append(trainer.step(trainer.next_indices()))
        if curve.check(trainer.iteration, lambda: grader.evaluate()[0]):
            break
    train_s = curve.elapsed()
    curve.check(trainer.iteration, lambda: grader.evaluate()[0], final=True)
    tokens = sum(
        2 * len(pairs.prompt[i]) + len(pairs.chosen[i]) + len(pairs.rejected[i])
        for i in range(len(pairs))
    ) * history[-1]["epoch"]  # fmt: skip
    results["ours (DPO)"] = {
        "time_to_target_s": curve.reached,
        "train_s": train_s,
        "steps": trainer.iteration,
        "phases": {
            "reference log-probs (once)": trainer.seconds_reference,
            "setup (load, tokenise, reference)": setup_s,
            "seconds per step": (train_s - setup_s) / trainer.iteration,
            "tokens per second (trl's count)": tokens / (train_s - setup_s),
        },
        **curve.points[-1],
        "curve": curve.points,
    }
    (out / "results_dpo.json").write_text(json.dumps(results, indent=2))

    if not skip_trl:
        grader = reference_grader(
            trainer.accelerator, load_causal_lm(str(world.sft_dir)), tokenizer, test_prompts,
            sampling, reward_model=reward_model, gold_fn=world_gold,
        )  # fmt: skip
        curve = HeldOutCurve(target, every, budget_s)
        with tempfile.TemporaryDirectory() as tmp:
            args = DPOConfig(
                output_dir=tmp,
                beta=cfg.beta,
                loss_type=[cfg.loss],
                learning_rate=cfg.lr,
                num_train_epochs=cfg.epochs,
                per_device_train_batch_size=cfg.batch_size,
                max_grad_norm=cfg.max_grad_norm,
                max_length=model_context(policy),
                precompute_ref_log_probs=True,
                logging_strategy="no",
                save_strategy="no",
                report_to="none",
                use_cpu=True,
                bf16=False,
                activation_checkpointing=False,
                dataloader_num_workers=0,
                seed=cfg.seed,
            )
            theirs = DPOTrainer(
                model=load_causal_lm(str(world.sft_dir)),
                args=args,
                train_dataset=train_pairs,
                processing_class=tokenizer,
                callbacks=[StepHook(curve, grader)],
            )
            theirs.train()
            train_s = curve.elapsed()
            steps = theirs.state.global_step
            curve.check(steps, lambda: held_out(grader, theirs.model), final=True)
        results["trl DPO"] = {
            "time_to_target_s": curve.reached,
            "train_s": train_s,
            "steps": steps,
            **curve.points[-1],
            "curve": curve.points,
        }
        (out / "results_dpo.json").write_text(json.dumps(results, indent=2))

    ours = results["ours (DPO)"]
    print(f"\nours (DPO), {len(pairs)} pairs x {cfg.epochs} epochs, {cfg.batch_size} per step:")
    for k, v in ours["phases"].items():
        print(f"  {k:36}{v:10.3f}")
    print(f"\n{'run':12}{'to gold>=' + str(target):>14}{'steps':>7}{'train s':>9}"
          f"{'gold':>7}{'RM':>7}{'KL':>7}{'EOS':>6}{'train s ours/theirs':>21}"
          f"{'to target ours/theirs':>23}")  # fmt: skip
    for name, r in results.items():
        t = r["time_to_target_s"]
        reached = f"{t:.0f} s" if t is not None else "not reached"
        mine = ours["time_to_target_s"]
        ratio_train = f"{ours['train_s'] / r['train_s']:.2f}" if r is not ours else "-"
        ratio_target = f"{mine / t:.2f}" if t and mine and r is not ours else "-"
        print(f"{name:12}{reached:>14}{r['steps']:>7}{r['train_s']:>9.0f}{r['gold']:>7.3f}"
              f"{r['score']:>7.2f}{r['kl']:>7.2f}{r['eos_fraction']:>6.2f}{ratio_train:>21}"
              f"{ratio_target:>23}")  # fmt: skip
    summary = {k: {kk: vv for kk, vv in v.items() if kk != "curve"} for k, v in results.items()}
    print(json.dumps(summary))
    return results


RL_ALGOS = ("ppo", "grpo", "rloo", "reinforce_pp")
TRL_OF = {"grpo": "grpo", "rloo": "rloo"}  # our algorithm -> trl's trainer of the same name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=float, default=0.9, help="gold score to reach")
    parser.add_argument("--budget", type=float, default=600, help="seconds per trl run")
    parser.add_argument("--skip-trl", action="store_true")
    parser.add_argument("--out", default="runs/bench_lm")
    parser.add_argument(
        "--algos", default="ppo,grpo,rloo,reinforce_pp,dpo", help="comma-separated, in this order"
    )
    parser.add_argument("--dpo-target", type=float, default=0.85, help="gold score, DPO runs")
    parser.add_argument("--eval-every", type=int, default=10, help="DPO steps between evals")
    args = parser.parse_args()
    algos = args.algos.split(",")
    unknown = sorted(set(algos) - {*RL_ALGOS, "dpo"})
    if unknown:
        parser.error(f"unknown --algos {unknown}: choose from {', '.join(RL_ALGOS)}, dpo")
    torch.set_num_threads(1)  # as lm.train; 2 threads are ~10x slower on the shared 2-core CPU
    world = build_world(default_cache_dir())
    test_prompts = cycle(world_prompts(world)[1], 128)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    results: dict[str, dict] = {}
    pairs: list[tuple[str, str]] = []  # (ours, trl's of the same name)
    for algo in [a for a in algos if a in RL_ALGOS]:
        cfg = LMPPOConfig.for_algo(algo)
        ours, trainer = run_ours(world, cfg, args.target, out / f"ours_{algo}")
        # Each run is graded by its own trainer: same sampling and RM scoring, ref = SFT policy.
        name = f"ours {algo}"
        grader = trainer.grader(test_prompts)
        results[name] = {**ours, **held_out(grader, trainer.policy.lm)}
        if algo in TRL_OF and not args.skip_trl:
            theirs, model = run_trl(world, TRL_OF[algo], cfg, args.target, args.budget)
            results[f"trl {algo}"] = {**theirs, **held_out(grader, model)}
            pairs.append((name, f"trl {algo}"))
        (out / "results.json").write_text(json.dumps(results, indent=2))

    for name, r in results.items():
        if name.startswith("ours"):
            print(f"\n{name}: seconds per iteration by phase (mean over {r['steps']} iterations):")
            for k, v in r["phases"].items():
                print(f"  {k:22}{v:10.2f}")
    print(f"\n{'run':20}{'to gold>=' + str(args.target):>14}{'steps':>7}{'train s':>9}"
          f"{'gold':>7}{'RM':>7}{'KL':>7}{'EOS':>6}")  # fmt: skip
    for name, r in results.items():
        t = r["time_to_target_s"]
        reached = f"{t:.1f} s" if t is not None else "not reached"
        print(f"{name:20}{reached:>14}{r['steps']:>7}{r['train_s']:>9.0f}{r['gold']:>7.3f}"
              f"{r['score']:>7.2f}{r['kl']:>7.2f}{r['eos_fraction']:>6.2f}")  # fmt: skip
    ratios = {}
    for mine, theirs in pairs:
        a, b = results[mine]["time_to_target_s"], results[theirs]["time_to_target_s"]
        ratios[mine] = a / b if a and b else None
        print(f"{mine} / {theirs}: {'-' if ratios[mine] is None else f'{ratios[mine]:.2f}'}")
    fastest = {
        side: min(
            (r["time_to_target_s"], n)
            for n, r in results.items()
            if n.startswith(side) and r["time_to_target_s"] is not None
        )
        for side in ("ours", "trl")
        if any(n.startswith(side) and r["time_to_target_s"] for n, r in results.items())
    }
    if len(fastest) == 2:
        (t_ours, n_ours), (t_trl, n_trl) = fastest["ours"], fastest["trl"]
        print(f"headline: fastest of ours ({n_ours}, {t_ours:.1f} s) / fastest of trl's "
              f"({n_trl}, {t_trl:.1f} s) = {t_ours / t_trl:.2f}")  # fmt: skip
    if "dpo" in algos:
        results["dpo"] = run_dpo(
            world, args.dpo_target, args.budget, args.eval_every, args.skip_trl, out
        )
    summary = {k: {kk: vv for kk, vv in v.items() if kk != "phases"} for k, v in results.items()}
    print(json.dumps({"results": summary, "ratios": ratios}, default=str))


if __name__ == "__main__":
    main()
