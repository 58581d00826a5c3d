"""The toy RLHF world: the gold judge, the corpus, and a tiny world built once and cached."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from datasets import load_from_disk
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

import lm.world.build as world_build  # where build_world looks `_build` up
from lm.world import (
    EOS,
    NEGATIVE,
    NEGATORS,
    POSITIVE,
    World,
    WorldConfig,
    all_prompts,
    build_world,
    default_cache_dir,
    gold_score,
    gold_scores,
    make_corpus,
)

NO_EVIDENCE = gold_score("")  # the score of a text without sentiment words


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: a second thread adds overhead, and stalls when busy
    try:
        return build_world(tmp_path_factory.mktemp("cache"), WorldConfig.tiny())
    finally:
        torch.set_num_threads(threads)


# --- the gold judge -------------------------------------------------------------------------


def test_clear_sentiment_is_near_the_ends_of_the_scale() -> None:
    assert gold_score(" excellent. I love it and would highly recommend it.") >= 0.9
    assert gold_score(" very good. Worth every penny.") >= 0.9
    assert gold_score(" terrible and flimsy. I regret it.") <= 0.1
    assert gold_score(" it broke after a week. What a waste of money.") <= 0.1


def test_negation_flips_polarity_within_its_clause() -> None:
    assert gold_score(" it is good.") > 0.7 > 0.1 > gold_score(" it is not good.")
    assert gold_score(" it is bad.") < 0.1 < 0.7 < gold_score(" it is not bad.")
    assert gold_score(" I would not recommend it.") < 0.1
    assert gold_score(" I have had no problems.") > 0.7
    assert gold_score(" not very good.") < gold_score(" not good.")  # intensified, then negated
    # a negation stops at a clause boundary and reaches at most 3 words ahead
    assert gold_score(" not mine, but great.") == gold_score(" mine, but great.")
    assert gold_score(" not one of my new phones is great.") > 0.7


def test_repeating_or_listing_sentiment_words_is_capped() -> None:
    one = gold_score(" great.")
    assert all(gold_score(" great" * n + ".") <= one for n in range(2, 60))
    assert gold_score(" great" * 50 + ".") < 0.5  # a repetition loop scores low
    listing = " good great excellent amazing solid reliable sturdy superb."
    capped = gold_score(" good great excellent.")
    assert capped < 1.0 and gold_score(listing) == pytest.approx(capped)


def test_no_sentiment_scores_low_and_special_tokens_are_ignored() -> None:
    assert NO_EVIDENCE < 0.5
    assert gold_score(" It arrived on time. The box was small.") == NO_EVIDENCE
    assert gold_score(" zx qv wk pp") == NO_EVIDENCE
    assert gold_score(" great." + EOS + "<|pad|>" * 5) == gold_score(" great.")
    assert gold_scores([" great.", ""]) == [gold_score(" great."), NO_EVIDENCE]


LEXICON = sorted(POSITIVE | NEGATIVE | NEGATORS) + ["very", "the", "it", ".", ",", "but"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(LEXICON) | st.text(max_size=8), max_size=40))
def test_score_is_in_unit_interval(words: list[str]) -> None:
    assert 0.0 <= gold_score(" ".join(words)) <= 1.0


# --- the corpus ---------------------------------------------------------------------------


def test_corpus_sentiment_labels_agree_with_the_judge() -> None:
    reviews = make_corpus(3000, (0.35, 0.35, 0.3), seed=0)
    by_label: dict[str, list[float]] = {"positive": [], "negative": [], "mixed": []}
    for review in reviews:
        by_label[review.sentiment].append(gold_score(review.response))
    assert min(by_label["positive"]) > 0.75 and max(by_label["negative"]) < 0.1
    mixed_mean = sum(by_label["mixed"]) / len(by_label["mixed"])
    assert 0.15 < mixed_mean < 0.6
    assert all(len(scores) > 700 for scores in by_label.values())


def test_corpus_is_deterministic_and_varied() -> None:
    reviews = make_corpus(2000, (0.35, 0.35, 0.3), seed=0)
    assert reviews == make_corpus(2000, (0.35, 0.35, 0.3), seed=0)
    assert reviews != make_corpus(2000, (0.35, 0.35, 0.3), seed=1)
    assert len({r.prompt + r.response for r in reviews}) > 0.9 * len(reviews)
    assert len({r.prompt for r in reviews}) > 200
    assert all(r.response.startswith(" ") and r.response.endswith(".") for r in reviews)


def test_prompts_carry_no_sentiment() -> None:
    prompts = all_prompts()
    assert len(prompts) == len(set(prompts)) > 200
    for prompt in prompts:
        words = set(re.findall(r"[a-z']+", prompt.lower()))
        assert not words & (POSITIVE | NEGATIVE | NEGATORS), prompt
        assert not prompt.endswith(" ")


# --- the config ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"n_layer": 0}, "n_layer must be an int >= 1"),
        ({"sft_epochs": 1.5}, "sft_epochs must be an int >= 1"),
        ({"vocab_size": 100}, "vocab_size must be >= 259"),
        ({"n_embd": 100, "n_head": 3}, "must be divisible by n_head"),
        ({"mix": (0.5, 0.5, 0.5)}, "mix must be 3 probabilities"),
        ({"max_new_tokens": 128}, "must be < n_positions"),
        ({"sft_lr": 0.0}, "sft_lr must be > 0"),
        ({"rm_eval_frac": 0.0}, "rm_eval_frac must be in"),
    ],
)
def test_bad_config_raises_a_clear_error(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        WorldConfig(**overrides)


def test_config_key_names_the_config() -> None:
    assert WorldConfig().key() == WorldConfig().key() != WorldConfig(seed=1).key()
    assert WorldConfig.tiny().key() != WorldConfig().key()


def test_default_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PPO_BRIDGE_CACHE", "~/somewhere")
    assert default_cache_dir() == Path.home() / "somewhere"
    monkeypatch.delenv("PPO_BRIDGE_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "ppo-bridge"


# --- the built world ----------------------------------------------------------------------


def test_tokenizer_round_trip(world: World) -> None:
    tok = AutoTokenizer.from_pretrained(world.tokenizer_dir)
    specials = {tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}
    assert len(specials) == 3 and None not in specials
    text = "The battery of this phone is very good."
    ids = tok(text).input_ids
    assert ids[0] == tok.bos_token_id and tok.decode(ids, skip_special_tokens=True) == text
    # a prompt ends where a word ends, so prompt and response tokenize apart as they do together
    for review in make_corpus(200, (0.35, 0.35, 0.3), seed=3):
        together = tok(review.prompt + review.response).input_ids
        apart = tok(review.prompt).input_ids
        apart += tok(review.response, add_special_tokens=False).input_ids
        assert together == apart


def test_sft_policy_loads_and_writes_reviews(world: World) -> None:
    tok = AutoTokenizer.from_pretrained(world.sft_dir)
    policy = AutoModelForCausalLM.from_pretrained(world.sft_dir).eval()
    assert policy.config.pad_token_id == tok.pad_token_id
    assert policy.config.eos_token_id == tok.eos_token_id
    batch = tok(["The battery of this phone is"], return_tensors="pt")
    with torch.no_grad():
        out = policy.generate(**batch, do_sample=False, max_new_tokens=world.max_new_tokens)
    response = tok.decode(out[0, batch.input_ids.shape[1] :], skip_special_tokens=True)
    assert re.search(r"[a-z]{3}", response), response  # it writes words
    for sample in world.samples:  # the recorded samples are scored by the gold judge
        assert sample["gold"] == pytest.approx(gold_score(sample["response"]))


def test_reward_model_gives_one_score_per_text(world: World) -> None:
    tok = AutoTokenizer.from_pretrained(world.reward_model_dir)
    rm = AutoModelForSequenceClassification.from_pretrained(world.reward_model_dir).eval()
    assert rm.config.num_labels == 1 and rm.config.pad_token_id == tok.pad_token_id
    texts = [
        "The battery of this phone is great. I love it." + EOS,
        "I bought this kettle and it broke after a week." + EOS,
        "Review of the mouse: It arrived on time." + EOS,
    ]
    with torch.no_grad():
        alone = torch.cat([rm(**tok([t], return_tensors="pt")).logits for t in texts])
        tok.padding_side = "right"
        right = rm(**tok(texts, return_tensors="pt", padding=True)).logits
        # GPT-2 has absolute positions: left padding needs position ids that skip the padding
        tok.padding_side = "left"
        batch = tok(texts, return_tensors="pt", padding=True)
        position_ids = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
        left = rm(**batch, position_ids=position_ids).logits
    assert alone.shape == (3, 1)
    torch.testing.assert_close(right, alone, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(left, alone, atol=1e-4, rtol=1e-4)


def test_prompt_and_pair_datasets(world: World) -> None:
    prompts = load_from_disk(world.prompts)
    assert set(prompts) == {"train", "test"}
    assert prompts["train"].column_names == ["prompt"] and len(prompts["test"]) > 0
    train, test = set(prompts["train"]["prompt"]), set(prompts["test"]["prompt"])
    assert not train & test and train | test == set(all_prompts())
    pairs = load_from_disk(world.pairs)
    assert (len(pairs["train"]), len(pairs["test"])) == (world.n_pairs_train, world.n_pairs_eval)
    min_gap = WorldConfig.tiny().pair_min_gap
    for row in pairs["train"]:
        assert row["chosen"].endswith(EOS) and row["rejected"].endswith(EOS)
        assert gold_score(row["chosen"]) >= gold_score(row["rejected"]) + min_gap


def test_metrics_show_a_working_world(world: World) -> None:
    # the SFT policy writes both kinds of review, as the corpus does, and stops by itself
    assert 0.25 < world.sft_gold_mean < 0.65 and world.sft_eos_fraction > 0.9
    assert 0.6 < world.rm_pair_accuracy <= 1.0  # clearly better than chance even when tiny
    assert world.config == json.loads(json.dumps(WorldConfig.tiny().__dict__))
    assert not world.from_cache


def test_second_build_loads_the_cache(world: World) -> None:
    marker = world.root / "world.json"
    mtime = marker.stat().st_mtime_ns
    again = build_world(world.root.parent, WorldConfig.tiny())
    assert again.from_cache and again.root == world.root
    assert marker.stat().st_mtime_ns == mtime
    assert {**again.__dict__, "from_cache": False} == world.__dict__


# --- the cache protocol, with the expensive build replaced by a stub ------------------------


@pytest.fixture
def stub_build(world: World, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Make `_build` copy the tiny world's files instead of training; returns the folders built."""
    meta = json.loads((world.root / "world.json").read_text())
    built: list[Path] = []

    def fake_build(root: Path, cfg: WorldConfig) -> dict:
        built.append(root)
        for rel in meta["paths"].values():
            shutil.copytree(world.root / rel, root / rel)
        return meta

    monkeypatch.setattr(world_build, "_build", fake_build)
    return built


