"""One rollout: sample responses to prompts, score them, and read what the update needs about them
(log-probs under the policy and the reference, entropies, values). The trainers and the `Grader`
all collect their samples here."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lm.models import PolicyWithValueHead
from lm.rewards import Scorer
from lm.sampling import (
    Reference,
    left_pad,
    lm_forward,
    policy_forward,
    response_mask,
    sample_responses,
)


@dataclass
class Rollout:
    """A batch of B sampled responses; tensors are [B, R] unless noted."""

    query_responses: Tensor  # [B, P + R]
    attention_mask: Tensor  # [B, P + R]
    mask: Tensor  # real response tokens (float)
    has_eos: Tensor  # [B] bool
    logprobs: Tensor
    ref_logprobs: Tensor
    entropy: Tensor
    values: Tensor
    scores: Tensor  # [B] sum_i w_i * reward_i
    rewards: dict[str, Tensor]  # [B] each reward, unweighted, by name
    prompts: list[str]
    responses: list[str]
    seconds_generate: float
    seconds_score: float


@dataclass(frozen=True)
class SamplingArgs:
    """How responses are drawn: softmax(logits / temperature), top_k / top_p off (0 / 1) for
    PPO's log-probs to be those of the sampler; `chunk` sequences per scoring forward pass."""

    temperature: float = 1.0
    max_new_tokens: int = 16
    top_k: int = 0
    top_p: float = 1.0
    chunk: int = 16


@torch.no_grad()
def collect(
    policy: PolicyWithValueHead | PreTrainedModel,
    reference: Reference,
    scorer: Scorer,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    prompt_ids: list[list[int]],
    args: SamplingArgs,
    device: torch.device | str = "cpu",
    autocast: contextlib.AbstractContextManager | None = None,
) -> Rollout:
    """Sample one response per prompt and read everything PPO needs about it; the forward passes
    run under `autocast` (the precision of the update's)."""
    query, query_mask = left_pad(prompt_ids, tokenizer.pad_token_id)
    query, query_mask = query.to(device), query_mask.to(device)

    start = time.perf_counter()
    responses = sample_responses(
        policy,
        query,
        query_mask,
        tokenizer,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
    )
    seconds_generate = time.perf_counter() - start

    start = time.perf_counter()
    mask, has_eos = response_mask(responses, tokenizer.eos_token_id)
    query_responses = torch.cat([query, responses], dim=1)
    attention_mask = torch.cat([query_mask, torch.ones_like(responses)], dim=1)
    n_resp, step, temperature = responses.shape[1], args.chunk, args.temperature
    logprobs, entropy, values, ref_logprobs = [], [], [], []
    texts = tokenizer.batch_decode(responses.masked_fill(~mask, tokenizer.pad_token_id), True)
    with autocast or contextlib.nullcontext():
        for i in range(0, len(prompts), step):
            qr, am = query_responses[i : i + step], attention_mask[i : i + step]
            if isinstance(policy, PolicyWithValueHead):
                lp, ent, v = policy_forward(policy, qr, am, n_resp, temperature)
            else:  # a policy without a critic (DPO): values are not read
                lp, ent = lm_forward(policy, qr, am, n_resp, temperature)
                v = torch.zeros_like(lp)
            logprobs.append(lp)
            entropy.append(ent)
            values.append(v)
            ref_logprobs.append(reference.logprobs(qr, am, n_resp, temperature))
        rewards = scorer(query, query_mask, responses, mask, has_eos, prompts, texts)
    return Rollout(
        query_responses=query_responses,
        attention_mask=attention_mask,
        mask=mask.float(),
        has_eos=has_eos,
        logprobs=torch.cat(logprobs),
        ref_logprobs=torch.cat(ref_logprobs),
        entropy=torch.cat(entropy),
        values=torch.cat(values),
        scores=scorer.total(rewards),
        rewards=rewards,
        prompts=prompts,
        responses=texts,
        seconds_generate=seconds_generate,
        seconds_score=time.perf_counter() - start,
    )
