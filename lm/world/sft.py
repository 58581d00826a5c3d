"""The SFT policy: a tiny GPT-2 trained on the corpus (also the reference), and its sampler."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from lm.world.config import WorldConfig

if TYPE_CHECKING:
    from transformers import GPT2LMHeadModel, PreTrainedModel, PreTrainedTokenizerBase


def make_policy(cfg: WorldConfig, tokenizer: PreTrainedTokenizerBase) -> GPT2LMHeadModel:
    """A fresh tiny GPT-2 sized by `cfg`, without dropout (PPO needs deterministic log-probs)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=cfg.n_positions,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(cfg.seed)
    return GPT2LMHeadModel(config)


def train_sft(
    model: PreTrainedModel, sequences: list[list[int]], cfg: WorldConfig, pad_id: int
) -> float:
    """Next-token cross-entropy on whole reviews (BOS prompt response EOS), right-padded batches.

    Returns the final training loss (a moving average over steps).
    """
    from transformers import get_cosine_schedule_with_warmup

    generator = torch.Generator().manual_seed(cfg.seed)
    steps_per_epoch = math.ceil(len(sequences) / cfg.sft_batch_size)
    total = steps_per_epoch * cfg.sft_epochs
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.sft_lr, betas=(0.9, 0.95), weight_decay=0.01
    )
    scheduler = get_cosine_schedule_with_warmup(optimizer, min(100, total // 10), total)
    model.train()
    bar = tqdm(total=total, desc="sft", leave=False)
    loss_ema = None
    for _ in range(cfg.sft_epochs):
        order = torch.randperm(len(sequences), generator=generator).tolist()
        for start in range(0, len(order), cfg.sft_batch_size):
            batch = [sequences[i] for i in order[start : start + cfg.sft_batch_size]]
            width = max(map(len, batch))
            input_ids = torch.tensor([s + [pad_id] * (width - len(s)) for s in batch])
            labels = torch.tensor([s + [-100] * (width - len(s)) for s in batch])
            attention_mask = (labels != -100).long()
            loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            loss_ema = loss.item() if loss_ema is None else 0.95 * loss_ema + 0.05 * loss.item()
            bar.set_postfix(loss=f"{loss_ema:.3f}")
            bar.update()
    bar.close()
    model.eval()
    return float(loss_ema)
