"""DPO / IPO: the core's `dpo_loss` against the formulas and trl's DPOTrainer, the sequence
log-probs, and `python -m lm.dpo` on the tiny toy world (a 2-step run and each bad input)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM

import lm.dpo.trainer
from lm.dpo import (
    LMDPOConfig,
    LMDPOTrainer,
    main,
    pack_pairs,
    packed_sequence_logprobs,
    tokenize_pairs,
)
from lm.models import load_tokenizer
from lm.world import World, WorldConfig, build_world, pairs_of_world
from ppo_bridge import dpo_loss


def softplus(x: float) -> float:
    """-log sigmoid(-x), in float64."""
    return math.log1p(math.exp(-abs(x))) + max(x, 0.0)


# ------------------------------------------------------------------ the loss, by hand


def test_dpo_loss_hand_worked() -> None:
    pc, pr = torch.tensor([-1.0, -4.0]), torch.tensor([-3.0, -2.0])
    rc, rr = torch.tensor([-2.0, -3.0]), torch.tensor([-2.0, -2.5])
    # h = (pc - rc) - (pr - rr) = [1 - (-1), -1 - 0.5] = [2, -1.5]; beta h = [1, -0.75]
    loss, stats = dpo_loss(pc, pr, rc, rr, beta=0.5)
    assert loss.item() == pytest.approx((math.log1p(math.exp(-1)) + math.log1p(math.exp(0.75))) / 2)
    assert stats["rewards/chosen"].item() == pytest.approx(0.0)  # 0.5 * mean(1, -1)
    assert stats["rewards/rejected"].item() == pytest.approx(-0.125)  # 0.5 * mean(-1, 0.5)
    assert stats["rewards/accuracies"].item() == 0.5  # 0.5 > -0.5, but -0.5 < 0.25
    assert stats["rewards/margins"].item() == pytest.approx(0.125)  # 0.5 * mean(2, -1.5)
    # cDPO, eps = 0.1: (1 - eps) softplus(-beta h) + eps softplus(beta h)
    cdpo, _ = dpo_loss(pc, pr, rc, rr, beta=0.5, label_smoothing=0.1)
    expected = 0.9 * softplus(-1) + 0.1 * softplus(1) + 0.9 * softplus(0.75) + 0.1 * softplus(-0.75)
    assert cdpo.item() == pytest.approx(expected / 2)
    # IPO: (h - 1 / (2 beta))^2 = [(2 - 1)^2, (-1.5 - 1)^2]
    ipo, _ = dpo_loss(pc, pr, rc, rr, beta=0.5, kind="ipo")
    assert ipo.item() == pytest.approx((1.0 + 6.25) / 2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"beta": 0.0}, "beta"),
        ({"label_smoothing": 0.5}, "label_smoothing"),
        ({"kind": "ipo", "label_smoothing": 0.1}, "sigmoid loss only"),
        ({"kind": "hinge"}, "kind"),
    ],
)
def test_dpo_loss_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    x = torch.zeros(2)
    with pytest.raises(ValueError, match=message):
        dpo_loss(x, x, x, x, **{"beta": 0.1, **kwargs})


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(*[st.floats(-60, 0, width=32)] * 4), min_size=1, max_size=8),
    st.floats(0.01, 2.0),
    st.sampled_from([0.0, 0.1, 0.3]),
    st.sampled_from(["sigmoid", "ipo"]),
)
def test_dpo_loss_and_gradient_match_the_formulas(
    rows: list[tuple[float, ...]], beta: float, eps: float, kind: str
) -> None:
    eps = eps if kind == "sigmoid" else 0.0
    pc, pr, rc, rr = (torch.tensor(col, dtype=torch.float64) for col in zip(*rows, strict=True))
    pc.requires_grad_(True)
    pr.requires_grad_(True)
    loss, stats = dpo_loss(pc, pr, rc, rr, beta, kind, eps)
    loss.backward()
    n = len(rows)
    hs = [(a - c) - (b - d) for a, b, c, d in rows]
    if kind == "sigmoid":
        expected = sum((1 - eps) * softplus(-beta * h) + eps * softplus(beta * h) for h in hs) / n
        # d loss / d h = beta * (-(1 - eps) sigmoid(-beta h) + eps sigmoid(beta h)) / n
        sig = [1 / (1 + math.exp(beta * h)) for h in hs]  # sigmoid(-beta h)
        grad = [beta * (-(1 - eps) * s + eps * (1 - s)) / n for s in sig]
    else:
        expected = sum((h - 1 / (2 * beta)) ** 2 for h in hs) / n
        grad = [2 * (h - 1 / (2 * beta)) / n for h in hs]
    assert loss.item() == pytest.approx(expected, rel=1e-9, abs=1e-9)
    torch.testing.assert_close(pc.grad, torch.tensor(grad, dtype=torch.float64))
    torch.testing.assert_close(pr.grad, -torch.tensor(grad, dtype=torch.float64))
    assert all(not v.requires_grad for v in stats.values())
    margins = [beta * h for h in hs]
    assert stats["rewards/margins"].item() == pytest.approx(sum(margins) / n, abs=1e-9)
    assert stats["rewards/accuracies"].item() == pytest.approx(sum(m > 0 for m in margins) / n)


# ------------------------------------------------------------------ on the tiny world


@pytest.fixture(scope="module")
def world() -> World:
    """The tiny toy world, from lm.world's cache (built there once if missing)."""
    torch.set_num_threads(1)
    return build_world(None, WorldConfig.tiny())


