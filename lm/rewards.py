"""Rewards: reward models and python reward functions score responses (`Scorer`), and the
per-token rewards that the advantage estimators read (`per_token_rewards`)."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lm.models import model_context, position_ids, same_tokenizer
from ppo_bridge import kl_estimate
from ppo_bridge.kl import KLEstimator

RewardFn = Callable[[list[str], list[str]], Sequence[float]]


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


@torch.no_grad()
def score_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    batch_size: int = 128,
) -> list[float]:
    """Scalar reward of each text, read at its last real token (the PPO rollout's scorer)."""
    scores = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            list(texts[start : start + batch_size]), return_tensors="pt", padding=True
        )
        ids, mask = batch["input_ids"], batch["attention_mask"]
        scores += reward_model_scores(model, ids, mask).tolist()
    return scores


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


class Scorer:
    """A weighted sum of rewards, as trl's `reward_funcs` / `reward_weights`: a reward model
    (optional, first) and python callables `f(prompts, responses) -> scores` (format,
    correctness, length checks...); score = sum_i w_i * reward_i (weights default 1).

    If the reward model's tokenizer differs from the policy's, or it is an encoder (BERT-style),
    the decoded prompt + response text is re-encoded with the reward model's tokenizer;
    `reward_label` is the index of the logit that is the reward. The reward model reads `chunk`
    sequences per forward pass.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        *,
        reward_model: PreTrainedModel | None = None,
        reward_tokenizer: PreTrainedTokenizerBase | None = None,
        reward_label: int = 0,
        reward_funcs: RewardFn | Sequence[RewardFn] = (),
        reward_weights: Sequence[float] | None = None,
        chunk: int = 16,
        device: torch.device | str = "cpu",
    ) -> None:
        self.reward_funcs = [reward_funcs] if callable(reward_funcs) else list(reward_funcs)
        names = ["reward_model"] if reward_model is not None else []
        names += [
            getattr(f, "__name__", f"reward_func_{i}") for i, f in enumerate(self.reward_funcs)
        ]
        if not names:
            raise ValueError("no reward: pass a reward_model and/or reward_funcs")
        weights = [1.0] * len(names) if reward_weights is None else list(reward_weights)
        if len(weights) != len(names):
            raise ValueError(
                f"{len(weights)} reward_weights for {len(names)} rewards ({', '.join(names)}): "
                "give one weight per reward, the reward model's first"
            )
        self.weights = dict(zip(names, map(float, weights), strict=True))
        self.reward_model, self.reward_tokenizer = reward_model, reward_tokenizer or tokenizer
        self.reward_label, self.chunk, self.retokenize = reward_label, chunk, False
        if reward_model is not None:
            self.retokenize = not is_decoder_classifier(reward_model) or not same_tokenizer(
                tokenizer, self.reward_tokenizer
            )
            self.context = model_context(reward_model)
            self.reward_model = reward_model.to(device).eval().requires_grad_(False)

    def check_length(self, longest: int) -> None:
        """Refuse prompts + responses of `longest` tokens that the reward model cannot read."""
        if self.reward_model is not None and not self.retokenize and longest > self.context:
            raise ValueError(
                f"prompt + response can reach {longest} tokens, more than the reward model's "
                f"context of {self.context}: shorten the prompts or lower --max-new-tokens"
            )

    def __call__(
        self,
        query: Tensor,
        query_mask: Tensor,
        responses: Tensor,
        mask: Tensor,
        has_eos: Tensor,
        prompts: list[str],
        texts: list[str],
    ) -> dict[str, Tensor]:
        """Each reward by name, [B]: the reward model's logit `reward_label` (on the rollout's own
        tokens or, when its tokenizer differs, on the decoded text re-encoded), then each reward
        callable's."""
        device = query.device
        out = {}
        if self.reward_model is not None:
            if self.retokenize:
                texts_in = [p + r for p, r in zip(prompts, texts, strict=True)]
                ids, am = retokenize(texts_in, has_eos, self.reward_tokenizer, self.context)
                ids, am = ids.to(device), am.to(device)
            else:
                ids = torch.cat([query, responses], dim=1)
                am = torch.cat([query_mask, mask.long()], dim=1)
            step = self.chunk
            out["reward_model"] = torch.cat(
                [
                    reward_model_scores(
                        self.reward_model, ids[i : i + step], am[i : i + step], self.reward_label
                    )
                    for i in range(0, ids.shape[0], step)
                ]
            )
        for name, f in zip(list(self.weights)[len(out) :], self.reward_funcs, strict=True):
            out[name] = check_scores(f(prompts, texts), len(prompts), name).to(device)
        return out

    def total(self, rewards: dict[str, Tensor]) -> Tensor:
        """sum_i w_i * reward_i, [B]."""
        return sum(self.weights[k] * r for k, r in rewards.items())
