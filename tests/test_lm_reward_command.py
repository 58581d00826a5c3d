"""`python -m lm.reward`: a reward model from preference pairs that lm.train can use."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny import finish, kill_after, launch

from lm.reward.command import main
from lm.train import main as train_main

RECIPE = ["--world", "tiny", "--epochs", "4", "--lr", "3e-3"]  # the tiny world's own


def test_the_worlds_recipe_matches_its_built_in_reward_model_and_lm_train_uses_it(
    tiny_world, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rm"
    assert main([*RECIPE, "--out", str(out)]) == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    built_in = tiny_world.rm_pair_accuracy
    assert summary["accuracy"] == pytest.approx(built_in, abs=0.02)
    assert (out / "metrics.csv").exists() and (out / "tb").is_dir()
    argv = ["--world", "tiny", "--reward-model", str(out / "reward_model"), "--out"]
    argv += [str(tmp_path / "ppo"), "--total-iterations", "1", "--eval-samples", "8"]
    assert train_main(argv) == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["iterations"] == 1


def test_killed_and_resumed_reward_run_equals_an_uninterrupted_one(
    tiny_world, tmp_path: Path
) -> None:
    argv = [*RECIPE, "--save-every", "4", "--save-total-limit", "10"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    victim = launch(1, [*argv, "--out", str(killed)], tmp_path / "killed", "lm.reward")
    with ThreadPoolExecutor(1) as pool:
        kill = pool.submit(kill_after, victim, killed / "trainer" / "checkpoint-8")
        expected = finish(1, [*argv, "--out", str(whole)], tmp_path / "w", "lm.reward.command")
        kill.result()
    resumed = finish(
        1, [*argv, "--out", str(killed), "--resume"], tmp_path / "r", "lm.reward.command"
    )
    assert resumed["accuracy"] == expected["accuracy"]
    mine = load_file(killed / "reward_model" / "model.safetensors")
    other = load_file(whole / "reward_model" / "model.safetensors")
    assert all(torch.equal(mine[k], other[k]) for k in mine)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--resume"], "has no complete checkpoint"),
        (["--epochs", "0"], "epochs must be >= 1"),
        (["--pairs", "nope.jsonl"], "no such file"),
        (["--model", "./missing"], "no such folder"),
    ],
)
def test_bad_input_is_one_line(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--world", "tiny", "--out", str(tmp_path / "rm"), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
