"""From prompts to the core's tensors: sampling, log-probs, scores, per-token rewards, advantages.

Layout. A rollout batch holds B prompts, left-padded to P tokens, and their responses, right-padded
to R tokens: `query_responses = [prompt | response]` is [B, P + R]. Response token t is predicted
from position P + t - 1, so its log-prob and its state value V(s_t) are read there. `mask` [B, R]
is 1 on the real response tokens: every token up to and including the first EOS (or all R when
the response was cut at max_new_tokens).
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields

import torch
from torch import Tensor
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from lm.policy import PolicyWithValueHead, position_ids
from ppo_bridge import gae, kl_estimate
from ppo_bridge.kl import KLEstimator

RewardFn = Callable[[list[str], list[str]], Sequence[float]]


def model_context(model: PreTrainedModel) -> int:
    """The number of positions the model can attend to."""
    return int(model.config.get_text_config().max_position_embeddings)


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
) -> Tensor:
    """Sample [B, R] response ids (R <= max_new_tokens); finished rows are padded with pad_id.

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
        eos_token_id=tokenizer.eos_token_id,
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


def reference_logprobs(
    ref: PreTrainedModel,
    query_responses: Tensor,
    attention_mask: Tensor,
    n_response: int,
    temperature: float,
) -> Tensor:
    """[B, R] log-probs of the response tokens under the frozen reference model, at T."""
    logits = ref(
        input_ids=query_responses,
        attention_mask=attention_mask,
        position_ids=position_ids(attention_mask),
        use_cache=False,
        logits_to_keep=n_response + 1,
    ).logits
    return response_logprobs(logits[:, :-1], query_responses[:, -n_response:], temperature)[0]


def is_decoder_classifier(rm: PreTrainedModel) -> bool:
    """True for a causal classifier: a `score` head on a decoder backbone (GPT-2, Llama, Qwen...);
    encoder classifiers (BERT, DistilBERT, RoBERTa, DeBERTa) name their head `classifier`."""
    return isinstance(getattr(rm, "score", None), torch.nn.Linear) and hasattr(
        rm, rm.base_model_prefix
    )


def reward_model_scores(
    rm: PreTrainedModel, input_ids: Tensor, attention_mask: Tensor, label: int = 0
) -> Tensor:
    """[B] logit `label` of the reward model for each row.

    Decoders: the `score` head on the backbone's last hidden state at the last real token (padding
    on either side is fine), as TRL does, rather than the model's own pooling, which takes the last
    non-pad token and so skips an EOS that doubles as the pad token. Encoders: the model's own
    forward and pooling (the first token, [CLS] / <s>), so rows must be right-padded, as their
    tokenizers pad; they get no position ids (some do not take them, and theirs count from 0).
    """
    if not is_decoder_classifier(rm):
        if not attention_mask[:, 0].all():
            raise ValueError(
                f"{type(rm).__name__} pools the first token: pad its inputs on the right"
            )
        return rm(input_ids=input_ids, attention_mask=attention_mask).logits[:, label].float()
    backbone = getattr(rm, rm.base_model_prefix)
    hidden = backbone(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids(attention_mask),
        use_cache=False,
    ).last_hidden_state
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    last = (positions[None, :] * attention_mask).argmax(1)
    logits = rm.score(hidden[torch.arange(hidden.shape[0], device=hidden.device), last])
    return logits[:, label].float()


def retokenize(
    texts: Sequence[str], has_eos: Tensor, tokenizer: PreTrainedTokenizerBase, context: int
) -> tuple[Tensor, Tensor]:
    """Encode decoded prompt+response texts with the reward model's own tokenizer.

    Used when the RM's tokenizer differs from the policy's, and for every encoder RM. Padded on
    the tokenizer's side. A response that ended in the policy's EOS gets the RM tokenizer's EOS
    appended (RewardTrainer trains on texts that end in EOS), unless the tokenizer ends every
    encoding with it itself (RoBERTa's </s>) or has none (BERT's [SEP] closes every text anyway).
    """
    ids = tokenizer(list(texts))["input_ids"]
    eos = tokenizer.eos_token_id
    append = eos is not None and tokenizer("")["input_ids"][-1:] != [eos]
    ids = [s + [eos] if e and append else s for s, e in zip(ids, has_eos.tolist(), strict=True)]
    longest = max(len(s) for s in ids)
    if longest > context:
        raise ValueError(
            f"a prompt + response has {longest} reward-model tokens, more than the reward model's "
            f"context of {context}: shorten the prompts or lower --max-new-tokens"
        )
    batch = tokenizer.pad({"input_ids": ids}, return_tensors="pt")
    return batch["input_ids"], batch["attention_mask"]


