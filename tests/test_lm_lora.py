"""LoRA policies (lm.lora): the adapter-off reference, what trains, adapter and merged saving."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from tiny import (
    PROMPTS,
    TINY,
    finish,
    gpt2_config,
    kill_after,
    launch,
    make_tokenizer,
    run_cli,
    untimed,
)
from transformers import (
    AutoModelForCausalLM,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)

from lm.lora import add_lora, merge_lora
from lm.models import load_tokenizer
from lm.ppo import LMPPOConfig, LMPPOTrainer
from lm.sampling import reference_logprobs


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lora")
    torch.manual_seed(0)
    tok = make_tokenizer()
    for name, model in {
        "policy": GPT2LMHeadModel(gpt2_config(tok)),
        "rm": GPT2ForSequenceClassification(gpt2_config(tok, num_labels=1)),
    }.items():
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
    (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    return {p.name: p for p in root.iterdir()}


def lora_trainer(saved: dict[str, Path], **cfg: object) -> LMPPOTrainer:
    policy = add_lora(AutoModelForCausalLM.from_pretrained(saved["policy"]), r=4)
    rm = GPT2ForSequenceClassification.from_pretrained(saved["rm"])
    config = LMPPOConfig.for_algo(**{**TINY, "lr": 1e-2, **cfg})
    return LMPPOTrainer(
        config, policy, load_tokenizer(str(saved["policy"])), PROMPTS, reward_model=rm
    )


def leaves(names: set[str]) -> set[str]:
    return {n.rsplit(".", 1)[-1] for n in names}


def test_default_targets_are_every_linear_layer_but_the_head() -> None:
    tok = make_tokenizer()
    gpt2 = add_lora(GPT2LMHeadModel(gpt2_config(tok)), r=2)
    assert leaves(gpt2.peft_config["default"].target_modules) == {"c_attn", "c_proj", "c_fc"}
    llama = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    targets = add_lora(LlamaForCausalLM(llama), r=2).peft_config["default"].target_modules
    assert leaves(targets) == {f"{m}_proj" for m in ("q", "k", "v", "o", "gate", "up", "down")}
    with pytest.raises(ValueError, match="--lora-r must be >= 1"):
        add_lora(GPT2LMHeadModel(gpt2_config(tok)), r=0)


@pytest.mark.parametrize("algo", ["ppo", "grpo", "rloo", "reinforce_pp"])
def test_only_adapters_and_value_head_train_and_the_reference_is_the_base_model(
    saved: dict[str, Path], algo: str
) -> None:
    trainer = lora_trainer(saved, algo=algo, total_iterations=1)
    assert trainer.reference.copy is None  # no second copy of the weights: the policy, adapters off
    before = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    trainer.train()
    after = trainer.policy.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("lora_" in k or k.startswith("value_head.") for k in changed)
    assert any("lora_B" in k for k in changed)
    assert ("value_head.weight" in changed) == (algo == "ppo")

    # adapters off: the original model's log-probs; adapters on: the trained policy's, which differ
    original = AutoModelForCausalLM.from_pretrained(saved["policy"]).eval()
    ro = trainer.rollout(PROMPTS[:4], trainer.prompt_ids[:4])
    n_resp = ro.mask.shape[1]
    with torch.no_grad():
        expected = reference_logprobs(original, ro.query_responses, ro.attention_mask, n_resp, 1.0)
    torch.testing.assert_close(ro.ref_logprobs, expected, atol=1e-5, rtol=0)
    assert (ro.logprobs - ro.ref_logprobs).abs().max() > 1e-3


def test_adapter_and_merged_model_round_trip(saved: dict[str, Path], tmp_path: Path) -> None:
    trainer = lora_trainer(saved, total_iterations=2)
    trainer.train()
    ids = torch.tensor([trainer.prompt_ids[0] + trainer.prompt_ids[1]])
    with torch.no_grad():
        trained = trainer.policy.lm(input_ids=ids).logits
    trainer.save(tmp_path / "policy")
    names = {p.name for p in (tmp_path / "policy").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= names
    assert "model.safetensors" not in names  # the adapter only, not the base weights

    base = AutoModelForCausalLM.from_pretrained(saved["policy"])
    loaded = PeftModel.from_pretrained(base, tmp_path / "policy").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, trained, atol=1e-5, rtol=0)

    merge_lora(trainer.policy)
    trainer.save(tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    assert isinstance(merged, GPT2LMHeadModel)
    assert not any("lora" in k for k in merged.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, trained, atol=1e-5, rtol=0)


def test_cli_lora_writes_the_adapter_and_the_merged_model(
    saved: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--policy", str(saved["policy"]), "--reward-model", str(saved["rm"])]
    argv += ["--prompts", str(saved["prompts.txt"]), "--eval-samples", "4"]
    argv += ["--batch-size", "4", "--minibatch-size", "2", "--total-iterations", "2"]
    argv += ["--max-new-tokens", "6", "--n-epochs", "1"]
    out = tmp_path / "run"
    code, stdout, err = run_cli([*argv, "--out", str(out), "--lora-r", "4", "--merge-lora"], capsys)
    assert code == 0, err
    assert json.loads(stdout.strip().splitlines()[-1])["iterations"] == 2
    assert (out / "policy" / "adapter_config.json").exists()
    assert isinstance(AutoModelForCausalLM.from_pretrained(out / "policy-merged"), GPT2LMHeadModel)

    for extra, message in (
        (["--merge-lora"], "pass --lora-r too"),
        (["--lora-r", "4", "--lora-target-modules", "nope"], "nope"),
    ):
        code, _, err = run_cli([*argv, "--out", str(tmp_path / "bad"), *extra], capsys)
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
        assert message in err


@pytest.mark.parametrize("algo", ["ppo", "grpo", "rloo", "reinforce_pp"])
def test_killed_and_resumed_lora_run_equals_an_uninterrupted_one(
    algo: str, saved: dict[str, Path], tmp_path: Path
) -> None:
    """LoRA checkpoints resume bit for bit like full fine-tuning: adapter, value head, optimizer,
    RNGs; --resume alone takes the LoRA settings from the checkpoint."""
    argv = ["--policy", str(saved["policy"]), "--reward-model", str(saved["rm"])]
    argv += ["--prompts", str(saved["prompts.txt"]), "--eval-samples", "4", "--algo", algo]
    argv += ["--batch-size", "4", "--minibatch-size", "2", "--total-iterations", "8"]
    argv += ["--max-new-tokens", "6", "--n-epochs", "1", "--save-every", "2", "--lr", "1e-2"]
    argv += ["--num-generations", "2", "--lora-r", "4"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    victim = launch(1, [*argv, "--out", str(killed)], tmp_path / "killed")
    with ThreadPoolExecutor(1) as pool:
        kill = pool.submit(kill_after, victim, killed / "checkpoint-4")
        expected = finish(1, [*argv, "--out", str(whole)], tmp_path / "whole")
        kill.result()
    resumed = finish(1, ["--out", str(killed), "--resume", "--eval-samples", "4"], tmp_path / "r")
    timings = ("ppo_s", "train_s", "wall_s", "out")
    assert {k: v for k, v in resumed.items() if k not in timings} == {
        k: v for k, v in expected.items() if k not in timings
    }
    assert untimed(killed / "metrics.csv") == untimed(whole / "metrics.csv")
    for name in ("adapter_model.safetensors", "value_head.safetensors"):
        mine, other = load_file(killed / "policy" / name), load_file(whole / "policy" / name)
        assert mine.keys() == other.keys() and all(torch.equal(mine[k], other[k]) for k in mine)
