"""Safe checkpoints and resume: loading never runs code, damaged files are one-line errors."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_classic_train import rows_without_time

from classic import evaluate as evaluate_cli
from classic import train as train_cli
from classic.config import PRESETS, TrainConfig
from classic.envs import make_vec_env
from classic.envstate import save_env_state
from classic.train import train

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


# --- resume: kill -9, every preset ---------------------------------------------------------------


def csv_rows(path: Path) -> list[dict[str, str]]:
    """progress.csv's rows without the time/ columns (wall-clock), as written."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def csv_steps(path: Path) -> list[int]:
    with open(path, newline="") as f:
        return [int(r["time/total_timesteps"]) for r in csv.DictReader(f)]


def train_then_kill_9(out: Path, argv: list[str]) -> int:
    """Start `classic.train --out out argv` in a subprocess and SIGKILL it as soon as its first
    checkpoint exists; returns the step of the checkpoint it left."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "classic.train", "--out", str(out), *argv]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.pt").exists() and proc.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    return torch.load(out / "checkpoint.pt", weights_only=True)["global_step"]


def test_kill_9_then_resume_equals_the_uninterrupted_run(tmp_path, capsys):
    """CartPole's env state is saved: the resumed run's progress.csv is the uninterrupted one's,
    row for row (train/ and rollout/ columns), although the kill lost the rows after the
    checkpoint and the learning rate anneals over the whole budget."""
    argv = ["--env", "CartPole-v1", "--seed", "3", "--total-timesteps", "8192"]
    argv += ["--checkpoint-every", "512", "--eval-every", "0", "--target-return", "none"]
    argv += ["--eval-episodes", "0", *QUIET]
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    assert train_then_kill_9(killed, argv) < 8192
    proc = run_module("classic.train", "--out", str(killed), "--resume", *QUIET)
    # the one line on stderr: the killed run's lock was stale, and this run took it over
    (note,) = proc.stderr.strip().splitlines()
    assert proc.returncode == 0 and "which is gone: taking it over" in note, proc.stderr
    assert train_cli.main(["--out", str(whole), *argv]) == 0
    assert csv_steps(killed / "progress.csv") == [512 * k for k in range(1, 17)]
    assert csv_rows(killed / "progress.csv") == csv_rows(whole / "progress.csv")


def test_lunar_lander_killed_and_resumed_finishes_its_budget(tmp_path):
    """Box2D's state is not saved: the resume says so on one line, starts fresh episodes from the
    restored policy, normaliser and RNG, and trains on to the budget without a lost row."""
    argv = ["--env", "LunarLander-v3", "--n-envs", "4", "--n-steps", "64"]
    argv += ["--minibatch-size", "64", "--total-timesteps", "2048", "--checkpoint-every", "256"]
    argv += ["--target-return", "none", "--eval-episodes", "0", *QUIET]
    run = tmp_path / "lunar"
    step = train_then_kill_9(run, argv)
    before = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    proc = run_module("classic.train", "--out", str(run), "--resume", *QUIET)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()  # the env's note, and the killed run's stale lock
    (note,) = [line for line in lines if "fresh episodes" in line]
    assert len(lines) == 2 and any("taking it over" in line for line in lines), lines
    assert f"step {step}" in note, note
    assert json.loads(proc.stdout.splitlines()[-1])["total_steps"] == 2048
    assert csv_steps(run / "progress.csv") == [256 * k for k in range(1, 9)]
    resumed = csv_rows(run / "progress.csv")[step // 256 :]
    for row in resumed:  # it kept learning: finite losses, non-zero policy steps
        assert math.isfinite(float(row["train/loss"])) and float(row["train/approx_kl"]) > 0
    after = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    assert any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("env_id", sorted(PRESETS))
def test_every_preset_env_resumes(env_id, tmp_path, capsys):
    """Each preset env, tiny: 2 iterations, then resumed for 2 more. Where classic.envstate
    saves the env (all but Box2D) the resumed rows equal an uninterrupted run's; otherwise the
    run goes on with fresh episodes and says so."""
    tiny = dict(n_envs=2, n_steps=64, minibatch_size=64, anneal_lr=False, eval_every=0)
    tiny |= dict(target_return=None, eval_episodes=0, progress=False, tensorboard=False)
    first = train(TrainConfig.for_env(env_id, total_timesteps=256, **tiny), tmp_path)
    capsys.readouterr()
    cfg = TrainConfig.for_env(env_id, total_timesteps=512, **tiny)
    resumed = train(cfg, tmp_path, resume=True)
    note = capsys.readouterr().err
    assert first.total_steps == 256 and resumed.total_steps == 512
    assert csv_steps(tmp_path / "progress.csv") == [128, 256, 384, 512]
    envs = make_vec_env(env_id, 1)
    envs.reset(seed=0)
    if save_env_state(envs) is None:
        assert "fresh episodes" in note
    else:
        assert note == ""
        whole = train(cfg)
        assert rows_without_time(resumed.history) == rows_without_time(whole.history[2:])


def test_a_failed_resume_loses_nothing(good_run, tmp_path, monkeypatch, capsys):
    """A resume refused at the start, or one whose first update fails, leaves progress.csv and
    the checkpoint byte for byte as they were, even the rows past the checkpoint (as a kill
    leaves them), which a resume that works replaces."""
    run = copy_run(good_run, tmp_path)
    lines = (run / "progress.csv").read_text().splitlines(keepends=True)
    last = lines[-1].split(",")
    (run / "progress.csv").write_text("".join(lines) + ",".join(["1536", "3", *last[2:]]))
    files = {name: (run / name).read_bytes() for name in ("progress.csv", "checkpoint.pt")}

    def non_finite(*args, **kwargs):
        raise FloatingPointError("non-finite PPO loss (stub)")

    code = train_cli.main(["--out", str(run), "--resume", "--n-envs", "4", *QUIET])
    assert_one_line_error(code, capsys.readouterr().err, "n_envs=8")
    monkeypatch.setattr(train_cli, "ppo_update", non_finite)
    code = train_cli.main(["--out", str(run), "--resume", "--total-timesteps", "4096", *QUIET])
    assert_one_line_error(code, capsys.readouterr().err, "non-finite PPO loss")
    assert {name: (run / name).read_bytes() for name in files} == files
