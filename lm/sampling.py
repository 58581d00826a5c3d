"""Sampling from the policy and reading its log-probs: the token side of a rollout.

Layout. A rollout batch holds B prompts, left-padded to P tokens, and their responses, right-padded
to R tokens: `query_responses = [prompt | response]` is [B, P + R]. Response token t is predicted
from position P + t - 1, so its log-prob and its state value V(s_t) are read there. `mask` [B, R]
is 1 on the real response tokens: every token up to and including the first EOS (or all R when
the response was cut at max_new_tokens).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from lm.lora import adapters_off, is_lora
from lm.models import PolicyWithValueHead, position_ids


def tokenize_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], max_new_tokens: int, context: int
) -> list[list[int]]:
    """Token ids of every prompt; a one-line ValueError for an empty set or a too-long prompt."""
    if len(prompts) == 0:
        raise ValueError("the prompt set is empty: pass --prompts with at least one prompt")
    ids = tokenizer(list(prompts))["input_ids"]
    for i, seq in enumerate(ids):
        if len(seq) == 0:
            raise ValueError(f"prompt {i} is empty: remove it from --prompts")
        if len(seq) + max_new_tokens > context:
            raise ValueError(
                f"prompt {i} has {len(seq)} tokens, which with --max-new-tokens {max_new_tokens} "
                f"exceeds the model context of {context}: shorten the prompts or lower "
                "--max-new-tokens"
            )
    return ids


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """[B, P] ids and attention mask, padded on the left (where `generate` expects padding)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s) :] = 1
    return ids, mask


@torch.no_grad()
def sample_responses(
    lm: PreTrainedModel | PolicyWithValueHead,
    query: Tensor,
    query_mask: Tensor,
    tokenizer: PreTrainedTokenizerBase,
    *,
    temperature: float,
    top_k: int,
    top_p: float,
    max_new_tokens: int,
    stop_ids: Sequence[int] = (),
) -> Tensor:
    """Sample [B, R] response ids (R <= max_new_tokens); finished rows are padded with pad_id. A
    row finishes at EOS, or at any of `stop_ids` (lm.agent: the tokens that hold its stop string).

    Tokens come from softmax(logits / T), truncated by top_k / top_p unless they are 0 / 1. PPO
    keeps them off (`LMPPOConfig`): its log-probs are those of the untruncated distribution.
    Nothing else shapes the distribution: `generate` fills every option we leave unset from the
    model's own generation_config.json (Qwen2.5-Instruct ships repetition_penalty 1.05, top_k 20,
    top_p 0.8), so the model's config is swapped for transformers' neutral one while sampling.
    """
    config = GenerationConfig(
        do_sample=True,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        eos_token_id=[tokenizer.eos_token_id, *stop_ids] if stop_ids else tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = lm.lm if isinstance(lm, PolicyWithValueHead) else lm
    with neutral_generation_config(model):
        out = lm.generate(input_ids=query, attention_mask=query_mask, generation_config=config)
    return out[:, query.shape[1] :]


@contextlib.contextmanager
def neutral_generation_config(model: PreTrainedModel) -> Iterator[None]:
    """Inside: `model` (and the model a peft wrapper holds) has a default GenerationConfig."""
    models = {id(m): m for m in (model, getattr(model, "get_base_model", lambda: model)())}
    saved = {k: m.generation_config for k, m in models.items()}
    try:
        for m in models.values():
            m.generation_config = GenerationConfig()
        yield
    finally:
        for k, m in models.items():
            m.generation_config = saved[k]


@torch.no_grad()
def sample_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int = 128,
) -> tuple[list[str], list[bool]]:
    """Sample one response per prompt at temperature 1 (no top-k / top-p), with the PPO rollout's
    sampler. Returns the decoded responses (special tokens removed) and whether each ended in EOS.
    """
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    responses, ended = [], []
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(
            list(prompts[start : start + batch_size]), return_tensors="pt", padding=True
        )
        new = sample_responses(
            model, batch["input_ids"], batch["attention_mask"], tokenizer,
            temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
        )  # fmt: skip
        responses += tokenizer.batch_decode(new, skip_special_tokens=True)
        ended += (new == tokenizer.eos_token_id).any(dim=1).tolist()
    tokenizer.padding_side = side
    return responses, ended


