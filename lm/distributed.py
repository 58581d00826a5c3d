"""Processes: the `accelerate.Accelerator` every trainer runs on, and metrics averaged over it."""

from __future__ import annotations

import torch
from accelerate import Accelerator

MixedPrecision = str  # "auto" | "no" | "fp16" | "bf16"


def cpu_only() -> bool:
    """True without CUDA: then `Accelerator(cpu=True)`, which is what makes torchrun's processes
    one gloo group (without it, accelerate 1.x treats every CPU process as a lone run)."""
    return not torch.cuda.is_available()


def resolve_mixed_precision(choice: MixedPrecision) -> str:
    """ "auto" = bf16 on a GPU that has it, else no."""
    if choice != "auto":
        return choice
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def make_accelerator(mixed_precision: MixedPrecision = "no") -> Accelerator:
    return Accelerator(cpu=cpu_only(), mixed_precision=resolve_mixed_precision(mixed_precision))


def reduce_mean(accelerator: Accelerator, values: dict[str, torch.Tensor | float]) -> dict:
    """Average scalar metrics over the processes (one all-reduce)."""
    stacked = torch.tensor([float(v) for v in values.values()], device=accelerator.device)
    stacked = accelerator.reduce(stacked, "mean")
    return dict(zip(values, stacked.tolist(), strict=True))
