"""`Grader`: how every method's policy is graded, before and after training, the same way.

Responses to held-out prompts are sampled at the training temperature and reported as: the mean
score (the weighted rewards: the reward model's logit for RLHF), the gold score (with a gold
judge, the toy world's), the KL to the reference in nats per response, and the EOS fraction; plus
the samples themselves.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from accelerate import Accelerator
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lm.distributed import reduce_mean
from lm.models import PolicyWithValueHead, model_context
from lm.rewards import RewardFn, Scorer, check_scores
from lm.rollout import Rollout, SamplingArgs, collect
from lm.sampling import Reference, tokenize_prompts
from ppo_bridge import kl_estimate
from ppo_bridge.kl import KLEstimator


class Grader:
    """Grades `policy` (whatever it becomes: it is held, not copied) on `prompts`, split over the
    processes; prompts beyond a multiple of the number of processes are left out."""

    def __init__(
        self,
        accelerator: Accelerator,
        policy: PolicyWithValueHead | PreTrainedModel,
        reference: Reference,
        scorer: Scorer,
        tokenizer: PreTrainedTokenizerBase,
        prompts: Sequence[str],
        sampling: SamplingArgs,
        *,
        kl_estimator: KLEstimator = "k1",
        gold_fn: RewardFn | None = None,
    ) -> None:
        self.accelerator, self.policy, self.reference = accelerator, policy, reference
        self.scorer, self.tokenizer, self.sampling = scorer, tokenizer, sampling
        self.kl_estimator, self.gold_fn = kl_estimator, gold_fn
        self._set_prompts(prompts)

    def _set_prompts(self, prompts: Sequence[str]) -> None:
        acc = self.accelerator
        usable = len(prompts) // acc.num_processes * acc.num_processes
        self.prompts = list(prompts[:usable])[acc.process_index :: acc.num_processes]
        lm = self.policy.lm if isinstance(self.policy, PolicyWithValueHead) else self.policy
        self.prompt_ids = tokenize_prompts(
            self.tokenizer, self.prompts, self.sampling.max_new_tokens, model_context(lm)
        )

    def on(self, prompts: Sequence[str]) -> Grader:
        """This grader (same policy, reference, rewards, sampling) on other prompts."""
        other = copy.copy(self)
        other._set_prompts(prompts)
        return other

    def evaluate(self) -> tuple[dict[str, float], Rollout]:
        """(means over all processes of score, gold, kl, eos_fraction; this process's rollout)."""
        acc = self.accelerator
        ro = collect(
            self.policy,
            self.reference,
            self.scorer,
            self.tokenizer,
            self.prompts,
            self.prompt_ids,
            self.sampling,
            acc.device,
            acc.autocast(),
        )
        kl = kl_estimate(ro.logprobs, ro.ref_logprobs, self.kl_estimator) * ro.mask
        local = {
            "score": ro.scores.mean(),
            "kl": kl.sum(1).mean(),
            "eos_fraction": ro.has_eos.float().mean(),
        }
        if self.gold_fn is not None:
            gold = check_scores(self.gold_fn(ro.prompts, ro.responses), len(ro.prompts), "gold_fn")
            local["gold"] = gold.mean()
        return reduce_mean(acc, local), ro


def reference_grader(
    accelerator: Accelerator,
    policy: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    sampling: SamplingArgs,
    *,
    reward_model: PreTrainedModel,
    reward_tokenizer: PreTrainedTokenizerBase | None = None,
    reward_label: int = 0,
    gold_fn: RewardFn | None = None,
) -> Grader:
    """A `Grader` of `policy` whose reference is a frozen copy of `policy` as it is now and whose
    score is the reward model's: how a method without its own reference or rewards (DPO, or
    another library's trainer) is graded like lm.train."""
    scorer = Scorer(
        tokenizer,
        reward_model=reward_model,
        reward_tokenizer=reward_tokenizer,
        reward_label=reward_label,
        chunk=sampling.chunk,
        device=accelerator.device,
    )
    reference = Reference(policy, accelerator.device)
    return Grader(
        accelerator, policy, reference, scorer, tokenizer, prompts, sampling, gold_fn=gold_fn
    )
