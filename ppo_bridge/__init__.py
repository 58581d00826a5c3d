"""ppo_bridge: the PPO core shared by the gymnasium adapter (classic) and the LM adapter (lm).

Every PPO formula lives here once, as small functions over torch tensors with optional masks:

- `gae`: generalised advantage estimation with terminations, truncations and padding masks;
  `multi_turn_gae` for multi-turn LM episodes (agent tokens between environment tokens).
- `critic_free`: group advantages (GRPO, Dr. GRPO, RLOO).
- `dpo`: the DPO / cDPO / IPO losses on sequence log-probs (offline preference optimisation).
- `losses`: masked mean / whitening, the loss aggregations, the clipped surrogate, the (clipped)
  value loss, entropy.
- `kl`: the k1, k2, k3 KL estimators and the fixed / adaptive KL controllers.
- `update`: the epochs x shuffled-minibatches update loop, with or without a critic.
- `config`: `PPOConfig`, validated at construction.
"""

from ppo_bridge.config import PPOConfig
from ppo_bridge.critic_free import group_advantages
from ppo_bridge.dpo import dpo_loss
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
    value_loss,
)
from ppo_bridge.update import Evaluation, ppo_update

__all__ = [
    "AdaptiveKLController",
    "Evaluation",
    "FixedKLController",
    "KLController",
    "PPOConfig",
    "clipped_surrogate_loss",
    "dpo_loss",
    "entropy_bonus",
    "explained_variance",
    "gae",
    "group_advantages",
    "kl_estimate",
    "loss_weights",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "multi_turn_gae",
    "ppo_update",
    "value_loss",
]
