"""The LM adapter (lm.models, lm.sampling, lm.rewards, lm.ppo, lm.train) on tiny random GPT-2s."""

from __future__ import annotations

import ast
import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny import PROMPTS, ROOT, TINY, gpt2_config, load, make_tokenizer, make_trainer, run_cli
from transformers import (
    AutoModelForCausalLM,
    GenerationConfig,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
)

import lm.ppo.trainer
import lm.rewards
import ppo_bridge.estimators
import ppo_bridge.update
from lm.checkpoint import load_weights
from lm.models import PolicyWithValueHead, position_ids
from lm.ppo import LMPPOConfig, LMPPOTrainer
from lm.rewards import per_token_rewards, retokenize, reward_model_scores
from lm.sampling import left_pad, policy_forward, response_mask
from ppo_bridge.estimators import sequence_gae

# ------------------------------------------------------------------ pure functions


def test_per_token_rewards_hand_worked() -> None:
    logprobs = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -1.0, -7.0]])
    ref = torch.tensor([[-1.5, -2.0, -2.0], [-1.0, -1.0, -9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])  # row 2: 2 real tokens, then padding
    scores = torch.tensor([2.0, -1.0])
    rewards, kl = per_token_rewards(logprobs, ref, scores, mask, beta=0.1, kind="k1")
    # k1 = logp - ref_logp: row 1 (0.5, 0, -1); row 2 (0.5, 0, padding -> 0)
    torch.testing.assert_close(kl, torch.tensor([[0.5, 0.0, -1.0], [0.5, 0.0, 0.0]]))
    expected = torch.tensor([[-0.05, 0.0, 0.1 + 2.0], [-0.05, 0.0 - 1.0, 0.0]])
    torch.testing.assert_close(rewards, expected)

    # k3 = exp(log r) - 1 - log r with log r = ref - logp
    rewards, kl = per_token_rewards(logprobs, ref, scores, mask, beta=1.0, kind="k3")
    k3 = [math.exp(-0.5) - 0.5, 0.0, math.e - 2.0]
    torch.testing.assert_close(kl[0], torch.tensor(k3))
    torch.testing.assert_close(rewards[1], torch.tensor([-k3[0], -1.0, 0.0]))


def test_response_mask_stops_at_first_eos() -> None:
    eos = 9
    responses = torch.tensor([[1, 2, eos, eos], [eos, 3, 3, 3], [1, 2, 3, 4]])
    mask, has_eos = response_mask(responses, eos)
    assert mask.int().tolist() == [[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]]
    assert has_eos.tolist() == [True, True, False]


def test_sequence_gae_is_the_cores_gae_over_real_tokens() -> None:
    rewards = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.5, 0.5], [1.0, 1.0, 99.0]])  # 99 sits on padding
    adv, ret = sequence_gae(rewards, values, mask, gamma=1.0, lam=1.0)
    # gamma = lambda = 1: return = reward-to-go to the last real token, no bootstrap after it
    torch.testing.assert_close(ret, torch.tensor([[6.0, 5.0, 3.0], [9.0, 5.0, 0.0]]))
    torch.testing.assert_close(adv, (ret - values) * mask)


def test_logprobs_at_temperature_match_direct_computation_and_sampling() -> None:
    torch.manual_seed(0)
    tokenizer = make_tokenizer()
    model = PolicyWithValueHead(GPT2LMHeadModel(gpt2_config(tokenizer))).eval()
    query, query_mask = left_pad([[5, 6, 7], [8]], tokenizer.pad_token_id)  # left padding
    temperature = 0.7
    gen = model.lm.generate(
        input_ids=query,
        attention_mask=query_mask,
        generation_config=GenerationConfig(
            do_sample=True,
            temperature=temperature,
            top_k=0,
            max_new_tokens=5,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            output_scores=True,
            return_dict_in_generate=True,
        ),
    )
    qr = gen.sequences
    responses = qr[:, query.shape[1] :]
    attention = torch.cat([query_mask, torch.ones_like(responses)], dim=1)
    with torch.no_grad():
        logprobs, entropy, values = policy_forward(model, qr, attention, 5, temperature)
        # direct: one unpadded sequence at a time, log_softmax(logits / T), gathered by hand
        for b in range(2):
            real = qr[b][attention[b].bool()]
            logits = model.lm(real[None]).logits[0]
            n_prompt = len(real) - 5
            for t in range(5):
                direct = torch.log_softmax(logits[n_prompt + t - 1] / temperature, -1)
                assert logprobs[b, t].item() == pytest.approx(
                    direct[real[n_prompt + t]].item(), abs=1e-4
                )
                p = direct.exp()
                assert entropy[b, t].item() == pytest.approx(-(p * direct).sum().item(), abs=1e-4)
    # generate's processed scores are logits / T (no top-k/top-p here): the sampling distribution
    sampled = torch.stack(gen.scores, 1).log_softmax(-1).gather(-1, responses[..., None])[..., 0]
    real = response_mask(responses, tokenizer.eos_token_id)[0]
    torch.testing.assert_close(logprobs[real], sampled[real], atol=1e-4, rtol=0)
    assert values.shape == (2, 5)