def check_scores(scores: object, n: int, name: str = "reward_fn") -> Tensor:
    """What a reward callable returned as a float tensor [n]: one finite real number per response
    (in a list, array or 1-D tensor), or a one-line ValueError that says what came back instead."""
    try:
        values = None if isinstance(scores, str | bytes) else list(scores)  # type: ignore[arg-type]
    except TypeError:  # None, a number, a 0-d tensor
        values = None
    if values is None:
        raise ValueError(
            f"{name} returned {type(scores).__name__}, not {n} scores: return a float per response"
        )
    if len(values) != n:
        raise ValueError(f"{name} returned {len(values)} scores for {n} responses: return one each")
    for i, value in enumerate(values):
        if not isinstance(value, numbers.Real) and getattr(value, "ndim", None) != 0:
            raise ValueError(
                f"{name} returned {type(value).__name__} {value!r:.40} for response {i}: return "
                "one float per response"
            )
    try:
        out = torch.tensor([float(v) for v in values], dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError) as err:  # e.g. a 0-d string array or complex
        raise ValueError(f"{name} returned a score that is not a real number ({err})") from None
    if not torch.isfinite(out).all():
        raise ValueError(f"{name} returned a non-finite score: it must give finite floats")
    return out


def per_token_rewards(
    logprobs: Tensor,
    ref_logprobs: Tensor,
    scores: Tensor,
    mask: Tensor,
    beta: float,
    kind: KLEstimator = "k1",
) -> tuple[Tensor, Tensor]:
    """Ziegler et al. (2019): r_t = -beta * KL_t on every real token, + score on the last one.

    KL_t is the core's `kl_estimate` of KL(pi || pi_ref) at token t. Returns (rewards, KL_t), both
    [B, R] and zero on padding; `mask` must be right-padded (real tokens first).
    """
    real = mask.to(logprobs.dtype)
    kl = kl_estimate(logprobs, ref_logprobs, kind) * real
    rewards = -beta * kl
    last = real.sum(1).long() - 1
    rewards[torch.arange(rewards.shape[0], device=rewards.device), last] += scores
    return rewards, kl


def token_advantages(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """The core's GAE over response tokens: [B, R] in, [B, R] (advantages, returns) out.

    The episode terminates at the last real token (the score lands there: no bootstrap); the next
    state's value inside a response is the next token's value.
    """
    real = mask.to(rewards.dtype)
    next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)
    terminated = torch.zeros_like(rewards)
    last = real.sum(1).long() - 1
    terminated[torch.arange(rewards.shape[0], device=rewards.device), last] = 1.0
    adv, ret = gae(
        rewards.T, values.T, next_values.T, terminated.T, mask=real.T, gamma=gamma, lam=lam
    )
    return adv.T.contiguous(), ret.T.contiguous()


@dataclass
class PackedPairs:
    """Preference pairs packed into rows, each prompt once with both completions after it.

    A pair is the segment [prompt | chosen | rejected]: positions restart after the prompt for
    the rejected branch, which attends to the prompt and to itself but not to the chosen branch
    (a tree mask), so one forward pass gives both sequences' log-probs without padding or a
    second copy of the prompt. Segments fill rows of `width` tokens (first fit).
    """

    ids: Tensor  # [rows, width] token ids (pad_id in the gaps)
    position_ids: Tensor  # [rows, width]
    allowed: Tensor  # [rows, width, width] bool: query i may attend to key j
    rows: Tensor  # [n] per completion token: its row,
    parents: Tensor  # [n] the position whose logits predict it,
    tokens: Tensor  # [n] its id,
    owners: Tensor  # [n] its sequence: pair k's chosen is k, its rejected B + k
    n_sequences: int  # 2 B

    def to(self, device: torch.device | str) -> PackedPairs:
        return PackedPairs(
            **{
                f.name: getattr(self, f.name).to(device)
                if isinstance(getattr(self, f.name), Tensor)
                else getattr(self, f.name)
                for f in fields(self)
            }
        )


