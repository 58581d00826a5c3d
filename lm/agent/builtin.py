"""Built-in tiny policies for the text envs, built offline and cached (as lm.world is built).

A character tokenizer (every CHARSET character one token) whose digits come in groups of up to
three, so a number below 1000 is one token (a guess, a tool result) and CartPole's fixed-width
signed values always split the same way ("+0.05" is "+", "0", ".", "05"); a tiny random GPT-2
(`lm.world.make_policy`), and optionally supervised fine-tuning on
transcripts of the env's WEAK scripted policy, rendered exactly as the agent will read them (same
context mode, prefix, suffix, stop), with the loss on the action tokens only:

    ppo_bridge/GuessNumber-v0   linear_policy, a quarter of the turns a random guess in the range
                                the hints allow (success ~0.72 in ~5.7 turns; bisection: 1, 3.375)
    ppo_bridge/Calculator-v0    guess_policy (answers at once), tool_policy in 1 episode of 5
    ppo_bridge/TextCartPole-v0  push towards the pole's lean, the angle's sign only (~41 steps)

`optimal_share` mixes in episodes of the optimal scripted policy (bisect_policy, tool_policy):
default 0 for GuessNumber, 0.2 for Calculator; CartPole has none to mix (its strong scripted
policy scores ~500, and an SFT start must score <= 200).

Other envs get the random GPT-2. SFT episodes use env seeds from [2^31, 2^32), which training and
evaluation (below 2^31) never play. The folder is `<cache>/agent-policy-<hash>/`, keyed by
everything that shapes it, written atomically; a build takes seconds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from lm.agent.config import SEED_SPACE, AgentConfig
from lm.agent.render import Renderer, Transcript
from lm.envs import CHARSET, Policy, bisect_policy, guess_policy, linear_policy, tool_policy
from lm.world import WorldConfig, make_policy
from ppo_bridge.atomic import atomic_folder

BUILTIN_VERSION = 2
BOS, EOS, PAD, UNK = "<|bos|>", "<|eos|>", "<|pad|>", "<|unk|>"


@dataclass(frozen=True)
class BuiltinSpec:
    """The built-in policy's size and SFT recipe (all part of the cache key)."""

    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 4
    n_positions: int = 256
    sft_turns: int = 6000  # scripted turns to fine-tune on; 0 = the random GPT-2
    optimal_share: float | None = None  # SFT episodes of the optimal policy; None: env default
    sft_epochs: int = 2
    sft_lr: float = 3e-3
    sft_batch_size: int = 64
    seed: int = 0


