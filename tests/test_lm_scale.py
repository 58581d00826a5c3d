"""Gradient checkpointing in the trainer, the scale bench (bench.lm_scale) at a reduced size, and
bench/gpu_check.sh's refusal without CUDA."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny import PROMPTS, TINY, gpt2_config, make_tokenizer
from transformers import GPT2ForSequenceClassification, GPT2LMHeadModel
from transformers.modeling_layers import GradientCheckpointingLayer

from bench import lm_scale
from lm.lora import add_lora
from lm.ppo import LMPPOConfig, LMPPOTrainer


def trainer(lora: bool, checkpointing: bool) -> LMPPOTrainer:
    torch.manual_seed(0)
    tok = make_tokenizer()
    policy = GPT2LMHeadModel(gpt2_config(tok))
    rm = GPT2ForSequenceClassification(gpt2_config(tok, num_labels=1))
    if lora:
        policy = add_lora(policy, r=4)
    cfg = LMPPOConfig(**{**TINY, "total_iterations": 1, "gradient_checkpointing": checkpointing})
    return LMPPOTrainer(cfg, policy, tok, PROMPTS, reward_model=rm)


@pytest.mark.parametrize("lora", [False, True])
def test_gradient_checkpointing_recomputes_and_changes_no_number(lora: bool) -> None:
    plain = trainer(lora, checkpointing=False)
    first = plain.train()[0]
    checkpointed = trainer(lora, checkpointing=True)
    calls = []

    def counted(func):  # noqa: ANN001, ANN202
        def wrapped(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            calls.append(func)
            return func(*args, **kwargs)

        return wrapped

    layers = [m for m in checkpointed.policy.modules() if isinstance(m, GradientCheckpointingLayer)]
    for layer in layers:
        layer._gradient_checkpointing_func = counted(layer._gradient_checkpointing_func)
    second = checkpointed.train()[0]
    # every layer's forward in the update (4 minibatches of 2, 1 epoch) was checkpointed
    assert len(calls) == len(layers) * 2
    keys = [k for k in first if not k.startswith(("time/", "perf/"))]
    assert {k: second[k] for k in keys} == pytest.approx({k: first[k] for k in keys}, rel=1e-5)
    after = checkpointed.policy.state_dict()
    assert all(torch.allclose(v, after[k], atol=1e-6) for k, v in plain.policy.state_dict().items())


def test_scale_bench_runs_two_modes_at_a_reduced_size(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--layers", "1", "--width", "32", "--heads", "2", "--prompts", "2"]
    argv += ["--new-tokens", "3", "--iterations", "1", "--modes", "full", "lora_gc"]
    assert lm_scale.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    results = json.loads(lines[-1])
    assert set(results) == {"full", "lora_gc"}
    for r in results.values():
        assert r["peak_rss_mb"] > 100 and r["tokens_per_s"] > 0
        assert r["generate_s"] > 0 and r["update_s"] > 0
    assert results["lora_gc"]["trainable_params"] < results["full"]["trainable_params"] / 2
    assert lines[1].split()[:3] == ["mode", "trainable", "peak"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_gpu_check_refuses_without_cuda_in_one_line() -> None:
    script = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.sh"
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: torch sees no CUDA GPU") and proc.stderr.count("\n") == 1
    assert "--cpu" in proc.stderr
