"""A damaged or tampered run folder is one `error:` line on --resume, and is left as it was."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from lm.train import main

FLAGS = ["--eval-samples", "4", "--batch-size", "4", "--minibatch-size", "2", "--n-epochs", "1"]
FLAGS += ["--max-new-tokens", "4", "--total-iterations", "3", "--save-every", "3"]


@pytest.fixture(scope="module")
def finished(tiny: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run with its checkpoint-3."""
    out = tmp_path_factory.mktemp("tampered") / "run"
    models = ["--policy", str(tiny["policy"]), "--reward-model", str(tiny["rm"])]
    assert main([*models, "--prompts", str(tiny["prompts.txt"]), *FLAGS, "--out", str(out)]) == 0
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def set_state(path: Path, **changes: object) -> None:
    state = json.loads(path.read_text())
    path.write_text(json.dumps({**state, **changes}))


def truncate(path: Path, size: int) -> None:
    path.write_bytes(path.read_bytes()[:size])


CASES = {
    "iteration_text": (lambda c: set_state(c / "ppo_state.json", iteration="3"), "iteration"),
    "iteration_negative": (lambda c: set_state(c / "ppo_state.json", iteration=-1), "iteration"),
    "beta_text": (lambda c: set_state(c / "ppo_state.json", beta="big"), "beta"),
    "prompt_out_of_range": (
        lambda c: set_state(c / "ppo_state.json", prompt_queue=[10_000]),
        "prompt_queue",
    ),
    "processes_zero": (lambda c: set_state(c / "ppo_state.json", num_processes=0), "num_processes"),
    "not_json": (lambda c: (c / "ppo_state.json").write_text("{"), "cannot read ppo_state.json"),
    "rng_plain_list": (lambda c: torch.save([1, 2, 3], c / "rng_state_0.pth"), "not a state dict"),
    "optimizer_wrong_dict": (
        lambda c: torch.save({"state": {}, "param_groups": [{"x": 1}]}, c / "optimizer.pt"),
        "optimizer.pt",
    ),
    "weights_truncated": (
        lambda c: (c / "model.safetensors").write_bytes(
            (c / "model.safetensors").read_bytes()[:40]
        ),
        "checkpoint",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_tampered_checkpoint_is_one_line_and_changes_nothing(
    case: str, finished: Path, tmp_path: Path, cli
) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    tamper, needle = CASES[case]
    tamper(run / "checkpoint-3")
    before = snapshot(run)
    done = cli("lm.train", ["--out", str(run), "--resume", "--total-iterations", "5"])
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and needle in lines[-1], done.stderr
    assert "Traceback" not in done.stderr
    assert snapshot(run) == before


def test_a_torn_last_metrics_row_is_dropped_on_resume(finished: Path, tmp_path: Path, cli) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    with (run / "metrics.csv").open("a") as f:
        f.write("4.0,0.1,")  # what a kill in the middle of a row leaves
    done = cli("lm.train", ["--out", str(run), "--resume", "--total-iterations", "4"])
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["iteration"] for r in rows] == ["1.0", "2.0", "3.0", "4.0"]


def test_a_truncated_policy_folder_is_one_line(tiny: dict[str, Path], tmp_path: Path, cli) -> None:
    policy = tmp_path / "policy"
    shutil.copytree(tiny["policy"], policy)
    truncate(policy / "model.safetensors", 100)
    models = ["--policy", str(policy), "--reward-model", str(tiny["rm"])]
    done = cli(
        "lm.train", [*models, "--prompts", str(tiny["prompts.txt"]), "--out", str(tmp_path / "run")]
    )
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: --policy {policy}") and "damaged" in line
    assert not (tmp_path / "run").exists()
