"""The policy (a causal LM with a scalar value head per token) and the model loaders.

Every loader turns a wrong model into a one-line `ValueError` that says what to pass instead.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from lm.checkpoint import atomic_folder

VALUE_HEAD_FILE = "value_head.safetensors"
PPO_STATE_FILE = "ppo_state.json"


class PolicyWithValueHead(nn.Module):
    """A causal LM plus V(s_t) = w . h_t + b on the last hidden state h_t of every position.

    The head shares the LM's trunk, so the value loss also shapes the trunk (hence a small vf_coef).
    Its weights start at zero: V = 0 until the critic has learnt something.
    """

    def __init__(self, lm: PreTrainedModel) -> None:
        super().__init__()
        self.lm = lm
        self.value_head = nn.Linear(lm.config.get_text_config().hidden_size, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, logits_to_keep: int = 0
    ) -> tuple[Tensor, Tensor]:
        """Return (logits of the last `logits_to_keep` positions (0 = all), values of all)."""
        out = self.lm(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids(attention_mask),
            output_hidden_states=True,
            use_cache=False,
            logits_to_keep=logits_to_keep,
        )
        hidden = out.hidden_states[-1]
        values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)
        return out.logits, values


def position_ids(attention_mask: Tensor) -> Tensor:
    """Positions counted over real tokens only (left padding), as `generate` counts them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """The tokenizer of a model, left padding, with a pad token (EOS if it has none)."""
    tokenizer = AutoTokenizer.from_pretrained(name)
    if tokenizer.eos_token_id is None:
        raise ValueError(f"the tokenizer of {name} has no EOS token: PPO here needs one to stop")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_causal_lm(name: str) -> PreTrainedModel:
    """`AutoModelForCausalLM`, refusing a checkpoint saved without a language-modelling head.

    GPT-2 ties its LM head to the input embeddings, so `AutoModelForCausalLM` would quietly load
    a bare `GPT2Model` or a classifier as a policy; the saved architecture tells them apart.
    """
    config = AutoConfig.from_pretrained(name)
    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    archs = config.architectures or []
    if archs and not any(a in causal or a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        raise ValueError(
            f"--policy {name} is a {archs[0]}, not a causal LM: pass a model saved with a "
            "language-modelling head (e.g. GPT2LMHeadModel / AutoModelForCausalLM)"
        )
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ValueError(f"--policy {name}: model type {config.model_type!r} has no causal-LM head")
    return AutoModelForCausalLM.from_pretrained(name)


def load_reward_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """The reward model's tokenizer as it was trained: its own padding side (right for BERT-style
    encoders), a pad token (EOS if it has none, as decoder reward models are usually saved)."""
    tokenizer = AutoTokenizer.from_pretrained(name)
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ValueError(
                f"--reward-model {name}: its tokenizer has neither a PAD nor an EOS token"
            )
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_reward_model(name: str, label: str | None = None) -> tuple[PreTrainedModel, int]:
    """(`AutoModelForSequenceClassification` of any family, the index of the logit to reward).

    `label` is `--reward-label`: an index or a name of `config.id2label`; a one-label model needs
    none. The label is checked on the config, before the weights load.
    """
    config = AutoConfig.from_pretrained(name)
    archs = config.architectures or []
    if archs and not any(a.endswith("ForSequenceClassification") for a in archs):
        raise ValueError(
            f"--reward-model {name} is a {archs[0]}, not a sequence classifier: pass a model "
            "saved with AutoModelForSequenceClassification"
        )
    index = reward_label_index(config, label, name)
    return AutoModelForSequenceClassification.from_pretrained(name), index


def reward_label_index(config: PretrainedConfig, label: str | None, name: str) -> int:
    """The logit `--reward-label` names: an index (`1`) or a label name (`POSITIVE`)."""
    labels = [str(config.id2label.get(i, i)) for i in range(config.num_labels)]
    listed = ", ".join(f"{i}={n}" for i, n in enumerate(labels))
    if label is None:
        if len(labels) == 1:
            return 0
        raise ValueError(
            f"--reward-model {name} has {len(labels)} labels ({listed}): pick the one to reward "
            "with --reward-label N|NAME"
        )
    if label.isdigit():
        if int(label) < len(labels):
            return int(label)
    elif label in labels:
        return labels.index(label)
    raise ValueError(f"--reward-label {label}: {name} has no such label; its labels are {listed}")


def same_tokenizer(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    """True when both map every string to the same ids (same vocabulary and special tokens)."""
    return a.get_vocab() == b.get_vocab() and a.eos_token_id == b.eos_token_id


def save_policy(
    model: PolicyWithValueHead, tokenizer: PreTrainedTokenizerBase, out: str | Path, extra: dict
) -> None:
    """`write_policy` into `out` atomically: `out` is the previous complete folder or the new
    complete one at every instant (`lm.checkpoint.atomic_folder`)."""
    with atomic_folder(out) as tmp:
        write_policy(model, tokenizer, tmp, extra)


def write_policy(
    model: PolicyWithValueHead, tokenizer: PreTrainedTokenizerBase, folder: Path, extra: dict
) -> None:
    """Write the LM (`save_pretrained`, with its tokenizer), the value head (safetensors) and
    `extra` as JSON into the existing `folder`."""
    model.lm.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    save_file(model.value_head.state_dict(), folder / VALUE_HEAD_FILE)
    (folder / PPO_STATE_FILE).write_text(json.dumps(extra, indent=2))


def load_value_head(model: PolicyWithValueHead, folder: str | Path) -> None:
    """Restore the value head written by `write_policy`."""
    model.value_head.load_state_dict(load_file(Path(folder) / VALUE_HEAD_FILE))


def load_policy_weights(model: PolicyWithValueHead, folder: str | Path) -> None:
    """Copy the LM and value head that `write_policy` saved into `model`, in place (its optimizer
    keeps pointing at the same parameters)."""
    saved = AutoModelForCausalLM.from_pretrained(folder)
    model.lm.load_state_dict(saved.state_dict())
    load_value_head(model, folder)
