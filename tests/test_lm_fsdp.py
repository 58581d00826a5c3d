"""FSDP (lm.fsdp): accelerate applies it to GPU processes only, so a CPU run under an FSDP config
is refused with one line instead of running silently unsharded; the policy's side of sharding
(sampling through the root, the gathered save) is checked with torch's FSDP2 on 2 CPU processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from tiny import PROMPTS, gpt2_config, make_tokenizer
from transformers import AutoModelForCausalLM, GPT2ForSequenceClassification, GPT2LMHeadModel

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="the CPU refusal; GPUs run bench/gpu_check.sh"
)
def test_an_fsdp_config_on_cpu_is_refused(tmp_path: Path) -> None:
    tok = make_tokenizer()
    GPT2LMHeadModel(gpt2_config(tok)).save_pretrained(tmp_path / "policy")
    GPT2ForSequenceClassification(gpt2_config(tok, num_labels=1)).save_pretrained(tmp_path / "rm")
    for name in ("policy", "rm"):
        tok.save_pretrained(tmp_path / name)
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS))
    argv = [sys.executable, "-m", "lm.train", "--policy", str(tmp_path / "policy")]
    argv += ["--reward-model", str(tmp_path / "rm"), "--prompts", str(tmp_path / "prompts.txt")]
    argv += ["--out", str(tmp_path / "run"), "--batch-size", "4", "--minibatch-size", "2"]
    # what `accelerate launch --config_file configs/fsdp.yaml` sets
    env = {**os.environ, "ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}
    for extra, message in (
        ([], "applies FSDP to GPU processes only"),
        (["--merge-lora", "--lora-r", "2"], "--merge-lora"),
    ):
        proc = subprocess.run(
            argv + extra, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
        assert message in proc.stderr
    assert not (tmp_path / "run" / "policy").exists()


def test_the_policy_sharded_by_fsdp2_on_two_cpu_processes(tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    argv = [torchrun, "--nproc_per_node", "2", str(ROOT / "tests" / "fsdp_cpu_worker.py")]
    argv += [str(tmp_path / "report.json"), str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"}
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    for name in ("full", "lora"):
        r = report[name]
        assert r["sharded"] == "DTensor"
        assert r["forward_max_diff"] < 1e-5 and r["ref_max_diff"] < 1e-5
        assert r["step_changed"] > 1e-4
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "full")
    c_attn = saved.transformer.h[0].attn.c_attn.weight  # whole (32 x 96), not a shard
    assert c_attn.shape == (32, 96)
    assert c_attn.sum().item() == pytest.approx(report["full"]["c_attn_sum"], rel=1e-5)
    base = GPT2LMHeadModel(gpt2_config(make_tokenizer()))
    assert isinstance(PeftModel.from_pretrained(base, tmp_path / "lora"), PeftModel)
