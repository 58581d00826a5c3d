"""Contexts: what the policy reads before each turn, as token ids, and an episode's transcript.

    markov   prefix + observation + suffix, the latest observation only (classic RL's state)
    history  every observation and action so far, in order

Plain rendering (a tokenizer without a chat template) builds a history context in token space:
context_{k+1} = context_k + action_k + ids(prefix + obs_{k+1} + suffix), so each context is a
prefix of the next one, and the action tokens in it are the ones sampled. A cut action (no stop
string, no EOS) is followed by the stop string, so the next observation starts on its own. With a
chat template the messages (user = env, assistant = agent) are rendered and tokenised again each
turn, `add_generation_prompt`: the template decides what surrounds each message.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import PreTrainedTokenizerBase


@dataclass
class Transcript:
    """What an episode has said so far: observations[k] preceded actions[k]."""

    observations: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)  # the decoded texts that env.step got
    action_ids: list[list[int]] = field(default_factory=list)  # the sampled tokens
    ended: list[bool] = field(default_factory=list)  # the action ended at its stop string / EOS
    contexts: list[list[int]] = field(default_factory=list)  # contexts[k] preceded actions[k]


class Renderer:
    """Turns a transcript into the next turn's context ids (see the module docstring)."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        context: str = "history",
        prefix: str = "",
        suffix: str = "\n",
        stop: str | None = "\n",
        use_chat_template: bool = True,
    ) -> None:
        self.tokenizer, self.history = tokenizer, context == "history"
        self.prefix, self.suffix, self.stop = prefix, suffix, stop
        self.chat = use_chat_template and getattr(tokenizer, "chat_template", None) is not None

    def observation(self, obs: str) -> str:
        return self.prefix + obs + self.suffix

    def encode(self, text: str, first: bool) -> list[int]:
        """Token ids of `text`; the tokenizer's special tokens (BOS) only at a context's start."""
        return self.tokenizer(text, add_special_tokens=first)["input_ids"]

    def context(self, t: Transcript) -> list[int]:
        """The ids the policy reads after `t.observations[-1]`."""
        if self.chat:
            return self.encode(self.chat_text(t), first=False)  # the template places BOS
        obs = self.observation(t.observations[-1])
        if not self.history or not t.actions:
            return self.encode(obs, first=True)
        glue = self.stop if self.stop and not t.ended[-1] else ""
        return t.contexts[-1] + t.action_ids[-1] + self.encode(glue + obs, first=False)

    def chat_text(self, t: Transcript) -> str:
        turns = range(len(t.actions)) if self.history else []
        messages = []
        for k in turns:
            messages.append({"role": "user", "content": self.observation(t.observations[k])})
            messages.append({"role": "assistant", "content": t.actions[k]})
        messages.append({"role": "user", "content": self.observation(t.observations[-1])})
        return self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )

    def text(self, t: Transcript) -> str:
        """The episode as plain text, observations and actions in order (shown, and what reward
        functions read): each action is followed by the stop string (a newline without one)."""
        end = self.stop or "\n"
        seen = t.observations[: len(t.actions)]
        parts = [self.observation(o) + a + end for o, a in zip(seen, t.actions, strict=True)]
        return "".join(parts) + self.observation(t.observations[-1])
