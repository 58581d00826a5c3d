"""Training a reward model with trl's `RewardTrainer` (the library does the Bradley-Terry loss and
the loop); what the project adds: the classifier's start, logs in the run folder, and the held-out
pair accuracy, measured as lm.train scores responses."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from lm.reward.config import LMRewardConfig

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback


def reward_classifier(model_dir: str, flag: str = "--model") -> PreTrainedModel:
    """`model_dir`'s transformer with a fresh scalar head ("score"), seeded by the caller."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    from lm.models import pretrained

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the load report would flag the new head, which is intended
    try:
        return pretrained(AutoModelForSequenceClassification, model_dir, flag, num_labels=1)
    finally:
        hf_logging.set_verbosity(verbosity)


def train_reward_model(
    model_dir: str,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Dataset,
    cfg: LMRewardConfig,
    work_dir: Path,
    *,
    max_length: int,
    resume_from: Path | None = None,
    callbacks: list[TrainerCallback] | None = None,
) -> PreTrainedModel:
    """Train a reward model from `model_dir` on `pairs` (trl's preference columns, explicit or
    implicit prompt); RewardTrainer copies the tokenizer's PAD id into the model's config, so it
    reads the score at the last non-pad token. Trainer checkpoints go to `work_dir`; training
    continues from the checkpoint `resume_from` when given."""
    from transformers import PrinterCallback
    from trl import RewardConfig, RewardTrainer

    args = RewardConfig(
        output_dir=str(work_dir),
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.lr,
        lr_scheduler_type="cosine",
        warmup_steps=cfg.warmup_ratio,
        max_length=max_length,
        center_rewards_coefficient=cfg.center_rewards_coefficient,
        logging_steps=0.25 if callbacks is None else 1,
        save_strategy="steps" if cfg.save_every else "no",
        save_steps=cfg.save_every or 500,
        save_total_limit=cfg.save_total_limit,
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        bf16=False,  # trl defaults to bf16; a tiny fp32 model gains nothing from it on CPU
        activation_checkpointing=False,  # trl defaults to True; memory is no issue here
        dataloader_num_workers=0,
        disable_tqdm=callbacks is not None,
        seed=cfg.seed,
        data_seed=cfg.seed,
    )
    torch.manual_seed(cfg.seed)  # the score head is initialised at random
    model = reward_classifier(model_dir)
    trainer = RewardTrainer(
        model=model,
        args=args,
        train_dataset=pairs,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    if callbacks is not None:  # the run folder's logs replace trl's printed dicts
        trainer.remove_callback(PrinterCallback)
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    return trainer.model.eval()