def char_tokenizer(model_max_length: int) -> PreTrainedTokenizerFast:
    """One token per CHARSET character (others: UNK) or run of up to 3 digits ("7", "07",
    "512"; longer runs split left to right), BOS prepended, EOS and PAD of their own."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    digits = [f"{n:0{width}d}" for width in (2, 3) for n in range(10**width)]
    tokens = [BOS, EOS, PAD, UNK, *CHARSET, *digits]
    vocab = {token: i for i, token in enumerate(tokens)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[0-9]{1,3}|[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", special_tokens=[(BOS, vocab[BOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=model_max_length,
    )


OPTIMAL: dict[str, tuple[Policy, float]] = {  # env -> (optimal policy, its default share)
    "ppo_bridge/GuessNumber-v0": (bisect_policy, 0.0),
    "ppo_bridge/Calculator-v0": (tool_policy, 0.2),
}


def weak_policy(
    env_id: str, rng: np.random.Generator, optimal_share: float | None = None
) -> Policy | None:
    """A fresh SFT episode's scripted policy for a built-in env (None for other envs): the
    optimal one with probability `optimal_share` (None: the env's default), else the weak one."""
    if optimal_share is not None and env_id not in OPTIMAL:
        raise ValueError(f"optimal_share: env {env_id} has no optimal scripted policy to mix in")
    if env_id in OPTIMAL:
        optimal, default = OPTIMAL[env_id]
        if rng.random() < (default if optimal_share is None else optimal_share):
            return optimal
    if env_id == "ppo_bridge/GuessNumber-v0":

        def guess(obs: str, info: dict) -> str:
            if rng.random() < 0.25:
                return str(int(rng.integers(info["lo"], info["hi"] + 1)))
            return linear_policy(obs, info)

        return guess
    if env_id == "ppo_bridge/Calculator-v0":
        return guess_policy
    if env_id == "ppo_bridge/TextCartPole-v0":
        return lambda obs, info: "right" if float(re.search(r"a=(\S+)", obs)[1]) > 0 else "left"
    return None


def sft_samples(
    cfg: AgentConfig, renderer: Renderer, spec: BuiltinSpec
) -> list[tuple[list[int], list[int]]]:
    """(context ids, action ids) of `spec.sft_turns` turns of the weak policy, rendered by
    `renderer` as in a rollout; each action ends with the stop string (EOS without one)."""
    rng = np.random.default_rng(spec.seed)
    env, tok = cfg.make_env(), renderer.tokenizer
    samples: list[tuple[list[int], list[int]]] = []
    episode = 0
    while len(samples) < spec.sft_turns:
        policy = weak_policy(cfg.env_id, rng, spec.optimal_share)
        obs, info = env.reset(seed=SEED_SPACE + episode)
        t, done = Transcript(observations=[obs]), False
        while not done and len(t.actions) < cfg.max_turns:
            context = renderer.context(t)
            action = policy(obs, info)
            ids = tok(action + (cfg.stop or ""), add_special_tokens=False)["input_ids"]
            ids += [] if cfg.stop else [tok.eos_token_id]
            if len(context) + len(ids) > spec.n_positions:
                break
            samples.append((context, ids))
            obs, _, terminated, truncated, info = env.step(action)
            t.contexts.append(context)
            t.action_ids.append(ids)
            t.actions.append(action)
            t.ended.append(True)
            t.observations.append(obs)
            done = terminated or truncated
        episode += 1
    return samples[: spec.sft_turns]


def train_sft(
    model: PreTrainedModel, samples: list[tuple[list[int], list[int]]], spec: BuiltinSpec, pad: int
) -> float:
    """Cross-entropy on the action tokens given their contexts (context labels -100),
    right-padded batches, AdamW with a cosine schedule. Returns the last epoch's mean loss."""
    from transformers import get_cosine_schedule_with_warmup

    generator = torch.Generator().manual_seed(spec.seed)
    steps = math.ceil(len(samples) / spec.sft_batch_size) * spec.sft_epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.sft_lr, weight_decay=0.01)
    scheduler = get_cosine_schedule_with_warmup(optimizer, steps // 10, steps)
    model.train()
    losses = []
    for _ in range(spec.sft_epochs):
        losses = []
        order = torch.randperm(len(samples), generator=generator).tolist()
        for start in range(0, len(order), spec.sft_batch_size):
            batch = [samples[i] for i in order[start : start + spec.sft_batch_size]]
            width = max(len(c) + len(a) for c, a in batch)
            ids = torch.full((len(batch), width), pad)
            labels = torch.full((len(batch), width), -100)
            for row, (context, action) in enumerate(batch):
                ids[row, : len(context) + len(action)] = torch.tensor(context + action)
                labels[row, len(context) : len(context) + len(action)] = torch.tensor(action)
            attention = (ids != pad).long()
            loss = model(input_ids=ids, attention_mask=attention, labels=labels).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
    model.eval()
    return float(np.mean(losses)) if losses else float("nan")


def builtin_key(cfg: AgentConfig, spec: BuiltinSpec) -> str:
    """A short hash of what shapes the built-in policy: the env, its rendering, the recipe."""
    shaping = ("env_id", "env_kwargs", "context", "prefix", "suffix", "stop", "max_turns")
    rendering = {k: getattr(cfg, k) for k in shaping}
    blob = {"version": BUILTIN_VERSION, **rendering, **dataclasses.asdict(spec)}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:12]


def build_policy(cfg: AgentConfig, cache_dir: Path, spec: BuiltinSpec | None = None) -> Path:
    """The built-in policy folder for `cfg`'s env and rendering, built once under `cache_dir`."""
    spec = spec or BuiltinSpec()
    if spec.optimal_share is not None and not 0 <= spec.optimal_share <= 1:
        raise ValueError(f"optimal_share must be in [0, 1], got {spec.optimal_share}")
    if cfg.max_new_tokens >= spec.n_positions:
        raise ValueError(
            f"max_new_tokens {cfg.max_new_tokens}: an action cannot be as long as the built-in "
            f"policy's context ({spec.n_positions} tokens)"
        )
    root = Path(cache_dir).expanduser() / f"agent-policy-{builtin_key(cfg, spec)}"
    if (root / "builtin.json").exists():
        return root
    tokenizer = char_tokenizer(spec.n_positions)
    sizes = {k: getattr(spec, k) for k in ("n_layer", "n_embd", "n_head", "n_positions", "seed")}
    model = make_policy(WorldConfig(**sizes), tokenizer)
    renderer = Renderer(tokenizer, cfg.context, cfg.prefix, cfg.suffix, cfg.stop)
    scripted = weak_policy(cfg.env_id, np.random.default_rng(0), spec.optimal_share)
    trained = spec.sft_turns > 0 and scripted is not None
    samples = sft_samples(cfg, renderer, spec) if trained else []
    loss = train_sft(model, samples, spec, tokenizer.pad_token_id) if samples else None
    with atomic_folder(root) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        meta = {"env_id": cfg.env_id, "sft_turns": len(samples), "sft_loss": loss}
        (tmp / "builtin.json").write_text(json.dumps({**meta, "spec": dataclasses.asdict(spec)}))
    return root
