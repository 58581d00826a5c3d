"""The toy RLHF world: everything the default `python -m lm.train` needs, built offline and cached.

There is no model hub here, so the world is made from scratch, small enough for a 2-core CPU:

1. a corpus of short product reviews with known sentiment (a random grammar), and the prompts
   that open them ("The battery of this phone is", "I bought this blender and", ...);
2. a byte-level BPE tokenizer trained on that corpus (`tokenizers`), wrapped as an HF tokenizer;
3. a tiny GPT-2 trained on the corpus by supervised fine-tuning: the SFT policy and the reference;
4. a gold judge, `gold_score`, a programmatic sentiment score in [0, 1] that stands in for humans;
5. preference pairs sampled from the SFT policy and labelled by the judge, and a GPT-2 reward model
   trained on them with trl's `RewardTrainer` (Bradley-Terry).

PPO then optimises the learned reward model and is graded by the gold judge, as in RLHF, so that
reward-model over-optimisation stays visible. `build_world(cache_dir)` builds all this once and
returns a `World` of paths and metrics; later calls load it from the cache. `python -m lm.world`
does the same from the shell.

transformers, trl, datasets and tokenizers are imported inside the functions that use them, so
that the judge and the corpus (`gold_score`, `make_corpus`) import in a blink.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import re
import shutil
import string
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import GPT2LMHeadModel, PreTrainedModel, PreTrainedTokenizerBase

# Bump when the corpus grammar, the judge or the build recipe changes: it is part of the cache key.
WORLD_VERSION = 1

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"


def default_cache_dir() -> Path:
    """Where worlds are cached: $PPO_BRIDGE_CACHE, else ~/.cache/ppo-bridge."""
    return Path(os.environ.get("PPO_BRIDGE_CACHE", "~/.cache/ppo-bridge")).expanduser()


# ---------------------------------------------------------------------------------------------
# Config


@dataclass
class WorldConfig:
    """Sizes and seeds of the toy world. Every field is part of the cache key.

    The default builds in about 1.5 minutes on 2 idle CPU cores (80% of it SFT), and
    `WorldConfig.tiny()` in about 20 seconds.
    """

    # corpus and prompts
    n_texts: int = 16_000  # reviews in the SFT corpus
    mix: tuple[float, float, float] = (0.35, 0.35, 0.30)  # positive / negative / mixed reviews
    eval_prompt_frac: float = 0.1  # prompts held out of PPO training (the "test" split)
    max_new_tokens: int = 32  # response budget; longer corpus responses are dropped
    # tokenizer
    vocab_size: int = 1024
    # GPT-2 policy
    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    n_positions: int = 128
    # supervised fine-tuning
    sft_epochs: int = 3
    sft_lr: float = 3e-3
    sft_batch_size: int = 64
    # preference pairs and reward model
    n_pairs: int = 2_000  # prompts sampled twice from the SFT policy (ties are then dropped)
    pair_min_gap: float = 0.05  # gold-score gap below which a pair is a tie
    rm_eval_frac: float = 0.15  # pairs held out to measure reward-model accuracy
    rm_epochs: int = 2
    rm_lr: float = 1e-3
    rm_batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        self.mix = tuple(float(p) for p in self.mix)

        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(msg)

        for f in dataclasses.fields(self):  # every size and count is a positive int
            value = getattr(self, f.name)
            if f.type == "int" and f.name != "seed":
                need(
                    isinstance(value, int) and value >= 1,
                    f"{f.name} must be an int >= 1, got {value!r}",
                )
        need(
            self.n_texts >= 100, f"n_texts must be >= 100 to cover the grammar, got {self.n_texts}"
        )
        need(
            len(self.mix) == 3 and min(self.mix) >= 0 and math.isclose(sum(self.mix), 1.0),
            f"mix must be 3 probabilities (positive, negative, mixed) summing to 1, got {self.mix}",
        )
        need(
            0 < self.eval_prompt_frac < 0.5,
            f"eval_prompt_frac must be in (0, 0.5), got {self.eval_prompt_frac}",
        )
        n_reserved = 256 + 3  # the byte alphabet and BOS/EOS/PAD
        need(
            self.vocab_size >= n_reserved,
            f"vocab_size must be >= {n_reserved} (256 bytes + 3 special tokens), got "
            f"{self.vocab_size}",
        )
        need(
            self.n_embd % self.n_head == 0,
            f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})",
        )
        need(
            self.max_new_tokens < self.n_positions,
            f"max_new_tokens ({self.max_new_tokens}) must be < n_positions ({self.n_positions})",
        )
        need(self.sft_lr > 0, f"sft_lr must be > 0, got {self.sft_lr}")
        need(self.rm_lr > 0, f"rm_lr must be > 0, got {self.rm_lr}")
        need(0 <= self.pair_min_gap < 1, f"pair_min_gap must be in [0, 1), got {self.pair_min_gap}")
        need(
            0 < self.rm_eval_frac < 0.5,
            f"rm_eval_frac must be in (0, 0.5), got {self.rm_eval_frac}",
        )

    @classmethod
    def tiny(cls, **overrides: Any) -> WorldConfig:
        """A world for tests: the same recipe, smaller (its reward model is weaker: ~0.77)."""
        sizes = dict(n_texts=4_000, vocab_size=600, n_layer=2, n_embd=64, n_head=2, n_positions=64,
                     sft_epochs=4, sft_batch_size=32, n_pairs=512, rm_epochs=4,
                     rm_lr=3e-3)  # fmt: skip
        return cls(**{**sizes, **overrides})

    def key(self) -> str:
        """A short hash of the config and WORLD_VERSION, naming the cache folder."""
        blob = json.dumps({"version": WORLD_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------
# The gold judge


def _wordset(words: str) -> frozenset[str]:
    return frozenset(words.split())


POSITIVE = _wordset(
    "good great excellent amazing solid reliable sturdy impressive fantastic lovely superb nice "
    "perfect perfectly love happy pleased recommend worth best"
)
NEGATIVE = _wordset(
    "bad poor terrible awful flimsy disappointing useless mediocre faulty weak noisy horrible "
    "broke regret disappointed disappoints returned waste worst problems complaints"
)
INTENSIFIERS = _wordset("very really extremely incredibly super truly highly")
NEGATORS = _wordset(
    "not never no nothing hardly isn't wasn't don't doesn't didn't won't wouldn't can't"
)
# A negation reaches at most this many words ahead and never past a clause boundary.
NEGATION_WINDOW = 3
CLAUSE_BREAKS = _wordset(". , ! ? ; : but however though although")
EVIDENCE_CAP = 3.0  # positive (and negative) evidence saturates here
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?|[.,!?;:]")
_SPECIAL = re.compile(r"<\|[a-z]+\|>")


def gold_score(text: str) -> float:
    """Sentiment of a review response in [0, 1]: the ground truth the reward model imitates.

    Each sentiment word (POSITIVE / NEGATIVE) is evidence of weight 1, or 1.5 right after an
    intensifier ("very good"); a negator up to 3 words before it in the same clause flips its
    polarity ("not good" is negative, "no problems" positive). Each distinct word counts once per
    polarity and each side saturates at 3, so repeating or listing sentiment words earns little.
    With margin m = min(pos, 3) - min(neg, 3), the score is sigmoid(2 m - 0.8): no evidence gives
    0.31 (empty or off-topic text is not rewarded), one plain positive word 0.77, "very good" 0.90,
    two positive words 0.96, one negative word alone 0.06. Finally the score is multiplied by
    min(1, 2 * distinct words / words), so degenerate repetition loops score low.
    Special tokens like <|eos|> are ignored.
    """
    tokens = _WORD.findall(_SPECIAL.sub(" ", text).lower())
    words = [t for t in tokens if t not in CLAUSE_BREAKS]
    evidence: dict[tuple[str, int], float] = {}
    since_negator = NEGATION_WINDOW + 1
    previous = ""
    for token in tokens:
        if token in CLAUSE_BREAKS:
            since_negator, previous = NEGATION_WINDOW + 1, ""
            continue
        since_negator += 1
        polarity = 1 if token in POSITIVE else -1 if token in NEGATIVE else 0
        if polarity:
            if since_negator <= NEGATION_WINDOW:
                polarity = -polarity
            weight = 1.5 if previous in INTENSIFIERS else 1.0
            evidence[token, polarity] = max(evidence.get((token, polarity), 0.0), weight)
        if token in NEGATORS:
            since_negator = 0
        previous = token
    positive = sum(w for (_, p), w in evidence.items() if p > 0)
    negative = sum(w for (_, p), w in evidence.items() if p < 0)
    margin = min(positive, EVIDENCE_CAP) - min(negative, EVIDENCE_CAP)
    score = 1.0 / (1.0 + math.exp(-(2.0 * margin - 0.8)))
    if words:
        score *= min(1.0, 2.0 * len(set(words)) / len(words))
    return score


def gold_scores(texts: Sequence[str]) -> list[float]:
    """`gold_score` of each text."""
    return [gold_score(t) for t in texts]


# ---------------------------------------------------------------------------------------------
# The corpus: a random grammar of reviews

PRODUCTS: dict[str, tuple[str, ...]] = {
    "phone": ("battery", "screen", "camera", "speaker"),
    "laptop": ("keyboard", "display", "trackpad", "charger"),
    "blender": ("motor", "jar", "lid", "blade"),
    "headset": ("microphone", "sound", "headband", "cable"),
    "coffee maker": ("carafe", "filter", "timer", "heater"),
    "backpack": ("zipper", "strap", "fabric", "lining"),
    "vacuum": ("suction", "filter", "hose", "brush"),
    "kettle": ("handle", "lid", "switch", "spout"),
    "jacket": ("hood", "zipper", "collar", "lining"),
    "desk lamp": ("bulb", "base", "arm", "switch"),
    "watch": ("strap", "display", "battery", "clasp"),
    "mouse": ("wheel", "sensor", "cable", "grip"),
}
DURATIONS = ("a week", "two weeks", "a month", "three months", "a year")
# Prompts end at a word boundary, carry no sentiment, and fix the grammatical slot that follows.
PROMPTS_ADJ = (
    "The {aspect} of this {product} is",
    "The {aspect} on my new {product} is",
    "I think the {aspect} of this {product} is",
    "Overall, this {product} is",
    "For the price, this {product} is",
)
PROMPTS_CLAUSE = (
    "I bought this {product} and",
    "I have used this {product} for {duration} and",
    "We got this {product} as a gift and",
    "My old {product} died, so I ordered this one and",
)
PROMPTS_SENTENCE = ("Review of the {product}:", "A quick note about this {product}.")

ADJECTIVES = {
    1: ("good", "great", "excellent", "amazing", "solid", "reliable", "sturdy", "impressive",
        "fantastic", "lovely", "superb", "nice"),
    -1: ("bad", "poor", "terrible", "awful", "flimsy", "disappointing", "useless", "mediocre",
         "faulty", "weak", "noisy", "horrible"),
}  # fmt: skip
# "not <adjective>" reads naturally only for some adjectives; it flips the polarity.
NEGATABLE = {1: ("bad", "terrible", "awful", "disappointing"), -1: ("good", "great", "reliable")}
CLAUSES = {
    1: ("it works {perfectly}", "I love it", "I am {happy} with it", "the {aspect} is {adj}",
        "it has been {adj} so far", "I have had no problems", "it never disappoints"),
    -1: ("it broke after {duration}", "I regret it", "I am {disappointed}", "the {aspect} is {adj}",
         "it has been {adj} so far", "I returned it after {duration}", "I had problems with it"),
}  # fmt: skip
FOLLOW_UPS = {
    1: ("The {aspect} is {adj}.", "I would {highly}recommend it.", "Worth every penny.",
        "I love it.", "No complaints so far.", "Best {product} I have owned.", "{Very} happy."),
    -1: ("The {aspect} is {adj}.", "I would not recommend it.", "Not worth the money.",
         "I returned it.", "What a waste of money.", "Worst {product} I have owned.",
         "{Very} disappointed."),
}  # fmt: skip
NEUTRAL = (
    "It arrived on time.", "I use it every day.", "The box was small.", "Shipping took {n} days.",
    "It comes in {color}.", "My {relative} uses it too.", "I got it on sale.",
)  # fmt: skip
ADVERBS = sorted(INTENSIFIERS - {"highly"})  # "highly" only goes with "recommend"
COLORS = ("black", "white", "grey", "blue", "red")
RELATIVES = ("wife", "husband", "son", "daughter", "friend")
SENTIMENTS = ("positive", "negative", "mixed")


@dataclass(frozen=True)
class Review:
    prompt: str
    response: str  # starts with a space: prompt + response is the full text
    sentiment: str  # "positive", "negative" or "mixed"


def all_prompts() -> list[str]:
    """Every prompt the grammar can open a review with, in a fixed order."""
    prompts = []
    for product, aspects in PRODUCTS.items():
        for template in PROMPTS_ADJ + PROMPTS_CLAUSE + PROMPTS_SENTENCE:
            prompts += sorted(
                {
                    template.format(product=product, aspect=aspect, duration=duration)
                    for aspect in aspects
                    for duration in DURATIONS
                }
            )
    return prompts


class _ReviewWriter:
    """Samples the continuation of a prompt with a given polarity (+1, -1, or mixed)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def intensifier(self, p: float = 0.4) -> str:
        """An adverb and a space with probability p, else nothing."""
        return self.rng.choice(ADVERBS) + " " if self.rng.random() < p else ""

    def adjective(self, polarity: int) -> str:
        """An adjective phrase: "good", "really awful", "not bad", "solid and nice"."""
        r = self.rng.random()
        if r < 0.15:
            return "not " + self.rng.choice(NEGATABLE[polarity])
        if r < 0.3:
            first, second = self.rng.sample(ADJECTIVES[polarity], 2)
            return f"{first} and {second}"
        return self.intensifier() + self.rng.choice(ADJECTIVES[polarity])

    def fill(self, template: str, polarity: int, product: str, aspect: str) -> str:
        """Format `template`, sampling only the fields it names (so the RNG stream stays lean)."""
        rng = self.rng
        fields = {
            "aspect": lambda: aspect,
            "product": lambda: product,
            "adj": lambda: self.adjective(polarity),
            "duration": lambda: rng.choice(DURATIONS),
            "perfectly": lambda: rng.choice(("perfectly", "great", "really great")),
            "happy": lambda: self.intensifier() + rng.choice(("happy", "pleased")),
            "disappointed": lambda: self.intensifier() + "disappointed",
            "highly": lambda: "highly " if rng.random() < 0.5 else "",
            "Very": lambda: self.intensifier(p=1.0).strip().capitalize(),
            "n": lambda: rng.choice(("two", "three", "four", "five")),
            "color": lambda: rng.choice(COLORS),
            "relative": lambda: rng.choice(RELATIVES),
        }
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name]
        return template.format(**{name: fields[name]() for name in names})

    def opening(self, slot: str, polarity: int, product: str, aspect: str) -> str:
        """The words that fill the prompt's slot, without final punctuation."""
        if slot == "adj":
            return " " + self.adjective(polarity)
        clause = self.fill(self.rng.choice(CLAUSES[polarity]), polarity, product, aspect)
        return " " + (clause[0].upper() + clause[1:] if slot == "sentence" else clause)

    def response(self, slot: str, sentiment: str, product: str, aspect: str) -> str:
        """An opening that fills the prompt's slot, then 0-2 sentences that agree with it (or, in a
        mixed review, a contrast: ", but the lid is flimsy"), and maybe a neutral remark."""
        others = [a for a in PRODUCTS[product] if a != aspect]
        if sentiment == "mixed":
            first = self.rng.choice((1, -1))
            text = self.opening(slot, first, product, aspect)
            text += ", but " + self.fill(
                "the {aspect} is {adj}", -first, product, self.rng.choice(others)
            )
            sentences = []
        else:
            polarity = 1 if sentiment == "positive" else -1
            text = self.opening(slot, polarity, product, aspect)
            n_follow = self.rng.choice((0, 1, 1, 2))
            templates = self.rng.sample(FOLLOW_UPS[polarity], n_follow)
            sentences = [
                self.fill(t, polarity, product, self.rng.choice(others)) for t in templates
            ]
        if self.rng.random() < 0.3:
            sentences.append(self.fill(self.rng.choice(NEUTRAL), 0, product, aspect))
        self.rng.shuffle(sentences)
        return text + "." + "".join(" " + s for s in sentences)


