"""lm.train checkpoints and --resume: kill -9 + resume equals an uninterrupted run (1 and 2
processes), the run-folder guard, atomic folders, and the one-line errors of issue 8."""

from __future__ import annotations

import csv
import json
import os
import pickle
import random
import shutil
import stat
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import PROMPTS, TINY, finish, kill_after, launch, load, make_trainer, run_cli, untimed
from transformers import AutoModelForCausalLM

import lm.train
import ppo_bridge.atomic
from lm.checkpoint import checkpoints, prune_checkpoints
from lm.ppo import LMPPOConfig, LMPPOTrainer
from lm.rewards import check_scores
from ppo_bridge.atomic import atomic_folder, clean_stale
from ppo_bridge.rundir import LOCK_NAME

FLAGS = ["--eval-samples", "4", "--batch-size", "4", "--minibatch-size", "2", "--n-epochs", "1"]
FLAGS += ["--max-new-tokens", "6", "--total-iterations", "10", "--save-every", "2"]


def sources(tiny: dict[str, Path]) -> list[str]:
    return [
        *("--policy", str(tiny["policy"]), "--reward-model", str(tiny["rm"])),
        *("--prompts", str(tiny["prompts.txt"])),
    ]


@pytest.mark.parametrize("nproc", [1, 2])
def test_killed_and_resumed_run_logs_what_an_uninterrupted_one_does(
    nproc: int, tiny: dict[str, Path], tmp_path: Path
) -> None:
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    victim = launch(nproc, [*sources(tiny), *FLAGS, "--out", str(killed)], tmp_path / "killed")
    with ThreadPoolExecutor(1) as pool:  # the uninterrupted run meanwhile
        kill = pool.submit(kill_after, victim, killed / "checkpoint-4")
        expected = finish(nproc, [*sources(tiny), *FLAGS, "--out", str(whole)], tmp_path / "whole")
        kill.result()
    # the models, prompts and config come from the checkpoint; evaluation flags from the command
    resumed = finish(
        nproc, ["--out", str(killed), "--resume", "--eval-samples", "4"], tmp_path / "r"
    )

    timings = ("ppo_s", "train_s", "wall_s", "out")
    assert {k: v for k, v in resumed.items() if k not in timings} == {
        k: v for k, v in expected.items() if k not in timings
    }
    rows = untimed(killed / "metrics.csv")
    assert [float(r["iteration"]) for r in rows] == list(map(float, range(1, 11)))
    assert rows == untimed(whole / "metrics.csv")
    assert [p.name for p in checkpoints(killed)] == ["checkpoint-8", "checkpoint-10"]  # limit 2
    leftovers = [p for p in killed.iterdir() if p.name.startswith(".") and p.name != LOCK_NAME]
    assert not leftovers  # no temporary folder left
    original = AutoModelForCausalLM.from_pretrained(tiny["policy"]).state_dict()
    for a, b in (
        (AutoModelForCausalLM.from_pretrained(killed / "policy"), whole / "policy"),
        (AutoModelForCausalLM.from_pretrained(killed / "checkpoint-10"), whole / "checkpoint-10"),
    ):
        other = AutoModelForCausalLM.from_pretrained(b).state_dict()
        assert all(torch.equal(v, other[k]) for k, v in a.state_dict().items())
        assert any(not torch.equal(v, original[k]) for k, v in a.state_dict().items())
    if nproc == 1:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(killed / "tb"))
        events.Reload()
        steps = [e.step for e in events.Scalars("objective/kl")]
        assert steps == list(range(1, 11))  # the rows logged after checkpoint-4 were purged
        mode = stat.S_IMODE((killed / "policy" / "model.safetensors").stat().st_mode)
        assert mode == stat.S_IMODE((killed / "metrics.csv").stat().st_mode)  # not 0600


