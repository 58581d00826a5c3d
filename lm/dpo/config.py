"""What a DPO run is: `LMDPOConfig`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ppo_bridge.config import need
from ppo_bridge.dpo import DPOLoss


@dataclass
class LMDPOConfig:
    """DPO for a causal LM: `epochs` passes over the pairs in shuffled batches of `batch_size`
    pairs per process, AdamW without weight decay, the learning rate decayed linearly to 0
    (trl's defaults). `save_every` N writes `checkpoint-<step>/` every N steps and at the end.

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
    # auto = bf16 on a GPU that has it, else no
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    save_every: int = 0  # optimizer steps between checkpoints; 0 = none (the final policy/ only)
    save_total_limit: int | None = 2  # checkpoints kept, newest first; None = all

    def __post_init__(self) -> None:
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
        need(self.save_every >= 0, f"save_every must be >= 0, got {self.save_every}")
        need(
            self.save_total_limit is None or self.save_total_limit >= 1,
            f"save_total_limit must be >= 1 or None (keep all), got {self.save_total_limit}",
        )

    @property
    def algo(self) -> str:
        """The method's name in reports: "dpo" (sigmoid loss, with or without cDPO) or "ipo"."""
        return "dpo" if self.loss == "sigmoid" else "ipo"


# ------------------------------------------------------------------------------------ the pairs
