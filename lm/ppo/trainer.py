"""Token-level PPO (and GRPO, RLOO, REINFORCE++) for a causal LM on the ppo_bridge core.

One iteration, on every process (each with its own shard of the prompts):

1. rollout: sample responses at temperature T, then score them (reward model or callable) and
   read log-probs (policy and frozen reference, at T) and values (`lm.rollout.collect`);
2. rewards: r_t = -beta * KL_t on each response token, + score on the last (`per_token_rewards`);
3. advantages: the estimator `cfg.algo` names in the core's table (`ppo_bridge.estimators`);
4. update: the core's `ppo_update` with `evaluate` re-running the policy on a minibatch, and the
   `accelerate.Accelerator` as backend (DDP gradient sync, mixed precision, grad clipping).

Every model stays in eval mode, in training too (no dropout: the log-probs of the rollout and of
the update come from the same function).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase, set_seed

from lm.checkpoint import (
    OPTIMIZER_FILE,
    load_weights,
    read_checkpoint_files,
    rng_state,
    save_checkpoint,
    save_model,
    set_rng_state,
)
from lm.distributed import make_accelerator, reduce_mean
from lm.fsdp import check_fsdp, full_state_dict, shard_sampling
from lm.grading import Grader
from lm.loop import train_loop
from lm.models import PolicyWithValueHead, enable_gradient_checkpointing, model_context
from lm.ppo.checkpoint import PPO_STATE_FILE, read_checkpoint_state
from lm.ppo.config import LMPPOConfig
from lm.rewards import RewardFn, Scorer, check_scores, per_token_rewards
from lm.rollout import Rollout, SamplingArgs, collect
from lm.sampling import Reference, policy_forward, tokenize_prompts
from ppo_bridge import (
    AdaptiveKLController,
    EstimatorArgs,
    Evaluation,
    FixedKLController,
    get_estimator,
    masked_whiten,
    ppo_update,
)


class LMPPOTrainer:
    """PPO and its kin on `policy` (any causal LM) against a weighted sum of rewards.

    The rewards, as trl's `reward_funcs` / `reward_weights`: a reward model (optional, first) and
    python callables `f(prompts, responses) -> scores` (`lm.rewards.Scorer`), each logged as
    `rewards/<name>`. `gold_fn(prompts, responses)`, when given, is an extra judge that is only
    logged (objective/gold).
    """

    def __init__(
        self,
        cfg: LMPPOConfig,
        policy: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        prompts: Sequence[str],
        *,
        reward_model: PreTrainedModel | None = None,
        reward_tokenizer: PreTrainedTokenizerBase | None = None,
        reward_label: int = 0,
        reward_funcs: RewardFn | Sequence[RewardFn] = (),
        reward_weights: Sequence[float] | None = None,
        gold_fn: RewardFn | None = None,
        out_dir: str | Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.estimator = get_estimator(cfg.algo)
        self.accelerator = acc = make_accelerator(cfg.mixed_precision)
        check_fsdp(acc, checkpoints=cfg.save_every > 0)
        self.sampling = SamplingArgs(
            cfg.temperature,
            cfg.max_new_tokens,
            cfg.top_k,
            cfg.top_p,
            chunk=cfg.minibatch_size // cfg.grad_accum_steps,
        )
        self.scorer = Scorer(
            tokenizer,
            reward_model=reward_model,
            reward_tokenizer=reward_tokenizer,
            reward_label=reward_label,
            reward_funcs=reward_funcs,
            reward_weights=reward_weights,
            chunk=self.sampling.chunk,
            device=acc.device,
        )
        set_seed(cfg.seed + acc.process_index)  # each process samples differently
        self.tokenizer = tokenizer
        self.prompts = list(prompts)
        self.prompt_ids = tokenize_prompts(
            tokenizer, self.prompts, cfg.max_new_tokens, model_context(policy)
        )
        self.scorer.check_length(max(len(p) for p in self.prompt_ids) + cfg.max_new_tokens)
        self.gold_fn = gold_fn
        model = PolicyWithValueHead(policy)
        self.reference = Reference(model, acc.device)
        model.value_head.requires_grad_(cfg.critic)  # critic-free: an unused head stays out of DDP
        trainable = [p for p in model.parameters() if p.requires_grad]
        # fused: one kernel per step for all tensors (4x faster than foreach on a CPU at 124M)
        optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, eps=1e-5, fused=True)
        self.model, self.optimizer = acc.prepare(model, optimizer)
        self.model.eval()
        self.policy: PolicyWithValueHead = acc.unwrap_model(self.model)
        shard_sampling(acc, self.policy)
        if cfg.gradient_checkpointing:
            enable_gradient_checkpointing(self.policy.lm)

        self.kl_ctl = (
            AdaptiveKLController(cfg.beta, cfg.kl_target, cfg.kl_horizon)
            if cfg.kl_target is not None
            else FixedKLController(cfg.beta)
        )
        self.update_gen = torch.Generator().manual_seed(cfg.seed)
        self.prompt_gen = torch.Generator().manual_seed(cfg.seed)
        self.prompt_queue: list[int] = []
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.iteration = 0
        self.run_info: dict = {}  # JSON kept in every checkpoint for the caller (lm.train: sources)

    # ---------------------------------------------------------------- rollout

    def next_prompt_indices(self) -> list[int]:
        """This process's shard of the next global batch, from shuffled passes over the prompts:
        batch_size / num_generations prompts, each repeated num_generations times in a row."""
        acc, k = self.accelerator, self.cfg.num_generations
        per_process = self.cfg.batch_size // k
        n_global = per_process * acc.num_processes
        while len(self.prompt_queue) < n_global:
            perm = torch.randperm(len(self.prompts), generator=self.prompt_gen)
            self.prompt_queue += perm.tolist()
        batch, self.prompt_queue = self.prompt_queue[:n_global], self.prompt_queue[n_global:]
        mine = batch[acc.process_index * per_process : (acc.process_index + 1) * per_process]
        return [i for i in mine for _ in range(k)]

    def rollout(self, prompts: list[str], prompt_ids: list[list[int]]) -> Rollout:
        """Sample one response per prompt and read everything PPO needs about it."""
        acc = self.accelerator
        return collect(
            self.policy,
            self.reference,
            self.scorer,
            self.tokenizer,
            prompts,
            prompt_ids,
            self.sampling,
            acc.device,
            acc.autocast(),
        )

    # ---------------------------------------------------------------- PPO iteration

    def step(self) -> dict[str, float]:
        """One iteration, rollout -> rewards -> advantages -> update; returns its metrics (means
        over all processes)."""
        cfg, acc = self.cfg, self.accelerator
        start = time.perf_counter()
        indices = self.next_prompt_indices()
        ro = self.rollout([self.prompts[i] for i in indices], [self.prompt_ids[i] for i in indices])
        beta = self.kl_ctl.value
        scores, rewards, kl = self.rewards(ro, beta)
        batch = self.advantages(ro, rewards)
        t_update = time.perf_counter()
        stats = self.update(batch)
        seconds_update = time.perf_counter() - t_update

        kl_seq = kl.sum(1)
        non_score = -beta * kl_seq
        local = {
            "objective/kl": kl_seq.mean(),
            "objective/entropy": (ro.entropy * ro.mask).sum(1).mean(),
            "objective/non_score_reward": non_score.mean(),
            "objective/rlhf_reward": (scores + non_score).mean(),
            "objective/scores": scores.mean(),
            **{f"rewards/{name}": r.mean() for name, r in ro.rewards.items()},
            "objective/eos_fraction": ro.has_eos.float().mean(),
            "objective/response_tokens": ro.mask.sum(1).mean(),
            "policy/approxkl_avg": stats["approx_kl"],
            "policy/clipfrac_avg": stats["clipfrac"],
            "policy/entropy_avg": stats["entropy"],
            "loss/policy_avg": stats["policy_loss"],
            "val/ratio": stats["ratio"],
            "time/generate": ro.seconds_generate,
            "time/score": ro.seconds_score,
            "time/update": seconds_update,
        }
        optional = {
            "value_loss": "loss/value_avg",
            "explained_variance": "val/explained_variance",
            "value_clipfrac": "val/clipfrac_avg",
            "kl": "loss/kl_avg",  # the KL term in the loss (grpo)
        }
        local.update({name: stats[key] for key, name in optional.items() if key in stats})
        if self.gold_fn is not None:
            gold = check_scores(self.gold_fn(ro.prompts, ro.responses), len(ro.prompts), "gold_fn")
            local["objective/gold"] = gold.mean()
        metrics = reduce_mean(acc, local)
        self.kl_ctl.update(metrics["objective/kl"], cfg.batch_size * acc.num_processes)
        self.iteration += 1
        seconds = time.perf_counter() - start
        metrics.update(
            {
                "iteration": float(self.iteration),
                "episode": float(self.iteration * cfg.batch_size * acc.num_processes),
                "objective/beta": beta,
                "policy/n_updates": stats["n_updates"],
                "policy/early_stop": stats["early_stop"],
                "lr": stats["lr"],
                "time/iteration": seconds,
                "perf/tokens_per_s": metrics["objective/response_tokens"]
                * cfg.batch_size
                * acc.num_processes
                / seconds,
            }
        )
        return metrics

    def rewards(self, ro: Rollout, beta: float) -> tuple[Tensor, Tensor, Tensor]:
        """r_t = -beta * KL_t on each response token, + the score on the last (`per_token_rewards`).

        The score loses `missing_eos_penalty` when the response has no EOS, and is whitened over
        the global batch with `normalize_scores`. Returns the penalised scores [B] (before
        whitening), the rewards [B, R] and KL_t [B, R].
        """
        cfg = self.cfg
        scores = ro.scores.clone()
        if cfg.missing_eos_penalty is not None:
            scores[~ro.has_eos] -= cfg.missing_eos_penalty
        if cfg.normalize_scores:
            scores_for_reward = masked_whiten(scores, reduce_sum=self.sum_over_processes)
        else:
            scores_for_reward = scores
        rewards, kl = per_token_rewards(
            ro.logprobs, ro.ref_logprobs, scores_for_reward, ro.mask, beta, cfg.kl_estimator
        )
        return scores, rewards, kl

    def advantages(self, ro: Rollout, rewards: Tensor) -> dict[str, Tensor]:
        """The update's batch, with the advantages of the estimator `cfg.algo` names (and, for a
        critic, the returns and old values for the value loss)."""
        cfg = self.cfg
        batch = {
            "query_responses": ro.query_responses,
            "attention_mask": ro.attention_mask,
            "logprobs": ro.logprobs,
            "mask": ro.mask,
        }
        if cfg.kl_coef > 0:
            batch["ref_logprobs"] = ro.ref_logprobs
        args = EstimatorArgs(
            gamma=cfg.gamma,
            lam=cfg.gae_lambda,
            group_size=cfg.num_generations,
            scale_rewards=cfg.scale_rewards,
            reduce_sum=self.sum_over_processes,
        )
        values = ro.values if self.estimator.critic else None
        batch["advantages"], returns = self.estimator.advantages(rewards, ro.mask, values, args)
        if returns is not None:
            batch.update(returns=returns, values=ro.values)
        return batch

    def update(self, batch: dict[str, Tensor]) -> dict[str, float]:
        """The core's `ppo_update`, re-running the policy (and the value head, for PPO)."""
        cfg, n_resp = self.cfg, batch["mask"].shape[1]

        def evaluate(mb: dict[str, Tensor]) -> Evaluation:
            lp, ent, v = policy_forward(
                self.model, mb["query_responses"], mb["attention_mask"], n_resp, cfg.temperature
            )
            return Evaluation(logprobs=lp, entropy=ent, values=v if cfg.critic else None)

        if cfg.loss_norm_constant is None:  # Dr. GRPO's C: max_new_tokens (trl), not R
            cfg = replace(cfg, loss_norm_constant=float(cfg.max_new_tokens))
        return ppo_update(
            batch,
            evaluate,
            self.optimizer,
            cfg,
            progress=self.iteration / cfg.total_iterations,
            generator=self.update_gen,
            backend=self.accelerator,
        )

    def sum_over_processes(self, tensor: Tensor) -> Tensor:
        return self.accelerator.reduce(tensor, "sum")

    def train(self, on_first_step: Callable[[], None] | None = None) -> list[dict[str, float]]:
        """Run the remaining iterations (`lm.loop.train_loop`: logs, checkpoints every
        `save_every`); return the metrics per iteration."""

        def postfix(m: dict[str, float]) -> dict[str, str]:
            shown = {"score": f"{m['objective/scores']:.3f}", "kl": f"{m['objective/kl']:.2f}"}
            return {**shown, **({"gold": f"{m['objective/gold']:.3f}"} if self.gold_fn else {})}

        cfg = self.cfg
        return train_loop(
            self,
            self.step,
            cfg.total_iterations,
            save_every=cfg.save_every,
            desc=cfg.algo,
            postfix=postfix,
            on_first_step=on_first_step,
        )

    def evaluate(self, prompts: Sequence[str]) -> tuple[dict[str, float], Rollout]:
        """Grade the policy as it is now on `prompts` (`Grader.evaluate`)."""
        return self.grader(prompts).evaluate()

    def grader(self, prompts: Sequence[str]) -> Grader:
        """A `Grader` of this policy on `prompts`, sampling as the rollouts do, with this run's
        reference, rewards and gold judge."""
        return Grader(
            self.accelerator,
            self.policy,
            self.reference,
            self.scorer,
            self.tokenizer,
            prompts,
            self.sampling,
            kl_estimator=self.cfg.kl_estimator,
            gold_fn=self.gold_fn,
        )

    # ---------------------------------------------------------------- evaluation and saving

    def save(self, out: str | Path) -> None:
        """Write the policy (`save_pretrained`, tokenizer, value head) atomically, main process."""
        self.accelerator.wait_for_everyone()
        weights = full_state_dict(self.accelerator, self.model)  # FSDP: gathered on every process
        if self.accelerator.is_main_process:
            state = {"config": asdict(self.cfg), "iteration": self.iteration}
            state["beta"] = self.kl_ctl.value
            save_model(self.policy, self.tokenizer, out, (PPO_STATE_FILE, state), weights)
        self.accelerator.wait_for_everyone()

    def save_checkpoint(self) -> Path:
        """Write `out_dir/checkpoint-<iteration>/` atomically; keep the newest `save_total_limit`.

        It holds everything a bit-identical continuation needs: the policy (`save_pretrained`,
        tokenizer, value head), the optimizer (`optimizer.pt`: tensors and plain types), and in
        `ppo_state.json` the iteration, beta, the prompt queue, the config and `run_info`; plus
        one `rng_state_<rank>.pth` per process (torch, CUDA, python, numpy RNGs and the prompt /
        minibatch generators). The reference model is not saved: it is the starting policy.
        Called by every process together.
        """
        acc = self.accelerator
        if self.out_dir is None:
            raise ValueError("save_checkpoint needs the trainer's out_dir")

        def state() -> tuple[str, dict]:
            return PPO_STATE_FILE, {
                "iteration": self.iteration,
                "beta": self.kl_ctl.value,
                "prompt_queue": self.prompt_queue,
                "num_processes": acc.num_processes,
                "scaler": acc.scaler.state_dict() if acc.scaler is not None else None,
                "config": asdict(self.cfg),
                "run_info": self.run_info,
            }

        return save_checkpoint(
            acc,
            self.out_dir,
            self.iteration,
            self.policy,
            self.tokenizer,
            self.optimizer,
            state,
            self.rng_states(),
            self.cfg.save_total_limit,
        )

    def load_checkpoint(self, folder: str | Path) -> None:
        """Continue from a `save_checkpoint` folder: policy, value head, optimizer, beta, prompt
        order, iteration, `run_info` and this process's RNG states. The reference model is left
        as built (the original starting policy). Reads only safetensors, JSON and tensors."""
        acc, folder = self.accelerator, Path(folder)
        state = read_checkpoint_state(folder, len(self.prompts))
        optimizer, rng = read_checkpoint_files(acc, folder, state)
        load_weights(self.policy, folder)
        try:
            self.optimizer.load_state_dict(optimizer)
        except (RuntimeError, ValueError, KeyError, TypeError) as err:
            raise ValueError(
                f"checkpoint {folder}: its {OPTIMIZER_FILE} does not fit this run: "
                f"{str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}"
            ) from None
        if acc.scaler is not None and state["scaler"] is not None:
            acc.scaler.load_state_dict(state["scaler"])
        set_rng_state(rng)
        self.prompt_gen.set_state(rng["prompt_gen"])
        self.update_gen.set_state(rng["update_gen"])
        self.kl_ctl.value = state["beta"]
        self.prompt_queue = state["prompt_queue"]
        self.iteration = state["iteration"]
        self.run_info = state["run_info"]

    def rng_states(self) -> dict:
        """This process's RNG states: the global ones and the prompt / minibatch generators."""
        return {
            **rng_state(),
            "prompt_gen": self.prompt_gen.get_state(),
            "update_gen": self.update_gen.get_state(),
        }
