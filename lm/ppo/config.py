"""What an LM PPO run is: `LMPPOConfig` (PPO, GRPO, RLOO, REINFORCE++ on one pipeline), each
algorithm's preset, and the device choice."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch

from ppo_bridge import PPOConfig
from ppo_bridge.config import AdvantageNorm
from ppo_bridge.kl import KLEstimator

Algo = Literal["ppo", "grpo", "rloo", "reinforce_pp"]


@dataclass
class LMPPOConfig(PPOConfig):
    """PPO and its critic-free relatives for language models, on one pipeline.

    `algo` picks the advantage estimator; everything else is the same rollout and update:

        ppo           GAE on a value head, KL to the reference in the per-token reward
        grpo          group-normalised rewards (r - mean_g) / std_g (r: score - beta * KL)
        rloo          leave-one-out baseline on score - beta * KL of each response
        reinforce_pp  sum of the later KL-shaped token rewards, whitened over the global batch

    `batch_size` responses per process and iteration: batch_size / num_generations prompts, each
    sampled num_generations times (a group never spans two processes); `minibatch_size` counts
    responses. beta (KL in the reward) is fixed unless `kl_target` is set (then adaptive, Ziegler
    et al. 2019); kl_coef is the KL in the loss. The PPOConfig fields keep their meaning; the
    defaults are PPO's, tuned for the toy world's tiny GPT-2 (a real model wants a lower lr,
    ~1e-5, and more iterations); `for_algo` applies each algorithm's own (ALGO_PRESETS).

    Responses are sampled from softmax(logits / T) itself: `top_k` / `top_p` must stay off (0 / 1),
    since the ratio, the KL penalty and the entropy use the log-probs of that distribution, and a
    truncated sampler would make every update silently off-policy (trl's PPOTrainer forces them off
    too). Lower `temperature` for more conservative samples: it enters both sides.

    `save_every` N writes `checkpoint-<iteration>/` every N iterations and at the end, keeping the
    newest `save_total_limit` (None keeps all): see `LMPPOTrainer.save_checkpoint`.
    """

    algo: Algo = "ppo"
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
    # (160, not 320: the slower beta let KL drift to 6-11 nats late in PPO and REINFORCE++ runs)
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

        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(msg)

        need(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        need(self.algo in get_args(Algo), f"algo must be in {get_args(Algo)}, got {self.algo!r}")
        need(
            self.num_generations >= (2 if self.algo in ("grpo", "rloo") else 1),
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
        """The config of `algo` (its ALGO_PRESETS entry over the defaults) with `overrides`."""
        if algo not in ALGO_PRESETS:
            raise ValueError(f"unknown algo {algo!r}: pass one of {', '.join(ALGO_PRESETS)}")
        return cls(**{"algo": algo, **ALGO_PRESETS[algo], **overrides})

    @property
    def critic(self) -> bool:
        """Whether the algorithm trains the value head (PPO only)."""
        return self.algo == "ppo"

    def resolved_mixed_precision(self) -> str:
        if self.mixed_precision != "auto":
            return self.mixed_precision
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


# Each critic-free algorithm's departures from the PPO defaults, tuned on the default toy world
# (bench/README.md): no value head or value loss; advantages already normalised by the method.
# GRPO keeps PPO's adaptive KL in the reward: with the paper's k3 KL in the loss instead
# (--beta 0 --kl-target none --kl-coef C) held-out gold and KL were 0.85 / 3.7 nats at C = 0.2
# and 0.93 / 10 nats at C = 0.1, against 0.98 / 3.5 nats with the KL in the reward.
ALGO_PRESETS: dict[str, dict[str, Any]] = {
    "ppo": {},
    "grpo": dict(
        num_generations=4, normalize_advantages="off", loss_aggregation="seq_mean_token_mean"
    ),
    "rloo": dict(num_generations=4, scale_rewards=False, normalize_advantages="off"),
    "reinforce_pp": dict(normalize_advantages="off"),
}


def cpu_only() -> bool:
    """True without CUDA: then `Accelerator(cpu=True)`, which is what makes torchrun's processes
    one gloo group (without it, accelerate 1.x treats every CPU process as a lone run)."""
    return not torch.cuda.is_available()
