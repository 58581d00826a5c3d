"""A run folder is owned by one process at a time, and --overwrite keeps the old run until the new
one has done an iteration (lm.train, lm.dpo, classic.train)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ppo_bridge.rundir import LOCK_NAME, run_lock

TINY_LM = ["--batch-size", "4", "--minibatch-size", "2", "--n-epochs", "1", "--max-new-tokens", "4"]
TINY_LM += ["--total-iterations", "2", "--eval-samples", "4"]
CLASSIC = ["--env", "CartPole-v1", "--total-timesteps", "512", "--n-envs", "4", "--n-steps", "64"]


def lm_argv(tiny: dict[str, Path], out: Path) -> list[str]:
    models = ["--policy", str(tiny["policy"]), "--reward-model", str(tiny["rm"])]
    return [*models, "--prompts", str(tiny["prompts.txt"]), *TINY_LM, "--out", str(out)]


def test_lock_is_exclusive_and_a_stale_one_is_taken_over(tmp_path: Path, capfd) -> None:
    out = tmp_path / "run"
    with run_lock(out):
        assert (out / LOCK_NAME).read_text() == str(os.getpid())
        # another process asking for the same folder is refused, naming the holder
        probe = (
            "import sys; from ppo_bridge.rundir import run_lock\n"
            f"with run_lock({str(out)!r}): sys.exit(0)"
        )
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
        assert done.returncode != 0 and f"in use by another run (pid {os.getpid()})" in done.stderr
    assert not out.exists()  # a run that wrote nothing leaves no folder
    out.mkdir()
    (out / LOCK_NAME).write_text("999999")  # what a killed run leaves: its pid, no flock
    with run_lock(out):
        pass
    assert "left locked by pid 999999, which is gone: taking it over" in capfd.readouterr().err
    assert (out / LOCK_NAME).read_text() == ""


@pytest.mark.parametrize("module", ["lm.train", "classic.train"])
def test_a_second_run_into_a_held_folder_is_one_line_and_changes_nothing(
    module: str, tiny: dict[str, Path], tmp_path: Path, cli
) -> None:
    out = tmp_path / "run"
    argv = lm_argv(tiny, out) if module == "lm.train" else [*CLASSIC, "--out", str(out)]
    with run_lock(out):
        (out / "mine.txt").write_text("the other run's file")
        done = cli(module, argv)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert lines[-1].startswith("error: ") and "in use by another run" in lines[-1]
        assert sorted(p.name for p in out.iterdir()) == sorted([LOCK_NAME, "mine.txt"])


def test_overwrite_keeps_the_old_run_when_the_new_one_fails_first(
    tiny: dict[str, Path], tmp_path: Path, cli
) -> None:
    out = tmp_path / "run"
    first = cli("lm.train", [*lm_argv(tiny, out), "--save-every", "1"])
    assert first.returncode == 0, first.stderr
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    # the new run diverges at its first iteration: a non-finite loss stops it before writing
    bad = cli("lm.train", [*lm_argv(tiny, out), "--overwrite", "--lr", "1e30", "--clip-eps", "1e9"])
    assert bad.returncode == 2, bad.stderr
    assert "non-finite" in bad.stderr and bad.stderr.strip().splitlines()[-1].startswith("error: ")
    after = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert {k: v for k, v in after.items() if k != LOCK_NAME} == {
        k: v for k, v in before.items() if k != LOCK_NAME
    }
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert summary["iterations"] == 2


def test_classic_overwrite_keeps_the_old_run_when_the_new_one_fails_first(
    tmp_path: Path, cli
) -> None:
    out = tmp_path / "run"
    first = cli("classic.train", [*CLASSIC, "--out", str(out)])
    assert first.returncode == 0, first.stderr
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    bad = cli("classic.train", [*CLASSIC, "--out", str(out), "--overwrite", "--lr", "1e30"])
    assert bad.returncode == 2 and "non-finite" in bad.stderr, bad.stderr
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert {k: v for k, v in after.items() if k != LOCK_NAME} == {
        k: v for k, v in before.items() if k != LOCK_NAME
    }
