"""Token-level PPO for a causal LM on the ppo_bridge core: `LMPPOTrainer` and its `Rollout`.

One iteration, on every process (each with its own shard of the prompts):

1. rollout: sample responses at temperature T, then score them (reward model or callable) and
   read log-probs (policy and frozen reference, at T) and values;
2. rewards: r_t = -beta * KL_t on each response token, + score on the last (`per_token_rewards`);
3. advantages: the core's GAE over the response tokens (`token_advantages`);
4. update: the core's `ppo_update` with `evaluate` re-running the policy on a minibatch, and the
   `accelerate.Accelerator` as backend (DDP gradient sync, mixed precision, grad clipping).

Every model stays in eval mode, in training too (no dropout: the log-probs of the rollout and of
the update come from the same function).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from safetensors import SafetensorError
from torch import Tensor
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase, set_seed

from lm.checkpoint import (
    atomic_folder,
    clean_stale,
    load_plain,
    prune_checkpoints,
    rng_state,
    set_rng_state,
)
from lm.fsdp import check_fsdp, full_state_dict, shard_sampling
from lm.lora import adapters_off, is_lora
from lm.policy import (
    PolicyWithValueHead,
    enable_gradient_checkpointing,
    load_policy_weights,
    same_tokenizer,
    save_policy,
    write_policy,
)
from lm.ppo.checkpoint import OPTIMIZER_FILE, read_checkpoint_state
from lm.ppo.config import LMPPOConfig, cpu_only
from lm.ppo.logs import MetricsLogger
from lm.rollout import (
    RewardFn,
    check_scores,
    is_decoder_classifier,
    left_pad,
    model_context,
    per_token_rewards,
    policy_forward,
    reference_logprobs,
    response_mask,
    retokenize,
    reward_model_scores,
    sample_responses,
    token_advantages,
    tokenize_prompts,
)
from ppo_bridge import (
    AdaptiveKLController,
    Evaluation,
    FixedKLController,
    group_advantages,
    kl_estimate,
    masked_whiten,
    ppo_update,
)


@dataclass
class Rollout:
    """One process's batch of B sampled responses; tensors are [B, R] unless noted."""

    query_responses: Tensor  # [B, P + R]
    attention_mask: Tensor  # [B, P + R]
    mask: Tensor  # real response tokens (float)
    has_eos: Tensor  # [B] bool
    logprobs: Tensor
    ref_logprobs: Tensor
    entropy: Tensor
    values: Tensor
    scores: Tensor  # [B] sum_i w_i * reward_i
    rewards: dict[str, Tensor]  # [B] each reward, unweighted, by name
    prompts: list[str]
    responses: list[str]
    seconds_generate: float
    seconds_score: float


