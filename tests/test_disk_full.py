"""A full disk during a save is one `error:` line naming the folder, exit 2, nothing half-written
(a small tmpfs where the platform lets us mount one)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tiny import ROOT

FLAGS = ["--eval-samples", "4", "--batch-size", "4", "--minibatch-size", "2", "--n-epochs", "1"]
FLAGS += ["--max-new-tokens", "4", "--total-iterations", "2", "--save-every", "1"]


@pytest.fixture
def small_disk(tmp_path: Path):  # noqa: ANN201
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.decode().strip()[:80]})")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.parametrize("module", ["lm.train", "classic.train"])
def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(
    module: str, tiny: dict[str, Path], small_disk: Path
) -> None:
    out = small_disk / "run"
    if module == "lm.train":
        argv = ["--policy", str(tiny["policy"]), "--reward-model", str(tiny["rm"])]
        argv += ["--prompts", str(tiny["prompts.txt"]), *FLAGS]
    else:  # a wide network: its checkpoint does not fit in 160k
        argv = ["--env", "CartPole-v1", "--total-timesteps", "512", "--n-envs", "2"]
        argv += ["--n-steps", "64", "--minibatch-size", "64", "--hidden-dim", "256"]
        argv += ["--checkpoint-every", "128"]
    done = subprocess.run(
        [sys.executable, "-m", module, *argv, "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("error: no space left to write") and str(out) in line, done.stderr
    assert "Traceback" not in done.stderr
    assert not [p for p in out.rglob(".*") if ".tmp-" in p.name]  # no half-written file or folder
