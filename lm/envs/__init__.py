"""Text environments for an LM that acts: gymnasium envs whose observations and actions are strings.

The contract is gymnasium's (`core`): both spaces are `gymnasium.spaces.Text`, `reset(seed=s)`
replays the same episode, invalid actions are the env's business (`info["invalid_action"]` in
every step's info) and the last step's info holds `info["success"]` where a task can be won.
The worlds, registered with gymnasium when this package is imported:

- `ppo_bridge/TextCartPole-v0`: CartPole-v1 through `TextWrapper` (`wrapper`), which turns any
  env with flat Box observations and Discrete actions into a text env;
- `ppo_bridge/GuessNumber-v0`: find a secret number from higher/lower hints (`guess_number`);
- `ppo_bridge/Calculator-v0`: word problems with a calculator tool (`calculator`).

`make(env_id)` builds any of them, any gymnasium id (wrapped when it can be) or `module:EnvId`.
Each world ships an optimal scripted policy and a weak one, `(obs, info) -> action`, for tests and
SFT transcripts (`play_episode`). Texts are short: a whole CartPole turn, or a scripted
GuessNumber / Calculator transcript, stays well under 256 characters.
"""

from lm.envs.calculator import CalculatorEnv, guess_policy, make_problem, safe_eval, tool_policy
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
from lm.envs.guess_number import (
    GuessNumberEnv,
    bisect_policy,
    expected_optimal_turns,
    linear_policy,
    optimal_turns,
)
from lm.envs.registry import BUILTIN_IDS, make, register
from lm.envs.wrapper import TextWrapper, wrap_text

register()

__all__ = [
    "ACTION_MAX_CHARS",
    "BUILTIN_IDS",
    "CHARSET",
    "OBS_MAX_CHARS",
    "CalculatorEnv",
    "Episode",
    "GuessNumberEnv",
    "Policy",
    "TextWrapper",
    "action_space",
    "bisect_policy",
    "can_wrap",
    "check_text_env",
    "expected_optimal_turns",
    "first_word",
    "guess_policy",
    "is_text_env",
    "linear_policy",
    "make",
    "make_problem",
    "observation_space",
    "optimal_turns",
    "play_episode",
    "register",
    "safe_eval",
    "tool_policy",
    "wrap_text",
]