def pack_pairs(
    prompt_ids: Sequence[Sequence[int]],
    chosen_ids: Sequence[Sequence[int]],
    rejected_ids: Sequence[Sequence[int]],
    pad_id: int,
    width: int,
) -> PackedPairs:
    """Pack B pairs (non-empty prompts and completions) into rows of at least `width` tokens."""
    fill: list[int] = []  # tokens used per row
    segments = []
    for k, (prompt, chosen, rejected) in enumerate(
        zip(prompt_ids, chosen_ids, rejected_ids, strict=True)
    ):
        n = len(prompt) + len(chosen) + len(rejected)
        row = next((r for r, used in enumerate(fill) if used + n <= width), None)
        if row is None:
            row = len(fill)
            fill.append(0)
        segments.append((k, row, fill[row], prompt, chosen, rejected))
        fill[row] += n
    n_pairs, width = len(segments), max([width, *fill])
    ids = torch.full((len(fill), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(fill), width), dtype=torch.long)
    branch = torch.full((len(fill), width), -1, dtype=torch.long)  # -1 pad, 0 prompt, 1, 2
    segment = torch.full((len(fill), width), -1, dtype=torch.long)
    rows, parents, tokens, owners = [], [], [], []
    for k, row, start, prompt, chosen, rejected in segments:
        p = len(prompt)
        ids[row, start : start + p] = torch.tensor(prompt)
        position_ids[row, start : start + p] = torch.arange(p)
        branch[row, start : start + p] = 0
        at = start + p
        for b, completion in ((1, chosen), (2, rejected)):
            c = len(completion)
            ids[row, at : at + c] = torch.tensor(completion)
            position_ids[row, at : at + c] = torch.arange(p, p + c)
            branch[row, at : at + c] = b
            rows += [row] * c
            parents += [start + p - 1, *range(at, at + c - 1)]
            tokens += completion
            owners += [k if b == 1 else n_pairs + k] * c
            at += c
        segment[row, start:at] = k
    index = torch.arange(width)
    same_tree = (segment[:, :, None] == segment[:, None, :]) & (segment[:, :, None] >= 0)
    same_branch = (branch[:, None, :] == 0) | (branch[:, :, None] == branch[:, None, :])
    causal = index[None, :, None] >= index[None, None, :]
    allowed = (same_tree & same_branch & causal) | torch.eye(width, dtype=torch.bool)
    return PackedPairs(
        ids=ids,
        position_ids=position_ids,
        allowed=allowed,
        rows=torch.tensor(rows),
        parents=torch.tensor(parents),
        tokens=torch.tensor(tokens),
        owners=torch.tensor(owners),
        n_sequences=2 * n_pairs,
    )


def packed_sequence_logprobs(
    model: PreTrainedModel, packed: PackedPairs, temperature: float = 1.0
) -> tuple[Tensor, Tensor]:
    """([2B] log pi_T(completion | prompt), [2B] completion lengths) of packed pairs: the token
    log-probs (`response_logprobs`) summed per sequence, chosen first; with gradients when
    `model` has them (DPO's sequence log-probs)."""
    device = packed.ids.device
    dtype = next(model.parameters()).dtype
    bias = torch.zeros(packed.allowed.shape, dtype=dtype, device=device)
    bias = bias.masked_fill(~packed.allowed, torch.finfo(dtype).min)[:, None]  # additive, 4D
    logits = model(
        input_ids=packed.ids,
        attention_mask=bias,
        position_ids=packed.position_ids,
        use_cache=False,
    ).logits
    logprobs = response_logprobs(
        logits[packed.rows, packed.parents][None], packed.tokens[None], temperature
    )[0][0]
    zeros = torch.zeros(packed.n_sequences, dtype=logprobs.dtype, device=device)
    lengths = torch.zeros(packed.n_sequences, dtype=torch.long, device=device)
    lengths = lengths.index_add(0, packed.owners, torch.ones_like(packed.owners))
    return zeros.index_add(0, packed.owners, logprobs), lengths