def perturbed_sft(world: World) -> AutoModelForCausalLM:
    """The SFT policy with noise on every weight, so that it differs from the reference."""
    model = AutoModelForCausalLM.from_pretrained(world.sft_dir)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model


def test_packed_logprobs_against_one_sequence_at_a_time(world: World) -> None:
    tokenizer = load_tokenizer(str(world.sft_dir))
    model = perturbed_sft(world).eval()
    prompts = [[0, 297, 356], [0, 301], [0, 5, 6, 7]]
    chosen = [[433, 264, 1], [16, 17, 18, 19, 1], [20, 1]]
    rejected = [[40, 1], [433, 1], list(range(30, 50)) + [1]]
    packed = pack_pairs(prompts, chosen, rejected, tokenizer.pad_token_id, width=17)
    assert packed.ids.shape == (2, 27)  # pairs of 8 and 9 tokens share a row; 27 widens the rows
    assert packed.ids[0, :8].tolist() == [0, 297, 356, 433, 264, 1, 40, 1]
    assert packed.position_ids[0, :8].tolist() == [0, 1, 2, 3, 4, 5, 3, 4]  # rejected restarts
    assert not packed.allowed[0, 6, 3] and packed.allowed[0, 6, 2]  # sees the prompt, not chosen
    assert not packed.allowed[0, 8, 2] and packed.allowed[0, 9, 8]  # nor another pair's tokens
    logps, lengths = packed_sequence_logprobs(model, packed)
    assert logps.requires_grad and lengths.tolist() == [3, 5, 2, 2, 2, 21]
    for i, (p, c) in enumerate(zip(prompts * 2, chosen + rejected, strict=True)):
        with torch.no_grad():
            logits = model(torch.tensor([p + c])).logits[0, len(p) - 1 : -1]
        expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(c)[:, None]).sum()
        torch.testing.assert_close(logps[i].detach(), expected, rtol=1e-5, atol=1e-4)


def test_world_pairs_get_their_prompt_and_tokenize_as_trl_does(world: World) -> None:
    import datasets

    train, test = pairs_of_world(world)
    saved = datasets.load_from_disk(str(world.pairs))
    assert len(train) == len(saved["train"]) and len(test) == len(saved["test"])
    row, original = train[0], saved["train"][0]
    assert row["prompt"] + row["chosen"] == original["chosen"]
    assert row["prompt"] + row["rejected"] == original["rejected"]
    assert row["chosen"].endswith("<|eos|>") and row["chosen"].startswith(" ")

    tokenizer = load_tokenizer(str(world.sft_dir))
    rows = datasets.Dataset.from_list(
        [{"prompt": "Overall, this", "chosen": " good", "rejected": " bad"}]
    )
    pairs = tokenize_pairs(tokenizer, rows, max_length=64)
    prompt = tokenizer("Overall, this")["input_ids"]
    assert pairs.prompt == [prompt]  # with the BOS the tokenizer adds
    assert pairs.chosen == [tokenizer(" good<|eos|>", add_special_tokens=False)["input_ids"]]
    assert pairs.chosen[0][-1] == tokenizer.eos_token_id  # appended when missing
    short = tokenize_pairs(tokenizer, rows, max_length=len(prompt) + 1)
    assert short.chosen == [pairs.chosen[0][:1]]  # keep_start truncation
    with pytest.raises(ValueError, match="max-length"):
        tokenize_pairs(tokenizer, rows, max_length=len(prompt))