def make_corpus(n_texts: int, mix: Sequence[float], seed: int) -> list[Review]:
    """`n_texts` reviews over all prompts, with sentiment drawn from `mix` (see `SENTIMENTS`)."""
    rng = random.Random(seed)
    writer = _ReviewWriter(rng)
    slots = [("adj", t) for t in PROMPTS_ADJ] + [("clause", t) for t in PROMPTS_CLAUSE]
    slots += [("sentence", t) for t in PROMPTS_SENTENCE]
    reviews = []
    for _ in range(n_texts):
        product = rng.choice(sorted(PRODUCTS))
        aspect = rng.choice(PRODUCTS[product])
        slot, template = rng.choice(slots)
        prompt = template.format(product=product, aspect=aspect, duration=rng.choice(DURATIONS))
        sentiment = rng.choices(SENTIMENTS, weights=mix)[0]
        reviews.append(Review(prompt, writer.response(slot, sentiment, product, aspect), sentiment))
    return reviews


# ---------------------------------------------------------------------------------------------
# Tokenizer, SFT policy, sampling


def train_tokenizer(
    texts: Sequence[str], vocab_size: int, model_max_length: int
) -> PreTrainedTokenizerBase:
    """A byte-level BPE tokenizer trained on `texts`, as an HF fast tokenizer.

    Encoding prepends BOS (so every sequence has a fixed first token to attend to); EOS ends a
    review and PAD is a separate token, so padding never hides a real EOS.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, tok.token_to_id(BOS))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        model_max_length=model_max_length,
    )


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


@torch.no_grad()
def sample_responses(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int = 128,
) -> tuple[list[str], list[bool]]:
    """Sample one response per prompt at temperature 1 (no top-k / top-p), with the PPO rollout's
    sampler. Returns the decoded responses (special tokens removed) and whether each ended in EOS.
    """
    from lm import rollout

    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    responses, ended = [], []
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(
            list(prompts[start : start + batch_size]), return_tensors="pt", padding=True
        )
        new = rollout.sample_responses(
            model, batch["input_ids"], batch["attention_mask"], tokenizer,
            temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
        )  # fmt: skip
        responses += tokenizer.batch_decode(new, skip_special_tokens=True)
        ended += (new == tokenizer.eos_token_id).any(dim=1).tolist()
    tokenizer.padding_side = side
    return responses, ended


# ---------------------------------------------------------------------------------------------
# Preference pairs and the reward model


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


@torch.no_grad()
def reward_model_scores(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    batch_size: int = 128,
) -> list[float]:
    """Scalar reward of each text, read at its last real token (the PPO rollout's scorer)."""
    from lm import rollout

    scores = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            list(texts[start : start + batch_size]), return_tensors="pt", padding=True
        )
        ids, mask = batch["input_ids"], batch["attention_mask"]
        scores += rollout.reward_model_scores(model, ids, mask).tolist()
    return scores


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
    tokenizer = AutoTokenizer.from_pretrained(sft_dir)
    torch.manual_seed(cfg.seed)  # the score head is initialised at random
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the load report would flag the new head, which is intended
    try:
        model = AutoModelForSequenceClassification.from_pretrained(sft_dir, num_labels=1)
    finally:
        hf_logging.set_verbosity(verbosity)
    trainer = RewardTrainer(model=model, args=args, train_dataset=pairs, processing_class=tokenizer)
    trainer.train()
    model = trainer.model.eval()
    return model, tokenizer


