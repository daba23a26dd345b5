"""Every benchmark runs: each `run()` at a toy size (one seed, a few problems, one or two steps).

The benchmarks themselves take minutes to an hour (`python -m llmcourse bench`); these smoke tests shrink
their settings where the benchmark reads them (its module's constants and the configs it builds) and
check that the report comes out. What the benchmarks measure is asserted by the chapters' claims and the
unit tests, not here.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import replace
from functools import partial

import pytest

from llmcourse import taskworld as tw
from llmcourse.tooling import benchmarks

FEW = tw.eval_problems()[:6]


def _small_pairs(base, seed=0):
    from llmcourse.preferences import sample_pairs
    return sample_pairs(base, tw.sample_problems(24, seed=800 + seed), seed=seed)


def _shrink(name: str, mod, mp: pytest.MonkeyPatch) -> None:
    """Toy settings for benchmark ``name``, patched where its module reads them."""
    if hasattr(mod, "SEEDS"):
        mp.setattr(mod, "SEEDS", (0,))
    tiny_grpo = dict(updates=1, prompts_per_update=2, samples_per_prompt=2)
    if name == "cartpole_ppo":
        mp.setattr(mod, "PPOConfig", partial(mod.PPOConfig, total_timesteps=1024))
    elif name == "kv_cache":
        mp.setattr(mod, "LENGTHS", (8,))
    elif name == "throughput":
        mp.setattr(mod, "tokens_per_second", partial(mod.tokens_per_second, steps=1, batch_size=2))
    elif name == "grpo":
        mp.setattr(mod, "PLAIN", replace(mod.PLAIN, **tiny_grpo))
    elif name == "grpo_variants":
        mp.setattr(mod, "VARIANTS", {k: replace(v, **tiny_grpo) for k, v in list(mod.VARIANTS.items())[:2]})
        mp.setattr(mod, "K", 2)
        mp.setattr(mod, "KS", (1, 2))
    elif name == "grpo_kl":
        mp.setattr(mod, "PLACEMENTS", {k: replace(v, **tiny_grpo) for k, v in mod.PLACEMENTS.items()})
        mp.setattr(mod, "K", 2)
    elif name == "grpo_entropy":
        mp.setattr(mod, "RUNS", {k: replace(v, **tiny_grpo) for k, v in list(mod.RUNS.items())[:2]})
        mp.setattr(mod, "K", 2)
    elif name == "grpo_passk":
        mp.setattr(mod, "problem_sets", lambda: {"a": list(FEW[:3]), "b": list(FEW[3:])})
        mp.setattr(mod, "sft_run", partial(mod.sft_run, steps=1))
        mp.setattr(mod, "RECIPE", replace(mod.RECIPE, **tiny_grpo))
        mp.setattr(mod, "N", 2)
        mp.setattr(mod, "KS", (1, 2))
    elif name == "lora":
        mp.setattr(mod, "RUNS", mod.RUNS[:2])
        mp.setattr(mod, "SWEEP", mod.SWEEP[:1])
        mp.setattr(mod, "sft_run", partial(mod.sft_run, steps=1))
    elif name == "dpo":
        mp.setattr(mod, "CONFIG", replace(mod.CONFIG, steps=2, batch_pairs=4, eval_every=1))
        mp.setattr(mod, "ORPO_CONFIG", replace(mod.ORPO_CONFIG, steps=2, batch_pairs=4, eval_every=1))
        mp.setattr(mod, "KTO_CONFIG", replace(mod.KTO_CONFIG, steps=2, batch_examples=4, eval_every=1))
        mp.setattr(mod, "chapter_pairs", _small_pairs)
    elif name == "reward_model":
        mp.setattr(mod, "RewardConfig", partial(mod.RewardConfig, n_problems=16, steps=2, batch_size=4))
    elif name == "ppo_rlhf":
        mp.setattr(mod, "PPOConfig", partial(mod.PPOConfig, rollouts=1, prompts_per_rollout=4))
    elif name == "rank_scaling":
        mp.setattr(mod, "RANK_SWEEP", replace(mod.RANK_SWEEP, ranks=(1, 2)))
        mp.setattr(mod, "sft_run", partial(mod.sft_run, steps=1))
    elif name == "ppo_critic":
        mp.setattr(mod, "PPOConfig", partial(mod.PPOConfig, rollouts=1, prompts_per_rollout=4))
        mp.setattr(mod, "VARIANTS", dict(list(mod.VARIANTS.items())[-1:]))     # the fresh-head one: its own branch
        mp.setattr(mod, "FIXED_POLICY_ROLLOUTS", 1)
        mp.setattr(mod, "DIAGNOSTIC_PROBLEMS", 2)
        mp.setattr(mod, "SAMPLES_PER_PROBLEM", 2)
    elif name == "comparison":
        mp.setattr(mod, "sft_run", partial(mod.sft_run, steps=1))
        mp.setattr(mod, "chapter_pairs", _small_pairs)
        mp.setattr(mod, "DPOConfig", partial(mod.DPOConfig, steps=1, batch_pairs=4))
        mp.setattr(mod, "ORPOConfig", partial(mod.ORPOConfig, steps=1, batch_pairs=4))
        mp.setattr(mod, "KTOConfig", partial(mod.KTOConfig, steps=1, batch_examples=4))
        mp.setattr(mod, "PPOConfig", partial(mod.PPOConfig, rollouts=1, prompts_per_rollout=4))
        mp.setattr(mod, "GRPO_RECIPE", replace(mod.GRPO_RECIPE, **tiny_grpo))
        tiny_sft = dict(steps=1, batch_size=4)
        mp.setattr(mod, "RFT_RECIPE", replace(mod.RFT_RECIPE, rounds=1, problems_per_round=4, samples_per_problem=2,
                                              sft=replace(mod.RFT_RECIPE.sft, **tiny_sft)))
        mp.setattr(mod, "R1_RECIPE", replace(mod.R1_RECIPE, cold_start_examples=4,
                                             cold_start=replace(mod.R1_RECIPE.cold_start, **tiny_sft),
                                             rl=replace(mod.R1_RECIPE.rl, **tiny_grpo), problems=4, samples_per_problem=2,
                                             sft=replace(mod.R1_RECIPE.sft, **tiny_sft)))
        mp.setattr(mod, "DISTILL_RECIPE", replace(mod.DISTILL_RECIPE, teacher_samples=8,
                                                  offline=replace(mod.DISTILL_RECIPE.offline, steps=2, batch_size=4,
                                                                  warmup_steps=1)))
        mp.setattr(mod, "K", 2)
    elif name == "inference":
        mp.setattr(mod, "CFG", replace(mod.CFG, n_samples=4, ns=(1, 2, 4), style_samples=1))
        mp.setattr(mod, "PRM_CONFIG", replace(mod.PRM_CONFIG, n_problems=8, samples_per_problem=2, steps=1,
                                              batch_size=4))
        mp.setattr(mod, "GRPO_RECIPE", replace(mod.GRPO_RECIPE, **tiny_grpo))
        mp.setattr(mod, "COMPARE_AT", 2)
    elif name == "libraries":
        from llmcourse import trl_runs
        mp.setattr(mod, "SFT_STEPS", 1)
        mp.setattr(mod, "chapter_pairs", _small_pairs)
        mp.setattr(trl_runs, "chapter_pairs", _small_pairs)
        mp.setattr(mod, "RPO", replace(mod.RPO, steps=1, batch_pairs=4))
        mp.setattr(mod, "GRPO", replace(mod.GRPO, **tiny_grpo))
    elif name == "rejection_sampling":
        tiny_sft = dict(steps=1, batch_size=4)
        rft = replace(mod.RFT, problems_per_round=4, samples_per_problem=4, sft=replace(mod.RFT.sft, **tiny_sft))
        mp.setattr(mod, "RFT", rft)
        mp.setattr(mod, "CONTROL", replace(rft, selection="random"))
        mp.setattr(mod, "STAR", replace(rft, restart=True))
        mp.setattr(mod, "GRPO_RECIPE", replace(mod.GRPO_RECIPE, **tiny_grpo))
        mp.setattr(mod, "R1", replace(mod.R1, cold_start_examples=4, cold_start=replace(mod.R1.cold_start, **tiny_sft),
                                      rl=replace(mod.R1.rl, **tiny_grpo), problems=4, samples_per_problem=4,
                                      sft=replace(mod.R1.sft, **tiny_sft)))
        mp.setattr(mod, "K", 2)
    elif name == "distillation":
        def small(c):
            return replace(c, teacher_samples=8, offline=replace(c.offline, steps=2, batch_size=4, warmup_steps=1),
                           on_policy=replace(c.on_policy, steps=2, batch_size=4, warmup_steps=1))
        mp.setattr(mod, "CFG", small(mod.CFG))
        mp.setattr(mod, "METHODS", {k: (r, c if c is None else small(c)) for k, (r, c) in mod.METHODS.items()})
        mp.setattr(mod, "GRPO_RECIPE", replace(mod.GRPO_RECIPE, **tiny_grpo))
        mp.setattr(mod, "K", 2)
    elif name == "quantization":
        mp.setattr(mod, "PROBLEMS", list(FEW))
        mp.setattr(mod, "K", 2)
        mp.setattr(mod, "QLORA", replace(mod.QLORA, steps=1))
        mp.setattr(mod, "WIDE", replace(mod.WIDE, n_embd=64, n_head=2))
        mp.setattr(mod, "NEW_TOKENS", 4)
    elif name == "moe":
        mp.setattr(mod, "RECIPE", replace(mod.RECIPE, train=replace(mod.RECIPE.train, steps=2, batch_size=4,
                                                                    warmup_steps=1), n_problems=200,
                                          sft=replace(mod.RECIPE.sft, steps=2, batch_size=4, warmup_steps=1),
                                          n_sft_problems=50))
        mp.setattr(mod, "K", 2)
    else:
        raise AssertionError(f"benchmark {name!r} has no smoke settings: add them here")


NAMES = sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__))


@pytest.mark.parametrize("name", NAMES)
def test_benchmark_runs_at_toy_size(name, monkeypatch):
    mod = importlib.import_module(f"llmcourse.tooling.benchmarks.{name}")
    monkeypatch.setattr(tw, "eval_problems", lambda cfg=None: FEW)       # every held-out evaluation: 6 problems
    monkeypatch.setattr(tw, "hard_problems", lambda: FEW[:3])            # and the hard slice: 3
    _shrink(name, mod, monkeypatch)
    lines = mod.run()
    assert isinstance(lines, list) and len(lines) >= 2 and all(isinstance(x, str) for x in lines)

