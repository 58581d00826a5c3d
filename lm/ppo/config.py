"""What an LM PPO run is: `LMPPOConfig` (PPO, GRPO, RLOO, REINFORCE++ on one pipeline), each
algorithm's preset, and the device choice."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ppo_bridge import ESTIMATORS, PPOConfig, get_estimator
from ppo_bridge.config import AdvantageNorm, need
from ppo_bridge.kl import KLEstimator


@dataclass
class LMPPOConfig(PPOConfig):
    """PPO and its critic-free relatives for language models, on one pipeline.

    `algo` names the advantage estimator in the core's table (`ppo_bridge.estimators`:
    ppo, grpo, rloo, reinforce_pp); everything else is the same rollout and update.

    `batch_size` responses per process and iteration: batch_size / num_generations prompts, each
    sampled num_generations times (a group never spans two processes); `minibatch_size` counts
    responses. beta (KL in the reward) is fixed unless `kl_target` is set (then adaptive, Ziegler
    et al. 2019); kl_coef is the KL in the loss. The PPOConfig fields keep their meaning; the
    defaults are PPO's, tuned for the toy world's tiny GPT-2 (a real model wants a lower lr,
    ~1e-5, and more iterations); `for_algo` applies each estimator's preset from the table.

    Responses are sampled from softmax(logits / T) itself: `top_k` / `top_p` must stay off (0 / 1),
    since the ratio, the KL penalty and the entropy use the log-probs of that distribution, and a
    truncated sampler would make every update silently off-policy (trl's PPOTrainer forces them off
    too). Lower `temperature` for more conservative samples: it enters both sides.

    `save_every` N writes `checkpoint-<iteration>/` every N iterations and at the end, keeping the
    newest `save_total_limit` (None keeps all): see `LMPPOTrainer.save_checkpoint`.
    """

    algo: str = "ppo"  # a name in ppo_bridge.ESTIMATORS
    num_generations: int = 1  # responses per prompt (a group)
    scale_rewards: bool = True  # grpo / rloo: divide group advantages by the group's std

    lr: float = 2e-4
    gamma: float = 1.0
    gae_lambda: float = 0.95
    clip_vf: float | None = 0.2
    vf_coef: float = 0.1
    n_epochs: int = 4
    minibatch_size: int = 16
    max_grad_norm: float | None = 1.0
    normalize_advantages: AdvantageNorm = "batch"  # whitened over all real tokens of the batch
    # rollout
    batch_size: int = 64  # responses per process per iteration
    total_iterations: int = 50
    max_new_tokens: int = 16
    temperature: float = 1.0
    top_k: int = 0  # must stay 0 (off): see above
    top_p: float = 1.0  # must stay 1 (off)
    # reward
    kl_estimator: KLEstimator = "k1"  # k1 | k2 | k3 (ppo_bridge.kl_estimate)
    beta: float = 0.2  # KL coefficient (initial value when adaptive)
    kl_target: float | None = 4.0  # nats per response: adaptive beta; None = fixed beta
    kl_horizon: int = 160  # responses; beta moves by <= 20% * batch / horizon per iteration
    missing_eos_penalty: float | None = 1.0  # subtracted from the score of a response w/o EOS
    normalize_scores: bool = False  # whiten the scores over the global batch
    # run
    seed: int = 0
    # auto = bf16 on a GPU that has it, else no
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    save_every: int = 0  # iterations between checkpoints; 0 = none (the final policy/ only)
    save_total_limit: int | None = 2  # checkpoints kept, newest first; None = all
    gradient_checkpointing: bool = False  # recompute layer activations in the update's backward

    def __post_init__(self) -> None:
        super().__post_init__()
        need(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        estimator = get_estimator(self.algo)
        need(
            self.num_generations >= estimator.min_group_size,
            f"{self.algo} compares responses to the same prompt: num_generations must be >= 2, "
            f"got {self.num_generations}",
        )
        need(
            self.batch_size % self.num_generations == 0,
            f"batch_size ({self.batch_size}) must hold whole groups: make it a multiple of "
            f"num_generations ({self.num_generations})",
        )
        need(
            self.batch_size % self.minibatch_size == 0,
            f"batch_size ({self.batch_size}) must be a multiple of minibatch_size "
            f"({self.minibatch_size})",
        )
        need(
            self.total_iterations >= 1,
            f"total_iterations must be >= 1, got {self.total_iterations}",
        )
        need(self.max_new_tokens >= 1, f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        need(self.temperature > 0, f"temperature must be > 0, got {self.temperature}")
        need(
            self.top_k == 0 and self.top_p == 1,
            f"top_k {self.top_k} / top_p {self.top_p}: PPO samples from the full distribution "
            "whose log-probs it trains on; leave top_k 0 and top_p 1 (lower temperature instead)",
        )
        need(
            self.kl_estimator in ("k1", "k2", "k3"),
            f"kl_estimator must be 'k1', 'k2' or 'k3', got {self.kl_estimator!r}",
        )
        need(self.beta >= 0, f"beta must be >= 0, got {self.beta}")
        need(
            self.kl_target is None or self.kl_target > 0,
            f"kl_target must be > 0 or None (fixed beta), got {self.kl_target}",
        )
        need(
            self.kl_target is None or self.beta > 0,
            "an adaptive beta (kl_target set) starts from beta > 0: raise beta, or set "
            "kl_target to None for a fixed beta",
        )
        need(self.kl_horizon >= 1, f"kl_horizon must be >= 1, got {self.kl_horizon}")
        need(
            self.missing_eos_penalty is None or self.missing_eos_penalty >= 0,
            f"missing_eos_penalty must be >= 0 or None, got {self.missing_eos_penalty}",
        )
        need(
            self.mixed_precision in ("auto", "no", "fp16", "bf16"),
            f"mixed_precision must be auto, no, fp16 or bf16, got {self.mixed_precision!r}",
        )
        need(self.save_every >= 0, f"save_every must be >= 0, got {self.save_every}")
        need(
            self.save_total_limit is None or self.save_total_limit >= 1,
            f"save_total_limit must be >= 1 or None (keep all), got {self.save_total_limit}",
        )

    @classmethod
    def for_algo(cls, algo: str = "ppo", **overrides: Any) -> LMPPOConfig:
        """The config of `algo` (its preset in the estimator table over the defaults) with
        `overrides`."""
        return cls(**{"algo": algo, **get_estimator(algo).preset, **overrides})

    @property
    def critic(self) -> bool:
        """Whether the estimator trains the value head (PPO only)."""
        return get_estimator(self.algo).critic


# each estimator's departures from PPO's defaults, tuned on the default toy world (bench/README.md)
ALGO_PRESETS: dict[str, dict[str, Any]] = {name: dict(e.preset) for name, e in ESTIMATORS.items()}
