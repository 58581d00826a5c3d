"""`LMDPOTrainer`: DPO / cDPO / IPO on a causal LM through accelerate, with checkpoints.

One optimizer step, on every process: its share of the batch's pairs, packed (`pack_pairs`), one
forward pass for both completions' sequence log-probs, the core's `dpo_loss` against the
reference's (computed once, before training), `accelerator.backward` (DDP averages the
processes' gradients), clipping, AdamW, the linear learning-rate decay. The model stays in eval
mode (no dropout: the log-probs are those of the policy that is graded).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, set_seed

from lm.checkpoint import (
    load_weights,
    read_checkpoint_files,
    read_state,
    rng_state,
    save_checkpoint,
    save_model,
    set_rng_state,
)
from lm.distributed import make_accelerator, reduce_mean
from lm.dpo.config import LMDPOConfig
from lm.dpo.pairs import TokenizedPairs, pack_pairs, packed_sequence_logprobs
from lm.fsdp import fsdp_requested
from lm.loop import train_loop
from lm.models import model_context
from ppo_bridge import dpo_loss

DPO_STATE_FILE = "dpo_state.json"


def _count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


DPO_STATE = {
    "iteration": ("an integer >= 0", _count),
    "epoch": ("an integer >= 0", _count),
    "position": ("an integer >= 0", _count),
    "order": ("a list of pair indices", lambda v: isinstance(v, list) and all(map(_count, v))),
    "num_processes": ("an integer >= 1", lambda v: _count(v) and v >= 1),
    "scheduler": ("an object", lambda v: isinstance(v, dict)),
    "config": ("an object", lambda v: isinstance(v, dict)),
    "run_info": ("an object", lambda v: isinstance(v, dict)),
}


def read_dpo_state(folder: Path) -> dict:
    """A DPO checkpoint's `dpo_state.json`, every field checked, or a one-line ValueError."""
    return read_state(folder, DPO_STATE_FILE, DPO_STATE)