@pytest.fixture(scope="module")
def trl_trainer(world: World, tmp_path_factory: pytest.TempPathFactory):
    """trl's DPOTrainer on a perturbed SFT policy, the SFT reference and 6 world pairs."""
    from trl import DPOConfig, DPOTrainer

    rows = pairs_of_world(world)[0].select(range(6))
    args = DPOConfig(
        output_dir=str(tmp_path_factory.mktemp("trl")),
        beta=0.3,
        report_to="none",
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
    )
    trainer = DPOTrainer(
        model=perturbed_sft(world),
        ref_model=AutoModelForCausalLM.from_pretrained(world.sft_dir),
        args=args,
        train_dataset=rows,
        processing_class=load_tokenizer(str(world.sft_dir)),
    )
    return trainer, rows


@pytest.mark.parametrize("kind", ["sigmoid", "ipo", "cdpo"])
def test_dpo_loss_matches_trls_dpo_trainer(world: World, trl_trainer, kind: str) -> None:
    trainer, rows = trl_trainer
    tokenizer = load_tokenizer(str(world.sft_dir))
    pairs = tokenize_pairs(tokenizer, rows, max_length=64)
    packed = pack_pairs(pairs.prompt, pairs.chosen, pairs.rejected, tokenizer.pad_token_id, 64)
    ref = AutoModelForCausalLM.from_pretrained(world.sft_dir)
    with torch.no_grad():
        policy_logps, lengths = packed_sequence_logprobs(trainer.model, packed)
        pc, pr = policy_logps.chunk(2)
        rc, rr = packed_sequence_logprobs(ref, packed)[0].chunk(2)
    nc, nr = lengths.chunk(2)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    mode = "train" if trainer.model.training else "eval"

    def trl_loss(loss_type: str, inputs: dict) -> float:
        trainer.loss_types = [loss_type]
        with torch.no_grad():
            return trainer._compute_loss(trainer.model, inputs, False).item()

    if kind == "cdpo":  # trl 1.16's sigmoid has no label smoothing: cDPO is a mix of two of them
        swapped = {**batch, "input_ids": batch["input_ids"].roll(len(rows), 0)}
        swapped["attention_mask"] = batch["attention_mask"].roll(len(rows), 0)
        swapped["completion_mask"] = batch["completion_mask"].roll(len(rows), 0)
        expected = 0.8 * trl_loss("sigmoid", batch) + 0.2 * trl_loss("sigmoid", swapped)
        loss, _ = dpo_loss(pc, pr, rc, rr, 0.3, "sigmoid", label_smoothing=0.2)
    elif kind == "ipo":  # trl divides each log-ratio by its completion length
        expected = trl_loss("ipo", batch)
        loss, _ = dpo_loss(pc / nc, pr / nr, rc / nc, rr / nr, 0.3, "ipo")
    else:
        expected = trl_loss("sigmoid", batch)
        loss, stats = dpo_loss(pc, pr, rc, rr, 0.3)
        logged = {k: v[-1] for k, v in trainer._metrics[mode].items()}
        for name, value in stats.items():
            assert value.item() == pytest.approx(logged[name], rel=1e-4, abs=1e-4), name
        assert pc.mean().item() == pytest.approx(logged["logps/chosen"], rel=1e-4)
    assert loss.item() == pytest.approx(expected, rel=1e-4)


def small_trainer(world: World, pairs_rows: int = 12, **cfg: object) -> LMDPOTrainer:
    tokenizer = load_tokenizer(str(world.sft_dir))
    rows = pairs_of_world(world)[0].select(range(pairs_rows))
    return LMDPOTrainer(
        LMDPOConfig(**{"batch_size": 4, "epochs": 2, "max_new_tokens": 6, **cfg}),
        AutoModelForCausalLM.from_pretrained(world.sft_dir),
        tokenizer,
        tokenize_pairs(tokenizer, rows, max_length=64),
    )


