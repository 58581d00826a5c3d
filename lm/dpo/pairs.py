"""Preference pairs as token ids (`tokenize_pairs`, trl's recipe) and packed into rows for one
forward pass per batch (`pack_pairs`, `packed_sequence_logprobs`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lm.data import PAIR_COLUMNS
from lm.sampling import response_logprobs

if TYPE_CHECKING:
    from datasets import Dataset


@dataclass
class TokenizedPairs:
    """Token ids per pair: the prompt (with the tokenizer's special tokens) and both completions."""

    prompt: list[list[int]]
    chosen: list[list[int]]
    rejected: list[list[int]]

    def __len__(self) -> int:
        return len(self.prompt)


def tokenize_pairs(
    tokenizer: PreTrainedTokenizerBase, pairs: Dataset, max_length: int
) -> TokenizedPairs:
    """trl's recipe: EOS is appended to a completion that lacks it; the completion is what follows
    the common prefix of the tokenized prompt and prompt + completion; each sequence keeps its
    first `max_length` tokens, and pairs whose prompt alone fills them are dropped. An empty
    prompt is refused (the first completion token would have nothing to be predicted from)."""
    from trl.data_utils import common_prefix_length

    eos = tokenizer.eos_token

    def with_eos(text: str) -> str:
        return text if text.endswith(eos) else text + eos

    prompts, chosen, rejected = (list(pairs[c]) for c in PAIR_COLUMNS)
    ids = tokenizer(
        prompts
        + [p + with_eos(c) for p, c in zip(prompts, chosen, strict=True)]
        + [p + with_eos(r) for p, r in zip(prompts, rejected, strict=True)]
    )["input_ids"]
    n = len(prompts)
    out = TokenizedPairs([], [], [])
    for i, (prompt, c, r) in enumerate(zip(ids[:n], ids[n : 2 * n], ids[2 * n :], strict=True)):
        start = min(common_prefix_length(prompt, c), common_prefix_length(prompt, r))
        if start == 0:
            raise ValueError(f"--pairs: pair {i} has no prompt tokens: give every pair a prompt")
        if start >= max_length:
            continue
        out.prompt.append(prompt[:start])
        out.chosen.append(c[start:max_length])
        out.rejected.append(r[start:max_length])
    if not out.prompt:
        raise ValueError(f"every prompt fills --max-length {max_length}: raise it")
    return out


# ---------------------------------------------------------------------------------- the trainer


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
