"""classic: the gymnasium adapter of ppo_bridge (actor-critic, vectorised trainer, evaluation)."""

from classic.agent import PPOAgent, get_device
from classic.networks import ActorCritic

__all__ = ["ActorCritic", "PPOAgent", "get_device"]
