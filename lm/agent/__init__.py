"""An LM that acts over many turns in a gymnasium text env (lm.envs), on the same PPO core as
CartPole: one module per part.

    config    `AgentConfig` (LMPPOConfig plus the env, the context mode, turns, seeds),
              `ENV_PRESETS`
    render    `Renderer`: the context of each turn, markov (the latest observation) or history
              (the transcript; the tokenizer's chat template when it has one), `Transcript`
    rollout   `play`: N envs in parallel, one batched sampling call per turn, `Episode`;
              `stack_turns` -> `TurnBatch` [episode, turn, context | action]; `score_turns`,
              `turn_forward`, `bootstrap_values`: log-probs, values, V after truncations
    credit    rewards per turn (`turn_rewards`) and the advantages of each algo:
              `gae_advantages` (multi_turn_gae), `reinforce_pp_advantages`,
              `group_episode_advantages`; `episode_ends`
    trainer   `AgentTrainer`: rollout -> rewards -> advantages -> update, evaluation on
              held-out seeds, checkpoints
    builtin   the built-in tiny policies: a character tokenizer, a tiny GPT-2, SFT on a weak
              scripted policy's transcripts, cached (`build_policy`)
    report    the before/after table, transcripts, curves.png
    cli       `python -m lm.agent`
"""

from lm.agent.builtin import BuiltinSpec, build_policy, char_tokenizer, weak_policy
from lm.agent.config import ENV_PRESETS, AgentConfig
from lm.agent.credit import (
    EpisodeEnds,
    episode_ends,
    gae_advantages,
    group_episode_advantages,
    reinforce_pp_advantages,
    turn_rewards,
)
from lm.agent.render import Renderer, Transcript
from lm.agent.rollout import (
    Episode,
    TurnBatch,
    bootstrap_values,
    cut_action,
    play,
    score_turns,
    stack_turns,
    turn_forward,
)
from lm.agent.trainer import AgentRollout, AgentTrainer

__all__ = [
    "ENV_PRESETS",
    "AgentConfig",
    "AgentRollout",
    "AgentTrainer",
    "BuiltinSpec",
    "Episode",
    "EpisodeEnds",
    "Renderer",
    "Transcript",
    "TurnBatch",
    "bootstrap_values",
    "build_policy",
    "char_tokenizer",
    "cut_action",
    "episode_ends",
    "gae_advantages",
    "group_episode_advantages",
    "play",
    "reinforce_pp_advantages",
    "score_turns",
    "stack_turns",
    "turn_forward",
    "turn_rewards",
    "weak_policy",
]