def test_reward_model_score_is_read_at_the_last_real_token() -> None:
    torch.manual_seed(0)
    tokenizer = make_tokenizer()
    rm = GPT2ForSequenceClassification(gpt2_config(tokenizer, num_labels=1)).eval()
    ids, mask = left_pad([[5, 6, 7, tokenizer.eos_token_id], [8, 9]], tokenizer.pad_token_id)
    with torch.no_grad():
        scores = reward_model_scores(rm, ids, mask)
        # GPT-2's own pooling on an unpadded row reads the last token: ours must agree, under left
        # padding too, and must read a final EOS (pad-agnostic)
        alone = [
            rm(torch.tensor([s])).logits[0, 0] for s in ([5, 6, 7, tokenizer.eos_token_id], [8, 9])
        ]
    torch.testing.assert_close(scores, torch.stack(alone), atol=1e-5, rtol=0)
    assert ids.shape == mask.shape and position_ids(mask)[1].tolist() == [0, 0, 0, 1]


def test_retokenize_encodes_text_with_the_reward_tokenizer_and_appends_eos() -> None:
    other = make_tokenizer(vocab_size=280, eos="</s>")
    ids, mask = retokenize(["the phone is great", "i love"], torch.tensor([True, False]), other, 32)
    first = other("the phone is great")["input_ids"] + [other.eos_token_id]
    assert ids[0][mask[0].bool()].tolist() == first
    assert ids[1][mask[1].bool()].tolist() == other("i love")["input_ids"]
    with pytest.raises(ValueError, match="context"):
        retokenize(["the phone is great " * 10], torch.tensor([True]), other, 8)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="multiple of minibatch_size"):
        LMPPOConfig(batch_size=6, minibatch_size=4)
    with pytest.raises(ValueError, match="temperature"):
        LMPPOConfig(temperature=0.0)
    with pytest.raises(ValueError, match="kl_estimator"):
        LMPPOConfig(kl_estimator="k4")
    with pytest.raises(ValueError, match="clip_eps"):
        LMPPOConfig(clip_eps=0.0)
    with pytest.raises(ValueError, match="adaptive beta"):
        LMPPOConfig(beta=0.0)
    assert LMPPOConfig(beta=0.0, kl_target=None).beta == 0.0
    cfg = LMPPOConfig()
    assert (cfg.gamma, cfg.gae_lambda, cfg.clip_vf is not None) == (1.0, 0.95, True)


# ------------------------------------------------------------------ the trainer