# ---------------------------------------------------------------------------------------------
# The world: build once, cache, load


@dataclass(frozen=True)
class World:
    """Paths and measurements of a built world (see `build_world`).

    The reward model scores the full text prompt + response + EOS (as it was trained), with the
    policy's tokenizer; GPT-2 has absolute positions, so batch it right-padded, or left-padded
    with position ids that skip the padding. `prompts` is a `datasets.DatasetDict` saved with
    `save_to_disk`: splits "train" (for PPO) and "test" (held out), one column "prompt".
    """

    root: Path
    tokenizer_dir: Path
    sft_dir: Path
    reward_model_dir: Path
    prompts: Path
    pairs: Path  # DatasetDict "train"/"test" of the preference pairs (chosen, rejected)
    max_new_tokens: int  # the response budget the corpus was cut to
    sft_gold_mean: float  # gold score of SFT samples (temperature 1, no top-k/top-p)
    sft_eos_fraction: float  # fraction of those samples that ended with EOS
    sft_loss: float
    rm_pair_accuracy: float  # held-out pairs where RM(chosen) > RM(rejected)
    n_pairs_train: int
    n_pairs_eval: int
    build_seconds: float
    samples: list[dict[str, Any]] = field(default_factory=list)  # prompt, response, gold
    config: dict[str, Any] = field(default_factory=dict)
    from_cache: bool = False

    @classmethod
    def load(cls, root: Path) -> World:
        """The world saved under `root`, from its `world.json` marker."""
        meta = json.loads((root / "world.json").read_text())
        paths = {name: root / rel for name, rel in meta.pop("paths").items()}
        return cls(root=root, **paths, **meta, from_cache=True)


