"""lm.dpo as a full citizen of the run skeleton: kill -9 + --resume equals an uninterrupted run
(1 process and torchrun 2), and what its folders hold."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from tiny import PROMPTS, finish, kill_after, launch, untimed
from transformers import AutoModelForCausalLM

from lm.checkpoint import checkpoints
from ppo_bridge.rundir import LOCK_NAME

FLAGS = ["--eval-samples", "4", "--batch-size", "3", "--epochs", "3", "--max-new-tokens", "6"]
FLAGS += ["--save-every", "2", "--lr", "1e-3"]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 preference pairs over the tiny prompts, as JSON lines."""
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    good, bad = [" great and quiet", " sturdy"], [" bad and it broke", " poor"]
    rows = [
        {"prompt": p, "chosen": good[i % 2], "rejected": bad[(i // 2) % 2]}
        for i, p in enumerate(PROMPTS * 2)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def sources(tiny: dict[str, Path], pairs: Path) -> list[str]:
    return [
        "--policy",
        str(tiny["policy"]),
        "--reward-model",
        str(tiny["rm"]),
        "--pairs",
        str(pairs),
    ]


@pytest.mark.parametrize("nproc", [1, 2])
def test_killed_and_resumed_dpo_run_equals_an_uninterrupted_one(
    nproc: int, tiny: dict[str, Path], pairs: Path, tmp_path: Path
) -> None:
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    argv = [*sources(tiny, pairs), *FLAGS]
    victim = launch(nproc, [*argv, "--out", str(killed)], tmp_path / "killed", "lm.dpo")
    with ThreadPoolExecutor(1) as pool:
        kill = pool.submit(kill_after, victim, killed / "checkpoint-4")
        expected = finish(nproc, [*argv, "--out", str(whole)], tmp_path / "whole", "lm.dpo.command")
        kill.result()
    resumed = finish(
        nproc,
        ["--out", str(killed), "--resume", "--eval-samples", "4"],
        tmp_path / "r",
        "lm.dpo.command",
    )
    timings = ("train_s", "wall_s", "reference_s", "out")
    assert {k: v for k, v in resumed.items() if k not in timings} == {
        k: v for k, v in expected.items() if k not in timings
    }
    steps = expected["steps"]
    rows = untimed(killed / "metrics.csv")
    assert [float(r["iteration"]) for r in rows] == list(map(float, range(1, steps + 1)))
    assert rows == untimed(whole / "metrics.csv")
    last = checkpoints(killed)[-1]
    assert last.name == f"checkpoint-{steps}" and len(checkpoints(killed)) == 2
    for a, b in ((killed / "policy", whole / "policy"), (last, whole / last.name)):
        mine = AutoModelForCausalLM.from_pretrained(a).state_dict()
        other = AutoModelForCausalLM.from_pretrained(b).state_dict()
        assert all(torch.equal(v, other[k]) for k, v in mine.items())
    leftovers = [p for p in killed.iterdir() if p.name.startswith(".") and p.name != LOCK_NAME]
    assert not leftovers
    # a DPO policy is a plain model folder; a checkpoint adds the DPO state, not PPO's
    assert not (killed / "policy" / "value_head.safetensors").exists()
    assert {"dpo_state.json", "optimizer.pt", "rng_state_0.pth"} <= {p.name for p in last.iterdir()}
    assert not (last / "ppo_state.json").exists()
