"""Safe checkpoints and resume: loading never runs code, damaged files are one-line errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from classic import evaluate as evaluate_cli
from classic import train as train_cli

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["--no-progress", "--no-tensorboard"]
TINY = ["--total-timesteps", "1024", "--eval-episodes", "2", *QUIET]


def run_module(*argv: str) -> subprocess.CompletedProcess:
    """`python -m argv...` from the repository root, as a user would run it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", *argv], cwd=ROOT, env=env, capture_output=True, text=True
    )


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    """One finished 1024-step CartPole run, copied by the tests that alter it."""
    run = tmp_path_factory.mktemp("good") / "run"
    assert train_cli.main(["--env", "CartPole-v1", "--out", str(run), *TINY]) == 0
    return run


def copy_run(good_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    return run


class Payload:
    """Unpickling this calls open(path, "w"): a file appears if the checkpoint's code runs."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_malicious_checkpoint_runs_nothing(tmp_path):
    run, marker = tmp_path / "run", tmp_path / "pwned"
    run.mkdir()
    config = {"env_id": "CartPole-v1"}
    torch.save({"format": 2, "config": config, "model": Payload(marker)}, run / "checkpoint.pt")
    for argv in (["classic.evaluate", str(run)], ["classic.train", "--out", str(run), "--resume"]):
        proc = run_module(*argv)
        assert_one_line_error(proc.returncode, proc.stderr, "refused to load", "never unpickled")
        assert not marker.exists(), argv
    # the payload is real: the unsafe load that classic used to do creates the file
    torch.load(run / "checkpoint.pt", weights_only=False)
    assert marker.exists()


def damage(run: Path, edit) -> None:
    path = run / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    edit(state)
    torch.save(state, path)


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda s: s.pop("optimizer"), "lacks the field 'optimizer'"),
        (lambda s: s["normalizer"].pop("obs_rms"), "lacks the field 'obs_rms'"),
        (lambda s: s.update(global_step="many"), "'global_step' has the wrong type"),
        (lambda s: s.update(format=1), "format 1"),
        (lambda s: s["config"].update(n_steps="64"), "n_steps='64'"),
        (lambda s: s["model"].update({"actor.0.weight": torch.zeros(3, 3)}), "does not fit"),
        (lambda s: s["normalizer"]["obs_rms"].update(mean=torch.zeros(7)), "shape (4,)"),
        (lambda s: s.update(obs=torch.zeros(2, 2)), "does not fit"),
        (lambda s: s["envs"][0].pop("np_random"), "lacks the field 'np_random'"),
    ],
)
def test_damaged_checkpoint_is_a_one_line_error(good_run, tmp_path, capsys, edit, needle):
    run = copy_run(good_run, tmp_path)
    damage(run, edit)
    before = (run / "checkpoint.pt").read_bytes()
    codes = [
        evaluate_cli.main([str(run), "--episodes", "2"]),
        train_cli.main(["--out", str(run), "--resume", "--total-timesteps", "2048", *QUIET]),
    ]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 or (len(err) == 1 and codes[0] == 0), err  # evaluate needs fewer fields
    for code, line in zip(codes[-len(err) :], err, strict=True):
        assert_one_line_error(code, line, needle)
    assert (run / "checkpoint.pt").read_bytes() == before


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"not a checkpoint\n", "cannot read checkpoint"),
        (None, "is a folder, not a checkpoint"),
    ],
)
def test_unreadable_checkpoint_file(tmp_path, capsys, content, needle):
    path = tmp_path / "checkpoint.pt"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    assert_one_line_error(evaluate_cli.main([str(tmp_path)]), capsys.readouterr().err, needle)


def test_old_pickle_format_is_refused(tmp_path, capsys):
    old = {"config": {"env_id": "CartPole-v1"}, "obs": np.zeros(3)}  # numpy: pickled objects
    torch.save(old, tmp_path / "checkpoint.pt")
    code = evaluate_cli.main([str(tmp_path)])
    assert_one_line_error(code, capsys.readouterr().err, "refused to load")
