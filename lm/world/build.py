"""The world: every artefact built once into a cache folder (`build_world`), then loaded."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lm.world.config import WorldConfig, default_cache_dir
from lm.world.corpus import all_prompts, make_corpus
from lm.world.gold import gold_scores
from lm.world.reward_model import make_pairs, train_reward_model
from lm.world.sft import make_policy, train_sft
from lm.world.tokenizer import train_tokenizer


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

    from lm.rewards import score_texts
    from lm.sampling import sample_texts

    t = time.perf_counter()
    torch.manual_seed(cfg.seed)
    pair_prompts = random.Random(cfg.seed + 1).choices(split["train"], k=cfg.n_pairs)
    responses, ended = sample_texts(policy, tokenizer, pair_prompts * 2, cfg.max_new_tokens)
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
    chosen = score_texts(reward_model, rm_tokenizer, held_out["chosen"])
    rejected = score_texts(reward_model, rm_tokenizer, held_out["rejected"])
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
