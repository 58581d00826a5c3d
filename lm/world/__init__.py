"""The toy RLHF world: everything the default `python -m lm.train` needs, built offline and cached.

There is no model hub here, so the world is made from scratch, small enough for a 2-core CPU; each
step is one module of this package:

1. `corpus`: short product reviews with known sentiment (a random grammar), and the prompts that
   open them ("The battery of this phone is", "I bought this blender and", ...);
2. `tokenizer`: a byte-level BPE tokenizer trained on that corpus, wrapped as an HF tokenizer;
3. `sft`: a tiny GPT-2 trained on the corpus by supervised fine-tuning: the SFT policy and the
   reference;
4. `gold`: the gold judge, `gold_score`, a programmatic sentiment score in [0, 1] that stands in
   for humans;
5. `reward_model`: preference pairs sampled from the SFT policy and labelled by the judge, and a
   GPT-2 reward model trained on them with trl's `RewardTrainer` (Bradley-Terry).

PPO then optimises the learned reward model and is graded by the gold judge, as in RLHF, so that
reward-model over-optimisation stays visible. `build.build_world(cache_dir)` builds all this once
and returns a `World` of paths and metrics; later calls load it from the cache. `config` holds the
sizes and seeds (`WorldConfig`) that key the cache, `data` its prompts, gold judge and pairs as
the commands read them. `python -m lm.world` builds from the shell.

transformers, trl, datasets and tokenizers are imported inside the functions that use them, so
that the judge and the corpus (`gold_score`, `make_corpus`) import in a blink.
"""

from lm.world.build import World, build_world
from lm.world.config import WORLD_VERSION, WorldConfig, default_cache_dir
from lm.world.corpus import Review, all_prompts, make_corpus
from lm.world.data import pairs_of_world, world_gold, world_prompts
from lm.world.gold import INTENSIFIERS, NEGATIVE, NEGATORS, POSITIVE, gold_score, gold_scores
from lm.world.reward_model import make_pairs, train_reward_model
from lm.world.sft import make_policy, train_sft
from lm.world.tokenizer import BOS, EOS, PAD, train_tokenizer

__all__ = [
    "BOS",
    "EOS",
    "INTENSIFIERS",
    "NEGATIVE",
    "NEGATORS",
    "PAD",
    "POSITIVE",
    "WORLD_VERSION",
    "Review",
    "World",
    "WorldConfig",
    "all_prompts",
    "build_world",
    "default_cache_dir",
    "gold_score",
    "gold_scores",
    "make_corpus",
    "make_pairs",
    "make_policy",
    "pairs_of_world",
    "train_reward_model",
    "train_sft",
    "train_tokenizer",
    "world_gold",
    "world_prompts",
]
