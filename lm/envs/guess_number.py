"""GuessNumber: find a secret integer in [lo, hi] from "higher" / "lower" hints.

Task: the env draws the secret uniformly from [lo, hi] (default 1..16) with its seeded RNG; the
first observation states the range ("Guess a number from 1 to 16."). Each turn the agent says a
number (the first word of its action); the reply is "higher", "lower" or "correct".
Reward: 1 for the correct guess, minus `turn_penalty` on every turn (default 0, so an episode's
return is its success; set e.g. 0.01 to prefer fewer turns).
Termination: the correct guess (info["success"] True). Truncation: `max_turns` turns (default 8)
without it (info["success"] False).
Invalid: a first word that is not an integer in [lo, hi] burns the turn, gets the reward
`-turn_penalty - invalid_penalty` (default 0) and the observation "not a number from 1 to 16".
Optimum: bisection, at most floor(log2(hi - lo + 1)) + 1 turns (5 for 1..16, 3.375 on average);
`optimal_turns` counts them. info["lo"] / info["hi"] hold the range still consistent with the
hints, which a scripted policy reads instead of parsing the transcript.
"""

from __future__ import annotations

import re
from typing import Any

import gymnasium as gym

from lm.envs.core import action_space, first_word, observation_space

_INTEGER = re.compile(r"[+-]?[0-9]{1,18}")  # longer is invalid (and would slow int())


class GuessNumberEnv(gym.Env):
    """See the module docstring."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        lo: int = 1,
        hi: int = 16,
        max_turns: int = 8,
        turn_penalty: float = 0.0,
        invalid_penalty: float = 0.0,
    ) -> None:
        if lo > hi or max_turns < 1:
            raise ValueError(f"need lo <= hi and max_turns >= 1, not lo={lo} hi={hi} {max_turns=}")
        self.lo, self.hi, self.max_turns = lo, hi, max_turns
        self.turn_penalty, self.invalid_penalty = float(turn_penalty), float(invalid_penalty)
        self.observation_space, self.action_space = observation_space(), action_space()
        self.secret = lo
        self._turn, self._low, self._high = 0, lo, hi

    def _info(self) -> dict[str, Any]:
        return {"turn": self._turn, "lo": self._low, "hi": self._high}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        self.secret = int(self.np_random.integers(self.lo, self.hi + 1))
        self._turn, self._low, self._high = 0, self.lo, self.hi
        return f"Guess a number from {self.lo} to {self.hi}.", self._info()

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        self._turn += 1
        word = first_word(action)
        guess = int(word) if _INTEGER.fullmatch(word) else None
        invalid = guess is None or not self.lo <= guess <= self.hi
        if invalid:
            obs = f"not a number from {self.lo} to {self.hi}"
        elif guess < self.secret:
            obs, self._low = "higher", max(self._low, guess + 1)
        elif guess > self.secret:
            obs, self._high = "lower", min(self._high, guess - 1)
        else:
            obs, self._low, self._high = "correct", guess, guess
        terminated = obs == "correct"
        reward = float(terminated) - self.turn_penalty - invalid * self.invalid_penalty
        truncated = not terminated and self._turn >= self.max_turns
        info = {**self._info(), "invalid_action": invalid}
        if terminated or truncated:
            info["success"] = terminated
        return obs, reward, terminated, truncated, info


def optimal_turns(lo: int, hi: int, secret: int) -> int:
    """How many guesses bisection ((lo + hi) // 2 each turn) needs to hit `secret`."""
    turns = 1
    while (guess := (lo + hi) // 2) != secret:
        lo, hi = (guess + 1, hi) if guess < secret else (lo, guess - 1)
        turns += 1
    return turns


def expected_optimal_turns(lo: int, hi: int) -> float:
    """The mean of `optimal_turns` over a uniform secret: the least expected number of turns."""
    return sum(optimal_turns(lo, hi, s) for s in range(lo, hi + 1)) / (hi - lo + 1)


def bisect_policy(obs: str, info: dict[str, Any]) -> str:
    """The optimal policy: guess the middle of the range the hints still allow."""
    return str((info["lo"] + info["hi"]) // 2)


def linear_policy(obs: str, info: dict[str, Any]) -> str:
    """A valid but weak policy: scan up from the bottom, (secret - lo + 1) turns."""
    return str(info["lo"])
