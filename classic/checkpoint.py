"""Checkpoints of a `classic.train` run: one `checkpoint.pt` per run directory, written atomically.

A checkpoint holds the model, optimizer, normaliser statistics, config, RNG states, step count and,
when the envs pickle, the vector env itself (so that `--resume` continues exactly). It is a
pickle: load only checkpoints you trust.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from classic.config import ClassicError, TrainConfig
from classic.networks import ActorCritic
from classic.normalize import Normalizer

CHECKPOINT_NAME = "checkpoint.pt"


def checkpoint_path(run: str | os.PathLike[str]) -> Path:
    """`run` itself if it is a file, else `run/checkpoint.pt`."""
    path = Path(run)
    return path if path.is_file() else path / CHECKPOINT_NAME


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """torch.save to a temporary file, then os.replace: a crash never leaves half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(run: str | os.PathLike[str], env_id: str | None = None) -> dict[str, Any]:
    """Load the checkpoint of `run`; ClassicError if it is missing or was trained on another env."""
    path = checkpoint_path(run)
    if not path.is_file():
        raise ClassicError(
            f"no checkpoint at {path}: train first (python -m classic.train --out DIR)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        trained_on = state["config"]["env_id"]
    except Exception as err:  # any unreadable file is the user's to fix, not a traceback
        raise ClassicError(f"cannot read checkpoint {path}: {err}") from err
    if env_id is not None and env_id != trained_on:
        raise ClassicError(
            f"checkpoint {path} was trained on {trained_on}, not {env_id}: "
            "pass a run directory of that env, or drop --env"
        )
    return state


def build_policy(cfg: TrainConfig, dims: dict[str, int]) -> tuple[ActorCritic, Normalizer]:
    """The model and normaliser that `cfg` describes, for an env of the given `dims`."""
    model = ActorCritic(
        **dims, hidden_dim=cfg.hidden_dim, n_hidden=cfg.n_hidden, log_std_init=cfg.log_std_init
    ).to(cfg.device)
    normalizer = Normalizer(
        (dims["obs_dim"],),
        cfg.n_envs,
        norm_obs=cfg.norm_obs,
        norm_reward=cfg.norm_reward,
        gamma=cfg.gamma,
        clip_obs=cfg.clip_obs,
        clip_reward=cfg.clip_reward,
    )
    return model, normalizer


def restore_policy(state: dict[str, Any]) -> tuple[TrainConfig, ActorCritic, Normalizer]:
    """Config, model (eval mode) and frozen-to-be normaliser from a loaded checkpoint."""
    cfg = TrainConfig.from_dict(state["config"])
    model, normalizer = build_policy(cfg, state["dims"])
    model.load_state_dict(state["model"])
    normalizer.load_state_dict(state["normalizer"])
    return cfg, model.eval(), normalizer
