"""GRPO, RLOO and REINFORCE++ in lm: one trainer, the algorithm only picks the core's estimator."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny import PROMPTS, ROOT, TINY, load, run_cli
from transformers import GPT2ForSequenceClassification

import lm.ppo.trainer
from lm.ppo import ALGO_PRESETS, LMPPOConfig, LMPPOTrainer
from ppo_bridge import group_advantages, masked_whiten

CRITIC_FREE = ["grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline"]


def make(tiny: dict[str, Path], algo: str, **cfg: object) -> LMPPOTrainer:
    policy, tokenizer = load(tiny["policy"])
    rm = GPT2ForSequenceClassification.from_pretrained(tiny["rm"])
    config = LMPPOConfig.for_algo(algo, **{**TINY, "num_generations": 2, **cfg})
    return LMPPOTrainer(config, policy, tokenizer, PROMPTS, reward_model=rm)


def test_presets_and_config_errors() -> None:
    for algo in ALGO_PRESETS:
        assert LMPPOConfig.for_algo(algo).algo == algo
    assert LMPPOConfig.for_algo("grpo").num_generations == 4
    with pytest.raises(ValueError, match="num_generations must be >= 2"):
        LMPPOConfig.for_algo("rloo", num_generations=1)
    with pytest.raises(ValueError, match="whole groups"):
        LMPPOConfig.for_algo("grpo", batch_size=6, minibatch_size=2)
    with pytest.raises(ValueError, match="unknown algo"):
        LMPPOConfig.for_algo("dpo")


def test_groups_are_consecutive_copies_of_one_prompt(tiny: dict[str, Path]) -> None:
    trainer = make(tiny, "grpo", batch_size=8, minibatch_size=4, num_generations=4)
    for _ in range(5):
        indices = trainer.next_prompt_indices()
        assert len(indices) == 8
        assert all(len(set(indices[g : g + 4])) == 1 for g in range(0, 8, 4))


@pytest.mark.parametrize("algo", CRITIC_FREE)
def test_advantages_are_the_cores_estimators(tiny: dict[str, Path], algo: str) -> None:
    kl_in_loss = dict(beta=0.0, kl_coef=0.1) if algo == "grpo" else dict(beta=0.1)
    trainer = make(tiny, algo, kl_target=None, **kl_in_loss)
    indices = trainer.next_prompt_indices()
    ro = trainer.rollout([PROMPTS[i] for i in indices], [trainer.prompt_ids[i] for i in indices])
    gen = torch.Generator().manual_seed(0)
    rewards = torch.randn(ro.mask.shape, generator=gen) * ro.mask
    batch = trainer.advantages(ro, rewards)
    assert "returns" not in batch and "values" not in batch  # no critic
    later = rewards.flip(1).cumsum(1).flip(1) * ro.mask  # the later rewards of the response
    if algo == "reinforce_pp":  # ... whitened
        torch.testing.assert_close(batch["advantages"], masked_whiten(later, ro.mask))
    elif algo == "reinforce_pp_baseline":  # ... less the group's mean return, whitened
        group_mean = later[:, 0].reshape(-1, 2).mean(1).repeat_interleave(2)[:, None]
        centred = (later - group_mean) * ro.mask
        torch.testing.assert_close(batch["advantages"], masked_whiten(centred, ro.mask))
    else:
        baseline = "mean" if algo == "grpo" else "leave_one_out"
        scale = "std" if algo == "grpo" else "none"
        seq = group_advantages(rewards.sum(1), 2, baseline, scale)
        torch.testing.assert_close(batch["advantages"], seq[:, None] * ro.mask)
    assert ("ref_logprobs" in batch) == (algo == "grpo")  # only there is the KL in the loss


@pytest.mark.parametrize("algo", CRITIC_FREE)
def test_critic_free_training_moves_the_policy_not_the_value_head(
    tiny: dict[str, Path], algo: str
) -> None:
    trainer = make(tiny, algo, kl_coef=0.1 if algo == "grpo" else 0.0)
    before = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    history = trainer.train()
    after = trainer.policy.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("lm.") for k in changed)
    assert not any(k.startswith("value_head") for k in changed)
    assert "loss/value_avg" not in history[-1] and "val/explained_variance" not in history[-1]
    assert ("loss/kl_avg" in history[-1]) == (algo == "grpo")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--algo", "grpo", "--num-generations", "1"], "num_generations must be >= 2"),
        (["--algo", "rloo", "--batch-size", "6", "--minibatch-size", "2"], "whole groups"),
    ],
)
def test_cli_bad_algo_input_is_one_line(
    extra: list[str],
    message: str,
    tiny: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--policy", str(tiny["policy"]), "--reward-model", str(tiny["rm"])]
    argv += ["--prompts", str(tiny["prompts.txt"]), "--out", str(tmp_path / "run"), *extra]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and err.startswith("error: ") and message in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.skipif(
    shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
    reason="no torchrun",
)
def test_grpo_in_two_processes(tiny: dict[str, Path], tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    argv = [torchrun, "--nproc_per_node", "2", "-m", "lm.train", "--algo", "grpo"]
    argv += ["--policy", str(tiny["policy"]), "--reward-model", str(tiny["rm"])]
    argv += ["--prompts", str(tiny["prompts.txt"]), "--out", str(tmp_path), "--eval-samples", "4"]
    argv += ["--batch-size", "4", "--minibatch-size", "2", "--total-iterations", "2"]
    argv += ["--num-generations", "2", "--max-new-tokens", "6", "--n-epochs", "1"]
    argv += ["--kl-coef", "0.1"]  # the paper's KL in the loss, across processes
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["num_processes"] == 2 and summary["algo"] == "grpo"
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert len(rows) == 2 and float(rows[-1]["episode"]) == 2 * 2 * 4  # 2 processes x 4 responses
    assert "loss/kl_avg" in rows[0]


def test_weighted_reward_funcs_with_a_reward_model(tiny: dict[str, Path]) -> None:
    """score = w_rm * RM + sum_i w_i * f_i, each reward logged as rewards/<name>."""
    policy, tokenizer = load(tiny["policy"])
    rm = GPT2ForSequenceClassification.from_pretrained(tiny["rm"])

    def length(prompts: list[str], responses: list[str]) -> list[float]:
        return [float(len(r)) for r in responses]

    def has_space(prompts: list[str], responses: list[str]) -> list[float]:
        return [float(" " in r) for r in responses]

    cfg = LMPPOConfig.for_algo("grpo", **{**TINY, "num_generations": 2, "total_iterations": 1})
    cfg.missing_eos_penalty = None
    trainer = LMPPOTrainer(
        cfg,
        policy,
        tokenizer,
        PROMPTS,
        reward_model=rm,
        reward_funcs=[length, has_space],
        reward_weights=[0.5, 0.1, -2.0],
    )
    indices = trainer.next_prompt_indices()
    ro = trainer.rollout([PROMPTS[i] for i in indices], [trainer.prompt_ids[i] for i in indices])
    assert list(ro.rewards) == ["reward_model", "length", "has_space"]
    torch.testing.assert_close(
        ro.scores,
        0.5 * ro.rewards["reward_model"]
        + 0.1 * torch.tensor(length([], ro.responses))
        - 2.0 * torch.tensor(has_space([], ro.responses)),
    )
    metrics = trainer.step()
    assert {"rewards/reward_model", "rewards/length", "rewards/has_space"} <= set(metrics)
    with pytest.raises(ValueError, match="2 reward_weights for 3 rewards"):
        LMPPOTrainer(
            cfg, policy, tokenizer, PROMPTS, reward_model=rm, reward_funcs=[length, has_space],
            reward_weights=[1.0, 1.0],
        )  # fmt: skip
    with pytest.raises(ValueError, match="no reward"):
        LMPPOTrainer(cfg, policy, tokenizer, PROMPTS)
    bad = LMPPOTrainer(cfg, policy, tokenizer, PROMPTS, reward_funcs=lambda p, r: [None] * len(r))
    with pytest.raises(ValueError, match="<lambda> returned NoneType"):
        bad.step()


def test_dr_grpo_constant_defaults_to_max_new_tokens(
    tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dr. GRPO's C is max_new_tokens (as trl's max_completion_length), not the batch's width,
    so one response's weight does not depend on the other responses' lengths."""
    seen = []

    def spy(batch, evaluate, optimizer, cfg, **kw):  # noqa: ANN001, ANN003, ANN202
        seen.append((cfg.loss_norm_constant, batch["mask"].shape[1]))
        return real(batch, evaluate, optimizer, cfg, **kw)

    real = lm.ppo.trainer.ppo_update
    monkeypatch.setattr(lm.ppo.trainer, "ppo_update", spy)
    make(tiny, "grpo", loss_aggregation="seq_mean_token_sum", total_iterations=1).step()
    make(tiny, "grpo", loss_aggregation="seq_mean_token_sum", loss_norm_constant=3.0).step()
    assert seen[0][0] == TINY["max_new_tokens"] and seen[1][0] == 3.0
