"""lm.agent: an LM acting over many turns in a text env. The rollout layout (contexts hold the env's
text, history contexts are prefixes of later ones, only action tokens are response tokens), env
tokens out of the loss, groups by env seed, one-turn advantages equal lm's single-turn ones,
truncation and context overflow bootstrap, `python -m lm.agent` for every --algo, resume after
kill -9, and the one-line errors of bad input."""

from __future__ import annotations

import csv
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import pytest
import torch
from tiny import kill_after, launch, untimed
from transformers import AutoModelForCausalLM

import lm.agent.cli
from lm.agent import (
    AgentConfig,
    AgentTrainer,
    BuiltinSpec,
    Renderer,
    Transcript,
    build_policy,
    char_tokenizer,
    cut_action,
    episode_ends,
)
from lm.envs import action_space, observation_space
from lm.models import load_causal_lm, load_tokenizer
from lm.rewards import per_token_rewards
from lm.world import WorldConfig, make_policy
from ppo_bridge import clipped_surrogate_loss, masked_whiten
from ppo_bridge.estimators import sequence_gae

SMALL = dict(n_envs=4, eval_episodes=4, minibatch_size=2, n_epochs=1, max_new_tokens=3)
FLAGS = ["--n-envs", "4", "--eval-episodes", "4", "--minibatch-size", "2", "--n-epochs", "1"]
FLAGS += ["--max-new-tokens", "3", "--show", "1"]


class OneTurnEnv(gym.Env):
    """Says one thing, rewards the action by its length, terminates."""

    def __init__(self) -> None:
        self.observation_space, self.action_space = observation_space(), action_space()

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[str, dict]:
        super().reset(seed=seed)
        return f"Say something {self.np_random.integers(10)}.", {}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        return "ok", float(len(action) % 3), True, False, {"invalid_action": action == ""}


class RaisingEnv(OneTurnEnv):
    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        raise RuntimeError("the simulator crashed\nat line 2")


gym.register("agent_test/OneTurn-v0", entry_point=OneTurnEnv)
gym.register("agent_test/Raising-v0", entry_point=RaisingEnv)


@pytest.fixture(scope="session")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("agent-cache")


@pytest.fixture(scope="session")
def policy_dir(cache: Path) -> Path:
    """The built-in GuessNumber policy (history mode), fine-tuned on 300 scripted turns."""
    torch.set_num_threads(1)
    return build_policy(AgentConfig(), cache, BuiltinSpec(sft_turns=300))


def make_trainer(policy: Path, **cfg: object) -> AgentTrainer:
    tokenizer, model = load_tokenizer(str(policy)), load_causal_lm(str(policy))
    return AgentTrainer(AgentConfig(**{**SMALL, **cfg}), model, tokenizer)


def random_policy(tmp_path: Path, n_positions: int) -> Path:
    """A random char-level GPT-2 with `n_positions` positions, saved."""
    tokenizer = char_tokenizer(n_positions)
    sizes = dict(n_layer=1, n_embd=32, n_head=2, n_positions=n_positions, max_new_tokens=3)
    make_policy(WorldConfig(**sizes), tokenizer).save_pretrained(tmp_path / "random")
    tokenizer.save_pretrained(tmp_path / "random")
    return tmp_path / "random"


# ------------------------------------------------------------------ rendering and rollouts


def test_char_tokenizer_keeps_numbers_in_fixed_pieces(tmp_path: Path) -> None:
    tok = char_tokenizer(64)
    tok.save_pretrained(tmp_path)
    tok = load_tokenizer(str(tmp_path))
    obs = "x=+0.02 v=-0.31 a=+0.05 w=+0.44\n"
    ids = tok(obs)["input_ids"]
    assert ids[0] == tok.bos_token_id and len(ids) == 1 + len(obs) - 4  # 4 two-digit groups
    assert tok.decode(ids, skip_special_tokens=True) == obs
    pieces = [tok.convert_ids_to_tokens(tok(s, add_special_tokens=False)["input_ids"]) for s in (
        "+0.05", "-1.30", "Guess 16.", "<calc>12*7+130</calc>", "12345"
    )]  # fmt: skip
    assert pieces[0] == ["+", "0", ".", "05"] and pieces[1] == ["-", "1", ".", "30"]
    assert pieces[2][-3:] == [" ", "16", "."] and "130" in pieces[3]
    assert pieces[4] == ["123", "45"] and tok("é", add_special_tokens=False)["input_ids"] == [
        tok.unk_token_id
    ]
    assert tok.pad_token_id != tok.eos_token_id


