"""PPO on CartPole-v1: environment steps and wall seconds to a mean return of 475 over 20 episodes, seeds 0-2."""

from __future__ import annotations

from llmcourse.cartpole_ppo import PPOConfig, evaluate_agent, train

SEEDS = (0, 1, 2)
"""Chapter 03's seed and two more: the claim (target within the budget) must hold for each (CleanRL reports 3)."""


def run() -> list[str]:
    """Train chapter 03's config (``PPOConfig(seed=s)``) for each seed until the target; report the cost.

    The step counts depend on the machine (float reduction order changes the run); the claim that
    each seed reaches the target within ``total_timesteps`` must not.
    """
    config = PPOConfig()
    lines = [
        f"target: mean return >= {config.target_return} over {config.eval_episodes} evaluation episodes "
        f"(sampled actions), evaluated every {config.eval_every * config.batch_size} steps, "
        f"budget {config.total_timesteps} steps",
        f"{'seed':>4} {'env steps':>10} {'updates':>8} {'seconds':>8} {'steps/s':>8}   fresh evaluation (20 new episodes)",
    ]
    reached = []
    for seed in SEEDS:
        config = PPOConfig(seed=seed)
        m = train(config)
        steps = m["steps_to_target"]
        reached.append(steps is not None)
        fresh = evaluate_agent(m["agent"], config.env_id, n_episodes=20, seed=12_345)
        shown = f"{steps:>10}" if steps is not None else f"{'NOT REACHED':>10}"
        lines.append(f"{seed:>4} {shown} {len(m['global_step']):>8} {m['seconds']:>8.1f} "
                     f"{m['global_step'][-1] / m['seconds']:>8.0f}   mean {fresh.mean():.1f}, min {fresh.min():.0f}")
    lines.append(f"target reached within the budget for {sum(reached)} of {len(SEEDS)} seeds")
    return lines
