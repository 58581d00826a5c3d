"""Preference pairs labelled by the gold judge, and the Bradley-Terry reward model trained on
them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

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
    """A Bradley-Terry reward model initialised from the SFT policy, trained by trl's RewardTrainer
    (`lm.reward.train_reward_model`, as `python -m lm.reward` trains one on a user's pairs)."""
    from transformers import AutoTokenizer

    from lm.reward import LMRewardConfig
    from lm.reward import train_reward_model as train

    rm_cfg = LMRewardConfig(
        epochs=cfg.rm_epochs, batch_size=cfg.rm_batch_size, lr=cfg.rm_lr, seed=cfg.seed
    )
    tokenizer = AutoTokenizer.from_pretrained(sft_dir, trust_remote_code=False)
    model = train(str(sft_dir), tokenizer, pairs, rm_cfg, work_dir, max_length=cfg.n_positions)
    return model, tokenizer
