"""Checkpoints of a `classic.train` run: one `checkpoint.pt` per run folder, written atomically.

Safe to load whatever its origin: a checkpoint holds only tensors and plain types (dict, list,
tuple, int, float, str, bool, None) and is read with `torch.load(weights_only=True)`, which
refuses anything else, so loading never runs code from the file. It holds (format 3) the config
as a dict, the policy's dims, the model and optimizer state dicts (of one agent: a many-seed run
writes each seed's slice to its own folder), the normaliser statistics, the step counters, the RNG
states (the action sampler's, the minibatch generator's, each sub-env's), the current
observations, the episode statistics and, for the env families of `classic.envstate`, each
sub-env's state (else None: a resume then starts fresh episodes). A damaged, foreign or crafted
file is a ClassicError, never a traceback.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from classic.config import ClassicError, TrainConfig
from classic.networks import ActorCritic
from classic.normalize import Normalizer
from ppo_bridge.atomic import atomic_file

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = 3
# field -> type(s); checked on load, before anything is used
FIELDS: dict[str, type | tuple[type, ...]] = {
    "format": int,
    "config": dict,
    "dims": dict,
    "model": dict,
    "optimizer": dict,
    "normalizer": dict,
    "global_step": int,
    "iteration": int,
    "wall_s": float,
    "threshold": (list, type(None)),
    "sampler": torch.Tensor,
    "generator": torch.Tensor,
    "obs": torch.Tensor,
    "episodes": dict,
    "envs": (list, type(None)),
}


def checkpoint_path(run: str | os.PathLike[str]) -> Path:
    """`run` itself if it is a file, else `run/checkpoint.pt`."""
    path = Path(run)
    return path if path.is_file() else path / CHECKPOINT_NAME


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """torch.save through `atomic_file`: a crash never leaves half a checkpoint."""
    with atomic_file(path) as tmp:
        torch.save(state, tmp)


def one_line(err: BaseException, limit: int = 300) -> str:
    """An exception's message on one line, shortened to `limit` characters."""
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextmanager
def checkpoint_errors(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn any error from using a loaded checkpoint's contents into a one-line ClassicError."""
    try:
        yield
    except ClassicError:
        raise
    except KeyError as err:
        raise ClassicError(f"checkpoint {path} lacks the field {err}: it is damaged") from err
    except (TypeError, ValueError, RuntimeError, IndexError, AttributeError) as err:
        raise ClassicError(
            f"checkpoint {path} does not fit this run ({one_line(err)}): it is damaged, or not "
            "from classic.train"
        ) from err


def load_checkpoint(run: str | os.PathLike[str], env_id: str | None = None) -> dict[str, Any]:
    """Load the checkpoint of `run` (tensors and plain types only), its fields type-checked.

    ClassicError if it is missing, unreadable, not a format-3 classic checkpoint, or was trained
    on another env than `env_id`.
    """
    path = checkpoint_path(run)
    if path.is_dir():
        raise ClassicError(f"{path} is a folder, not a checkpoint: move it, or pass another run")
    if not path.is_file():
        raise ClassicError(
            f"no checkpoint at {path}: train first (python -m classic.train --out DIR)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found is None:
            raise ClassicError(
                f"cannot read checkpoint {path}: not a torch.save file of tensors and plain data"
            ) from err
        raise ClassicError(
            f"refused to load {path}: it refers to {found[1]}, not only to tensors and plain "
            "data (a checkpoint of an older classic, or not one at all), and such files are "
            "never unpickled: retrain, or pass another run"
        ) from err
    except Exception as err:  # any unreadable file is the user's to fix, not a traceback
        raise ClassicError(f"cannot read checkpoint {path}: {one_line(err)}") from err
    if not isinstance(state, dict):
        raise ClassicError(f"{path} is not a classic.train checkpoint: pass a run folder")
    for name, kind in FIELDS.items():
        if name not in state:
            raise ClassicError(f"checkpoint {path} lacks the field {name!r}: it is damaged")
        if not isinstance(state[name], kind) or isinstance(state[name], bool):
            raise ClassicError(f"checkpoint {path}: field {name!r} has the wrong type")
    if state["format"] != FORMAT:
        raise ClassicError(
            f"checkpoint {path} has format {state['format']}, this classic reads {FORMAT}: retrain"
        )
    trained_on = state["config"].get("env_id")
    if env_id is not None and env_id != trained_on:
        raise ClassicError(
            f"checkpoint {path} was trained on {trained_on}, not {env_id}: "
            "pass a run directory of that env, or drop --env"
        )
    return state


def build_model(
    cfg: TrainConfig,
    dims: dict[str, int],
    generators: list[torch.Generator] | None = None,
) -> ActorCritic:
    """The network `cfg` describes for an env of `dims`: one agent per generator (or one)."""
    return ActorCritic(
        **dims,
        hidden_dim=cfg.hidden_dim,
        n_hidden=cfg.n_hidden,
        log_std_init=cfg.log_std_init,
        sde=cfg.use_sde,
        activation=cfg.activation,
        ortho_init=cfg.ortho_init,
        n_agents=1 if generators is None else len(generators),
        generators=generators,
    ).to(cfg.device)


def build_normalizer(cfg: TrainConfig, dims: dict[str, int]) -> Normalizer:
    """The observation / reward normaliser `cfg` describes, for its n_envs envs."""
    return Normalizer(
        (dims["obs_dim"],),
        cfg.n_envs,
        norm_obs=cfg.norm_obs,
        norm_reward=cfg.norm_reward,
        gamma=cfg.gamma,
        clip_obs=cfg.clip_obs,
        clip_reward=cfg.clip_reward,
    )


def agent_slice(state: dict[str, Any], k: int) -> dict[str, Any]:
    """Agent k's share of a state dict of stacked [K, ...] tensors (model or optimizer): every
    tensor with dimensions sliced to [k:k+1], scalars (Adam's step) kept; nested dicts too."""
    if isinstance(state, dict):
        return {key: agent_slice(value, k) for key, value in state.items()}
    if isinstance(state, torch.Tensor) and state.dim():
        return state[k : k + 1].clone()
    return state


def stack_agents(states: list[dict[str, Any]]) -> dict[str, Any]:
    """Inverse of `agent_slice`: K one-agent state dicts as one of stacked [K, ...] tensors.
    ValueError if their scalars (e.g. Adam's step count) or structure differ."""
    first = states[0]
    if isinstance(first, dict):
        if any(not isinstance(s, dict) or s.keys() != first.keys() for s in states):
            raise ValueError("the seeds' states differ in their keys")
        return {key: stack_agents([s[key] for s in states]) for key in first}
    if isinstance(first, torch.Tensor) and first.dim():
        return torch.cat(states)
    if any(not _same(s, first) for s in states):
        raise ValueError(f"the seeds' states differ ({states})")
    return first


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return torch.equal(a, b)
    return a == b


def restore_policy(
    state: dict[str, Any], path: str | os.PathLike[str] = CHECKPOINT_NAME
) -> tuple[TrainConfig, ActorCritic, Normalizer]:
    """Config, model (eval mode) and frozen-to-be normaliser from a loaded checkpoint."""
    with checkpoint_errors(path):
        cfg = TrainConfig.from_dict(state["config"])
        if not all(type(v) is int for v in state["dims"].values()):
            raise TypeError(f"dims {state['dims']} are not integers")
        model, normalizer = build_model(cfg, state["dims"]), build_normalizer(cfg, state["dims"])
        model.load_state_dict(state["model"])
        normalizer.load_state_dict(state["normalizer"])
    return cfg, model.eval(), normalizer