def test_lm_calls_the_cores_functions_and_defines_no_formula_of_its_own(
    tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: dict[str, int] = {}

    def spy(module: object, name: str) -> None:
        real = getattr(module, name)

        def wrapped(*args: object, **kwargs: object) -> object:
            calls[name] = calls.get(name, 0) + 1
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapped)

    spy(ppo_bridge.estimators, "gae")
    spy(lm.rewards, "kl_estimate")
    spy(lm.ppo.trainer, "ppo_update")
    spy(ppo_bridge.update, "clipped_surrogate_loss")
    spy(ppo_bridge.update, "value_loss")
    make_trainer(tiny, total_iterations=1).train()
    assert set(calls) == {
        "gae",
        "kl_estimate",
        "ppo_update",
        "clipped_surrogate_loss",
        "value_loss",
    }

    formulas = {"gae", "whiten", "clip", "kl", "surrogate", "value_loss", "advantage"}
    for path in (ROOT / "lm").rglob("*.py"):
        if path.is_relative_to(ROOT / "lm" / "world"):
            continue
        tree = ast.parse(path.read_text())
        defs = [n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
        # LMPPOTrainer.advantages reads the core's estimator table; lm.agent.credit lays the
        # turns of episodes out for the core's multi_turn_gae, group_advantages, masked_whiten
        allowed = (
            "advantages",
            "gae_advantages",
            "reinforce_pp_advantages",
            "group_episode_advantages",
        )
        own = [d for d in defs if d not in allowed and any(f in d for f in formulas)]
        assert own == [], f"{path.name} defines {own}"
        assert "clamp(ratio" not in path.read_text() and ".exp() - 1" not in path.read_text()


def test_two_iterations_change_the_weights_and_log_trl_metrics(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    trainer = make_trainer(tiny, out=tmp_path, missing_eos_penalty=1.0, normalize_scores=True)
    before = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    history = trainer.train()
    assert len(history) == 2
    after = trainer.policy.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any(k.startswith("lm.") for k in changed) and "value_head.weight" in changed
    names = {
        "objective/kl", "objective/entropy", "objective/non_score_reward", "objective/rlhf_reward",
        "objective/scores", "policy/approxkl_avg", "policy/clipfrac_avg", "loss/policy_avg",
        "loss/value_avg", "val/ratio", "objective/eos_fraction", "objective/beta",
        "time/generate", "time/score", "time/update",
    }  # fmt: skip
    assert names <= set(history[-1])
    assert all(math.isfinite(history[-1][k]) for k in names)
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and "objective/kl" in rows[0]
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tb").iterdir())
    # the reference stays frozen at the start point
    ref = trainer.reference.copy.state_dict()
    assert all(torch.equal(ref[k], before["lm." + k]) for k in ref)


def test_same_seed_same_numbers(tiny: dict[str, Path]) -> None:
    first = make_trainer(tiny, total_iterations=1).train()[0]
    second = make_trainer(tiny, total_iterations=1).train()[0]
    keys = [k for k in first if not k.startswith(("time/", "perf/"))]
    assert {k: first[k] for k in keys} == {k: second[k] for k in keys}


def test_reward_fn_and_adaptive_beta(tiny: dict[str, Path]) -> None:
    policy, tokenizer = load(tiny["policy"])
    seen: list[tuple[str, str]] = []

    def reward_fn(prompts: list[str], responses: list[str]) -> list[float]:
        seen.extend(zip(prompts, responses, strict=True))
        return [float(len(r)) for r in responses]

    cfg = LMPPOConfig(
        **{**TINY, "kl_target": 0.01, "kl_horizon": 10, "beta": 0.1, "missing_eos_penalty": 2.0}
    )
    trainer = LMPPOTrainer(cfg, policy, tokenizer, PROMPTS, reward_funcs=reward_fn)
    history = trainer.train()
    assert len(seen) == 8 and all(p in PROMPTS for p, _ in seen)
    # the score is the callable's, minus the penalty for each response that did not end in EOS
    first = history[0]
    expected = sum(len(r) for _, r in seen[:4]) / 4 - 2.0 * (1 - first["objective/eos_fraction"])
    assert first["objective/scores"] == pytest.approx(expected, rel=1e-5)
    # adaptive beta (Ziegler): beta *= 1 + clip(KL / target - 1, -0.2, 0.2) * responses / horizon
    assert first["objective/kl"] == 0.0  # the policy starts as the reference
    assert history[1]["objective/beta"] == pytest.approx(0.1 * (1 - 0.2 * 4 / 10))
    error = max(-0.2, min(0.2, history[1]["objective/kl"] / 0.01 - 1))
    assert trainer.kl_ctl.value == pytest.approx(history[1]["objective/beta"] * (1 + error * 0.4))


def test_reward_model_with_another_tokenizer_is_fed_retokenized_text(
    tiny: dict[str, Path],
) -> None:
    policy, tokenizer = load(tiny["policy"])
    rm = GPT2ForSequenceClassification.from_pretrained(tiny["rm_o"])
    _, rm_tokenizer = load(tiny["rm_o"])
    trainer = LMPPOTrainer(
        LMPPOConfig(**TINY),
        policy,
        tokenizer,
        PROMPTS,
        reward_model=rm,
        reward_tokenizer=rm_tokenizer,
    )
    assert trainer.scorer.retokenize
    ro = trainer.rollout(PROMPTS[:4], trainer.prompt_ids[:4])
    texts = [p + r for p, r in zip(ro.prompts, ro.responses, strict=True)]
    ids, mask = retokenize(texts, ro.has_eos, rm_tokenizer, 32)
    with torch.no_grad():
        torch.testing.assert_close(ro.scores, reward_model_scores(rm, ids, mask))


def test_nonfinite_loss_stops_before_writing(tiny: dict[str, Path], tmp_path: Path) -> None:
    trainer = make_trainer(tiny, out=tmp_path, save_every=1)
    trainer.kl_ctl.value = float("nan")  # poisons every reward, so the loss
    before = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    with pytest.raises(FloatingPointError, match="non-finite"):
        trainer.train()
    assert not (tmp_path / "policy").exists()
    assert all(torch.equal(v, trainer.policy.state_dict()[k]) for k, v in before.items())


# ------------------------------------------------------------------ the CLI


def test_cli_trains_saves_and_round_trips(
    tiny: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--policy", str(tiny["policy"]), "--reward-model", str(tiny["rm"])]
    argv += ["--prompts", str(tiny["prompts.txt"]), "--out", str(tmp_path), "--eval-samples", "4"]
    argv += ["--batch-size", "4", "--minibatch-size", "2", "--total-iterations", "2"]
    argv += ["--max-new-tokens", "6", "--n-epochs", "1", "--kl-target", "none"]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    for key in ("gold_before", "gold_after", "rm_before", "rm_after", "kl", "eos_fraction"):
        assert key in summary
    assert summary["num_processes"] == 1 and summary["iterations"] == 2
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert (tmp_path / "metrics.csv").exists()

    saved = tmp_path / "policy"
    model = AutoModelForCausalLM.from_pretrained(saved)
    assert isinstance(model, GPT2LMHeadModel)
    original = GPT2LMHeadModel.from_pretrained(tiny["policy"])
    assert any(
        not torch.equal(a, b)
        for a, b in zip(model.parameters(), original.parameters(), strict=True)
    )
    head = PolicyWithValueHead(model)
    load_weights(head, saved)
    assert head.value_head.weight.abs().sum() > 0
    assert json.loads((saved / "ppo_state.json").read_text())["iteration"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".policy")]


@pytest.mark.parametrize(
    "case, message",
    [
        ("bare", "not a causal LM"),
        ("classifier", "not a causal LM"),
        ("rm2", "--reward-label"),
        ("empty", "empty"),
        ("long", "context"),
        ("missing", "no such folder"),
        ("config", "clip_eps"),
        ("batch", "multiple of minibatch_size"),
    ],
)
def test_cli_bad_input_is_one_line(
    case: str,
    message: str,
    tiny: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = {
        "--policy": tiny["policy"],
        "--reward-model": tiny["rm"],
        "--prompts": tiny["prompts.txt"],
        "--out": tmp_path,
    }
    extra: list[str] = []
    if case == "bare":
        args["--policy"] = tiny["bare"]
    elif case == "classifier":
        args["--policy"] = tiny["rm"]
    elif case == "rm2":
        args["--reward-model"] = tiny["rm2"]
    elif case in ("empty", "long"):
        args["--prompts"] = tiny[f"{case}.txt"]
    elif case == "missing":
        args["--policy"] = tmp_path / "missing"
    elif case == "config":
        extra = ["--clip-eps", "0"]
    elif case == "batch":
        extra = ["--batch-size", "6", "--minibatch-size", "4"]
    argv = [x for k, v in args.items() for x in (k, str(v))] + extra
    code, out, err = run_cli(argv, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and message in lines[0] and "Traceback" not in err
    assert not (tmp_path / "policy").exists()


def test_load_prompts_from_a_saved_dataset(tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict

    from lm.data import load_prompts

    DatasetDict(
        {
            "train": Dataset.from_dict({"prompt": ["a", "b"]}),
            "test": Dataset.from_dict({"prompt": ["c"]}),
        }
    ).save_to_disk(tmp_path / "dd")
    assert load_prompts(str(tmp_path / "dd"), "prompt") == (["a", "b"], ["c"])
    Dataset.from_dict({"text": ["a"]}).save_to_disk(tmp_path / "d")
    with pytest.raises(ValueError, match="--prompt-column"):
        load_prompts(str(tmp_path / "d"), "prompt")
    assert load_prompts(str(tmp_path / "d"), "text") == (["a"], ["a"])


def test_cli_exit_status_in_a_subprocess(tiny: dict[str, Path]) -> None:
    argv = [sys.executable, "-m", "lm.train", "--policy", str(tiny["bare"])]
    argv += ["--reward-model", str(tiny["rm"]), "--prompts", str(tiny["prompts.txt"])]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr


@pytest.mark.skipif(
    shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
    reason="no torchrun",
)
def test_two_processes_with_torchrun(tiny: dict[str, Path], tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    argv = [torchrun, "--nproc_per_node", "2", "-m", "lm.train"]
    argv += ["--policy", str(tiny["policy"]), "--reward-model", str(tiny["rm"])]
    argv += ["--prompts", str(tiny["prompts.txt"]), "--out", str(tmp_path), "--eval-samples", "4"]
    argv += ["--batch-size", "4", "--minibatch-size", "2", "--total-iterations", "2"]
    argv += ["--max-new-tokens", "6", "--n-epochs", "2", "--target-kl", "0.001"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["num_processes"] == 2 and summary["iterations"] == 2
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert len(rows) == 2 and float(rows[-1]["episode"]) == 2 * 2 * 4  # 2 processes x 4 prompts
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "policy") is not None