def test_half_built_world_is_rebuilt(tmp_path: Path, stub_build: list[Path]) -> None:
    cfg = WorldConfig.tiny(seed=7)
    root = tmp_path / f"world-{cfg.key()}"
    (root / "sft").mkdir(parents=True)  # an interrupted build: files but no world.json
    rebuilt = build_world(tmp_path, cfg)
    assert len(stub_build) == 1 and not rebuilt.from_cache and rebuilt.root == root
    assert (root / "world.json").exists() and rebuilt.sft_dir.joinpath("config.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [root.name]  # no temporary folder left
    assert build_world(tmp_path, cfg).from_cache and len(stub_build) == 1
    assert not build_world(tmp_path, cfg, force=True).from_cache and len(stub_build) == 2


def test_failed_build_leaves_nothing_behind(tmp_path: Path, monkeypatch) -> None:
    def broken_build(root: Path, cfg: WorldConfig) -> dict:
        (root / "sft").mkdir()
        raise RuntimeError("out of patience")

    monkeypatch.setattr(world_build, "_build", broken_build)
    with pytest.raises(RuntimeError, match="out of patience"):
        build_world(tmp_path, WorldConfig.tiny(seed=8))
    assert list(tmp_path.iterdir()) == []


def test_multi_process_launch_loads_but_never_builds(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert build_world(world.root.parent, WorldConfig.tiny()).from_cache
    with pytest.raises(RuntimeError, match=r"`python -m lm.world --cache-dir \S+ --tiny`"):
        build_world(tmp_path, WorldConfig.tiny())
    assert list(tmp_path.iterdir()) == []