@contextlib.contextmanager
def _quiet_progress_bars() -> Iterator[None]:
    """Hide the progress bars of dataset saving / mapping and model loading / writing, which come
    by the dozen and say nothing; the training bars (SFT, reward model) stay."""
    import datasets
    from transformers.utils import logging as hf_logging

    datasets_bars, hf_bars = (
        datasets.is_progress_bar_enabled(),
        hf_logging.is_progress_bar_enabled(),
    )
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if datasets_bars:
            datasets.enable_progress_bars()
        if hf_bars:
            hf_logging.enable_progress_bar()


def _log(msg: str) -> None:
    print(f"[world] {msg}", flush=True)


def _build(root: Path, cfg: WorldConfig) -> dict[str, Any]:
    """Build every artefact into `root`; returns what `world.json` records.

    Every random step seeds its own generator from `cfg.seed`, so a build is reproducible.
    """
    from datasets import Dataset, DatasetDict

    t0 = time.perf_counter()
    reviews = make_corpus(cfg.n_texts, cfg.mix, cfg.seed)
    prompts = all_prompts()
    random.Random(cfg.seed).shuffle(prompts)
    n_test = max(1, round(cfg.eval_prompt_frac * len(prompts)))
    split = {"train": sorted(prompts[n_test:]), "test": sorted(prompts[:n_test])}
    DatasetDict({k: Dataset.from_dict({"prompt": v}) for k, v in split.items()}).save_to_disk(
        root / "prompts"
    )

    tokenizer = train_tokenizer(
        [r.prompt + r.response for r in reviews], cfg.vocab_size, cfg.n_positions
    )
    tokenizer.save_pretrained(root / "tokenizer")
    prompt_ids = dict(zip(prompts, tokenizer(prompts).input_ids, strict=True))
    longest_prompt = max(map(len, prompt_ids.values()))
    if longest_prompt + cfg.max_new_tokens > cfg.n_positions:
        raise ValueError(
            f"n_positions ({cfg.n_positions}) cannot hold the longest prompt ({longest_prompt} "
            f"tokens) + max_new_tokens ({cfg.max_new_tokens}): raise n_positions or vocab_size"
        )
    # Prompts end where a word ends, so encoding prompt and response apart equals encoding the
    # whole text. Reviews whose response (with EOS) exceeds the budget are dropped, so the policy
    # learns to stop in time.
    response_ids = tokenizer([r.response for r in reviews], add_special_tokens=False).input_ids
    sequences = [
        prompt_ids[review.prompt] + ids + [tokenizer.eos_token_id]
        for review, ids in zip(reviews, response_ids, strict=True)
        if len(ids) < cfg.max_new_tokens
    ]
    _log(
        f"corpus: {len(sequences)} reviews ({len(reviews) - len(sequences)} over "
        f"{cfg.max_new_tokens} response tokens dropped), {len(prompts)} prompts "
        f"({n_test} held out), vocab {len(tokenizer)}, longest {max(map(len, sequences))} tokens"
    )

    policy = make_policy(cfg, tokenizer)
    n_params = sum(p.numel() for p in policy.parameters())
    t = time.perf_counter()
    sft_loss = train_sft(policy, sequences, cfg, tokenizer.pad_token_id)
    policy.save_pretrained(root / "sft")
    tokenizer.save_pretrained(root / "sft")
    _log(f"sft: {n_params / 1e6:.2f}M params, loss {sft_loss:.3f}, {time.perf_counter() - t:.0f}s")

    t = time.perf_counter()
    torch.manual_seed(cfg.seed)
    pair_prompts = random.Random(cfg.seed + 1).choices(split["train"], k=cfg.n_pairs)
    responses, ended = sample_responses(policy, tokenizer, pair_prompts * 2, cfg.max_new_tokens)
    golds = gold_scores(responses)
    first, second = responses[: cfg.n_pairs], responses[cfg.n_pairs :]
    rows = make_pairs(pair_prompts, first, second, cfg.pair_min_gap)

    def fits_context(text: str) -> bool:  # a re-encoded sample can be longer than it was sampled
        return len(tokenizer(text).input_ids) <= cfg.n_positions

    rows = [row for row in rows if fits_context(row["chosen"]) and fits_context(row["rejected"])]
    if len(rows) < 10:
        raise RuntimeError(f"only {len(rows)} untied preference pairs: raise n_pairs")
    pairs = Dataset.from_list(rows).train_test_split(test_size=cfg.rm_eval_frac, seed=cfg.seed)
    pairs.save_to_disk(root / "pairs")
    sft_gold_mean = sum(golds) / len(golds)
    sft_eos_fraction = sum(ended) / len(ended)
    _log(
        f"pairs: {len(rows)} of {cfg.n_pairs} untied; SFT samples gold {sft_gold_mean:.3f}, "
        f"ended with EOS {sft_eos_fraction:.1%}, {time.perf_counter() - t:.0f}s"
    )

    t = time.perf_counter()
    reward_model, rm_tokenizer = train_reward_model(
        root / "sft", pairs["train"], cfg, root / "rm_trainer"
    )
    shutil.rmtree(root / "rm_trainer", ignore_errors=True)
    reward_model.save_pretrained(root / "reward_model")
    rm_tokenizer.save_pretrained(root / "reward_model")
    held_out = pairs["test"]
    chosen = reward_model_scores(reward_model, rm_tokenizer, held_out["chosen"])
    rejected = reward_model_scores(reward_model, rm_tokenizer, held_out["rejected"])
    accuracy = sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(held_out)
    _log(f"reward model: held-out pair accuracy {accuracy:.3f}, {time.perf_counter() - t:.0f}s")

    return {
        "paths": {
            "tokenizer_dir": "tokenizer",
            "sft_dir": "sft",
            "reward_model_dir": "reward_model",
            "prompts": "prompts",
            "pairs": "pairs",
        },
        "max_new_tokens": cfg.max_new_tokens,
        "sft_gold_mean": sft_gold_mean,
        "sft_eos_fraction": sft_eos_fraction,
        "sft_loss": sft_loss,
        "rm_pair_accuracy": accuracy,
        "n_pairs_train": len(pairs["train"]),
        "n_pairs_eval": len(held_out),
        "build_seconds": time.perf_counter() - t0,
        "samples": [
            {"prompt": p, "response": r, "gold": g}
            for p, r, g in zip(pair_prompts[:8], responses[:8], golds[:8], strict=True)
        ],
        "config": dataclasses.asdict(cfg),
    }


