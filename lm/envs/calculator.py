"""Calculator: arithmetic word problems solved with a calculator tool (tool use in a few turns).

Task: the env draws a short word problem from its seeded RNG ("Ann has 12 boxes of 7 pens. How
many pens?"), 2-3 small integers joined by + - * / with an integer answer. Each turn the agent
either calls the tool, `<calc>12*7</calc>`, and reads `<result>84</result>` next, or answers,
`<answer>84</answer>`. The action must start with one of the two tags (text after the closing tag
is ignored). The tool evaluates integers with + - * / // and parentheses through `safe_eval`,
never `eval`; a malformed expression returns `<result>error</result>`.
Reward: 1 for a correct answer, 0 otherwise.
Termination: any answer (info["success"] says whether it was right). Truncation: `max_turns`
turns (default 4) without an answer (info["success"] False).
Invalid: a tool error, or an action that is neither tag, burns the turn with
`info["invalid_action"]` and the reward `-invalid_penalty` (default 0); the latter's observation
recalls the protocol.
Optimum: 1 tool call and the answer, 2 turns, success 1 (`tool_policy`). info holds the
question, its `expression` and its `answer` at every step, for scripted policies.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from lm.envs.core import action_space, observation_space

MAX_EXPRESSION_CHARS = 100  # bounds the parser's recursion and the size of a result
INVALID = "invalid: use <calc>expression</calc> or <answer>number</answer>"
NAMES = ("Ann", "Bo", "Cy", "Dee", "Eli", "Fay", "Gus", "Ivy")
# (container, item): "boxes of pens"
ITEMS = (
    ("boxes", "pens"),
    ("bags", "apples"),
    ("packs", "cards"),
    ("jars", "coins"),
    ("crates", "eggs"),
    ("trays", "cups"),
    ("shelves", "books"),
)
# (question, expression) templates over the names, items and numbers of `make_problem`.
PROBLEMS = (
    ("{name} has {a} {box} of {b} {item}. How many {item}?", "{a}*{b}"),
    ("{name} has {c} {item} and gets {a} more. How many {item}?", "{c}+{a}"),
    ("{name} has {s} {item} and gives away {b}. How many are left?", "{s}-{b}"),
    ("{name} shares {d} {item} equally among {a} friends. How many each?", "{d}/{a}"),
    ("{name} has {a} {box} of {b} {item} and {c} more {item}. How many {item}?", "{a}*{b}+{c}"),
    ("{name} has {a} {box} of {b} {item} and gives away {e}. How many are left?", "{a}*{b}-{e}"),
    (
        "{name} has {s} {item}, gets {a} more, then gives away {b}. How many are left?",
        "{s}+{a}-{b}",
    ),
    (
        "{name} has {a} {box} of {b} {item} and buys {c} more {box}. How many {item}?",
        "({a}+{c})*{b}",
    ),
)
_TAG = re.compile(r"\s*<(calc|answer)>(.*?)</\1>", re.DOTALL)
_INTEGER = re.compile(r"\s*[+-]?[0-9]{1,18}\s*")  # longer is invalid


def _divide(a: int, b: int) -> int:
    if a % b:
        raise ValueError(f"{a}/{b} is not an integer")
    return a // b


_BINARY: dict[type, Callable[[int, int], int]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: _divide,
    ast.FloorDiv: operator.floordiv,
}
_UNARY: dict[type, Callable[[int], int]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def safe_eval(expression: str) -> int:
    """The integer value of `expression`; ValueError for anything else.

    Only integer literals, + - * / //, unary +/- and parentheses are walked; names, calls,
    attributes, floats, powers and everything else are refused. `/` must divide exactly (this is
    an integer calculator) and dividing by zero is an error.
    """
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError) as err:
        raise ValueError(f"cannot parse {expression!r}") from err
    return _eval(tree.body)


def _eval(node: ast.AST) -> int:
    if isinstance(node, ast.Constant) and type(node.value) is int:  # not bool, not float
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if right == 0 and isinstance(node.op, (ast.Div, ast.FloorDiv)):
            raise ValueError("division by zero")
        return _BINARY[type(node.op)](left, right)
    raise ValueError(f"{type(node).__name__} is not allowed")


def make_problem(rng: np.random.Generator) -> tuple[str, str]:
    """A word problem and its expression, e.g. ("Ann has 12 boxes of 7 pens. How many pens?",
    "12*7"); every answer is a non-negative integer."""
    name = NAMES[rng.integers(len(NAMES))]
    box, item = ITEMS[rng.integers(len(ITEMS))]
    a, b = (int(x) for x in rng.integers(2, 13, size=2))  # factors
    c = int(rng.integers(2, 41))  # a count
    question, expression = PROBLEMS[rng.integers(len(PROBLEMS))]
    # d = a*b divides by a; s = c+b and e <= a*b keep differences non-negative.
    numbers = {"a": a, "b": b, "c": c, "d": a * b, "s": c + b, "e": min(c, a * b)}
    return question.format(name=name, box=box, item=item, **numbers), expression.format(**numbers)


class CalculatorEnv(gym.Env):
    """See the module docstring."""

    metadata = {"render_modes": []}

    def __init__(self, max_turns: int = 4, invalid_penalty: float = 0.0) -> None:
        if max_turns < 1:
            raise ValueError(f"max_turns must be at least 1, not {max_turns}")
        self.max_turns, self.invalid_penalty = max_turns, float(invalid_penalty)
        self.observation_space, self.action_space = observation_space(), action_space()
        self.question, self.expression, self.answer = "", "", 0
        self._turn = 0

    def _info(self) -> dict[str, Any]:
        return {
            "turn": self._turn,
            "question": self.question,
            "expression": self.expression,
            "answer": self.answer,
        }

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        self.question, self.expression = make_problem(self.np_random)
        self.answer, self._turn = safe_eval(self.expression), 0
        return self.question, self._info()

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        self._turn += 1
        tag = _TAG.match(action)
        terminated = invalid = correct = False
        if tag is None or (tag[1] == "answer" and not _INTEGER.fullmatch(tag[2])):
            obs, invalid = INVALID, True
        elif tag[1] == "calc":
            try:
                obs = f"<result>{safe_eval(tag[2])}</result>"
            except ValueError:
                obs, invalid = "<result>error</result>", True
        else:
            terminated, correct = True, int(tag[2]) == self.answer
            obs = "correct" if correct else "wrong"
        reward = float(correct) - invalid * self.invalid_penalty
        truncated = not terminated and self._turn >= self.max_turns
        info = {**self._info(), "invalid_action": invalid}
        if terminated or truncated:
            info["success"] = correct
        return obs, reward, terminated, truncated, info


def tool_policy(obs: str, info: dict[str, Any]) -> str:
    """The scripted solver: call the tool on the problem's expression, then answer its result."""
    result = re.fullmatch(r"<result>(-?[0-9]+)</result>", obs)
    return f"<answer>{result[1]}</answer>" if result else f"<calc>{info['expression']}</calc>"


def guess_policy(obs: str, info: dict[str, Any]) -> str:
    """A valid but weak policy: answer at once, without the tool, the sum of the question's
    numbers; right on the one addition template in eight, wrong elsewhere."""
    return f"<answer>{sum(int(n) for n in re.findall(r'[0-9]+', info['question']))}</answer>"
