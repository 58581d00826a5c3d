"""DPO / cDPO / IPO for a causal LM on the core's `dpo_loss`, one module per part:

config   `LMDPOConfig`
pairs    `tokenize_pairs` (trl's recipe), `pack_pairs` / `packed_sequence_logprobs` (both
         completions of a pair in one forward pass)
trainer  `LMDPOTrainer`: accelerate (DDP), checkpoints, resume
command  `python -m lm.dpo` on the shared run skeleton (`lm.run`)
"""

from lm.dpo.command import main
from lm.dpo.config import LMDPOConfig
from lm.dpo.pairs import TokenizedPairs, pack_pairs, packed_sequence_logprobs, tokenize_pairs
from lm.dpo.trainer import LMDPOTrainer

__all__ = [
    "LMDPOConfig",
    "LMDPOTrainer",
    "TokenizedPairs",
    "main",
    "pack_pairs",
    "packed_sequence_logprobs",
    "tokenize_pairs",
]
