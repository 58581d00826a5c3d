"""lm: the language-model adapter of ppo_bridge (token-level PPO on a causal LM)."""