def test_reference_logprobs_are_computed_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"no_grad": 0, "grad": 0}
    real = lm.dpo.trainer.packed_sequence_logprobs

    def counting(*args: object, **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
        calls["grad" if torch.is_grad_enabled() else "no_grad"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(lm.dpo.trainer, "packed_sequence_logprobs", counting)
    trainer = small_trainer(world)  # 12 pairs, batches of 4, 2 epochs
    first = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    history = trainer.train()
    assert calls == {"no_grad": 3, "grad": 6} and len(history) == 6
    assert history[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)  # policy == reference
    after = trainer.policy.state_dict()
    assert any(not torch.equal(first[k], after[k]) for k in first)
    # same seed, same numbers
    again = small_trainer(world).train()
    assert [m["loss"] for m in again] == [m["loss"] for m in history]


def test_nonfinite_loss_stops_before_the_step(world: World) -> None:
    trainer = small_trainer(world, pairs_rows=4)
    trainer.ref_chosen[0] = float("nan")
    first = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    with pytest.raises(FloatingPointError, match="non-finite"):
        trainer.train()
    assert all(torch.equal(v, trainer.policy.state_dict()[k]) for k, v in first.items())


# ------------------------------------------------------------------ the CLI


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["--world", "tiny", "--eval-samples", "8", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_two_steps_report_logs_and_policy(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    n_pairs = len(pairs_of_world(world)[0])
    argv = ["--out", str(tmp_path / "run"), "--epochs", "1", "--batch-size", str(n_pairs // 2 + 1)]
    code, out, err = run_cli([*argv, "--loss", "ipo", "--beta", "0.5"], capsys)
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["algo"] == "ipo" and summary["steps"] == 2 and summary["pairs"] == n_pairs
    for key in ("gold_before", "gold_after", "kl", "eos_fraction", "wall_s"):
        assert math.isfinite(summary[key])
    run = tmp_path / "run"
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    names = ["loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies"]
    names += ["rewards/margins", "logps/chosen", "logps/rejected"]
    assert len(rows) == 2 and all(math.isfinite(float(rows[-1][k])) for k in names)
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "tb").iterdir())
    assert (run / "curves.png").stat().st_size > 1000
    trained = AutoModelForCausalLM.from_pretrained(run / "policy")
    sft = AutoModelForCausalLM.from_pretrained(world.sft_dir)
    assert any(
        not torch.equal(a, b) for a, b in zip(trained.parameters(), sft.parameters(), strict=True)
    )
    assert (
        load_tokenizer(str(run / "policy")).get_vocab()
        == load_tokenizer(str(world.sft_dir)).get_vocab()
    )
    # a DPO policy folder is a plain model: no value head, no PPO state
    assert not (run / "policy" / "value_head.safetensors").exists()
    assert not (run / "policy" / "ppo_state.json").exists()
    # the run folder is not taken over
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "--overwrite" in err and "--resume" in err and err.count("\n") == 1


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    "case, message",
    [
        ("no_prompt_column", "line 1: no 'prompt'"),
        ("later_row_missing", "line 3: no 'rejected'"),
        ("later_row_null", "line 2: 'chosen' is null"),
        ("later_row_number", "line 2: 'prompt' is int"),
        ("script", "loading script"),
        ("implicit_prompt_folder", "lacks the column(s) prompt"),
        ("all_equal", "chosen == rejected in every pair"),
        ("not_json", "line 2 is not JSON"),
        ("missing", "no such file"),
        ("ipo_smoothing", "sigmoid loss only"),
    ],
)
def test_cli_bad_input_is_one_line(
    case: str, message: str, world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = {"prompt": "Overall, this phone is", "chosen": " great.", "rejected": " bad."}
    pairs = tmp_path / "p.jsonl"
    if case == "no_prompt_column":
        write_jsonl(pairs, [{"chosen": "a", "rejected": "b"}])
    elif case.startswith("later_row"):
        bad = {
            "later_row_missing": [good, good, {"prompt": "x", "chosen": "y"}],
            "later_row_null": [good, {**good, "chosen": None}],
            "later_row_number": [good, {**good, "prompt": 3}],
        }[case]
        write_jsonl(pairs, bad)
    elif case == "script":
        pairs = tmp_path / "pairs.py"
        pairs.write_text("raise SystemExit('ran')\n")
    elif case == "implicit_prompt_folder":
        pairs = world.pairs  # the world's own pairs: trl's implicit-prompt format
    elif case == "all_equal":
        write_jsonl(pairs, [{**good, "rejected": " great."}] * 3)
    elif case == "not_json":
        pairs.write_text(json.dumps(good) + "\n{prompt: 1}\n")
    elif case == "missing":
        pairs = tmp_path / "missing.jsonl"
    else:
        pairs = None
    argv = ["--out", str(tmp_path / "run")]
    argv += ["--pairs", str(pairs)] if pairs else ["--loss", "ipo", "--label-smoothing", "0.1"]
    code, out, err = run_cli(argv, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert not (tmp_path / "run").exists()
