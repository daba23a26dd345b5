"""PPO on CartPole-v1: environment steps and wall seconds to a mean return of 475 over 20 episodes."""

from __future__ import annotations

from llmcourse.cartpole_ppo import PPOConfig, evaluate_agent, train


def run() -> list[str]:
    """Train from chapter 03's config and seed (``PPOConfig(seed=0)``) until the target; report the cost."""
    config = PPOConfig(seed=0)
    m = train(config)
    steps = m["steps_to_target"]
    fresh = evaluate_agent(m["agent"], config.env_id, n_episodes=20, seed=12_345)
    reached = f"{steps} environment steps" if steps is not None else f"NOT reached within {config.total_timesteps} steps"
    return [
        f"target: mean return >= {config.target_return} over {config.eval_episodes} evaluation episodes "
        f"(sampled actions), evaluated every {config.eval_every * config.batch_size} steps",
        f"reached after {reached}, {len(m['global_step'])} updates, {m['seconds']:.1f} s wall "
        f"({m['global_step'][-1] / m['seconds']:.0f} env steps/s including evaluations)",
        f"fresh evaluation of the final policy (20 new episodes): mean {fresh.mean():.1f}, min {fresh.min():.0f}",
    ]
