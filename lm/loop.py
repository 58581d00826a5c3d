"""The iteration loop every trainer shares (LMPPOTrainer, LMDPOTrainer, AgentTrainer): one step,
its metrics logged (CSV + TensorBoard), a progress bar, checkpoints every `save_every` steps and
at the end."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from accelerate import Accelerator
from tqdm.auto import tqdm

from ppo_bridge.atomic import clean_stale
from ppo_bridge.logs import MetricsLogger


class Trainer(Protocol):
    accelerator: Accelerator
    iteration: int
    out_dir: Path | None

    def save_checkpoint(self) -> Path: ...


def train_loop(
    trainer: Trainer,
    step: Callable[[], dict[str, float]],
    total: int,
    *,
    save_every: int,
    desc: str,
    postfix: Callable[[dict[str, float]], dict[str, str]],
    on_first_step: Callable[[], None] | None = None,
) -> list[dict[str, float]]:
    """Run `step` until `trainer.iteration` reaches `total`; return the metrics of each.

    Each row also holds `time/elapsed`, the seconds since the loop began. With an `out_dir`, the
    main process first removes what a killed save left there (`clean_stale`), and the logs
    continue after `iteration` (a resumed run's rows after its checkpoint are replaced).
    `on_first_step` runs once the first step is done, before anything is written.
    """
    acc = trainer.accelerator
    logger = None
    if acc.is_main_process and trainer.out_dir:
        clean_stale(trainer.out_dir)
        logger = MetricsLogger(trainer.out_dir, resume_step=trainer.iteration or None)
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    bar = tqdm(total=total - trainer.iteration, desc=desc, disable=not acc.is_main_process)
    try:
        while trainer.iteration < total:
            metrics = step()
            metrics["time/elapsed"] = time.perf_counter() - start
            if not history and on_first_step is not None:
                on_first_step()
            history.append(metrics)
            if logger:
                logger.log(metrics)
            bar.update(1)
            bar.set_postfix(**postfix(metrics))
            done = trainer.iteration == total
            if trainer.out_dir and save_every and (trainer.iteration % save_every == 0 or done):
                trainer.save_checkpoint()
    finally:
        bar.close()
        if logger:
            logger.close()
    return history
