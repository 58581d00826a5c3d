"""Evaluate a trained run: mean and std of the episode return over a fixed number of episodes.

    python -m classic.evaluate runs/cartpole --episodes 100 --seed 123 [--stochastic] [--gif F]

`evaluate_policy` is the one evaluation used by the trainer, this CLI and bench/ (for SB3 too).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from classic.checkpoint import checkpoint_path, load_checkpoint, restore_policy
from classic.config import ClassicError
from classic.envs import env_actions, make_vec_env
from classic.networks import ActorCritic
from classic.normalize import Normalizer
from ppo_bridge.atomic import atomic_file
from ppo_bridge.cli import USER_ERRORS, run_command

Policy = Callable[[np.ndarray], np.ndarray]  # batch of raw observations -> batch of actions


def torch_policy(
    model: ActorCritic, normalizer: Normalizer, deterministic: bool = True, device: str = "cpu"
) -> Policy:
    """Wrap `model` as a numpy policy that normalises observations with frozen statistics.

    Sampling from a gSDE policy draws new exploration matrices for every step (its per-step
    distribution N(mu(s), z(s)^2 sigma^2)): the training rollout's matrices belong to its envs.
    """

    def policy(obs: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(normalizer.obs(obs)).to(device)
        if model.sde and not deterministic:
            model.reset_noise(len(x))
        return model.act(x, deterministic)[0].cpu().numpy()

    return policy


def evaluate_policy(
    policy: Policy, env_id: str, n_episodes: int, *, seed: int, n_envs: int = 10
) -> np.ndarray:
    """Returns of exactly `n_episodes` episodes, played by `n_envs` envs in lock-step.

    Env i plays a fixed quota of (n_episodes + i) // n_envs episodes (as SB3's evaluate_policy),
    so short episodes are not over-represented; episodes beyond its quota are ignored.
    """
    n_envs = max(1, min(n_envs, n_episodes))
    quota = np.array([(n_episodes + i) // n_envs for i in range(n_envs)])
    envs = make_vec_env(env_id, n_envs)
    try:
        obs, _ = envs.reset(seed=seed)
        running = np.zeros(n_envs)
        done_count = np.zeros(n_envs, np.int64)
        returns: list[float] = []
        while (done_count < quota).any():
            actions = env_actions(envs.single_action_space, policy(obs))
            obs, reward, terminated, truncated, _ = envs.step(actions)
            running += reward
            for i in np.flatnonzero(terminated | truncated):
                if done_count[i] < quota[i]:
                    returns.append(float(running[i]))
                    done_count[i] += 1
                running[i] = 0.0
    finally:
        envs.close()
    return np.asarray(returns)


def write_gif(policy: Policy, env_id: str, path: str, *, seed: int) -> int:
    """Render one episode (rgb_array) into the GIF `path`; returns its number of frames.

    MuJoCo renders through OpenGL: MUJOCO_GL=egl (headless, libEGL) unless the caller chose a
    backend (gymnasium reads it when the renderer is made; unset, it tries glfw first, which
    fails without a display); a failure to render is a ClassicError naming what to install.
    """
    import imageio.v3 as iio

    target = Path(path)
    if not target.parent.is_dir() or not os.access(target.parent, os.W_OK | os.X_OK):
        raise ClassicError(
            f"--gif {path}: {target.parent} is not a writable folder: pass a path in one"
        )
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame renders off-screen: no display
    envs = make_vec_env(env_id, 1, render_mode="rgb_array")
    try:
        obs, _ = envs.reset(seed=seed)
        env = envs.envs[0]
        try:
            frames, done = [env.render()], False
        except Exception as err:  # mujoco.FatalError, AttributeError from PyOpenGL, ...
            raise ClassicError(
                f"cannot render {env_id} ({type(err).__name__}: {err}); MuJoCo needs an OpenGL "
                "backend: MUJOCO_GL=egl (apt install libegl1) or MUJOCO_GL=osmesa "
                "(apt install libosmesa6)"
            ) from err
        while not done:
            obs, _, terminated, truncated, _ = envs.step(
                env_actions(envs.single_action_space, policy(obs))
            )
            done = bool(terminated[0] or truncated[0])
            if not done:  # after the last step the env has already been reset
                frames.append(env.render())
        fps = env.metadata.get("render_fps", 30)
    finally:
        envs.close()
    gif = iio.imwrite("<bytes>", np.stack(frames), extension=".gif", duration=1000 / fps, loop=0)
    with atomic_file(target) as tmp:
        tmp.write_bytes(gif)
    return len(frames)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m classic.evaluate", description="Evaluate a classic.train run."
    )
    parser.add_argument("run", help="run directory (or its checkpoint.pt)")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=123, help="env reset seed of the first env")
    parser.add_argument("--n-envs", type=int, default=10, help="envs played in lock-step")
    parser.add_argument("--stochastic", action="store_true", help="sample actions (default: mode)")
    parser.add_argument("--env", help="expected env id: error if the run was trained on another")
    parser.add_argument("--gif", metavar="FILE", help="also write one rendered episode to FILE")
    args = parser.parse_args(argv)
    return run_command(lambda: evaluate_run(args), (ClassicError, *USER_ERRORS))


def evaluate_run(args: argparse.Namespace) -> dict:
    """Load the run's policy, play the episodes, return the summary (and write the GIF)."""
    if args.episodes < 1 or args.n_envs < 1:
        raise ClassicError("--episodes and --n-envs must be >= 1")
    state = load_checkpoint(args.run, env_id=args.env)
    cfg, model, normalizer = restore_policy(state, checkpoint_path(args.run))
    torch.manual_seed(args.seed)
    policy = torch_policy(model, normalizer, not args.stochastic, cfg.device)
    returns = evaluate_policy(policy, cfg.env_id, args.episodes, seed=args.seed, n_envs=args.n_envs)
    result = {
        "env": cfg.env_id,
        "episodes": len(returns),
        "mean_return": float(returns.mean()),
        "std_return": float(returns.std()),
        "deterministic": not args.stochastic,
        "seed": args.seed,
    }
    if args.gif:
        result["gif"] = args.gif
        result["gif_frames"] = write_gif(policy, cfg.env_id, args.gif, seed=args.seed)
    return result


if __name__ == "__main__":
    sys.exit(main())
