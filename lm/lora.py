"""LoRA policies with peft: the adapter-wrapped LM, its adapter-off self as the reference, merging.

With LoRA the reference policy is the same network with its adapters switched off, so the frozen
weights are held once (no copy of the model, unlike full fine-tuning). Only the adapters (and the
value head, which sits outside peft) train.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D

if TYPE_CHECKING:
    from lm.models import PolicyWithValueHead

# peft's shorthand for every Linear / Conv1D layer but the output head: GPT-2's c_attn, c_proj,
# c_fc; Llama / Qwen's q, k, v, o, gate, up, down projections.
ALL_LINEAR = "all-linear"


def add_lora(
    lm: PreTrainedModel,
    r: int,
    alpha: float | None = None,
    dropout: float = 0.0,
    target_modules: Sequence[str] | None = None,
) -> PeftModel:
    """Wrap `lm` with LoRA adapters of rank `r`: W x + (alpha / r) B A x, B = 0 at the start.

    `alpha` defaults to 2r, `target_modules` to every linear layer but the output head. Dropout
    acts in training mode only, and the trainer keeps every model in eval mode (the rollout's and
    the update's log-probs must come from the same function), so it is recorded in the adapter's
    config for later use but does not act during PPO.
    """
    if r < 1:
        raise ValueError(f"--lora-r must be >= 1, got {r}")
    if not 0 <= dropout < 1:
        raise ValueError(f"--lora-dropout must be in [0, 1), got {dropout}")
    config = LoraConfig(
        r=r,
        lora_alpha=2 * r if alpha is None else alpha,
        lora_dropout=dropout,
        target_modules=list(target_modules) if target_modules else ALL_LINEAR,
        fan_in_fan_out=any(isinstance(m, Conv1D) for m in lm.modules()),  # GPT-2 stores W^T
        task_type=TaskType.CAUSAL_LM,
    )
    return get_peft_model(lm, config)


def is_lora(model: object) -> bool:
    return isinstance(model, PeftModel)


def adapters_off(model: object) -> contextlib.AbstractContextManager:
    """Inside: the base model's forward (peft's `disable_adapter`) for a LoRA policy; else as is."""
    return model.disable_adapter() if is_lora(model) else contextlib.nullcontext()


def merge_lora(policy: PolicyWithValueHead) -> None:
    """Fold the adapters into the weights (W <- W + (alpha / r) B A).

    `policy.lm` becomes the plain transformers model, which `save_pretrained` writes whole.
    Consumes the adapters: call it last.
    """
    policy.lm = policy.lm.merge_and_unload()
