"""Sharded training (FSDP2) through accelerate's own FSDP support, on GPUs.

    accelerate launch --config_file configs/fsdp.yaml --num_processes 2 -m lm.train ...

accelerate shards each transformer block and the rest of the policy (the root unit); the trainer
only has to route what does not go through the root's `forward` (sampling) through FSDP's hooks,
and to gather the full weights before saving. accelerate 1.15 applies FSDP to GPU processes only:
a CPU process under an FSDP config runs as plain DDP, so such a run is refused rather than left
silently unsharded (torch's FSDP2 itself does run on CPU with gloo; accelerate does not apply it).
"""

from __future__ import annotations

from accelerate import Accelerator
from accelerate.utils import DistributedType, parse_flag_from_env
from torch import Tensor, nn


def fsdp_requested() -> bool:
    """True under an accelerate FSDP config (`accelerate launch` sets ACCELERATE_USE_FSDP)."""
    return parse_flag_from_env("ACCELERATE_USE_FSDP")


def check_fsdp(accelerator: Accelerator, checkpoints: bool) -> None:
    """A one-line ValueError when an FSDP config would not shard (CPU processes), is FSDP1, or
    comes with periodic checkpoints (their optimizer state and weights are written unsharded)."""
    if not fsdp_requested():
        return
    if accelerator.distributed_type != DistributedType.FSDP:
        raise ValueError(
            "an FSDP config was given but accelerate runs these processes as "
            f"{accelerator.distributed_type.value} (it applies FSDP to GPU processes only): drop "
            "the FSDP config on CPUs (torchrun gives data parallel) or run on GPUs"
        )
    if not accelerator.is_fsdp2:
        raise ValueError("set fsdp_version: 2 in the accelerate config (configs/fsdp.yaml)")
    if checkpoints:
        raise ValueError(
            "--save-every writes resumable checkpoints, which FSDP runs do not support yet: "
            "pass --save-every 0 (the final policy is saved, gathered)"
        )


def shard_sampling(accelerator: Accelerator, model: nn.Module) -> None:
    """Make `model.generate` run FSDP's pre/post-forward hooks, as `forward` does, so the root
    unit's weights are gathered before sampling (FSDP2 only; nothing to do otherwise)."""
    if accelerator.distributed_type == DistributedType.FSDP:
        from torch.distributed.fsdp import register_fsdp_forward_method

        register_fsdp_forward_method(model, "generate")


def full_state_dict(accelerator: Accelerator, model: nn.Module) -> dict[str, Tensor] | None:
    """The gathered full-precision state dict of an FSDP-sharded model (a collective: call it on
    every process), or None when the model is not sharded (its own tensors are whole)."""
    if accelerator.distributed_type != DistributedType.FSDP:
        return None
    return accelerator.get_state_dict(model)
