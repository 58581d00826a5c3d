"""ppo_bridge: the PPO core shared by the gymnasium adapter (classic) and the LM adapter (lm).

Every PPO formula lives here once, as small functions over torch tensors with optional masks:

- `gae`: generalised advantage estimation with terminations, truncations and padding masks;
  `multi_turn_gae` for multi-turn LM episodes (agent tokens between environment tokens).
- `critic_free`: group advantages (GRPO, Dr. GRPO, RLOO).
- `estimators`: the table of advantage estimators by name (ppo, grpo, rloo, reinforce_pp) that
  every `--algo` reads.
- `dpo`: the DPO / cDPO / IPO losses on sequence log-probs (offline preference optimisation).
- `losses`: masked mean / whitening, the loss aggregations, the clipped surrogate, the (clipped)
  value loss, entropy.
- `kl`: the k1, k2, k3 KL estimators and the fixed / adaptive KL controllers.
- `update`: the epochs x shuffled-minibatches update loop, with or without a critic.
- `config`: `PPOConfig`, validated at construction.

And what every run folder and command line shares (no formulas): `atomic` (atomic file and folder
writes), `logs` (CSV + TensorBoard, continued on resume), `rundir` (the run-folder guard and
start-over), `cli` (config flags and the one-line error ending).
"""

from ppo_bridge.config import PPOConfig
from ppo_bridge.critic_free import group_advantages
from ppo_bridge.dpo import dpo_loss
from ppo_bridge.estimators import ESTIMATORS, Estimator, EstimatorArgs, get_estimator
from ppo_bridge.gae import gae, multi_turn_gae
from ppo_bridge.kl import AdaptiveKLController, FixedKLController, KLController, kl_estimate
from ppo_bridge.losses import (
    clipped_surrogate_loss,
    entropy_bonus,
    explained_variance,
    loss_weights,
    masked_mean,
    masked_var,
    masked_whiten,
    sequence_log_ratio,
    value_loss,
)
from ppo_bridge.update import Evaluation, ppo_update

__all__ = [
    "ESTIMATORS",
    "AdaptiveKLController",
    "Estimator",
    "EstimatorArgs",
    "Evaluation",
    "FixedKLController",
    "KLController",
    "PPOConfig",
    "clipped_surrogate_loss",
    "dpo_loss",
    "entropy_bonus",
    "explained_variance",
    "gae",
    "get_estimator",
    "group_advantages",
    "kl_estimate",
    "loss_weights",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "multi_turn_gae",
    "ppo_update",
    "sequence_log_ratio",
    "value_loss",
]
