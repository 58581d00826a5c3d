"""`--env module:EnvId`: a user's own env, registered by their module, as gymnasium.make takes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULE = """
import gymnasium as gym

gym.register("ShortCart-v0", entry_point="gymnasium.envs.classic_control:CartPoleEnv",
             max_episode_steps=20)
"""


def cli(module: str, argv: list[str], path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{path}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", module, *argv],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_a_users_env_trains_and_evaluates(tmp_path: Path) -> None:
    (tmp_path / "myenvs.py").write_text(MODULE)
    out = tmp_path / "run"
    argv = ["--env", "myenvs:ShortCart-v0", "--total-timesteps", "256", "--n-envs", "2"]
    argv += ["--n-steps", "64", "--eval-episodes", "2", "--out", str(out)]
    done = cli("classic.train", argv, tmp_path)
    assert done.returncode == 0, done.stderr
    evaluated = cli("classic.evaluate", [str(out), "--episodes", "3"], tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert result["env"] == "myenvs:ShortCart-v0" and result["mean_return"] <= 20


def test_a_module_that_does_not_import_is_one_line(tmp_path: Path) -> None:
    done = cli("classic.train", ["--env", "nosuchmodule:Thing-v0"], tmp_path)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: --env nosuchmodule:Thing-v0: cannot import 'nosuchmodule'")