def build_world(
    cache_dir: str | Path | None = None, cfg: WorldConfig | None = None, *, force: bool = False
) -> World:
    """Build the toy world under `cache_dir/world-<config hash>/`, or load it if already built.

    The build happens in a private temporary folder, with `world.json` (the completion marker)
    written last, and is published by renaming that folder into place, which is atomic: an
    interrupted build leaves nothing that looks finished (and is rebuilt next time), and concurrent
    builders cannot mix their files. `force=True` rebuilds even if a finished world exists.
    """
    cfg = cfg or WorldConfig()
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    root = cache_dir / f"world-{cfg.key()}"
    if (root / "world.json").exists() and not force:
        return World.load(root)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        tiny = " --tiny" if cfg == WorldConfig.tiny() else ""
        raise RuntimeError(
            f"the toy world {root} is not built, and trl's trainer cannot build it inside a "
            "multi-process launch (it would join the launch's process group): build it first "
            f"in one process, e.g. `python -m lm.world --cache-dir {cache_dir}{tiny}`"
        )

    _log(f"building the toy world in {root} (once; later runs load it)")
    tmp = cache_dir / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        with _quiet_progress_bars():
            meta = _build(tmp, cfg)
        (tmp / "world.json").write_text(json.dumps(meta, indent=2))
        if root.exists() and (force or not (root / "world.json").exists()):
            shutil.rmtree(root)  # a half-built world, or one we were told to replace
        try:
            tmp.rename(root)
        except OSError:  # another process published the same world first: use theirs
            shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    world = dataclasses.replace(World.load(root), from_cache=False)
    _log(f"built in {world.build_seconds:.0f}s")
    return world


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Build (or load) the toy RLHF world and print it.")
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: $PPO_BRIDGE_CACHE")
    parser.add_argument("--tiny", action="store_true", help="the tiny test world")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args()
    built = build_world(args.cache_dir, WorldConfig.tiny() if args.tiny else None, force=args.force)
    summary = {k: v for k, v in dataclasses.asdict(built).items() if k not in ("samples", "config")}
    print(json.dumps(summary, indent=2, default=str))
    for sample in built.samples:
        print(f"{sample['gold']:.2f}  {sample['prompt']}|{sample['response']}")
