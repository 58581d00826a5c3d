"""What an lm run folder holds, written and read back: model folders (`save_pretrained` + tokenizer,
plus PPO's value head), checkpoint-<iteration>/ folders (each written atomically,
`ppo_bridge.atomic`), the trainer's JSON state, RNG states, and safe loading.

Nothing here loads code from a file: RNG states are tensors and plain types, for
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import pickle
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from lm.lora import is_lora
from lm.models import PolicyWithValueHead, pretrained
from ppo_bridge.atomic import atomic_folder, remove_folder

CHECKPOINT = re.compile(r"checkpoint-(\d+)")
VALUE_HEAD_FILE = "value_head.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
PARTS = ("lm.", "value_head.")  # the state-dict prefixes of PolicyWithValueHead's two parts


def checkpoints(run_dir: Path) -> list[Path]:
    """The `checkpoint-<iteration>` folders of a run, oldest first (each complete: see above)."""
    found = [p for p in run_dir.glob("checkpoint-*") if CHECKPOINT.fullmatch(p.name) and p.is_dir()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def prune_checkpoints(run_dir: Path, keep: int | None) -> None:
    """Delete all but the newest `keep` checkpoints (None keeps all)."""
    if keep is not None:
        for old in checkpoints(run_dir)[:-keep]:
            remove_folder(old)


def load_plain(path: Path) -> Any:
    """`torch.load(weights_only=True)`: tensors and plain types come back; a file holding anything
    else is refused, never unpickled (a crafted file cannot run code). Errors are one line."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(
            f"{path} holds more than tensors and plain data: refused to load it (it could run code)"
        ) from None
    except (OSError, RuntimeError) as err:
        raise ValueError(f"{path} cannot be read: {str(err).strip().splitlines()[0]}") from None


def rng_state() -> dict[str, Any]:
    """This process's global RNG states (torch CPU and CUDA, python `random`, numpy) as tensors
    and plain types: what `torch.load(weights_only=True)` reads back."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": [version, list(mt), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


def write_model(
    model: PolicyWithValueHead | PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    folder: Path,
    state: tuple[str, dict] | None = None,
    state_dict: dict[str, Tensor] | None = None,
) -> None:
    """Write into the existing `folder` the LM (`save_pretrained`, with its tokenizer), a policy's
    value head (safetensors) and `state = (file name, JSON)`. `state_dict`: the model's gathered
    weights when its own are sharded (FSDP)."""
    state_dict = state_dict or model.state_dict()
    if isinstance(model, PolicyWithValueHead):
        part = {
            p: {k[len(p) :]: v for k, v in state_dict.items() if k.startswith(p)} for p in PARTS
        }
        model.lm.save_pretrained(folder, state_dict=part["lm."])
        head = {k: v.contiguous() for k, v in part["value_head."].items()}
        save_file(head, folder / VALUE_HEAD_FILE)
    else:
        model.save_pretrained(folder, state_dict=state_dict)
    tokenizer.save_pretrained(folder)
    if state is not None:
        (folder / state[0]).write_text(json.dumps(state[1], indent=2))


def save_model(
    model: PolicyWithValueHead | PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    out: str | Path,
    state: tuple[str, dict] | None = None,
    state_dict: dict[str, Tensor] | None = None,
) -> None:
    """`write_model` into `out` atomically: `out` is the previous complete folder or the new
    complete one at every instant (`ppo_bridge.atomic.atomic_folder`)."""
    with atomic_folder(out) as tmp:
        write_model(model, tokenizer, tmp, state, state_dict)


def load_weights(model: PolicyWithValueHead | PreTrainedModel, folder: Path) -> None:
    """Copy the weights `write_model` saved in `folder` into `model`, in place (its optimizer keeps
    pointing at the same parameters); a one-line ValueError if they do not fit."""
    lm = model.lm if isinstance(model, PolicyWithValueHead) else model
    try:
        if is_lora(lm):  # the folder holds the adapter (peft's save_pretrained); the base is lm's
            from peft import set_peft_model_state_dict

            adapter = load_file(folder / "adapter_model.safetensors")
            result = set_peft_model_state_dict(lm, adapter)
            if result.unexpected_keys:
                raise ValueError(f"unexpected adapter weights {result.unexpected_keys[:3]}")
        else:
            saved = pretrained(AutoModelForCausalLM, str(folder), "checkpoint")
            lm.load_state_dict(saved.state_dict())
        if isinstance(model, PolicyWithValueHead):
            model.value_head.load_state_dict(load_file(folder / VALUE_HEAD_FILE))
    except (OSError, RuntimeError, ValueError, KeyError, SafetensorError) as err:
        message = str(err).strip().splitlines() or [type(err).__name__]
        raise ValueError(
            f"checkpoint {folder}: cannot load it into this run: {message[0]}"
        ) from None


def read_state(folder: Path, name: str, schema: dict[str, tuple[str, Any]]) -> dict:
    """The JSON state file `name` of a checkpoint, each field of `schema` (name -> (what it must
    be, check)) present and valid, or a one-line ValueError naming the first that is not."""
    path = folder / name
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"checkpoint {folder}: cannot read {name} ({err})") from None
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {folder}: {name} is not a JSON object: resume an intact one")
    missing = [k for k in schema if k not in state]
    if missing:
        raise ValueError(f"checkpoint {folder}: {name} lacks {missing}: resume an intact one")
    for key, (what, ok) in schema.items():
        if not ok(state[key]):
            raise ValueError(
                f"checkpoint {folder}: {name} has {key} = {state[key]!r:.60}, not {what}: it is "
                "damaged; resume an intact checkpoint"
            )
    return state


def save_checkpoint(
    accelerator: Accelerator,
    out_dir: Path,
    iteration: int,
    model: PolicyWithValueHead | PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    optimizer: torch.optim.Optimizer,
    state: Callable[[], tuple[str, dict]],
    rngs: dict[str, Any],
    keep: int | None,
) -> Path:
    """Write `out_dir/checkpoint-<iteration>/` atomically and keep the newest `keep`: the model
    (`write_model`), `optimizer.pt`, the trainer's JSON `state()` (made on the main process) and
    one `rng_state_<rank>.pth` per process (`rngs`: this process's). Called by every process."""
    gathered = gather_object([rngs])
    folder = out_dir / f"checkpoint-{iteration}"
    if accelerator.is_main_process:
        with atomic_folder(folder) as tmp:
            write_model(model, tokenizer, tmp, state())
            torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
            for rank, rng in enumerate(gathered):
                torch.save(rng, tmp / f"rng_state_{rank}.pth")
        prune_checkpoints(out_dir, keep)
    accelerator.wait_for_everyone()
    return folder


def read_checkpoint_files(
    accelerator: Accelerator, folder: Path, state: dict
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(optimizer state, this process's RNG states) of a checkpoint whose JSON `state` was read,
    after checking it was written by as many processes as this run has."""
    if state["num_processes"] != accelerator.num_processes:
        raise ValueError(
            f"{folder} was written by {state['num_processes']} processes, this run has "
            f"{accelerator.num_processes}: resume it with as many (torchrun --nproc_per_node)"
        )
    optimizer = load_plain(folder / OPTIMIZER_FILE)
    rng = load_plain(folder / f"rng_state_{accelerator.process_index}.pth")
    if not isinstance(optimizer, dict) or not isinstance(rng, dict):
        raise ValueError(f"checkpoint {folder}: its optimizer or RNG file is not a state dict")
    return optimizer, rng