def test_resume_restores_everything_but_the_reference(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    trainer = make_trainer(tiny, out=tmp_path, total_iterations=3, save_every=2, kl_target=1.0)
    trainer.train()
    assert [p.name for p in checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-3"]
    fresh = make_trainer(tiny, out=tmp_path, total_iterations=3, save_every=2, kl_target=1.0)
    fresh.load_checkpoint(tmp_path / "checkpoint-3")
    assert fresh.iteration == 3 and fresh.kl_ctl.value == trainer.kl_ctl.value != 0.2
    assert fresh.prompt_queue == trainer.prompt_queue
    assert torch.equal(fresh.prompt_gen.get_state(), trainer.prompt_gen.get_state())
    trained, loaded = trainer.policy.state_dict(), fresh.policy.state_dict()
    assert all(torch.equal(v, loaded[k]) for k, v in trained.items())
    ref = AutoModelForCausalLM.from_pretrained(tiny["policy"]).state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in fresh.reference.copy.state_dict().items())
    step = next(iter(trainer.optimizer.state_dict()["state"].values()))["step"]
    assert next(iter(fresh.optimizer.state_dict()["state"].values()))["step"] == step


def test_run_folder_guard_and_overwrite(
    tiny: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    base = [*sources(tiny), *FLAGS, "--total-iterations", "1", "--save-every", "1"]
    code, _, err = run_cli([*base, "--out", str(out)], capsys)
    assert code == 0, err
    assert [p.name for p in checkpoints(out)] == ["checkpoint-1"]
    saved = json.loads((out / "checkpoint-1" / "ppo_state.json").read_text())["run_info"]
    assert saved["sources"]["policy"] == str(tiny["policy"].resolve())
    assert saved["sources"]["world"] is None and saved["before"]["metrics"]["score"] is not None
    before = (out / "metrics.csv").read_text()

    def refused(argv: list[str], message: str) -> None:
        code, _, err = run_cli(argv, capsys)
        assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
        assert message in err, err

    refused([*base, "--out", str(out)], "--resume to continue it, --overwrite to start over")
    refused([*base, "--out", str(out), "--resume", "--overwrite"], "exclude each other")
    refused(["--out", str(out), "--resume", "--policy", str(tiny["policy"])], "drop --policy")
    refused(["--out", str(tmp_path / "new"), "--resume"], "no checkpoint-<iteration> folder")
    assert (out / "metrics.csv").read_text() == before and not (tmp_path / "new").exists()
    (out / "checkpoint-7").mkdir()
    (out / "checkpoint-7" / "ppo_state.json").write_text("{}")
    refused(["--out", str(out), "--resume"], "lacks")
    shutil.rmtree(out / "checkpoint-7")

    # a crafted optimizer.pt that would run code when unpickled: refused, nothing runs
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {marker}",))

    payload = pickle.dumps(Evil(), protocol=2)
    (out / "checkpoint-1" / "optimizer.pt").write_bytes(payload)
    refused(["--out", str(out), "--resume", "--eval-samples", "4"], "refused to load it")
    assert not marker.exists()
    pickle.loads(payload)  # what unpickling it would have done
    assert marker.exists()

    # --overwrite starts over: the old checkpoints go (a later --resume would continue them)
    code, _, err = run_cli([*base, "--out", str(out), "--overwrite", "--save-every", "0"], capsys)
    assert code == 0, err
    assert checkpoints(out) == [] and len(untimed(out / "metrics.csv")) == 1


@pytest.mark.parametrize(
    "case, message",
    [
        ("utf8", "is not UTF-8 text"),
        ("unreadable", "cannot read it"),
        ("top_k", "top_k 5 / top_p 1.0"),
        ("top_p", "top_k 0 / top_p 0.9"),
        ("limit", "save_total_limit"),
    ],
)
def test_bad_input_is_one_line_and_leaves_no_run_folder(
    case: str, message: str, tiny: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = [*sources(tiny), "--out", str(tmp_path / "run")]
    bad = tmp_path / "prompts.txt"
    if case == "utf8":
        bad.write_bytes(b"caf\xe9 review\n")
    elif case == "unreadable":
        bad.mkdir()  # a folder named .txt: unreadable as a file (chmod 000 would not stop root)
    argv += {
        "utf8": ["--prompts", str(bad)],
        "unreadable": ["--prompts", str(bad)],
        "top_k": ["--top-k", "5"],
        "top_p": ["--top-p", "0.9"],
        "limit": ["--save-total-limit", "0"],
    }[case]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert message in err
    if case in ("utf8", "unreadable"):
        assert str(bad) in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "returned, message",
    [
        (None, "reward_fn returned NoneType, not 3 scores"),
        ("0.5", "reward_fn returned str, not 3 scores"),
        (["1", "2", "3"], "reward_fn returned str '1' for response 0"),
        ([1.0, 2.0], "reward_fn returned 2 scores for 3 responses"),
        ([1.0, None, 2.0], "returned NoneType None for response 1"),
        (torch.ones(3, 1), "returned Tensor"),
        ([1.0, float("nan"), 0.0], "non-finite"),
    ],
)
def test_check_scores_names_what_came_back(returned: object, message: str) -> None:
    with pytest.raises(ValueError) as err:
        check_scores(returned, 3)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_check_scores_takes_lists_arrays_and_tensors() -> None:
    for scores in ([1, 2.5, np.float32(3)], np.array([1.0, 2.5, 3.0]), torch.tensor([1, 2.5, 3])):
        assert check_scores(scores, 3).tolist() == [1.0, 2.5, 3.0]


def test_reward_fn_returning_strings_stops_training(tiny: dict[str, Path]) -> None:
    def reward_fn(prompts: list[str], responses: list[str]) -> list[str]:
        return [str(len(r)) for r in responses]

    policy, tokenizer = load(tiny["policy"])
    trainer = LMPPOTrainer(LMPPOConfig(**TINY), policy, tokenizer, PROMPTS, reward_funcs=reward_fn)
    with pytest.raises(ValueError, match="reward_fn returned str"):
        trainer.train()


# ------------------------------------------------------------------ lm.checkpoint


def test_atomic_folder_publishes_whole_folders_with_normal_permissions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    final = tmp_path / "policy"
    with atomic_folder(final) as tmp:
        (tmp / "a").write_text("1")
        assert not final.exists()
    assert (final / "a").read_text() == "1"
    plain = tmp_path / "plain"
    plain.mkdir()
    assert stat.S_IMODE(final.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)

    if sys.platform.startswith("linux"):
        assert ppo_bridge.atomic.exchange(final, plain) and (plain / "a").exists()
        ppo_bridge.atomic.exchange(final, plain)
    for exchange in (ppo_bridge.atomic.exchange, lambda a, b: False):  # renameat2, then fallback
        monkeypatch.setattr(ppo_bridge.atomic, "exchange", exchange)
        with atomic_folder(final) as tmp:
            (tmp / "b").write_text("2")
        assert sorted(p.name for p in final.iterdir()) == ["b"]
        with pytest.raises(KeyError), atomic_folder(final) as tmp:
            (tmp / "c").write_text("half")
            raise KeyError("killed mid-write")
        assert sorted(p.name for p in final.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain", "policy"]


def test_clean_stale_removes_leftovers_and_restores_an_old_copy(tmp_path: Path) -> None:
    for name in (".policy.tmp-1", ".checkpoint-4.tmp-2", ".checkpoint-2.del-3", ".tb.del-4"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "half").write_text("x")
    (tmp_path / ".policy.old-5").mkdir()  # the fallback was killed between its two renames
    (tmp_path / ".policy.old-5" / "model").write_text("old")
    (tmp_path / ".mine").mkdir()
    (tmp_path / "notes.policy.tmp-1").write_text("not ours")
    clean_stale(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".mine", "notes.policy.tmp-1", "policy"]
    assert (tmp_path / "policy" / "model").read_text() == "old"

    for i in (2, 4, 10, 6):
        (tmp_path / f"checkpoint-{i}").mkdir()
    (tmp_path / "checkpoint-x").mkdir()
    assert [p.name for p in checkpoints(tmp_path)][-1] == "checkpoint-10"  # numeric order
    prune_checkpoints(tmp_path, 2)
    assert [p.name for p in checkpoints(tmp_path)] == ["checkpoint-6", "checkpoint-10"]
    assert (tmp_path / "checkpoint-x").exists()


def test_rng_states_round_trip_through_weights_only_loading(tmp_path: Path) -> None:
    state = lm.checkpoint.rng_state()
    torch.save(state, tmp_path / "rng.pth")
    draw = (torch.rand(3).tolist(), random.random(), np.random.rand())
    lm.checkpoint.set_rng_state(lm.checkpoint.load_plain(tmp_path / "rng.pth"))
    assert (torch.rand(3).tolist(), random.random(), np.random.rand()) == draw


def test_logger_continues_after_the_checkpoints_iteration(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    from ppo_bridge.logs import MetricsLogger

    first = MetricsLogger(tmp_path)
    for i in range(1, 6):  # a run killed after logging 5 iterations, its checkpoint at 3
        first.log({"iteration": float(i), "objective/kl": 1.0})
    first.close()
    second = MetricsLogger(tmp_path, resume_step=3)
    for i in (4, 5):
        second.log({"iteration": float(i), "objective/kl": 2.0})
    second.close()
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [(r["iteration"], r["objective/kl"]) for r in rows] == [
        ("1.0", "1.0"), ("2.0", "1.0"), ("3.0", "1.0"), ("4.0", "2.0"), ("5.0", "2.0")
    ]  # fmt: skip
    newest = sorted((tmp_path / "tb").iterdir())[-1]
    starts = [e.step for e in EventFileLoader(str(newest)).Load() if e.HasField("session_log")]
    assert starts == [4]  # TensorBoard drops the earlier file's events from step 4 on
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("objective/kl")] == [
        (1, 1.0), (2, 1.0), (3, 1.0), (4, 2.0), (5, 2.0)
    ]  # fmt: skip
