"""Reward classifiers of every family (lm.models loaders, lm.rewards scoring, --reward-label)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny import CORPUS, PROMPTS, TINY, gpt2_config, make_tokenizer, run_cli
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import trainers as tok_trainers
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
)

from lm.models import load_reward_model, load_reward_tokenizer, load_tokenizer
from lm.ppo import LMPPOConfig, LMPPOTrainer
from lm.rewards import is_decoder_classifier, retokenize, reward_model_scores
from lm.sampling import left_pad

LABELS = {0: "NEGATIVE", 1: "POSITIVE"}
TEXTS = ["the phone is great", "i love this kettle, it is quick and quiet", "a solid chair"]


def make_wordpiece_tokenizer() -> PreTrainedTokenizerFast:
    """A BERT-style WordPiece tokenizer trained on CORPUS: [CLS] text [SEP], right padding."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(
        CORPUS, tok_trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials)
    )
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def classifier(family: str, num_labels: int = 2):  # noqa: ANN201
    """(a tiny random classifier of `family`, its own tokenizer)."""
    torch.manual_seed(0)
    labels = {"num_labels": num_labels}
    if num_labels == 2:
        labels |= {"id2label": LABELS, "label2id": {v: k for k, v in LABELS.items()}}
    if family in ("gpt2", "llama"):
        tok = make_tokenizer()
        if family == "gpt2":
            return GPT2ForSequenceClassification(gpt2_config(tok, **labels)), tok
        config = LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=64,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            **labels,
        )
        return LlamaForSequenceClassification(config), tok
    tok = make_wordpiece_tokenizer()
    size = {"vocab_size": len(tok), "max_position_embeddings": 64, "pad_token_id": 0, **labels}
    if family == "distilbert":
        config = DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, **size)
        return DistilBertForSequenceClassification(config), tok
    config = BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, **size
    )
    return BertForSequenceClassification(config), tok


FAMILIES = ["gpt2", "llama", "distilbert", "bert"]


@pytest.mark.parametrize("family", FAMILIES)
def test_padded_scores_equal_each_text_scored_alone(family: str) -> None:
    rm, tok = classifier(family)
    rm.eval()
    decoder = family in ("gpt2", "llama")
    assert is_decoder_classifier(rm) == decoder
    has_eos = torch.tensor([True, False, True])
    ids, mask = retokenize(TEXTS, has_eos, tok, 64)
    assert (mask == 0).any()  # the batch is padded
    with torch.no_grad():
        for label in (0, 1):
            scores = reward_model_scores(rm, ids, mask, label)
            # the model's own forward on each row alone, unpadded, is the reference
            alone = [rm(ids[b][mask[b].bool()][None]).logits[0, label] for b in range(len(TEXTS))]
            torch.testing.assert_close(scores, torch.stack(alone), atol=1e-5, rtol=0)
        assert not torch.allclose(scores, reward_model_scores(rm, ids, mask, 0))
        rows = [ids[b][mask[b].bool()].tolist() for b in range(len(TEXTS))]
        if decoder:  # EOS appended after an ended response; left padding reads the same scores
            assert rows[0][-1] == tok.eos_token_id and rows[1][-1] != tok.eos_token_id
            left, left_mask = left_pad(rows, tok.pad_token_id)
            torch.testing.assert_close(reward_model_scores(rm, left, left_mask, 1), scores)
        else:  # [CLS] text [SEP] as the tokenizer writes it, right-padded; left padding refused
            assert all(r[0] == tok.cls_token_id and r[-1] == tok.sep_token_id for r in rows)
            assert tok.padding_side == "right" and mask[:, 0].all()
            left, left_mask = left_pad(rows, tok.pad_token_id)
            with pytest.raises(ValueError, match="pad its inputs on the right"):
                reward_model_scores(rm, left, left_mask)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Saved folders: a GPT-2 policy, DistilBERT classifiers with 2 and 1 labels, prompts."""
    root = tmp_path_factory.mktemp("rm")
    tok = make_tokenizer()
    torch.manual_seed(0)
    GPT2LMHeadModel(gpt2_config(tok)).save_pretrained(root / "policy")
    tok.save_pretrained(root / "policy")
    for name, n in (("distilbert", 2), ("distilbert1", 1)):
        rm, rm_tok = classifier("distilbert", n)
        rm.save_pretrained(root / name)
        rm_tok.save_pretrained(root / name)
    (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    return {p.name: p for p in root.iterdir()}


def test_reward_label_by_index_or_name_and_its_errors(saved: dict[str, Path]) -> None:
    two, one = str(saved["distilbert"]), str(saved["distilbert1"])
    assert load_reward_model(two, "1")[1] == 1
    assert load_reward_model(two, "POSITIVE")[1] == 1
    assert load_reward_model(two, "NEGATIVE")[1] == 0
    model, label = load_reward_model(one)
    assert label == 0 and isinstance(model, DistilBertForSequenceClassification)
    with pytest.raises(ValueError, match=r"2 labels \(0=NEGATIVE, 1=POSITIVE\).*--reward-label"):
        load_reward_model(two)
    for bad in ("2", "positive", "-1"):
        with pytest.raises(ValueError, match=r"no such label; its labels are 0=NEGATIVE, 1=POS"):
            load_reward_model(two, bad)
    with pytest.raises(ValueError, match="not a sequence classifier"):
        load_reward_model(str(saved["policy"]))
    tok = load_reward_tokenizer(two)
    assert tok.padding_side == "right" and tok.eos_token_id is None


def test_trainer_scores_an_encoder_on_its_own_tokens(saved: dict[str, Path]) -> None:
    policy = GPT2LMHeadModel.from_pretrained(saved["policy"])
    tokenizer = load_tokenizer(str(saved["policy"]))
    rm, label = load_reward_model(str(saved["distilbert"]), "POSITIVE")
    rm_tok = load_reward_tokenizer(str(saved["distilbert"]))
    trainer = LMPPOTrainer(
        LMPPOConfig(**TINY),
        policy,
        tokenizer,
        PROMPTS,
        reward_model=rm,
        reward_tokenizer=rm_tok,
        reward_label=label,
    )
    assert trainer.scorer.retokenize
    ro = trainer.rollout(PROMPTS[:4], trainer.prompt_ids[:4])
    with torch.no_grad():
        for text, score in zip(
            [p + r for p, r in zip(ro.prompts, ro.responses, strict=True)], ro.scores, strict=True
        ):
            alone = rm(**rm_tok(text, return_tensors="pt")).logits[0, 1]
            assert score.item() == pytest.approx(alone.item(), abs=1e-5)


def test_cli_gpt2_policy_with_a_distilbert_sentiment_classifier(
    saved: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's network recipe (gpt2 + a DistilBERT IMDB classifier), on tiny local models."""
    argv = ["--policy", str(saved["policy"]), "--reward-model", str(saved["distilbert"])]
    argv += ["--prompts", str(saved["prompts.txt"]), "--out", str(tmp_path)]
    argv += ["--batch-size", "4", "--minibatch-size", "2", "--total-iterations", "2"]
    argv += ["--max-new-tokens", "6", "--n-epochs", "1", "--eval-samples", "4"]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: --reward-model") and "0=NEGATIVE, 1=POSITIVE" in err

    code, out, err = run_cli([*argv, "--reward-label", "POSITIVE"], capsys)
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["iterations"] == 2
    assert summary["rm_before"] != summary["rm_after"]
