"""Preference pairs labelled by the gold judge, and the Bradley-Terry reward model trained on
them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from lm.world.config import WorldConfig
from lm.world.gold import gold_score
from lm.world.tokenizer import EOS

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def make_pairs(
    prompts: Sequence[str], first: Sequence[str], second: Sequence[str], min_gap: float
) -> list[dict[str, str]]:
    """Label two responses per prompt with the gold judge; pairs closer than `min_gap` are ties.

    Rows are trl's implicit-prompt preference format: full texts "chosen" and "rejected" (prompt +
    response + EOS, exactly what the reward model scores later).
    """
    rows = []
    for prompt, a, b in zip(prompts, first, second, strict=True):
        score_a, score_b = gold_score(a), gold_score(b)
        if abs(score_a - score_b) < min_gap:
            continue
        chosen, rejected = (a, b) if score_a > score_b else (b, a)
        rows.append({"chosen": prompt + chosen + EOS, "rejected": prompt + rejected + EOS})
    return rows


def train_reward_model(
    sft_dir: Path, pairs: Dataset, cfg: WorldConfig, work_dir: Path
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A Bradley-Terry reward model initialised from the SFT policy, trained by trl's RewardTrainer.

    The classifier is the SFT transformer with a fresh scalar head ("score"); RewardTrainer copies
    the tokenizer's PAD id into its config, so it reads the score at the last non-pad token.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging
    from trl import RewardConfig, RewardTrainer

    args = RewardConfig(
        output_dir=str(work_dir),
        num_train_epochs=cfg.rm_epochs,
        per_device_train_batch_size=cfg.rm_batch_size,
        learning_rate=cfg.rm_lr,
        lr_scheduler_type="cosine",
        warmup_steps=0.1,
        max_length=cfg.n_positions,
        logging_steps=0.25,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,  # trl defaults to bf16; this tiny fp32 model gains nothing from it on CPU
        activation_checkpointing=False,  # trl defaults to True; memory is no issue here
        dataloader_num_workers=0,
        seed=cfg.seed,
        data_seed=cfg.seed,
    )
    tokenizer = AutoTokenizer.from_pretrained(sft_dir, trust_remote_code=False)
    torch.manual_seed(cfg.seed)  # the score head is initialised at random
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the load report would flag the new head, which is intended
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            sft_dir, num_labels=1, trust_remote_code=False
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    trainer = RewardTrainer(model=model, args=args, train_dataset=pairs, processing_class=tokenizer)
    trainer.train()
    model = trainer.model.eval()
    return model, tokenizer
