"""Helpers shared by the notebooks: where files go, confidence bands, the toy RLHF world.

Kept tiny on purpose: every PPO formula and loop lives in the package (ppo_bridge, classic, lm).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

# Two-sided 95% Student-t quantiles for n - 1 degrees of freedom (no scipy needed).
_T975 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}


def cache_dir(fast: bool) -> Path:
    """Where the toy world is cached: a temp folder in fast mode, lm.world's default otherwise."""
    if fast:
        return Path(tempfile.gettempdir()) / "ppo-bridge-notebooks-fast"
    from lm.world import default_cache_dir

    return default_cache_dir()


def mean_ci(runs) -> tuple[np.ndarray, np.ndarray]:
    """Mean over seeds (axis 0) and the half-width of its 95% t-interval (0 with one seed)."""
    runs = np.asarray(runs, dtype=float)
    n = np.sum(~np.isnan(runs), axis=0)
    mean = np.nanmean(runs, axis=0)
    if runs.shape[0] < 2:
        return mean, np.zeros_like(mean)
    sem = np.nanstd(runs, axis=0, ddof=1) / np.sqrt(np.maximum(n, 1))
    t = np.array([_T975.get(int(k) - 1, 1.96) if k > 1 else np.nan for k in np.atleast_1d(n)])
    return mean, np.nan_to_num(t.reshape(mean.shape) * sem)


def plot_band(ax, x, runs, label: str, color=None) -> None:
    """Mean curve over seeds with its 95% confidence band; `runs` is [seeds, len(x)]."""
    mean, half = mean_ci(runs)
    (line,) = ax.plot(x, mean, label=f"{label} (n={len(runs)})", color=color)
    ax.fill_between(x, mean - half, mean + half, color=line.get_color(), alpha=0.2, lw=0)


def classic_curve(result, key: str = "rollout/ep_rew_mean") -> tuple[np.ndarray, np.ndarray]:
    """(env steps, metric) per iteration from a classic.train TrainResult's history."""
    steps = np.array([row["time/total_timesteps"] for row in result.history], dtype=float)
    return steps, np.array([row.get(key, np.nan) for row in result.history], dtype=float)


class ToyRLHF:
    """The toy RLHF world loaded once: tokenizer, reward model, prompts and the gold judge.

    `trainer(cfg)` gives a fresh LMPPOTrainer on a fresh copy of the SFT policy each time, so runs
    never share weights; `run(trainer, n)` calls `trainer.step()` n times and returns the history.
    """

    def __init__(self, fast: bool) -> None:
        import datasets
        import transformers

        from lm.models import load_reward_model, load_tokenizer
        from lm.world import WorldConfig, build_world

        transformers.logging.set_verbosity_error()  # quiet loads: no warnings, no progress bars
        transformers.logging.disable_progress_bar()
        datasets.disable_progress_bars()
        cfg = WorldConfig.tiny() if fast else WorldConfig()
        self.world = build_world(cache_dir(fast), cfg)
        self.tokenizer = load_tokenizer(str(self.world.sft_dir))
        self.reward_model, self.reward_label = load_reward_model(str(self.world.reward_model_dir))
        self.reward_tokenizer = load_tokenizer(str(self.world.reward_model_dir))
        prompts = datasets.load_from_disk(str(self.world.prompts))
        self.train_prompts = list(prompts["train"]["prompt"])
        self.test_prompts = list(prompts["test"]["prompt"])

    @staticmethod
    def gold(prompts: list[str], responses: list[str]) -> list[float]:
        """The gold judge grades the response (the prompts carry no sentiment)."""
        from lm.world import gold_scores

        return gold_scores(responses)

    def trainer(self, cfg):
        from lm.models import load_causal_lm
        from lm.ppo import LMPPOTrainer

        return LMPPOTrainer(
            cfg,
            load_causal_lm(str(self.world.sft_dir)),
            self.tokenizer,
            self.train_prompts,
            reward_model=self.reward_model,
            reward_tokenizer=self.reward_tokenizer,
            reward_label=self.reward_label,
            gold_fn=self.gold,
        )

    def dpo_trainer(self, cfg):
        """A fresh LMDPOTrainer on a fresh copy of the SFT policy, on the world's preference pairs
        (those its reward model was trained on), as `python -m lm.dpo` runs it, and
        `evaluate(prompts)`, which grades its policy as lm.dpo does (`lm.grading.Grader`, the
        reference being the SFT policy)."""
        from lm.dpo import LMDPOTrainer, tokenize_pairs
        from lm.grading import reference_grader
        from lm.models import load_causal_lm, model_context
        from lm.rollout import SamplingArgs
        from lm.world import pairs_of_world

        policy = load_causal_lm(str(self.world.sft_dir))
        train_pairs, _ = pairs_of_world(self.world)
        pairs = tokenize_pairs(self.tokenizer, train_pairs, cfg.max_length or model_context(policy))
        trainer = LMDPOTrainer(cfg, policy, self.tokenizer, pairs)
        grader = reference_grader(
            trainer.accelerator, trainer.policy, self.tokenizer, self.test_prompts,
            SamplingArgs(cfg.temperature, cfg.max_new_tokens),
            reward_model=self.reward_model, reward_tokenizer=self.reward_tokenizer,
            reward_label=self.reward_label, gold_fn=self.gold,
        )  # fmt: skip

        def evaluate(prompts):
            return grader.on(prompts).evaluate()

        return trainer, evaluate

    @staticmethod
    def run(trainer, iterations: int, label: str = "", every: int = 0) -> list[dict[str, float]]:
        history = []
        for i in range(iterations):
            history.append(trainer.step())
            m = history[-1]
            if every and ((i + 1) % every == 0 or i + 1 == iterations):
                print(
                    f"{label} iter {i + 1:3d}: RM score {m['objective/scores']:+.3f}  "
                    f"gold {m['objective/gold']:.3f}  KL {m['objective/kl']:.2f} nats  "
                    f"beta {m['objective/beta']:.3f}"
                )
        return history
