"""Tiny random GPT-2s and their data, shared by the LM tests (fixtures in conftest.py)."""

from __future__ import annotations

import csv
import importlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil  # a dependency of accelerate
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    GPT2Model,
    PreTrainedTokenizerFast,
)

from lm.ppo import LMPPOConfig, LMPPOTrainer

TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")

ROOT = Path(__file__).resolve().parents[1]
CORPUS = [
    "the phone is great and the battery lasts long",
    "the blender is bad and it broke after a week",
    "i love this kettle, it is quick and quiet",
    "this lamp is poor, the light flickers and the switch is weak",
    "a solid chair, sturdy and comfortable",
] * 20
PROMPTS = ["the phone is", "this lamp", "i love", "the blender is", "a solid", "the kettle"] * 2
TINY = dict(batch_size=4, minibatch_size=2, n_epochs=1, total_iterations=2, max_new_tokens=6)


def make_tokenizer(vocab_size: int = 300, eos: str = "<eos>") -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on CORPUS, with EOS and a separate PAD token."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[eos, "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token="<pad>")


def gpt2_config(tokenizer: PreTrainedTokenizerFast, **kw: object) -> GPT2Config:
    return GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=32,
        n_embd=32,
        n_layer=2,
        n_head=2,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **kw,
    )


def save_tiny(root: Path) -> dict[str, Path]:
    """Saved folders in `root`: policy, reward models, and the bad inputs of the CLI."""
    torch.manual_seed(0)
    tokenizer = make_tokenizer()
    for name, model in {
        "policy": GPT2LMHeadModel(gpt2_config(tokenizer)),
        "rm": GPT2ForSequenceClassification(gpt2_config(tokenizer, num_labels=1)),
        "rm2": GPT2ForSequenceClassification(gpt2_config(tokenizer, num_labels=2)),
        "bare": GPT2Model(gpt2_config(tokenizer)),
    }.items():
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    other = make_tokenizer(vocab_size=280, eos="</s>")
    GPT2ForSequenceClassification(gpt2_config(other, num_labels=1)).save_pretrained(root / "rm_o")
    other.save_pretrained(root / "rm_o")
    (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    (root / "empty.txt").write_text("\n\n")
    (root / "long.txt").write_text("the phone is great " * 20 + "\n")
    return {p.name: p for p in root.iterdir()}


def load(path: Path) -> tuple[GPT2LMHeadModel, PreTrainedTokenizerFast]:
    from lm.models import load_tokenizer

    return AutoModelForCausalLM.from_pretrained(path), load_tokenizer(str(path))


def make_trainer(tiny: dict[str, Path], out: Path | None = None, **cfg: object) -> LMPPOTrainer:
    policy, tokenizer = load(tiny["policy"])
    rm = GPT2ForSequenceClassification.from_pretrained(tiny["rm"])
    return LMPPOTrainer(
        LMPPOConfig(**{**TINY, **cfg}), policy, tokenizer, PROMPTS, reward_model=rm, out_dir=out
    )


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`python -m lm.train argv` in this process: (exit status, stdout, stderr)."""
    from lm.train import main

    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------ runs in other processes


def launch(
    nproc: int, argv: list[str], log: Path, module: str = "lm.train"
) -> subprocess.Popen[str]:
    """`module` in 1 process or under torchrun; stdout and stderr go to log.out / log.err."""
    prefix = [sys.executable]
    if nproc > 1:
        prefix = [TORCHRUN, "--standalone", f"--nproc_per_node={nproc}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    with log.with_suffix(".out").open("w") as out, log.with_suffix(".err").open("w") as err:
        argv = [*prefix, "-m", module, *argv]
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=err, text=True)


def finish(nproc: int, argv: list[str], log: Path, module: str = "lm.train") -> dict:
    """The summary of a run that must succeed: in this process for 1, under torchrun for more."""
    if nproc == 1:
        torch.set_num_threads(1)  # as the CLI runs it (--threads 1): 2 threads vary in the last bit
        command = importlib.import_module(module)
        return command.run(command.parse_args(argv))
    proc = launch(nproc, argv, log, module)
    assert proc.wait(timeout=600) == 0, log.with_suffix(".err").read_text()[-3000:]
    return json.loads(log.with_suffix(".out").read_text().strip().splitlines()[-1])


def kill_after(proc: subprocess.Popen[str], path: Path) -> None:
    """SIGKILL the process and its children (torchrun's workers) as soon as `path` exists."""
    deadline = time.monotonic() + 600
    while not path.exists():
        assert proc.poll() is None, f"the run ended before {path.name} appeared"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    family = psutil.Process(proc.pid).children(recursive=True)
    for p in [*family, psutil.Process(proc.pid)]:
        p.kill()
    assert proc.wait() == -9


def untimed(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return [
            {k: v for k, v in row.items() if not k.startswith(("time/", "perf/"))}
            for row in csv.DictReader(f)
        ]