def test_cut_action_at_eos_or_at_a_stop_string_over_several_tokens() -> None:
    tok = char_tokenizer(64)
    ids = tok("7 ab cd", add_special_tokens=False)["input_ids"]
    assert cut_action(ids, tok, "ab") == (ids[:4], "7 ", True)
    assert cut_action([*ids[:2], tok.eos_token_id, *ids[2:]], tok, "ab") == (
        [*ids[:2], tok.eos_token_id], "7 ", True
    )  # fmt: skip
    assert cut_action(ids, tok, "zz") == (ids, "7 ab cd", False)


def test_plain_and_chat_history_contexts_grow_by_prefix() -> None:
    tok = char_tokenizer(256)
    t = Transcript(observations=["Guess a number from 1 to 16."])
    plain, markov = Renderer(tok), Renderer(tok, context="markov", prefix="> ", suffix=":")
    chat_tok = char_tokenizer(256)
    chat_tok.chat_template = (
        "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}"
        "{% if add_generation_prompt %}[assistant]{% endif %}"
    )
    chat = Renderer(chat_tok)
    contexts: dict[str, list[list[int]]] = {"plain": [], "chat": []}
    for action, obs, ended in (("8", "higher", True), ("12", "lower", False), ("10", "x", True)):
        for name, renderer in (("plain", plain), ("chat", chat)):
            contexts[name].append(renderer.context(t))
        assert markov.context(t) == tok("> " + t.observations[-1] + ":")["input_ids"]
        ids = tok(action + ("\n" if ended else ""), add_special_tokens=False)["input_ids"]
        t.contexts.append(contexts["plain"][-1])
        t.action_ids.append(ids)
        t.actions.append(action)
        t.ended.append(ended)
        t.observations.append(obs)
    for name, renderer in (("plain", plain), ("chat", chat)):
        contexts[name].append(renderer.context(t))
    plain_ids = contexts["plain"]
    for k in range(3):  # context_{k+1} = context_k + the sampled action + the env's tokens
        before, after = plain_ids[k], plain_ids[k + 1]
        assert after[: len(before)] == before
        assert after[len(before) : len(before) + len(t.action_ids[k])] == t.action_ids[k]
    assert tok.decode(plain_ids[-1], skip_special_tokens=True) == (
        "Guess a number from 1 to 16.\n8\nhigher\n12\nlower\n10\nx\n"
    )  # the cut action "12" is followed by the stop string
    texts = [chat_tok.decode(c) for c in contexts["chat"]]
    assert texts[1] == "[user]Guess a number from 1 to 16.\n[assistant]8[user]higher\n[assistant]"
    assert all(
        b.startswith(a.removesuffix("[assistant]"))
        for a, b in zip(texts[:-1], texts[1:], strict=True)
    )
    assert plain.text(t) == "Guess a number from 1 to 16.\n8\nhigher\n12\nlower\n10\nx\n"


@pytest.mark.parametrize("context", ["markov", "history"])
def test_rollout_layout(context: str, policy_dir: Path) -> None:
    trainer = make_trainer(policy_dir, context=context)
    ro = trainer.rollout([3, 1, 4, 1])
    tok, b = trainer.tokenizer, ro.batch
    width_p = b.query_responses.shape[-1] - b.n_response
    for e, ep in enumerate(ro.episodes):
        assert ep.turns >= 1 and ep.terminated != ep.truncated
        assert len(ep.observations) == ep.turns + 1 == len(ep.contexts) + 1
        for k, (ids, action) in enumerate(zip(ep.contexts, ep.action_ids, strict=True)):
            assert ep.observations[k] + "\n" in tok.decode(ids)  # the env's text is in context
            if context == "markov":
                assert ids == tok(ep.observations[k] + "\n")["input_ids"]
            elif k > 0:  # history: the previous context, action and env reply, in that order
                previous = ep.contexts[k - 1] + ep.action_ids[k - 1]
                assert ids[: len(previous)] == previous
            row = b.query_responses[e, k]
            assert row[width_p - len(ids) : width_p].tolist() == ids
            assert row[width_p : width_p + len(action)].tolist() == action
            assert b.attention_mask[e, k, : width_p - len(ids)].sum() == 0
            # only the action's tokens are response tokens (loss, KL, entropy)
            padding = b.n_response - len(action)
            assert b.mask[e, k].tolist() == [1.0] * len(action) + [0.0] * padding
        assert b.turns[e].sum() == ep.turns and b.mask[e, ep.turns :].sum() == 0
    assert (ro.logprobs[~b.turns] == 0).all() and (ro.logprobs[b.mask == 1] <= 0).all()
    assert torch.equal(ro.logprobs, ro.ref_logprobs)  # the policy is still the reference
    assert ro.episodes[1].observations[0] == ro.episodes[3].observations[0]  # same seed


