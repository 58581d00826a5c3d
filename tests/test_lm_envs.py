"""Text envs for an LM that acts (lm.envs): the contract, TextWrapper, GuessNumber, Calculator."""

from __future__ import annotations

import math
import re
import textwrap
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env

import lm.envs
from lm.envs import (
    BUILTIN_IDS,
    CHARSET,
    CalculatorEnv,
    GuessNumberEnv,
    TextWrapper,
    bisect_policy,
    check_text_env,
    expected_optimal_turns,
    first_word,
    guess_policy,
    is_text_env,
    linear_policy,
    optimal_turns,
    play_episode,
    safe_eval,
    tool_policy,
)

CARTPOLE_OBS = re.compile(r"x=[+-]\d\.\d\d v=[+-]\d\.\d\d a=[+-]\d\.\d\d w=[+-]\d\.\d\d")
SCRIPTED = {
    "ppo_bridge/GuessNumber-v0": (bisect_policy, linear_policy),
    "ppo_bridge/Calculator-v0": (tool_policy, guess_policy),
}


def one_line_error(excinfo: pytest.ExceptionInfo[ValueError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# --- the contract ---------------------------------------------------------------------------


def test_charset_covers_printable_ascii_and_newline() -> None:
    assert set(CHARSET) == {chr(c) for c in range(32, 127)} | {"\n"}


@pytest.mark.parametrize("env_id", BUILTIN_IDS)
def test_builtin_follows_the_contract(env_id: str) -> None:
    env = lm.envs.make(env_id)
    assert is_text_env(env)
    for space in (env.observation_space, env.action_space):
        assert isinstance(space, spaces.Text) and space.character_set == frozenset(CHARSET)
        assert space.max_length >= 512
    obs, info = env.reset(seed=0)
    assert isinstance(obs, str) and obs in env.observation_space and isinstance(info, dict)
    for action in (
        "@@ not an action @@",
        "",
        "left",
        "8",
        "<calc>1+1</calc>",
        "<answer>3</answer>",
    ):
        obs, reward, terminated, truncated, info = env.step(action)
        assert isinstance(obs, str) and obs in env.observation_space
        assert isinstance(reward, float)
        assert isinstance(terminated, bool) and isinstance(truncated, bool)
        assert isinstance(info["invalid_action"], bool)
        if env_id != "ppo_bridge/TextCartPole-v0":  # tasks that can be won say so at the end
            assert ("success" in info) == (terminated or truncated)
        if terminated or truncated:
            obs, info = env.reset()
    env.close()


def test_invalid_action_is_flagged() -> None:
    for env_id in BUILTIN_IDS:
        env = lm.envs.make(env_id)
        env.reset(seed=0)
        assert env.step("@@")[4]["invalid_action"] is True
        env.close()


def test_gymnasium_check_env() -> None:
    """check_env passes on the raw worlds. For TextCartPole the wrapper is the env under test (its
    unwrapped env is numeric CartPole), and its render check is skipped: rendering is the inner
    CartPole's pixels, and the check would open a "human" window."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*different from the unwrapped version.*")
        for env_id in SCRIPTED:
            check_env(gym.make(env_id).unwrapped)
        check_env(lm.envs.make("ppo_bridge/TextCartPole-v0"), skip_render_check=True)


@pytest.mark.parametrize("env_id", BUILTIN_IDS)
def test_reset_seed_replays_the_episode(env_id: str) -> None:
    actions = ["right", "left", "5", "<calc>2*3</calc>", "right", "12", "<answer>7</answer>"]

    def transcript(seed: int) -> list:
        env = lm.envs.make(env_id)
        steps = [env.reset(seed=seed)]
        for action in actions:
            steps.append(env.step(action))
            if steps[-1][2] or steps[-1][3]:
                break
        env.close()
        return steps

    assert transcript(7) == transcript(7)
    assert len({str(transcript(seed)) for seed in range(8)}) > 1


def test_first_word() -> None:
    assert first_word("  Left.\n") == "left"
    assert first_word("RIGHT, because the pole leans") == "right"
    assert first_word("-3!") == "-3"
    assert first_word("  \n") == ""


def test_check_text_env_says_what_to_change() -> None:
    numeric = gym.make("CartPole-v1")
    with pytest.raises(ValueError) as excinfo:
        check_text_env(numeric)
    message = one_line_error(excinfo)
    assert "CartPole-v1 has a Box observation space, not Text" in message
    assert "lm.envs.TextWrapper" in message
    with pytest.raises(ValueError) as excinfo:
        check_text_env(gym.make("Pendulum-v1"))
    assert "pass a text env" in one_line_error(excinfo)
    check_text_env(TextWrapper(numeric))
    with pytest.raises(ValueError, match="text env already"):
        TextWrapper(lm.envs.make("CartPole-v1"))


# --- TextWrapper on CartPole-v1 --------------------------------------------------------------


def test_text_cartpole_matches_numeric_cartpole() -> None:
    text_env, numeric = lm.envs.make("ppo_bridge/TextCartPole-v0"), gym.make("CartPole-v1")
    wrapper = text_env.get_wrapper_attr("format_obs")
    obs, _ = text_env.reset(seed=3)
    num_obs, _ = numeric.reset(seed=3)
    assert CARTPOLE_OBS.fullmatch(obs) and obs == wrapper(num_obs)
    rng = np.random.default_rng(0)
    for _ in range(200):
        a = int(rng.integers(2))
        obs, reward, terminated, truncated, info = text_env.step(["left", "Right"][a])
        num_obs, num_reward, num_terminated, num_truncated, _ = numeric.step(a)
        assert CARTPOLE_OBS.fullmatch(obs) and obs == wrapper(num_obs)
        assert (reward, terminated, truncated) == (num_reward, num_terminated, num_truncated)
        assert info["invalid_action"] is False
        if terminated or truncated:
            break
    assert terminated  # random pushes drop the pole well before 200 steps


def test_invalid_action_does_not_step_and_truncates() -> None:
    env = lm.envs.make("CartPole-v1")  # wrapped on the fly
    assert isinstance(env, TextWrapper) and env.max_invalid == 3
    obs, _ = env.reset(seed=0)
    state = env.unwrapped.state.copy()
    for action in ("up", "2"):
        assert env.step(action) == (obs, -1.0, False, False, {"invalid_action": True})
        np.testing.assert_array_equal(env.unwrapped.state, state)
    obs = env.step("right")[0]  # a valid action resets the count
    assert not np.array_equal(env.unwrapped.state, state)
    steps = [env.step("jump") for _ in range(3)]
    assert [s[3] for s in steps] == [False, False, True]
    assert all(s[0] == obs and s[4]["invalid_action"] for s in steps)


def test_text_wrapper_options_and_generic_names() -> None:
    env = TextWrapper(gym.make("CartPole-v1"), precision=3, invalid_penalty=0.5, max_invalid=1)
    obs, _ = env.reset(seed=0)
    assert re.fullmatch(r"x=[+-]\d\.\d{3} v=\S+ a=\S+ w=\S+", obs)
    assert env.step("noop")[1:4] == (-0.5, False, True)
    assert env.format_obs(np.array([-0.0004, 0.0, 1.234, -9.999])) == (
        "x=+0.000 v=+0.000 a=+1.234 w=-9.999"
    )
    custom = TextWrapper(gym.make("CartPole-v1"), template="{value:+.{precision}f}", sep=",")
    assert custom.format_obs(np.array([0.1, -0.2, 0.3, -0.4])) == "+0.10,-0.20,+0.30,-0.40"
    generic = TextWrapper(gym.make("MountainCar-v0"))
    obs, _ = generic.reset(seed=0)
    assert re.fullmatch(r"o0=[+-]\d\.\d\d o1=[+-]\d\.\d\d", obs)
    assert generic.words == ("0", "1", "2")
    assert generic.step("2")[4]["invalid_action"] is False
    with pytest.raises(ValueError, match="words must be 2 distinct"):
        TextWrapper(gym.make("CartPole-v1"), words=("left", "left"))


# --- make: module:EnvId, unknown ids, envs that cannot be text ------------------------------

USER_MODULE = '''
import gymnasium as gym
import numpy as np
from gymnasium import spaces

from lm.envs import action_space, observation_space


class Echo(gym.Env):
    """A one-turn text env: says "hi", rewards an action that says "hi" back."""

    metadata = {"render_modes": []}
    observation_space, action_space = observation_space(), action_space()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return "hi", {}

    def step(self, action):
        return "bye", float(action == "hi"), True, False, {"invalid_action": False}


class Numeric(gym.Env):
    observation_space = spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(3, np.float32), {}

    def step(self, action):
        return np.full(3, 0.5, np.float32), 1.0, True, False, {}


gym.register("UserEcho-v0", entry_point=Echo)
gym.register("UserNumeric-v0", entry_point=Numeric)
'''


def test_make_module_env_id(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "lm_envs_user_world.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    echo = lm.envs.make("lm_envs_user_world:UserEcho-v0")
    assert not isinstance(echo, TextWrapper) and is_text_env(echo)
    assert echo.reset(seed=0)[0] == "hi" and echo.step("hi")[1] == 1.0
    numeric = lm.envs.make("lm_envs_user_world:UserNumeric-v0")
    assert isinstance(numeric, TextWrapper)
    assert numeric.reset(seed=0)[0] == "o0=+0.00 o1=+0.00 o2=+0.00"
    assert numeric.step("1")[0] == "o0=+0.50 o1=+0.50 o2=+0.50"
    with pytest.raises(ValueError) as excinfo:
        lm.envs.make("lm_envs_no_such_module:UserEcho-v0")
    assert "cannot import 'lm_envs_no_such_module'" in one_line_error(excinfo)


def test_make_unknown_id_lists_the_builtins() -> None:
    with pytest.raises(ValueError) as excinfo:
        lm.envs.make("ppo_bridge/TextCartPol-v0")
    message = one_line_error(excinfo)
    assert "unknown env id 'ppo_bridge/TextCartPol-v0'" in message
    assert "did you mean ppo_bridge/TextCartPole-v0" in message
    assert all(env_id in message for env_id in BUILTIN_IDS)


def test_make_refuses_an_env_it_cannot_wrap() -> None:
    with pytest.raises(ValueError) as excinfo:
        lm.envs.make("Pendulum-v1")  # Box actions: no words for them
    message = one_line_error(excinfo)
    assert message.startswith("env Pendulum-v1 has a Box observation space, not Text")


# --- GuessNumber -----------------------------------------------------------------------------


def test_bisect_is_optimal_and_linear_is_weak() -> None:
    env = gym.make("ppo_bridge/GuessNumber-v0")
    bound = math.ceil(math.log2(16)) + 1
    bisect, secrets = [], set()
    for seed in range(64):
        bisect.append(play_episode(env, bisect_policy, seed))
        secret = env.unwrapped.secret
        secrets.add(secret)
        assert bisect[-1].success and bisect[-1].terminated and bisect[-1].rewards[-1] == 1.0
        assert bisect[-1].turns == optimal_turns(1, 16, secret) <= bound
    assert secrets == set(range(1, 17))  # 64 seeds cover every secret
    assert expected_optimal_turns(1, 16) == 54 / 16
    assert max(optimal_turns(1, 16, s) for s in range(1, 17)) == 5
    linear = [play_episode(env, linear_policy, seed) for seed in range(64)]
    assert all(not e.info["invalid_action"] for e in linear)
    assert sum(e.success for e in linear) < sum(e.success for e in bisect) == 64
    assert np.mean([e.turns for e in linear]) > np.mean([e.turns for e in bisect])
    assert all(e.truncated and e.turns == 8 for e in linear if not e.success)


def test_guess_number_hints_invalid_and_truncation() -> None:
    env = GuessNumberEnv(lo=3, hi=9, max_turns=5, turn_penalty=0.1)
    obs, info = env.reset(seed=1)
    assert obs == "Guess a number from 3 to 9." and (info["lo"], info["hi"]) == (3, 9)
    wrong, hint = (3, "higher") if env.secret != 3 else (9, "lower")
    obs, reward, terminated, truncated, info = env.step("twelve")
    assert obs == "not a number from 3 to 9" and info["invalid_action"] and reward == -0.1
    assert env.step("10")[4]["invalid_action"]  # out of range
    assert env.step("9" * 5000)[4]["invalid_action"]  # too long to be an integer
    obs, reward, terminated, truncated, info = env.step(f"{wrong}.")
    assert (obs, reward, info["invalid_action"]) == (hint, -0.1, False)
    assert (info["lo"], info["hi"]) == ((4, 9) if wrong == 3 else (3, 8))
    obs, reward, terminated, truncated, info = env.step(str(wrong))
    assert (terminated, truncated, info["success"]) == (False, True, False)


# --- Calculator ------------------------------------------------------------------------------


def test_tool_policy_solves_and_guessing_does_not() -> None:
    env = gym.make("ppo_bridge/Calculator-v0")
    tool = [play_episode(env, tool_policy, seed) for seed in range(50)]
    assert np.mean([e.success for e in tool]) == 1.0
    assert all(e.turns == 2 and e.observations[1].startswith("<result>") for e in tool)
    guess = [play_episode(env, guess_policy, seed) for seed in range(50)]
    assert all(e.turns == 1 and e.terminated for e in guess)
    assert 0.0 < np.mean([e.success for e in guess]) < 0.5


def test_problems_have_integer_answers() -> None:
    env = CalculatorEnv()
    expressions = set()
    for seed in range(300):
        obs, info = env.reset(seed=seed)
        assert obs == info["question"] and info["answer"] == safe_eval(info["expression"]) >= 0
        expressions.add(re.sub(r"\d+", "n", info["expression"]))
    assert len(expressions) == 8  # every template


def test_safe_eval() -> None:
    assert safe_eval("12*7") == 84
    assert safe_eval(" (3+2)*7 - -1 ") == 36
    assert safe_eval("36/4") == 9 and safe_eval("7//2") == 3
    refused = [
        "__import__('os')",
        "os.system('ls')",
        "().__class__",
        "x",
        "2**8",
        "1.5*2",
        "True+1",
        "[1]",
        "(lambda: 1)()",
        "7/2",
        "",
        "1+",
        "9" * 101,
    ]
    for expression in refused + ["1/0", "5//0"]:
        with pytest.raises(ValueError):
            safe_eval(expression)


def test_calculator_steps() -> None:
    env = CalculatorEnv(max_turns=4)
    obs, info = env.reset(seed=0)
    error = ("<result>error</result>", 0.0, False, False)
    assert env.step("<calc>__import__('os').system('ls')</calc>")[:4] == error
    obs, _, _, _, info = env.step("<calc>1/0</calc>")
    assert obs == "<result>error</result>" and info["invalid_action"]
    obs, _, _, _, info = env.step("the answer is 3")
    assert obs.startswith("invalid: use <calc>") and info["invalid_action"]
    obs, _, _, truncated, info = env.step(f"<calc>{info['expression']}</calc>")
    assert obs == f"<result>{info['answer']}</result>" and not info["invalid_action"]
    assert truncated and info["success"] is False  # 4 turns without an answer

    env.reset(seed=0)
    assert env.step("<answer>lots</answer>")[4]["invalid_action"]
    assert env.step(f"<answer>{'9' * 5000}</answer>")[4]["invalid_action"]
    obs, reward, terminated, truncated, info = env.step(f"<answer>{info['answer'] + 1}</answer>")
    assert (obs, reward, terminated, info["success"]) == ("wrong", 0.0, True, False)
    env.reset(seed=0)
    step = env.step(f" <answer> {info['answer']} </answer> thanks")
    assert step[:3] == ("correct", 1.0, True) and step[4]["success"]


# --- short texts -----------------------------------------------------------------------------


def test_texts_fit_a_small_context() -> None:
    """Every observation is short, and a scripted transcript stays under 200 characters (at most
    200 byte-level tokens), so it fits a 256-position LM with room for a chat template."""
    for env_id, policies in SCRIPTED.items():
        env = gym.make(env_id)
        for policy in policies:
            for seed in range(100):
                episode = play_episode(env, policy, seed)
                assert max(map(len, episode.observations)) <= 80
                assert sum(map(len, episode.observations + episode.actions)) < 200
    cartpole = lm.envs.make("ppo_bridge/TextCartPole-v0")
    assert len(cartpole.reset(seed=0)[0]) + len("right") < 40
