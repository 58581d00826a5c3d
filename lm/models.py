"""The models: the policy (a causal LM with a scalar value head per token) and the loaders.

Every loader passes `trust_remote_code=False` and turns a wrong model into a one-line
`ValueError` that says what to pass instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
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

    def generate(self, **kwargs: Any) -> Tensor:
        """The LM's `generate`, as a method of this module (FSDP then gathers the root unit's
        weights for it, as for `forward`: `lm.fsdp.shard_sampling`)."""
        return self.lm.generate(**kwargs)

    @property
    def _no_split_modules(self) -> list[str]:
        """The LM's blocks, which FSDP's transformer auto-wrap shards one unit each."""
        return list(getattr(self.lm, "_no_split_modules", None) or [])


def enable_gradient_checkpointing(lm: PreTrainedModel) -> None:
    """Recompute each transformer layer's activations in the backward pass instead of storing them
    (less memory, about one more forward per update).

    transformers checkpoints a layer only in training mode, and the models here stay in eval mode
    (no dropout), so only the layers themselves are flagged as training: their dropouts stay off.
    Non-reentrant checkpoints, so LoRA adapters on a frozen trunk still get their gradients.
    """
    from transformers.modeling_layers import GradientCheckpointingLayer

    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm  # a peft model's own
    kwargs = {"use_reentrant": False}
    if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.2x
        base.activation_checkpointing_enable(kwargs)
    else:
        base.gradient_checkpointing_enable(kwargs)
    layers = [m for m in base.modules() if isinstance(m, GradientCheckpointingLayer)]
    if not layers:
        raise ValueError(f"{type(base).__name__} has no layers that support gradient checkpointing")
    for layer in layers:
        layer.training = True


def position_ids(attention_mask: Tensor) -> Tensor:
    """Positions counted over real tokens only (left padding), as `generate` counts them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def pretrained(loader: Any, name: str, flag: str, **kwargs: Any) -> Any:
    """`loader.from_pretrained(name, trust_remote_code=False)`: a folder or hub repo that needs its
    own python code (an `auto_map` to a class transformers does not ship) is refused in one line,
    never run and never asked about (transformers would otherwise prompt "[y/N]" on stdin)."""
    try:
        return loader.from_pretrained(name, trust_remote_code=False, **kwargs)
    except ValueError as err:
        if "trust_remote_code" not in str(err):
            raise
        raise ValueError(
            f"{flag} {name} needs its own python code to load (auto_map in its config): refused, "
            "since loading never runs code from a model folder; pass a model whose class "
            "transformers ships"
        ) from None
    except (SafetensorError, RuntimeError, json.JSONDecodeError) as err:  # a damaged file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"{flag} {name}: cannot read it ({first}): the folder is damaged"
        ) from None


def load_tokenizer(name: str, flag: str = "--policy") -> PreTrainedTokenizerBase:
    """The tokenizer of a model, left padding, with a pad token (EOS if it has none)."""
    tokenizer = pretrained(AutoTokenizer, name, flag)
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
    config = pretrained(AutoConfig, name, "--policy")
    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    archs = config.architectures or []
    if archs and not any(a in causal or a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        raise ValueError(
            f"--policy {name} is a {archs[0]}, not a causal LM: pass a model saved with a "
            "language-modelling head (e.g. GPT2LMHeadModel / AutoModelForCausalLM)"
        )
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ValueError(f"--policy {name}: model type {config.model_type!r} has no causal-LM head")
    return pretrained(AutoModelForCausalLM, name, "--policy")


def load_reward_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """The reward model's tokenizer as it was trained: its own padding side (right for BERT-style
    encoders), a pad token (EOS if it has none, as decoder reward models are usually saved)."""
    tokenizer = pretrained(AutoTokenizer, name, "--reward-model")
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
    config = pretrained(AutoConfig, name, "--reward-model")
    archs = config.architectures or []
    if archs and not any(a.endswith("ForSequenceClassification") for a in archs):
        raise ValueError(
            f"--reward-model {name} is a {archs[0]}, not a sequence classifier: pass a model "
            "saved with AutoModelForSequenceClassification"
        )
    index = reward_label_index(config, label, name)
    return pretrained(AutoModelForSequenceClassification, name, "--reward-model"), index


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


def model_context(model: PreTrainedModel) -> int:
    """The number of positions the model can attend to."""
    return int(model.config.get_text_config().max_position_embeddings)


def check_model_source(flag: str, name: str | None) -> None:
    """A name that starts like a local path ("/", ".") must be a folder, before anything loads.

    Anything else is left to `from_pretrained` as a hub id (which may contain "/" too).
    """
    if name and name.startswith(("/", ".")) and not Path(name).is_dir():
        raise ValueError(
            f"{flag} {name}: no such folder; pass a folder written by save_pretrained "
            "or a hub id such as gpt2"
        )
