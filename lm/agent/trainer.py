"""`AgentTrainer`: PPO and its kin for an LM that acts over many turns, on the same core as
CartPole. One iteration: rollout (play n_envs episodes, then read log-probs, reference log-probs
and values of every action token) -> rewards -> advantages -> update (the core's `ppo_update`,
a sample being an episode's turns, through `accelerate` as LMPPOTrainer does).

One process (accelerate's device and mixed precision, no data parallelism). Every model stays in
eval mode, in training too, so the rollout's and the update's log-probs are the same function.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase, set_seed

from lm.agent.config import SEED_SPACE, AgentConfig
from lm.agent.credit import AGENT_CREDIT, episode_ends, turn_rewards
from lm.agent.render import Renderer
from lm.agent.rollout import (
    Episode,
    TurnBatch,
    bootstrap_values,
    play,
    score_turns,
    stack_turns,
    stop_token_ids,
    turn_forward,
)
from lm.checkpoint import (
    load_weights,
    read_checkpoint_files,
    read_state,
    rng_state,
    save_checkpoint,
    save_model,
    set_rng_state,
)
from lm.distributed import make_accelerator
from lm.loop import train_loop
from lm.models import PolicyWithValueHead, model_context
from lm.ppo.checkpoint import PPO_STATE, PPO_STATE_FILE
from lm.rewards import check_scores
from lm.sampling import Reference
from ppo_bridge import (
    AdaptiveKLController,
    Evaluation,
    FixedKLController,
    kl_estimate,
    masked_whiten,
    ppo_update,
)

EpisodeRewardFn = Callable[[list[str]], Sequence[float]]  # transcripts -> one score each


@dataclass
class AgentRollout:
    """The episodes of one iteration and what the models say about their action tokens."""

    episodes: list[Episode]
    batch: TurnBatch  # on the trainer's device
    logprobs: Tensor  # [E, K, R]
    ref_logprobs: Tensor
    entropy: Tensor
    values: Tensor
    bootstrap: Tensor  # [E] V of the observation after a truncation (NaN elsewhere)
    transcripts: list[str]
    seconds_generate: float
    seconds_score: float


class AgentTrainer:
    """PPO / GRPO / RLOO / REINFORCE++ (`cfg.algo`) of `policy` in the text env `cfg.env_id`.

    The reward is the env's, per turn; `reward_funcs` f(transcripts) -> scores add an
    end-of-episode score (weighted by `reward_weights`, default 1, each logged as
    `rewards/<name>`). The reference is a frozen copy of the starting policy (`Reference`).
    """

    def __init__(
        self,
        cfg: AgentConfig,
        policy: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        reward_funcs: Sequence[EpisodeRewardFn] = (),
        reward_weights: Sequence[float] | None = None,
        out_dir: str | Path | None = None,
    ) -> None:
        self.cfg, self.tokenizer = cfg, tokenizer
        self.reward_funcs = list(reward_funcs)
        names = [getattr(f, "__name__", f"reward_func_{i}") for i, f in enumerate(reward_funcs)]
        weights = [1.0] * len(names) if reward_weights is None else list(map(float, reward_weights))
        if len(weights) != len(names):
            raise ValueError(f"{len(weights)} reward_weights for {len(names)} reward_funcs")
        if cfg.normalize_scores and not names:
            raise ValueError("normalize_scores whitens the reward_funcs' scores: pass reward_funcs")
        self.reward_weights = dict(zip(names, weights, strict=True))
        self.accelerator = acc = make_accelerator(cfg.mixed_precision)
        if acc.num_processes > 1:
            raise ValueError("lm.agent runs in one process: launch it with python, not torchrun")
        set_seed(cfg.seed)
        self.envs = [cfg.make_env() for _ in range(max(cfg.n_envs, cfg.eval_episodes))]
        self.renderer = Renderer(
            tokenizer, cfg.context, cfg.prefix, cfg.suffix, cfg.stop, cfg.use_chat_template
        )
        self.stop_ids = stop_token_ids(tokenizer, cfg.stop)
        self.context_limit = model_context(policy)
        if cfg.max_new_tokens >= self.context_limit:
            raise ValueError(
                f"max_new_tokens {cfg.max_new_tokens}: an action cannot be as long as the model "
                f"context ({self.context_limit} tokens)"
            )
        model = PolicyWithValueHead(policy)
        self.reference = Reference(model, acc.device)  # a frozen copy of the starting policy
        model.value_head.requires_grad_(cfg.critic)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, eps=1e-5, fused=True)
        self.model, self.optimizer = acc.prepare(model, optimizer)
        self.model.eval()
        self.policy: PolicyWithValueHead = acc.unwrap_model(self.model)
        self.kl_ctl = (
            AdaptiveKLController(cfg.beta, cfg.kl_target, cfg.kl_horizon)
            if cfg.kl_target is not None
            else FixedKLController(cfg.beta)
        )
        self.update_gen = torch.Generator().manual_seed(cfg.seed)
        self.seed_gen = torch.Generator().manual_seed(cfg.seed)  # the training env seeds
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.iteration = 0
        self.run_info: dict = {}  # JSON kept in every checkpoint for the caller (sources, before)

    # ---------------------------------------------------------------- rollout

    def next_seeds(self) -> list[int]:
        """n_envs / G fresh env seeds from [0, 2^31) outside the evaluation block, each played
        G = num_generations times in a row (a group)."""
        cfg, held_out = self.cfg, set(self.cfg.eval_seeds())
        seeds: list[int] = []
        while len(seeds) < cfg.n_envs // cfg.num_generations:
            seed = int(torch.randint(SEED_SPACE, (1,), generator=self.seed_gen))
            if seed not in held_out:
                seeds.append(seed)
        return [s for s in seeds for _ in range(cfg.num_generations)]

    @torch.no_grad()
    def rollout(self, seeds: Sequence[int]) -> AgentRollout:
        """Play one episode per seed, then read every action token's log-probs and values (and
        V after each truncation, for PPO)."""
        cfg, acc = self.cfg, self.accelerator
        start = time.perf_counter()
        episodes = play(
            self.policy,
            self.tokenizer,
            self.envs,
            seeds,
            self.renderer,
            cfg,
            self.context_limit,
            acc.device,
            self.stop_ids,
        )
        seconds_generate = time.perf_counter() - start
        start = time.perf_counter()
        batch = stack_turns(episodes, self.tokenizer.pad_token_id).to(acc.device)
        chunk = cfg.minibatch_size // cfg.grad_accum_steps
        bootstrap = torch.full((len(episodes),), torch.nan, device=acc.device)
        with acc.autocast():
            scored = score_turns(self.policy, self.reference, batch, cfg.temperature, chunk)
            cut = [e for e, ep in enumerate(episodes) if ep.bootstrap_context is not None]
            if cfg.critic and cut:
                contexts = [episodes[e].bootstrap_context for e in cut]
                bootstrap[cut] = bootstrap_values(
                    self.policy, contexts, self.tokenizer.pad_token_id, chunk
                )
        return AgentRollout(
            episodes=episodes,
            batch=batch,
            **scored,
            bootstrap=bootstrap,
            transcripts=[self.renderer.text(ep) for ep in episodes],
            seconds_generate=seconds_generate,
            seconds_score=time.perf_counter() - start,
        )

    # ---------------------------------------------------------------- rewards and advantages

    def scores(self, ro: AgentRollout) -> dict[str, Tensor]:
        """Each reward function's score of each episode's transcript, [E], by name."""
        n = len(ro.episodes)
        return {
            name: check_scores(f(ro.transcripts), n, name).to(ro.logprobs.device)
            for name, f in zip(self.reward_weights, self.reward_funcs, strict=True)
        }

    def rewards(
        self, ro: AgentRollout, beta: float, scores: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(turn scores [E, K], rewards [E, K, R], KL_t [E, K, R]).

        A turn's score is its env reward times reward_scale, minus missing_eos_penalty where the
        action was cut at max_new_tokens, plus, on the episode's last turn, the weighted
        reward-function score (whitened over the batch with normalize_scores); `turn_rewards`
        adds -beta * KL_t.
        """
        cfg, device = self.cfg, ro.logprobs.device
        turn_scores = torch.zeros(ro.batch.turns.shape, device=device)
        for e, ep in enumerate(ro.episodes):
            turn_scores[e, : ep.turns] = cfg.reward_scale * torch.tensor(ep.rewards, device=device)
            if cfg.missing_eos_penalty is not None:
                cut = ~torch.tensor(ep.ended, device=device)
                turn_scores[e, : ep.turns] -= cfg.missing_eos_penalty * cut
        if scores:
            episode_score = sum(self.reward_weights[k] * s for k, s in scores.items())
            if cfg.normalize_scores:
                episode_score = masked_whiten(episode_score)
            last = torch.tensor([ep.turns - 1 for ep in ro.episodes], device=device)
            turn_scores[torch.arange(len(ro.episodes), device=device), last] += episode_score
        rewards, kl = turn_rewards(
            ro.logprobs, ro.ref_logprobs, ro.batch.mask, turn_scores, beta, cfg.kl_estimator
        )
        return turn_scores, rewards, kl

    def advantages(self, ro: AgentRollout, rewards: Tensor) -> dict[str, Tensor]:
        """The update's batch, one row per episode ([E, K * R] token tensors, the turns' ids
        [E, K, P + R]), with the advantages `cfg.algo` names (see lm.agent.credit)."""
        cfg, mask = self.cfg, ro.batch.mask
        batch = {
            "query_responses": ro.batch.query_responses,
            "attention_mask": ro.batch.attention_mask,
            "turns": ro.batch.turns,
            "logprobs": ro.logprobs.flatten(1),
            "mask": mask.flatten(1),
        }
        if cfg.kl_coef > 0:
            batch["ref_logprobs"] = ro.ref_logprobs.flatten(1)
        ends = episode_ends(ro.episodes, mask)
        values = ro.values if cfg.critic else None
        adv, ret = AGENT_CREDIT[cfg.algo](rewards, values, mask, ends, ro.bootstrap, cfg)
        batch["advantages"] = adv.flatten(1)
        if ret is not None:
            batch.update(returns=ret.flatten(1), values=ro.values.flatten(1))
        return batch

    # ---------------------------------------------------------------- update

    def evaluate_fn(self, n_response: int) -> Callable[[dict[str, Tensor]], Evaluation]:
        """`ppo_update`'s evaluate: the policy (and value head) on a minibatch's real turns."""
        cfg = self.cfg

        def evaluate(mb: dict[str, Tensor]) -> Evaluation:
            lp, ent, v = turn_forward(
                self.model,
                mb["query_responses"],
                mb["attention_mask"],
                mb["turns"],
                n_response,
                cfg.temperature,
            )
            values = v.flatten(1) if cfg.critic else None
            return Evaluation(logprobs=lp.flatten(1), entropy=ent.flatten(1), values=values)

        return evaluate

    def update(self, batch: dict[str, Tensor]) -> dict[str, float]:
        """The core's `ppo_update`; a sample is an episode (all its turns)."""
        cfg = self.cfg
        n_response = batch["mask"].shape[1] // batch["turns"].shape[1]
        if cfg.loss_norm_constant is None:  # Dr. GRPO's C: the longest possible episode
            cfg = replace(cfg, loss_norm_constant=float(cfg.max_new_tokens * cfg.max_turns))
        return ppo_update(
            batch,
            self.evaluate_fn(n_response),
            self.optimizer,
            cfg,
            progress=self.iteration / cfg.total_iterations,
            generator=self.update_gen,
            backend=self.accelerator,
        )

    # ---------------------------------------------------------------- iteration

    def step(self) -> dict[str, float]:
        """One iteration, rollout -> rewards -> advantages -> update; returns its metrics."""
        cfg = self.cfg
        start = time.perf_counter()
        ro = self.rollout(self.next_seeds())
        beta = self.kl_ctl.value
        scores = self.scores(ro)
        turn_scores, rewards, kl = self.rewards(ro, beta, scores)
        batch = self.advantages(ro, rewards)
        t_update = time.perf_counter()
        stats = self.update(batch)
        seconds_update = time.perf_counter() - t_update

        mask = ro.batch.mask
        kl_episode = kl.sum((1, 2))
        non_score = -beta * kl_episode
        episode_scores = turn_scores.sum(1)
        metrics = {
            **episode_metrics(ro.episodes),
            "objective/kl": kl_episode.mean(),
            "objective/entropy": (ro.entropy * mask).sum((1, 2)).mean(),
            "objective/non_score_reward": non_score.mean(),
            "objective/rlhf_reward": (episode_scores + non_score).mean(),
            "objective/scores": episode_scores.mean(),
            **{f"rewards/{name}": s.mean() for name, s in scores.items()},
            "objective/response_tokens": mask.sum(-1)[ro.batch.turns].mean(),
            "policy/approxkl_avg": stats["approx_kl"],
            "policy/clipfrac_avg": stats["clipfrac"],
            "policy/entropy_avg": stats["entropy"],
            "loss/policy_avg": stats["policy_loss"],
            "val/ratio": stats["ratio"],
        }
        optional = {
            "value_loss": "loss/value_avg",
            "explained_variance": "val/explained_variance",
            "value_clipfrac": "val/clipfrac_avg",
            "kl": "loss/kl_avg",
        }
        metrics.update({name: stats[key] for key, name in optional.items() if key in stats})
        metrics = {k: float(v) for k, v in metrics.items()}
        self.kl_ctl.update(metrics["objective/kl"], cfg.n_envs)
        self.iteration += 1
        seconds = time.perf_counter() - start
        metrics.update(
            {
                "iteration": float(self.iteration),
                "episode": float(self.iteration * cfg.n_envs),
                "objective/beta": beta,
                "policy/n_updates": stats["n_updates"],
                "policy/early_stop": stats["early_stop"],
                "lr": stats["lr"],
                "time/generate": ro.seconds_generate,
                "time/score": ro.seconds_score,
                "time/update": seconds_update,
                "time/iteration": seconds,
                "perf/tokens_per_s": float(mask.sum()) / seconds,
            }
        )
        return metrics

    def train(self, on_first_step: Callable[[], None] | None = None) -> list[dict[str, float]]:
        """Run the remaining iterations (`lm.loop.train_loop`: logs, checkpoints every
        `save_every`); return the metrics per iteration."""

        def postfix(m: dict[str, float]) -> dict[str, str]:
            shown = {"ret": f"{m['env/return']:.2f}", "success": f"{m['env/success']:.2f}"}
            return {**shown, "turns": f"{m['env/turns']:.1f}"}

        cfg = self.cfg
        return train_loop(
            self,
            self.step,
            cfg.total_iterations,
            save_every=cfg.save_every,
            desc=f"agent {cfg.algo}",
            postfix=postfix,
            on_first_step=on_first_step,
        )

    # ---------------------------------------------------------------- evaluation and saving

    @torch.no_grad()
    def evaluate(self) -> tuple[dict[str, float], AgentRollout]:
        """Play the held-out seeds (`cfg.eval_seeds`, never trained on) at the training
        temperature: episode metrics and the KL to the reference (nats per episode)."""
        ro = self.rollout(self.cfg.eval_seeds())
        kl = kl_estimate(ro.logprobs, ro.ref_logprobs, self.cfg.kl_estimator) * ro.batch.mask
        metrics = {k.removeprefix("env/"): v for k, v in episode_metrics(ro.episodes).items()}
        return {**metrics, "kl": float(kl.sum((1, 2)).mean())}, ro

    def state(self) -> dict:
        acc = self.accelerator
        return {
            "iteration": self.iteration,
            "beta": self.kl_ctl.value,
            "prompt_queue": [],  # episodes come from the env seed stream, not a prompt queue
            "num_processes": acc.num_processes,
            "scaler": acc.scaler.state_dict() if acc.scaler is not None else None,
            "config": asdict(self.cfg),
            "run_info": self.run_info,
        }

    def save(self, out: str | Path) -> None:
        """Write the policy (`save_pretrained`, tokenizer, value head, state JSON) atomically."""
        save_model(self.policy, self.tokenizer, out, (PPO_STATE_FILE, self.state()))

    def save_checkpoint(self) -> Path:
        """Write `out_dir/checkpoint-<iteration>/` (`lm.checkpoint.save_checkpoint`: the policy
        and value head, `optimizer.pt`, the state JSON, `rng_state_0.pth` with the env seed stream
        and the minibatch order). Episodes never span iterations: no env state to save."""
        if self.out_dir is None:
            raise ValueError("save_checkpoint needs the trainer's out_dir")
        return save_checkpoint(
            self.accelerator,
            self.out_dir,
            self.iteration,
            self.policy,
            self.tokenizer,
            self.optimizer,
            lambda: (PPO_STATE_FILE, self.state()),
            self.rng_states(),
            self.cfg.save_total_limit,
        )

    def load_checkpoint(self, folder: str | Path) -> None:
        """Continue from a `save_checkpoint` folder (the reference stays the starting policy).
        Reads only safetensors, JSON and tensors, each checked before use."""
        folder = Path(folder)
        state = read_agent_state(folder)
        optimizer, rng = read_checkpoint_files(self.accelerator, folder, state)
        load_weights(self.policy, folder)
        try:
            self.optimizer.load_state_dict(optimizer)
            set_rng_state(rng)
            self.seed_gen.set_state(rng["seed_gen"])
            self.update_gen.set_state(rng["update_gen"])
        except (RuntimeError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"checkpoint {folder} does not fit this run: {err}") from None
        if self.accelerator.scaler is not None and state["scaler"] is not None:
            self.accelerator.scaler.load_state_dict(state["scaler"])
        self.kl_ctl.value = state["beta"]
        self.iteration = state["iteration"]
        self.run_info = state["run_info"]

    def rng_states(self) -> dict:
        return {
            **rng_state(),
            "seed_gen": self.seed_gen.get_state(),
            "update_gen": self.update_gen.get_state(),
        }


def episode_metrics(episodes: Sequence[Episode]) -> dict[str, float]:
    """env/return, success, turns (means per episode), invalid_actions (share of turns),
    truncated and overflow (shares of episodes), stop_fraction (turns ended at stop / EOS)."""
    n, turns = len(episodes), sum(ep.turns for ep in episodes)
    return {
        "env/return": sum(ep.ret for ep in episodes) / n,
        "env/success": sum(ep.success for ep in episodes) / n,
        "env/turns": turns / n,
        "env/invalid_actions": sum(sum(ep.invalid) for ep in episodes) / turns,
        "env/truncated": sum(ep.truncated for ep in episodes) / n,
        "env/overflow": sum(ep.overflow for ep in episodes) / n,
        "env/stop_fraction": sum(sum(ep.ended) for ep in episodes) / turns,
    }


def read_agent_state(folder: Path) -> dict:
    """An agent checkpoint's state JSON, every field checked, or a one-line ValueError."""
    return read_state(folder, PPO_STATE_FILE, PPO_STATE)