def test_env_tokens_get_no_gradient(policy_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The policy loss of a history rollout is unchanged when the logits at every position that
    predicts a context token (env text, earlier turns) are perturbed; it moves when the logits
    that predict action tokens are."""
    trainer = make_trainer(policy_dir, context="history")
    ro = trainer.rollout([5, 6, 7, 8])
    batch = trainer.advantages(ro, trainer.rewards(ro, 0.05, {})[1])
    batch["advantages"] = torch.randn_like(batch["mask"]) * batch["mask"]  # any will do
    n_response = ro.batch.n_response
    evaluate = trainer.evaluate_fn(n_response)

    def loss() -> torch.Tensor:
        ev = evaluate(batch)
        adv = masked_whiten(batch["advantages"], batch["mask"])
        return clipped_surrogate_loss(ev.logprobs, batch["logprobs"], adv, 0.2, batch["mask"])[0]

    lm_model = trainer.policy.lm
    original = lm_model.forward

    def perturbed(where: str) -> torch.Tensor:
        def forward(*, input_ids: torch.Tensor, logits_to_keep: int, **kwargs: object) -> object:
            out = original(input_ids=input_ids, logits_to_keep=0, **kwargs)
            n_context = input_ids.shape[1] - n_response
            noise = 50 * torch.randn_like(out.logits) * (where != "nowhere")
            if where == "context":  # position j predicts token j + 1: context tokens 1..P-1
                noise[:, n_context - 1 :] = 0
            else:
                noise[:, : n_context - 1] = 0
            out.logits = (out.logits + noise)[:, -logits_to_keep:]
            return out

        monkeypatch.setattr(lm_model, "forward", forward)
        try:
            return loss()
        finally:
            monkeypatch.setattr(lm_model, "forward", original)

    assert max(ep.turns for ep in ro.episodes) > 1
    clean = perturbed("nowhere")  # the same computation: all logits, then the last R + 1
    assert torch.equal(perturbed("context"), clean)
    assert not torch.allclose(perturbed("action"), clean)


def test_groups_share_an_env_seed_that_evaluation_never_uses(policy_dir: Path) -> None:
    trainer = make_trainer(
        policy_dir, env_id="ppo_bridge/Calculator-v0", algo="grpo", n_envs=8, num_generations=4
    )
    seeds = trainer.next_seeds()
    assert len(seeds) == 8 and seeds[:4] == [seeds[0]] * 4 and seeds[4:] == [seeds[4]] * 4
    assert seeds[0] != seeds[4]
    draws = seeds + [s for _ in range(20) for s in trainer.next_seeds()]
    assert not set(draws) & set(trainer.cfg.eval_seeds())
    ro = trainer.rollout(seeds)
    first = [ep.observations[0] for ep in ro.episodes]  # a Calculator question per seed
    assert first[:4] == [first[0]] * 4 and first[4:] == [first[4]] * 4 and first[0] != first[4]
    adv = trainer.advantages(ro, trainer.rewards(ro, 0.0, {})[1])["advantages"]
    per_episode = adv.sum(1) / ro.batch.mask.sum((1, 2))  # one advantage on all its tokens
    assert torch.allclose(per_episode.view(2, 4).sum(1), torch.zeros(2), atol=1e-5)


def test_seed_stream_skips_the_evaluation_block(policy_dir: Path) -> None:
    drawn = make_trainer(policy_dir).next_seeds()  # 4 draws of the seed-0 stream
    skipping = make_trainer(policy_dir, eval_seed=drawn[0], eval_episodes=1)
    assert skipping.next_seeds()[:3] == drawn[1:]  # the same stream, its first draw redrawn


@pytest.mark.parametrize("algo", ["ppo", "reinforce_pp"])
def test_one_turn_advantages_equal_lms_single_turn_ones(algo: str, policy_dir: Path) -> None:
    trainer = make_trainer(policy_dir, env_id="agent_test/OneTurn-v0", algo=algo, n_envs=8)
    torch.nn.init.normal_(trainer.policy.value_head.weight, std=0.5)  # values that are not 0
    ro = trainer.rollout(list(range(8)))
    assert [ep.turns for ep in ro.episodes] == [1] * 8
    rewards = trainer.rewards(ro, 0.1, {})[1]
    batch = trainer.advantages(ro, rewards)
    lp, ref, mask = (x[:, 0] for x in (ro.logprobs, ro.ref_logprobs, ro.batch.mask))
    scores = torch.tensor([ep.rewards[0] for ep in ro.episodes])
    single, _ = per_token_rewards(lp, ref, scores, mask, 0.1)
    assert torch.equal(rewards[:, 0], single)
    if algo == "ppo":
        adv, ret = sequence_gae(single, ro.values[:, 0], mask, 1.0, 0.95)
        torch.testing.assert_close(batch["returns"], ret)
    else:
        ret = sequence_gae(single, torch.zeros_like(single), mask, 1.0, 1.0)[1]
        adv = masked_whiten(ret, mask)
    torch.testing.assert_close(batch["advantages"], adv)


def test_reward_funcs_score_the_transcript_on_the_last_action_token(policy_dir: Path) -> None:
    def digits(transcripts: list[str]) -> list[float]:
        return [sum(c.isdigit() for c in t) / 10 for t in transcripts]

    tokenizer, model = load_tokenizer(str(policy_dir)), load_causal_lm(str(policy_dir))
    cfg = AgentConfig(**SMALL, reward_scale=0.5)
    trainer = AgentTrainer(cfg, model, tokenizer, reward_funcs=[digits], reward_weights=[2.0])
    ro = trainer.rollout([0, 1, 2, 3])
    scores = trainer.scores(ro)
    assert scores["digits"].tolist() == pytest.approx(digits(ro.transcripts))
    turn_scores, rewards, _ = trainer.rewards(ro, 0.0, scores)
    for e, ep in enumerate(ro.episodes):
        expected = [0.5 * r for r in ep.rewards]  # reward_scale
        expected[-1] += 2.0 * scores["digits"][e].item()
        assert turn_scores[e, : ep.turns].tolist() == pytest.approx(expected)
        assert rewards[e].sum().item() == pytest.approx(sum(expected))  # beta 0: scores only
    assert "Guess a number from 1 to 16.\n" in ro.transcripts[0]
    with pytest.raises(ValueError, match="1 reward_weights for 0 reward_funcs"):
        AgentTrainer(cfg, model, tokenizer, reward_weights=[1.0])


def test_truncation_and_context_overflow_bootstrap(tmp_path: Path) -> None:
    """40 positions hold the first turn only: the episode ends truncated by overflow, and PPO
    bootstraps it from V of the context that would have come next."""
    trainer = make_trainer(random_policy(tmp_path, 40), context="history")
    torch.nn.init.normal_(trainer.policy.value_head.weight, std=0.5)
    ro = trainer.rollout([0, 1, 2, 3])
    for ep in ro.episodes:
        if not ep.terminated:
            assert ep.truncated and ep.overflow and ep.turns == 1
            assert 40 - 3 < len(ep.bootstrap_context) <= 40
    cut = torch.tensor([ep.truncated for ep in ro.episodes])
    assert cut.any() and torch.isfinite(ro.bootstrap[cut]).all()
    ends = episode_ends(ro.episodes, ro.batch.mask)
    assert torch.equal(ends.truncated.flatten(1).any(1), cut)
    rewards = trainer.rewards(ro, 0.0, {})[1]
    ret = trainer.advantages(ro, rewards)["returns"].view_as(rewards)
    last = ro.batch.mask[:, 0].sum(1).long() - 1
    e = int(cut.nonzero()[0])
    gamma = trainer.cfg.gamma  # lambda-return of a one-turn episode's last token: r + gamma * V'
    assert torch.isclose(ret[e, 0, last[e]], rewards[e, 0, last[e]] + gamma * ro.bootstrap[e])


# ------------------------------------------------------------------ python -m lm.agent


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = lm.agent.cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("algo", ["ppo", "grpo", "rloo", "reinforce_pp"])
def test_cli_smoke(
    algo: str, cache: Path, policy_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    argv = [*FLAGS, "--algo", algo, "--total-iterations", "2", "--out", str(out)]
    argv += ["--cache", str(cache), "--sft-turns", "300"]  # the built-in policy: policy_dir
    code, stdout, err = run_cli(argv, capsys)
    assert code == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    keys = {"return_before", "return_after", "success_before", "success_after", "turns_before"}
    keys |= {"turns_after", "kl", "wall_s", "algo", "iterations", "out"}
    assert keys <= set(summary) and summary["algo"] == algo and summary["iterations"] == 2
    assert "held-out episode 0, before" in stdout
    for name in ("metrics.csv", "curves.png", "policy/config.json", "tb"):
        assert (out / name).exists(), name
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 2
    assert {"env/return", "env/success", "env/turns", "env/invalid_actions"} <= set(rows[0])
    assert {"objective/kl", "policy/clipfrac_avg", "loss/policy_avg"} <= set(rows[0])
    assert ("loss/value_avg" in rows[0]) == (algo == "ppo")
    assert json.loads((out / "policy" / "ppo_state.json").read_text())["config"]["algo"] == algo


def test_killed_and_resumed_run_logs_what_an_uninterrupted_one_does(
    policy_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    argv = [*FLAGS, "--policy", str(policy_dir), "--total-iterations", "8", "--save-every", "2"]
    victim = launch(1, [*argv, "--out", str(killed)], tmp_path / "killed", "lm.agent")
    with ThreadPoolExecutor(1) as pool:
        kill = pool.submit(kill_after, victim, killed / "checkpoint-4")
        code, stdout, err = run_cli([*argv, "--out", str(whole)], capsys)
        kill.result()
    assert code == 0, err
    expected = json.loads(stdout.strip().splitlines()[-1])
    code, stdout, err = run_cli(["--out", str(killed), "--resume"], capsys)
    assert code == 0, err
    resumed = json.loads(stdout.strip().splitlines()[-1])
    timings = ("train_s", "wall_s", "out")
    assert {k: v for k, v in resumed.items() if k not in timings} == {
        k: v for k, v in expected.items() if k not in timings
    }
    rows = untimed(killed / "metrics.csv")
    assert [float(r["iteration"]) for r in rows] == list(map(float, range(1, 9)))
    assert rows == untimed(whole / "metrics.csv")
    a = AutoModelForCausalLM.from_pretrained(killed / "policy").state_dict()
    b = AutoModelForCausalLM.from_pretrained(whole / "policy").state_dict()
    assert all(torch.equal(v, b[k]) for k, v in a.items())
    code, _, err = run_cli(["--out", str(killed), "--resume", "--policy", "x"], capsys)
    assert code == 2 and "drop --policy" in err


@pytest.mark.parametrize(
    "case, message",
    [
        ("unknown", "unknown env id 'ppo_bridge/Nope-v0'"),
        ("numeric", "env Pendulum-v1 has a Box observation space, not Text"),
        ("long_action", "an action cannot be as long as the model context (256 tokens)"),
        ("long_first", "the first context of env ppo_bridge/Calculator-v0"),
        ("raising", "env agent_test/Raising-v0 raised RuntimeError in step("),
        ("batch_size", "--batch-size: an iteration plays --n-envs episodes"),
        ("groups", "n_envs (6) must hold whole groups"),
        ("env_kwargs", "env_kwargs is not JSON"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    case: str,
    message: str,
    policy_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    out = tmp_path / "run"
    argv = [*FLAGS, "--policy", str(policy_dir), "--out", str(out)]
    argv += {
        "unknown": ["--env", "ppo_bridge/Nope-v0"],
        "numeric": ["--env", "Pendulum-v1"],
        "long_action": ["--max-new-tokens", "256"],
        "long_first": ["--env", "ppo_bridge/Calculator-v0", "--max-new-tokens", "200"],
        "raising": ["--env", "agent_test/Raising-v0"],
        "batch_size": ["--batch-size", "8"],
        "groups": ["--algo", "grpo", "--n-envs", "6", "--minibatch-size", "3"],
        "env_kwargs": ["--env-kwargs", "{turn_penalty: 1}"],
    }[case]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert message in err, err
    assert not out.exists()


def test_config_seeds_and_presets() -> None:
    cfg = AgentConfig.for_algo("rloo", n_envs=8, minibatch_size=4)
    assert cfg.batch_size == 8 and cfg.num_generations == 4 and not cfg.critic
    assert cfg.eval_seeds() == list(range(1_000_000, 1_000_064))
    with pytest.raises(ValueError, match="n_envs \\(8\\) must be a multiple of minibatch_size"):
        replace(cfg, minibatch_size=3)
    with pytest.raises(ValueError, match="stop must be a non-empty string"):
        AgentConfig(stop="")