class LMDPOTrainer:
    """DPO on `policy` (any causal LM, trained in place) from tokenized preference pairs.

    The reference is the policy as it starts: the sequence log-probs of every pair under it are
    computed once, here. Each process takes an interleaved share of every shuffled batch (batch
    i of `batch_size` * processes pairs: process r gets its pairs r, r + P, ...).
    """

    def __init__(
        self,
        cfg: LMDPOConfig,
        policy: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        pairs: TokenizedPairs,
        out_dir: str | Path | None = None,
    ) -> None:
        if fsdp_requested():
            raise ValueError("lm.dpo does not run under FSDP: launch it with torchrun (DDP)")
        self.cfg, self.tokenizer, self.pairs = cfg, tokenizer, pairs
        self.accelerator = acc = make_accelerator(cfg.mixed_precision)
        set_seed(cfg.seed + acc.process_index)  # the grader samples differently per process
        self.width = model_context(policy)  # of the packed rows
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.global_batch = cfg.batch_size * acc.num_processes
        if len(pairs) < acc.num_processes:
            raise ValueError(
                f"{len(pairs)} pairs cannot be shared by {acc.num_processes} processes: give more"
            )
        self.steps_per_epoch = math.ceil(len(pairs) / self.global_batch)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=0.0)
        self.model, self.optimizer = acc.prepare(policy, optimizer)
        self.model.eval()
        self.policy: PreTrainedModel = acc.unwrap_model(self.model)
        # stepped here, once per optimizer step (accelerate's wrapper would step it per process)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: 1 - step / self.total_steps
        )
        self.shuffle_gen = torch.Generator().manual_seed(cfg.seed)
        self.iteration = self.epoch = self.position = 0
        self.order: list[int] = []
        self.run_info: dict = {}
        self.last_metrics: dict[str, float] = {}
        start = time.perf_counter()
        with torch.no_grad():
            ref = [
                self.logprobs(range(i, min(i + cfg.batch_size, len(pairs))))[0]
                for i in range(0, len(pairs), cfg.batch_size)
            ]
        self.ref_chosen = torch.cat([r.chunk(2)[0] for r in ref])
        self.ref_rejected = torch.cat([r.chunk(2)[1] for r in ref])
        self.seconds_reference = time.perf_counter() - start

    def logprobs(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Policy sequence log-probs and completion lengths, [chosen; rejected] ([2b] each), of
        the pairs `indices`, in one forward pass over them packed (`pack_pairs`)."""
        p = self.pairs
        packed = pack_pairs(
            [p.prompt[i] for i in indices],
            [p.chosen[i] for i in indices],
            [p.rejected[i] for i in indices],
            self.tokenizer.pad_token_id,
            self.width,
        )
        return packed_sequence_logprobs(self.model, packed.to(self.accelerator.device))

    def step(self, indices: Sequence[int]) -> dict[str, float]:
        """One optimizer step on this process's pairs `indices`; returns its metrics (trl's
        names), averaged over the processes."""
        cfg, acc = self.cfg, self.accelerator
        with acc.autocast():
            logps, lengths = self.logprobs(indices)
        chosen, rejected = logps.float().chunk(2)
        index = torch.as_tensor(list(indices))
        ref_chosen, ref_rejected = self.ref_chosen[index], self.ref_rejected[index]
        args = (chosen, rejected, ref_chosen, ref_rejected)
        if cfg.loss == "ipo":  # trl's IPO: each log-ratio divided by its completion length
            args = tuple(a / n for a, n in zip(args, lengths.chunk(2) * 2, strict=True))
        loss, stats = dpo_loss(*args, cfg.beta, cfg.loss, cfg.label_smoothing)
        finite = acc.reduce(torch.isfinite(loss).float().reshape(1), "sum").item()
        if finite < acc.num_processes:  # every process stops, before the step
            raise FloatingPointError(
                f"non-finite DPO loss at step {self.iteration + 1}: lower --lr or check the pairs"
            )
        self.optimizer.zero_grad(set_to_none=True)
        acc.backward(loss)
        grad_norm = acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm or math.inf)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.iteration += 1
        local = {
            "loss": loss.detach(),
            **stats,
            "logps/chosen": chosen.detach().mean(),
            "logps/rejected": rejected.detach().mean(),
            "grad_norm": grad_norm,
        }
        return {
            "iteration": float(self.iteration),
            "epoch": self.iteration / self.steps_per_epoch,
            **reduce_mean(acc, local),
            "learning_rate": lr,
        }

    def next_indices(self) -> list[int]:
        """This process's pairs of the next batch; a new shuffled order starts each epoch."""
        if self.position == 0:
            self.order = torch.randperm(len(self.pairs), generator=self.shuffle_gen).tolist()
        acc = self.accelerator
        batch = self.order[self.position : self.position + self.global_batch]
        self.position += self.global_batch
        if self.position >= len(self.order):
            self.epoch, self.position = self.epoch + 1, 0
        return batch[acc.process_index :: acc.num_processes]

    def train(self, on_first_step: Callable[[], None] | None = None) -> list[dict[str, float]]:
        """The remaining steps of all epochs (`lm.loop.train_loop`: logs, checkpoints every
        `save_every`); returns the metrics per step."""

        def step() -> dict[str, float]:
            self.last_metrics = self.step(self.next_indices())
            return self.last_metrics

        return train_loop(
            self,
            step,
            self.total_steps,
            save_every=self.cfg.save_every,
            desc=self.cfg.algo,
            postfix=lambda m: {"loss": f"{m['loss']:.3f}"},
            on_first_step=on_first_step,
        )

    def save(self, out: str | Path) -> None:
        """The policy as a plain model folder (`save_pretrained` + tokenizer), atomically."""
        acc = self.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process:
            save_model(self.policy, self.tokenizer, out)
        acc.wait_for_everyone()

    def save_checkpoint(self) -> Path:
        """Write `out_dir/checkpoint-<step>/` atomically (the policy, `optimizer.pt`,
        `dpo_state.json` with the step, the epoch's order and position, the scheduler, config and
        `run_info`, one `rng_state_<rank>.pth` per process); keep the newest
        `save_total_limit`. Called by every process together."""
        acc = self.accelerator

        def state() -> tuple[str, dict]:
            return DPO_STATE_FILE, {
                "iteration": self.iteration,
                "epoch": self.epoch,
                "position": self.position,
                "order": self.order,
                "num_processes": acc.num_processes,
                "scheduler": self.scheduler.state_dict(),
                "config": asdict(self.cfg),
                "run_info": self.run_info,
            }

        rngs = {**rng_state(), "shuffle_gen": self.shuffle_gen.get_state()}
        return save_checkpoint(
            acc,
            self.out_dir,
            self.iteration,
            self.policy,
            self.tokenizer,
            self.optimizer,
            state,
            rngs,
            self.cfg.save_total_limit,
        )

    def load_checkpoint(self, folder: str | Path) -> None:
        """Continue from a `save_checkpoint` folder (the reference log-probs stay those of the
        starting policy). Reads only safetensors, JSON and tensors."""
        acc, folder = self.accelerator, Path(folder)
        state = read_dpo_state(folder)
        if state["order"] and sorted(state["order"]) != list(range(len(self.pairs))):
            raise ValueError(f"checkpoint {folder}: its pair order is not one of these pairs")
        optimizer, rng = read_checkpoint_files(acc, folder, state)
        load_weights(self.policy, folder)
        try:
            self.optimizer.load_state_dict(optimizer)
            self.scheduler.load_state_dict(state["scheduler"])
            set_rng_state(rng)
            self.shuffle_gen.set_state(rng["shuffle_gen"])
        except (RuntimeError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"checkpoint {folder} does not fit this run: {err}") from None
        self.iteration, self.epoch = state["iteration"], state["epoch"]
        self.position, self.order = state["position"], state["order"]
        self.run_info = state["run_info"]
