"""The seed notebook's `train_ppo` cell, verbatim but for its imports (the seed's rl_lab names).

The seed lives outside this repository (../shared/seeds/000_cba39af557d9bd57.txt); this copy lets
CI run the cell anywhere, and tests/test_classic_agent.py checks it against the seed's text when
the seed is present. Excluded from ruff so that it stays byte-identical to the cell.
"""

import gymnasium as gym
import numpy as np

from classic import PPOAgent, get_device

device = get_device()


def train_ppo(env_id="CartPole-v1", n_iterations=200, rollout_steps=2048, **kwargs):
    """
    Train PPO and return metrics.
    
    Args:
        env_id: Gymnasium environment ID
        n_iterations: Number of rollout+update cycles
        rollout_steps: Steps to collect before each update
        **kwargs: PPO hyperparameters
    
    Returns:
        Tuple of (agent, metrics dict)
    """
    env = gym.make(env_id)
    obs_dim = env.observation_space.shape[0]
    n_actions = env.action_space.n
    
    agent = PPOAgent(obs_dim=obs_dim, n_actions=n_actions, device=device, **kwargs)
    
    all_rewards = []
    policy_losses = []
    value_losses = []
    entropies = []
    
    state, _ = env.reset()
    ep_reward = 0
    
    for iteration in range(n_iterations):
        # Collect rollout
        for step in range(rollout_steps):
            action, log_prob, value = agent.select_action(state, training=True)
            next_state, reward, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
            
            agent.store_transition(state, action, reward, done, log_prob, value)
            ep_reward += reward
            state = next_state
            
            if done:
                all_rewards.append(ep_reward)
                ep_reward = 0
                state, _ = env.reset()
        
        # PPO update
        metrics = agent.update()
        policy_losses.append(metrics['policy_loss'])
        value_losses.append(metrics['value_loss'])
        entropies.append(metrics['entropy'])
        
        if (iteration + 1) % 20 == 0:
            recent = all_rewards[-20:] if len(all_rewards) >= 20 else all_rewards
            avg = np.mean(recent) if recent else 0
            print(f"Iter {iteration+1}: avg reward = {avg:.1f}, "
                  f"policy_loss = {metrics['policy_loss']:.4f}, "
                  f"entropy = {metrics['entropy']:.3f}")
    
    env.close()
    return agent, {
        'rewards': all_rewards,
        'policy_losses': policy_losses,
        'value_losses': value_losses,
        'entropies': entropies,
    }