def response_mask(responses: Tensor, eos_id: int) -> tuple[Tensor, Tensor]:
    """(mask [B, R] of real tokens: up to and including the first EOS, has_eos [B])."""
    is_eos = responses == eos_id
    has_eos = is_eos.any(1)
    last = torch.where(has_eos, is_eos.int().argmax(1), responses.shape[1] - 1)
    mask = torch.arange(responses.shape[1], device=responses.device)[None, :] <= last[:, None]
    return mask, has_eos


def response_logprobs(logits: Tensor, tokens: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """log pi_T(token) and the entropy H(pi_T) per position, with pi_T = softmax(logits / T).

    `logits[:, t]` must be the logits that predicted `tokens[:, t]`. Sampling divides the logits by
    T too and, with top-k/top-p off (`LMPPOConfig` requires it, as trl's PPOTrainer forces it),
    draws from exactly this distribution: these are the log-probs of the sampling policy.
    """
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    token_logp = logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return token_logp, entropy


def policy_forward(
    model: PolicyWithValueHead | torch.nn.Module,
    query_responses: Tensor,
    attention_mask: Tensor,
    n_response: int,
    temperature: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """(logprobs, entropy, values), each [B, R], of the response tokens under `model`."""
    logits, values = model(query_responses, attention_mask, logits_to_keep=n_response + 1)
    logprobs, entropy = response_logprobs(
        logits[:, :-1], query_responses[:, -n_response:], temperature
    )
    return logprobs, entropy, values[:, -n_response - 1 : -1].float()


def lm_forward(
    lm: PreTrainedModel,
    query_responses: Tensor,
    attention_mask: Tensor,
    n_response: int,
    temperature: float,
) -> tuple[Tensor, Tensor]:
    """(logprobs, entropy), each [B, R], of the response tokens under a plain causal LM, at T."""
    logits = lm(
        input_ids=query_responses,
        attention_mask=attention_mask,
        position_ids=position_ids(attention_mask),
        use_cache=False,
        logits_to_keep=n_response + 1,
    ).logits
    return response_logprobs(logits[:, :-1], query_responses[:, -n_response:], temperature)


def reference_logprobs(
    ref: PreTrainedModel,
    query_responses: Tensor,
    attention_mask: Tensor,
    n_response: int,
    temperature: float,
) -> Tensor:
    """[B, R] log-probs of the response tokens under the frozen reference model, at T."""
    return lm_forward(ref, query_responses, attention_mask, n_response, temperature)[0]


class Reference:
    """The frozen reference policy pi_ref: a copy of the starting policy, or for a LoRA policy the
    policy itself with its adapters off, so the weights are held once."""

    def __init__(
        self, policy: PolicyWithValueHead | PreTrainedModel, device: torch.device | str
    ) -> None:
        self.policy = policy
        self.lm = policy.lm if isinstance(policy, PolicyWithValueHead) else policy
        self.copy = None
        if not is_lora(self.lm):
            self.copy = copy.deepcopy(self.lm).to(device).eval().requires_grad_(False)

    def logprobs(
        self, query_responses: Tensor, attention_mask: Tensor, n: int, temperature: float
    ) -> Tensor:
        """[B, n] log-probs of the response tokens under pi_ref, at T (a LoRA policy runs its own
        forward, adapters off, so that FSDP gathers it)."""
        args = (query_responses, attention_mask, n, temperature)
        if self.copy is not None:
            return reference_logprobs(self.copy, *args)
        with adapters_off(self.lm):
            if isinstance(self.policy, PolicyWithValueHead):
                return policy_forward(self.policy, *args)[0]
            return lm_forward(self.lm, *args)[0]
