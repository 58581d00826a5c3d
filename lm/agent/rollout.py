"""Rollouts over turns: N text envs played in parallel, one batched sampling call per turn.

A turn is a sample, (context ids, action ids). Each turn the live episodes' contexts are
left-padded into one batch for the project's `sample_responses` (softmax(logits / T), nothing
else); an action ends at EOS or at the token whose text completes the `stop` string (what follows
is dropped), or at `max_new_tokens`. Its decoded text, cut before the stop string, goes to
`env.step`. Episodes end by termination, truncation (the env's, or `max_turns`) or context overflow
(the next context + max_new_tokens would not fit the model): the last two are truncations, so
they keep the context of the observation that followed (`bootstrap_context`) for V(s').

The turns are then stacked per episode, [E, K, P + R] = [left-padded context | right-padded
action] for E episodes of at most K turns (`TurnBatch`), and one no-grad pass per micro-batch reads
each action token's log-prob, reference log-prob, entropy and value (`score_turns`). Environment
tokens are context: they get no log-prob, KL, entropy or loss, since only action tokens are
response tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import gymnasium as gym
import torch
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lm.agent.config import AgentConfig
from lm.agent.render import Renderer, Transcript
from lm.models import PolicyWithValueHead
from lm.sampling import Reference, left_pad, policy_forward, sample_responses


@dataclass
class Episode(Transcript):
    """One played episode: its transcript, per-turn rewards and how it ended."""

    seed: int = 0
    rewards: list[float] = field(default_factory=list)
    invalid: list[bool] = field(default_factory=list)  # info["invalid_action"] per turn
    terminated: bool = False
    truncated: bool = False
    overflow: bool = False  # truncated because the next context would not fit the model
    success: bool = False  # the last info's "success" (False where the env has none)
    bootstrap_context: list[int] | None = None  # the next context, where truncated

    @property
    def turns(self) -> int:
        return len(self.actions)

    @property
    def ret(self) -> float:
        return sum(self.rewards)


def stop_token_ids(tokenizer: PreTrainedTokenizerBase, stop: str | None) -> list[int]:
    """The tokens whose own text contains `stop`: an action ends at any of them, so sampling may
    stop there (a stop string split over several tokens is found afterwards, by `cut_action`)."""
    if not stop:
        return []
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    return [i for i, text in enumerate(texts) if stop in text]


def cut_action(
    ids: Sequence[int],
    tokenizer: PreTrainedTokenizerBase,
    stop: str | None,
    stop_ids: Sequence[int] = (),
) -> tuple[list[int], str, bool]:
    """(the action's tokens, its text for the env, whether it ended at EOS or `stop`).

    The tokens run up to and including the first EOS, the first token at which the decoded text
    contains `stop`, or the first of `stop_ids` (where sampling stopped the row); the text is
    decoded without special tokens and cut before `stop`.
    """
    ids, ends = list(ids), set(stop_ids)
    for t, token in enumerate(ids):
        if token == tokenizer.eos_token_id:
            return ids[: t + 1], tokenizer.decode(ids[:t], skip_special_tokens=True), True
        text = tokenizer.decode(ids[: t + 1], skip_special_tokens=True)
        if stop and stop in text:
            return ids[: t + 1], text[: text.index(stop)], True
        if token in ends:
            return ids[: t + 1], text, True
    return ids, tokenizer.decode(ids, skip_special_tokens=True), False


def env_call(env_id: str, call: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)`, an env's reset or step; whatever it raises becomes one ValueError
    line that names the env and the call (an env's bug is the run's bad input)."""
    try:
        return fn(*args, **kwargs)
    except Exception as err:  # whatever the env's code raises
        detail = str(err).strip().splitlines()[:1] or [""]
        raise ValueError(
            f"env {env_id} raised {type(err).__name__} in {call}: {detail[0]}"
        ) from None


@torch.no_grad()
def play(
    policy: PolicyWithValueHead | PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    envs: Sequence[gym.Env],
    seeds: Sequence[int],
    renderer: Renderer,
    cfg: AgentConfig,
    context_limit: int,
    device: torch.device | str = "cpu",
    stop_ids: Sequence[int] | None = None,
) -> list[Episode]:
    """Play one episode per seed (env i plays seeds[i]) to its end; see the module docstring.

    `stop_ids`: `stop_token_ids(tokenizer, cfg.stop)`, computed once by the caller (it reads the
    whole vocabulary) or here.
    """
    if len(seeds) > len(envs):
        raise ValueError(f"{len(seeds)} episodes need as many envs, got {len(envs)}")
    stop_ids = stop_token_ids(tokenizer, cfg.stop) if stop_ids is None else list(stop_ids)
    episodes, contexts = [], []
    for env, seed in zip(envs, seeds, strict=False):
        obs, _ = env_call(cfg.env_id, f"reset(seed={seed})", env.reset, seed=int(seed))
        ep = Episode(seed=int(seed), observations=[obs])
        episodes.append(ep)
        contexts.append(renderer.context(ep))
        if len(contexts[-1]) + cfg.max_new_tokens > context_limit:
            raise ValueError(
                f"the first context of env {cfg.env_id} (seed {seed}) has {len(contexts[-1])} "
                f"tokens: with max_new_tokens {cfg.max_new_tokens} it exceeds the model context "
                f"of {context_limit}: lower --max-new-tokens or pass a model with a longer one"
            )
    live = list(range(len(episodes)))
    while live:
        query, query_mask = left_pad([contexts[i] for i in live], tokenizer.pad_token_id)
        responses = sample_responses(
            policy,
            query.to(device),
            query_mask.to(device),
            tokenizer,
            temperature=cfg.temperature,
            top_k=cfg.top_k,
            top_p=cfg.top_p,
            max_new_tokens=cfg.max_new_tokens,
            stop_ids=stop_ids,
        ).tolist()
        still = []
        for i, sampled in zip(live, responses, strict=True):
            ep, env = episodes[i], envs[i]
            ids, text, ended = cut_action(sampled, tokenizer, cfg.stop, stop_ids)
            step = env_call(cfg.env_id, f"step({text!r})", env.step, text)
            obs, reward, terminated, truncated, info = step
            ep.contexts.append(contexts[i])
            ep.action_ids.append(ids)
            ep.actions.append(text)
            ep.ended.append(ended)
            ep.observations.append(obs)
            ep.rewards.append(float(reward))
            ep.invalid.append(bool(info.get("invalid_action", False)))
            if not terminated:
                contexts[i] = renderer.context(ep)
                ended_here = truncated or ep.turns >= cfg.max_turns
                too_long = len(contexts[i]) + cfg.max_new_tokens > context_limit
                ep.overflow = too_long and not ended_here
                if not (ended_here or too_long):
                    still.append(i)
                    continue
                # V(s') of the observation that followed is read from its context's last token
                ep.bootstrap_context = contexts[i][-context_limit:]
            ep.terminated, ep.truncated = bool(terminated), not terminated
            ep.success = bool(info.get("success", False))
        live = still
    return episodes


@dataclass
class TurnBatch:
    """E episodes' turns stacked, ids [E, K, P + R] = [left-padded context | right-padded action]
    (K turns at most, P context tokens, R action tokens)."""

    query_responses: Tensor  # [E, K, P + R]
    attention_mask: Tensor  # [E, K, P + R]
    turns: Tensor  # [E, K] bool: real turns (an episode has K or fewer)
    mask: Tensor  # [E, K, R] float: real action tokens, the response mask

    @property
    def n_response(self) -> int:
        return self.mask.shape[-1]

    def to(self, device: torch.device | str) -> TurnBatch:
        return TurnBatch(*(getattr(self, f.name).to(device) for f in fields(self)))


def stack_turns(episodes: Sequence[Episode], pad_id: int) -> TurnBatch:
    """The turns of `episodes` as one `TurnBatch` (on the CPU)."""
    n_turns = max(ep.turns for ep in episodes)
    width_p = max(len(c) for ep in episodes for c in ep.contexts)
    width_r = max(len(a) for ep in episodes for a in ep.action_ids)
    shape = (len(episodes), n_turns, width_p + width_r)
    ids = torch.full(shape, pad_id, dtype=torch.long)
    attention = torch.zeros(shape, dtype=torch.long)
    turns = torch.zeros(shape[:2], dtype=torch.bool)
    mask = torch.zeros((*shape[:2], width_r))
    for e, ep in enumerate(episodes):
        for k, (context, action) in enumerate(zip(ep.contexts, ep.action_ids, strict=True)):
            ids[e, k, width_p - len(context) : width_p] = torch.tensor(context)
            ids[e, k, width_p : width_p + len(action)] = torch.tensor(action)
            attention[e, k, width_p - len(context) :] = 1  # as LMPPOTrainer: the action side all 1
            turns[e, k] = True
            mask[e, k, : len(action)] = 1.0
    return TurnBatch(ids, attention, turns, mask)


def unflatten(flat: Tensor, turns: Tensor) -> Tensor:
    """[n, ...] per real turn back to [E, K, ...] (zeros for missing turns), differentiably."""
    out = flat.new_zeros((*turns.shape, *flat.shape[1:]))
    return out.index_put(tuple(turns.nonzero().T), flat)


def real_turns(
    query_responses: Tensor, attention_mask: Tensor, turns: Tensor, n_response: int
) -> tuple[Tensor, Tensor]:
    """[n, L] ids and attention mask of the real turns, without the context columns that are
    padding in every one of them (a minibatch's contexts are often shorter than the longest)."""
    ids, am = query_responses[turns], attention_mask[turns]
    start = int(am[:, : am.shape[1] - n_response].any(0).int().argmax())
    return ids[:, start:], am[:, start:]


def turn_forward(
    model: PolicyWithValueHead | torch.nn.Module,
    query_responses: Tensor,
    attention_mask: Tensor,
    turns: Tensor,
    n_response: int,
    temperature: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """(logprobs, entropy, values) [E, K, R] of the action tokens of the real turns under
    `model`: the project's `policy_forward` on their [context | action]."""
    ids, am = real_turns(query_responses, attention_mask, turns, n_response)
    lp, ent, v = policy_forward(model, ids, am, n_response, temperature)
    return unflatten(lp, turns), unflatten(ent, turns), unflatten(v, turns)


@torch.no_grad()
def score_turns(
    policy: PolicyWithValueHead,
    reference: Reference,
    batch: TurnBatch,
    temperature: float,
    chunk: int,
) -> dict[str, Tensor]:
    """logprobs, entropy, values and ref_logprobs [E, K, R] of every action token, `chunk`
    episodes per forward pass (the update's micro-batch)."""
    parts: dict[str, list[Tensor]] = {k: [] for k in ("logprobs", "entropy", "values")}
    parts["ref_logprobs"] = []
    n_response = batch.n_response
    for start in range(0, batch.turns.shape[0], chunk):
        turns = batch.turns[start : start + chunk]
        qr = batch.query_responses[start : start + chunk]
        ids, am = real_turns(qr, batch.attention_mask[start : start + chunk], turns, n_response)
        lp, ent, v = policy_forward(policy, ids, am, n_response, temperature)
        ref_lp = reference.logprobs(ids, am, n_response, temperature)
        for key, value in zip(parts, (lp, ent, v, ref_lp), strict=True):
            parts[key].append(unflatten(value, turns))
    return {k: torch.cat(v) for k, v in parts.items()}


@torch.no_grad()
def bootstrap_values(
    policy: PolicyWithValueHead, contexts: Sequence[Sequence[int]], pad_id: int, chunk: int
) -> Tensor:
    """[n] V read at the last token of each context (that of the observation after a truncation)."""
    values, device = [], next(policy.parameters()).device
    for start in range(0, len(contexts), chunk):
        ids, am = left_pad(contexts[start : start + chunk], pad_id)
        values.append(policy(ids.to(device), am.to(device), logits_to_keep=1)[1][:, -1].float())
    return torch.cat(values) if values else torch.zeros(0)
