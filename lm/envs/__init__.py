"""Text environments for an LM that acts: gymnasium envs whose observations and actions are strings.

The contract is gymnasium's (`core`): both spaces are `gymnasium.spaces.Text`, `reset(seed=s)`
replays the same episode, invalid actions are the env's business (`info["invalid_action"]` in
every step's info) and the last step's info holds `info["success"]` where a task can be won.
The worlds, registered with gymnasium when this package is imported:

- `ppo_bridge/TextCartPole-v0`: CartPole-v1 through `TextWrapper` (`wrapper`), which turns any
  env with flat Box observations and Discrete actions into a text env.

`make(env_id)` builds any of them, any gymnasium id (wrapped when it can be) or `module:EnvId`.
`play_episode` runs a scripted policy, `(obs, info) -> action`, for tests and SFT transcripts.
Texts are short: a whole CartPole turn stays well under 256 characters.
"""

from lm.envs.core import (
    ACTION_MAX_CHARS,
    CHARSET,
    OBS_MAX_CHARS,
    Episode,
    Policy,
    action_space,
    can_wrap,
    check_text_env,
    first_word,
    is_text_env,
    observation_space,
    play_episode,
)
from lm.envs.registry import BUILTIN_IDS, make, register
from lm.envs.wrapper import TextWrapper, wrap_text

register()

__all__ = [
    "ACTION_MAX_CHARS",
    "BUILTIN_IDS",
    "CHARSET",
    "OBS_MAX_CHARS",
    "Episode",
    "Policy",
    "TextWrapper",
    "action_space",
    "can_wrap",
    "check_text_env",
    "first_word",
    "is_text_env",
    "make",
    "observation_space",
    "play_episode",
    "register",
    "wrap_text",
]