class LMPPOTrainer:
    """PPO and its kin on `policy` (any causal LM) against a weighted sum of rewards.

    The rewards, as trl's `reward_funcs` / `reward_weights`: a reward model (optional, first) and
    python callables `f(prompts, responses) -> scores` (format, correctness, length checks...);
    score = sum_i w_i * reward_i (weights default 1), each reward logged as `rewards/<name>`.

    If the reward model's tokenizer differs from the policy's, or it is an encoder (BERT-style),
    the decoded prompt + response text is re-encoded with the reward model's tokenizer;
    `reward_label` is the index of the logit that is the reward. `gold_fn(prompts, responses)`,
    when given, is an extra judge that is only logged (objective/gold).
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
        self.reward_funcs = [reward_funcs] if callable(reward_funcs) else list(reward_funcs)
        names = ["reward_model"] if reward_model is not None else []
        names += [
            getattr(f, "__name__", f"reward_func_{i}") for i, f in enumerate(self.reward_funcs)
        ]
        if not names:
            raise ValueError("no reward: pass a reward_model and/or reward_funcs")
        weights = [1.0] * len(names) if reward_weights is None else list(reward_weights)
        if len(weights) != len(names):
            raise ValueError(
                f"{len(weights)} reward_weights for {len(names)} rewards ({', '.join(names)}): "
                "give one weight per reward, the reward model's first"
            )
        self.reward_weights = dict(zip(names, map(float, weights), strict=True))
        self.cfg = cfg
        self.accelerator = acc = Accelerator(
            cpu=cpu_only(), mixed_precision=cfg.resolved_mixed_precision()
        )
        check_fsdp(acc, checkpoints=cfg.save_every > 0)
        set_seed(cfg.seed + acc.process_index)  # each process samples differently
        self.tokenizer = tokenizer
        self.prompts = list(prompts)
        context = model_context(policy)
        self.prompt_ids = tokenize_prompts(tokenizer, self.prompts, cfg.max_new_tokens, context)

        self.gold_fn = gold_fn
        self.reward_model, self.reward_tokenizer = reward_model, reward_tokenizer or tokenizer
        self.retokenize = False
        if reward_model is not None:
            self.retokenize = not is_decoder_classifier(reward_model) or not same_tokenizer(
                tokenizer, self.reward_tokenizer
            )
            self.reward_label = reward_label
            self.rm_context = model_context(reward_model)
            longest = max(len(p) for p in self.prompt_ids) + cfg.max_new_tokens
            if not self.retokenize and longest > self.rm_context:
                raise ValueError(
                    f"prompt + response can reach {longest} tokens, more than the reward model's "
                    f"context of {self.rm_context}: shorten the prompts or lower --max-new-tokens"
                )
            self.reward_model = reward_model.to(acc.device).eval().requires_grad_(False)

        # The reference: a frozen copy of the start policy, or for a LoRA policy (None) the policy
        # itself with its adapters off (`reference_logprobs`), so the weights are held once.
        self.ref = None
        if not is_lora(policy):
            self.ref = copy.deepcopy(policy).to(acc.device).eval().requires_grad_(False)
        model = PolicyWithValueHead(policy)
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

    @torch.no_grad()
    def rollout(self, prompts: list[str], prompt_ids: list[list[int]]) -> Rollout:
        """Sample one response per prompt and read everything PPO needs about it."""
        cfg, tok, device = self.cfg, self.tokenizer, self.accelerator.device
        query, query_mask = left_pad(prompt_ids, tok.pad_token_id)
        query, query_mask = query.to(device), query_mask.to(device)

        start = time.perf_counter()
        responses = sample_responses(
            self.policy,
            query,
            query_mask,
            tok,
            temperature=cfg.temperature,
            top_k=cfg.top_k,
            top_p=cfg.top_p,
            max_new_tokens=cfg.max_new_tokens,
        )
        seconds_generate = time.perf_counter() - start

        start = time.perf_counter()
        mask, has_eos = response_mask(responses, tok.eos_token_id)
        query_responses = torch.cat([query, responses], dim=1)
        attention_mask = torch.cat([query_mask, torch.ones_like(responses)], dim=1)
        n_resp, step = responses.shape[1], cfg.minibatch_size // cfg.grad_accum_steps
        logprobs, entropy, values, ref_logprobs = [], [], [], []
        texts = tok.batch_decode(responses.masked_fill(~mask, tok.pad_token_id), True)
        with self.accelerator.autocast():  # the precision of the update's forward passes
            for i in range(0, len(prompts), step):
                qr, am = query_responses[i : i + step], attention_mask[i : i + step]
                lp, ent, v = policy_forward(self.policy, qr, am, n_resp, cfg.temperature)
                logprobs.append(lp)
                entropy.append(ent)
                values.append(v)
                ref_logprobs.append(self.reference_logprobs(qr, am, n_resp))
            rewards = self.score(query, query_mask, responses, mask, has_eos, prompts, texts)
        return Rollout(
            query_responses=query_responses,
            attention_mask=attention_mask,
            mask=mask.float(),
            has_eos=has_eos,
            logprobs=torch.cat(logprobs),
            ref_logprobs=torch.cat(ref_logprobs),
            entropy=torch.cat(entropy),
            values=torch.cat(values),
            scores=sum(self.reward_weights[k] * r for k, r in rewards.items()),
            rewards=rewards,
            prompts=prompts,
            responses=texts,
            seconds_generate=seconds_generate,
            seconds_score=time.perf_counter() - start,
        )

    def reference_logprobs(self, query_responses: Tensor, attention_mask: Tensor, n: int) -> Tensor:
        """[B, n] log-probs of the response tokens under the reference: the frozen copy, or the
        LoRA policy with its adapters off, run through its own forward (so FSDP gathers it)."""
        args = (query_responses, attention_mask, n, self.cfg.temperature)
        if self.ref is not None:
            return reference_logprobs(self.ref, *args)
        with adapters_off(self.policy.lm):
            return policy_forward(self.policy, *args)[0]

    def score(
        self,
        query: Tensor,
        query_mask: Tensor,
        responses: Tensor,
        mask: Tensor,
        has_eos: Tensor,
        prompts: list[str],
        texts: list[str],
    ) -> Tensor:
        """Each reward by name, [B]: the reward model's logit `reward_label` (on the rollout's own
        tokens or, when its tokenizer differs, on the decoded text re-encoded), then each reward
        callable's."""
        device = query.device
        out = {}
        if self.reward_model is not None:
            if self.retokenize:
                texts_in = [p + r for p, r in zip(prompts, texts, strict=True)]
                ids, am = retokenize(texts_in, has_eos, self.reward_tokenizer, self.rm_context)
                ids, am = ids.to(device), am.to(device)
            else:
                ids = torch.cat([query, responses], dim=1)
                am = torch.cat([query_mask, mask.long()], dim=1)
            step = self.cfg.minibatch_size // self.cfg.grad_accum_steps
            out["reward_model"] = torch.cat(
                [
                    reward_model_scores(
                        self.reward_model, ids[i : i + step], am[i : i + step], self.reward_label
                    )
                    for i in range(0, ids.shape[0], step)
                ]
            )
        for name, f in zip(list(self.reward_weights)[len(out) :], self.reward_funcs, strict=True):
            out[name] = check_scores(f(prompts, texts), len(prompts), name).to(device)
        return out

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
        metrics = self.reduce_mean(local)
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
        """The update's batch, with the advantage estimate that `cfg.algo` names:

        ppo           GAE(gamma, lambda) on the value head's V, and returns for the value loss
        reinforce_pp  G_t = sum_k gamma^k r_{t+k} (GAE with V = 0, lambda = 1), whitened over
                      the real tokens of the global batch
        grpo / rloo   one group advantage per response from its summed reward (the score,
                      minus beta * KL), on each of its tokens
        """
        cfg = self.cfg
        batch = {
            "query_responses": ro.query_responses,
            "attention_mask": ro.attention_mask,
            "logprobs": ro.logprobs,
            "mask": ro.mask,
        }
        if cfg.kl_coef > 0:
            batch["ref_logprobs"] = ro.ref_logprobs
        if cfg.algo == "ppo":
            adv, ret = token_advantages(rewards, ro.values, ro.mask, cfg.gamma, cfg.gae_lambda)
            batch.update(advantages=adv, returns=ret, values=ro.values)
        elif cfg.algo == "reinforce_pp":
            ret = token_advantages(rewards, torch.zeros_like(rewards), ro.mask, cfg.gamma, 1.0)[1]
            batch["advantages"] = masked_whiten(ret, ro.mask, reduce_sum=self.sum_over_processes)
        else:
            baseline = "mean" if cfg.algo == "grpo" else "leave_one_out"
            scale = "std" if cfg.scale_rewards else "none"
            adv = group_advantages(rewards.sum(1), cfg.num_generations, baseline, scale)
            batch["advantages"] = adv[:, None] * ro.mask
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

    def reduce_mean(self, values: dict[str, Tensor | float]) -> dict[str, float]:
        """Average scalar metrics over the processes (one all-reduce)."""
        stacked = torch.tensor([float(v) for v in values.values()], device=self.accelerator.device)
        stacked = self.accelerator.reduce(stacked, "mean")
        return dict(zip(values, stacked.tolist(), strict=True))

    def train(self) -> list[dict[str, float]]:
        """Run the remaining iterations; log CSV + TensorBoard; return the metrics per iteration.

        Each row also holds `time/elapsed`, the seconds since `train` began. With `out_dir`, the
        main process first removes what a killed save left there (`clean_stale`), and the logs
        continue after `iteration` (a resumed run's rows after its checkpoint are replaced).
        """
        cfg, acc = self.cfg, self.accelerator
        logger = None
        if acc.is_main_process and self.out_dir:
            clean_stale(self.out_dir)
            logger = MetricsLogger(self.out_dir, start=self.iteration)
        history: list[dict[str, float]] = []
        start = time.perf_counter()
        bar = tqdm(
            total=cfg.total_iterations - self.iteration,
            desc=cfg.algo,
            disable=not acc.is_main_process,
        )
        while self.iteration < cfg.total_iterations:
            metrics = self.step()
            metrics["time/elapsed"] = time.perf_counter() - start
            history.append(metrics)
            if logger:
                logger.log(metrics)
            bar.update(1)
            bar.set_postfix(
                score=f"{metrics['objective/scores']:.3f}",
                kl=f"{metrics['objective/kl']:.2f}",
                **({"gold": f"{metrics['objective/gold']:.3f}"} if self.gold_fn else {}),
            )
            done = self.iteration == cfg.total_iterations
            if self.out_dir and cfg.save_every and (self.iteration % cfg.save_every == 0 or done):
                self.save_checkpoint()
        bar.close()
        if logger:
            logger.close()
        return history

    # ---------------------------------------------------------------- evaluation and saving

    @torch.no_grad()
    def evaluate(self, prompts: Sequence[str]) -> tuple[dict[str, float], Rollout]:
        """Sample `prompts` (split over the processes) at the training temperature.

        Returns the means over all processes of the raw score, the gold score (with a gold judge),
        the KL to the reference (nats per response) and the EOS fraction, and this process's
        rollout. Prompts beyond a multiple of the number of processes are left out.
        """
        acc, cfg = self.accelerator, self.cfg
        usable = len(prompts) // acc.num_processes * acc.num_processes
        shard = list(prompts[:usable])[acc.process_index :: acc.num_processes]
        context = model_context(self.policy.lm)
        ids = tokenize_prompts(self.tokenizer, shard, cfg.max_new_tokens, context)
        ro = self.rollout(shard, ids)
        kl = kl_estimate(ro.logprobs, ro.ref_logprobs, cfg.kl_estimator) * ro.mask
        local = {
            "score": ro.scores.mean(),
            "kl": kl.sum(1).mean(),
            "eos_fraction": ro.has_eos.float().mean(),
        }
        if self.gold_fn is not None:
            gold = check_scores(self.gold_fn(ro.prompts, ro.responses), len(shard), "gold_fn")
            local["gold"] = gold.mean()
        return self.reduce_mean(local), ro

    def save(self, out: str | Path) -> None:
        """Write the policy (`save_pretrained`, tokenizer, value head) atomically, main process."""
        self.accelerator.wait_for_everyone()
        weights = full_state_dict(self.accelerator, self.model)  # FSDP: gathered on every process
        if self.accelerator.is_main_process:
            state = {"config": asdict(self.cfg), "iteration": self.iteration}
            state["beta"] = self.kl_ctl.value
            save_policy(self.policy, self.tokenizer, out, state, weights)
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
        rngs = gather_object([self.rng_states()])
        folder = self.out_dir / f"checkpoint-{self.iteration}"
        if acc.is_main_process:
            state = {
                "iteration": self.iteration,
                "beta": self.kl_ctl.value,
                "prompt_queue": self.prompt_queue,
                "num_processes": acc.num_processes,
                "scaler": acc.scaler.state_dict() if acc.scaler is not None else None,
                "config": asdict(self.cfg),
                "run_info": self.run_info,
            }
            with atomic_folder(folder) as tmp:
                write_policy(self.policy, self.tokenizer, tmp, state)
                torch.save(self.optimizer.state_dict(), tmp / OPTIMIZER_FILE)
                for rank, rng in enumerate(rngs):
                    torch.save(rng, tmp / f"rng_state_{rank}.pth")
            prune_checkpoints(self.out_dir, self.cfg.save_total_limit)
        acc.wait_for_everyone()
        return folder

    def load_checkpoint(self, folder: str | Path) -> None:
        """Continue from a `save_checkpoint` folder: policy, value head, optimizer, beta, prompt
        order, iteration, `run_info` and this process's RNG states. The reference model is left
        as built (the original starting policy). Reads only safetensors, JSON and tensors."""
        acc, folder = self.accelerator, Path(folder)
        state = read_checkpoint_state(folder)
        if state["num_processes"] != acc.num_processes:
            raise ValueError(
                f"{folder} was written by {state['num_processes']} processes, this run has "
                f"{acc.num_processes}: resume it with as many (torchrun --nproc_per_node)"
            )
        optimizer = load_plain(folder / OPTIMIZER_FILE)
        rng = load_plain(folder / f"rng_state_{acc.process_index}.pth")
        try:
            load_policy_weights(self.policy, folder)
            self.optimizer.load_state_dict(optimizer)
        except (OSError, RuntimeError, ValueError, KeyError, SafetensorError) as err:
            message = str(err).strip().splitlines() or [type(err).__name__]
            raise ValueError(
                f"checkpoint {folder}: cannot load it into this run: {message[0]}"
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
