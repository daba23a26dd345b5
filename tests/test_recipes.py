"""Each experiment's settings live in one place: the notebooks and the benchmarks run the package's recipes.

A chapter's run and its benchmark must not drift apart. Two checks hold that:
- the solution notebooks never re-type a setting of a benchmarked run: where they build one of its configs
  (or `replace` one), they may set only what does not change the run's recipe (the seed, how often to
  evaluate, which of the chapter's named variants);
- the benchmarks and the final comparison train with the package's recipe objects, checked by recording
  the configs they pass to the training functions.
"""

from __future__ import annotations

import ast
import json
from dataclasses import replace
from pathlib import Path

import pytest

from llmcourse import dpo, grpo, inference, lora, ppo_rlhf, prm, r1_recipe, rejection_sampling

ROOT = Path(__file__).resolve().parents[1]

BENCHMARKED = {"PPOConfig", "DPOConfig", "ORPOConfig", "KTOConfig", "GRPOConfig", "RewardConfig", "PRMConfig",
               "InferenceConfig", "RFTConfig", "R1Config", "DistillConfig",
               "QLoRARecipe", "MoERecipe", "MoEConfig"}
"""Configs of runs that a benchmark measures (chapters 03, 07, 08, 09, 10, 11)."""

FREE = {"seed", "eval_every", "rpo_alpha"}
"""What a notebook may set on such a config: not part of the recipe."""

DEMOS = {("07_reward_models.ipynb", "RewardConfig"): {"steps"}}
"""Shortened live demos of a shipped recipe (the shipped model is loaded right after)."""


def _calls(nb_path: Path):
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        src = "".join(cell["source"])
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.Call):
                yield node


def _settings_typed_in(nb_path: Path) -> list[str]:
    found = []
    for call in _calls(nb_path):
        name = ast.unparse(call.func).split(".")[-1]
        if name in BENCHMARKED:
            allowed = FREE | DEMOS.get((nb_path.name, name), set())
            if call.args:
                found.append(f"{ast.unparse(call)} (positional settings)")
            found += [f"{ast.unparse(call)}: {kw.arg}" for kw in call.keywords if kw.arg not in allowed]
        elif name == "replace":
            found += [f"{ast.unparse(call)}: {kw.arg}" for kw in call.keywords if kw.arg not in FREE]
    return found


@pytest.mark.parametrize("nb_path", sorted((ROOT / "solutions").glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_do_not_retype_a_benchmarked_recipe(nb_path):
    typed = _settings_typed_in(nb_path)
    assert not typed, (f"{nb_path.name} sets recipe settings that its benchmark reads from the package; "
                       f"change the recipe in llmcourse instead: {typed}")


def test_the_check_sees_a_retyped_setting(tmp_path):
    nb = {"cells": [{"cell_type": "code", "source": "cfg = replace(RECIPE, lr=1e-3)\nc = DPOConfig(beta=0.2, seed=1)"}]}
    path = tmp_path / "08_dpo.ipynb"
    path.write_text(json.dumps(nb))
    assert len(_settings_typed_in(path)) == 2


def test_benchmarks_use_the_package_recipes():
    from llmcourse.tooling.benchmarks import dpo as dpo_bench
    from llmcourse.tooling.benchmarks import grpo as grpo_bench
    from llmcourse.tooling.benchmarks import grpo_variants, lora as lora_bench
    assert grpo_variants.VARIANTS["GRPO (recipe)"] is grpo.RECIPE
    budget = ("updates", "prompts_per_update", "samples_per_prompt", "lr", "beta", "temperature", "max_new_tokens",
              "format_weight", "seed")                                  # every variant runs on the recipe's budget
    assert all(getattr(v, f) == getattr(grpo.RECIPE, f) for v in grpo_variants.VARIANTS.values() for f in budget)
    assert grpo_bench.PLAIN is grpo.PLAIN
    assert dpo_bench.CONFIG == replace(dpo.DPOConfig(), eval_every=10)    # evaluating does not change the run
    assert lora_bench.RUNS is lora.RUNS and lora_bench.sft_run is lora.sft_run
    assert grpo.RECIPE == grpo.GRPOConfig() and dpo.DPOConfig().steps == 40
    from llmcourse.tooling.benchmarks import inference as inference_bench
    assert inference_bench.CFG is inference.RECIPE and inference_bench.GRPO_RECIPE is grpo.RECIPE
    assert inference_bench.PRM_CONFIG == prm.PRMConfig() and inference.RECIPE == inference.InferenceConfig()
    live = inference.LIVE                                   # chapter 11's live run: the recipe with fewer samples
    assert replace(live, n_samples=inference.RECIPE.n_samples, ns=inference.RECIPE.ns) == inference.RECIPE
    from llmcourse import distillation, r1_recipe, rejection_sampling
    from llmcourse.tooling.benchmarks import distillation as distill_bench
    from llmcourse.tooling.benchmarks import rejection_sampling as rs_bench
    assert rs_bench.RFT is rejection_sampling.RECIPE and rs_bench.CONTROL is rejection_sampling.CONTROL
    assert rs_bench.STAR == replace(rejection_sampling.RECIPE, restart=True)
    assert rs_bench.R1 is r1_recipe.RECIPE and rs_bench.GRPO_RECIPE is grpo.RECIPE and r1_recipe.RECIPE.rl is grpo.RECIPE
    assert rejection_sampling.RECIPE == rejection_sampling.RFTConfig() and r1_recipe.RECIPE == r1_recipe.R1Config()
    assert distill_bench.CFG is distillation.RECIPE and distill_bench.GRPO_RECIPE is grpo.RECIPE
    assert distill_bench.METHODS[distill_bench.PURE_KD_ROW][1] is distillation.PURE_KD
    assert distill_bench.METHODS[distill_bench.ALL_ANSWERS_ROW][1] is distillation.ALL_ANSWERS
    assert distillation.RECIPE == distillation.DistillConfig()
    from llmcourse import moe, quantization
    from llmcourse.tooling.benchmarks import moe as moe_bench
    from llmcourse.tooling.benchmarks import quantization as quant_bench
    assert quant_bench.QLORA is quantization.QLORA and quantization.QLORA == quantization.QLoRARecipe()
    assert (quantization.QLORA.rank, quantization.QLORA.lr) == (4, 3e-3) and ("LoRA r=4", 4, 3e-3) in lora.RUNS
    assert moe_bench.RECIPE is moe.RECIPE and moe.RECIPE == moe.MoERecipe()
    assert replace(moe.DEMO, train=moe.RECIPE.train) == moe.RECIPE
    from llmcourse.tooling.benchmarks import comparison
    assert comparison.RFT_RECIPE is rejection_sampling.RECIPE and comparison.R1_RECIPE is r1_recipe.RECIPE
    assert comparison.DISTILL_RECIPE is distillation.RECIPE and comparison.GRPO_RECIPE is grpo.RECIPE
    assert replace(distillation.DEMO, teacher_samples=distillation.RECIPE.teacher_samples,
                   offline=distillation.RECIPE.offline) == distillation.RECIPE          # chapter 12's live runs
    assert replace(rejection_sampling.DEMO, rounds=rejection_sampling.RECIPE.rounds,
                   problems_per_round=rejection_sampling.RECIPE.problems_per_round) == rejection_sampling.RECIPE


def test_the_comparison_trains_each_method_with_its_chapters_recipe(monkeypatch):
    from llmcourse.tooling.benchmarks import comparison as cmp
    seen: dict[str, list] = {}

    def record(name, result):
        def fake(*args, **kwargs):
            seen.setdefault(name, []).append((args, kwargs))
            return result
        return fake
    done = {"seconds": [0.0]}
    monkeypatch.setattr(cmp, "sft_run", record("sft_run", ("lora model", done)))
    monkeypatch.setattr(cmp, "chapter_pairs", record("chapter_pairs", "pairs"))
    monkeypatch.setattr(cmp, "train_dpo", record("train_dpo", done))
    monkeypatch.setattr(cmp, "train_orpo", record("train_orpo", done))
    monkeypatch.setattr(cmp, "train_kto", record("train_kto", done))
    monkeypatch.setattr(cmp, "train_ppo", record("train_ppo", done))
    monkeypatch.setattr(cmp, "train_grpo", record("train_grpo", done))
    monkeypatch.setattr(cmp, "load_reward_model", lambda: "rm")
    monkeypatch.setattr(cmp, "make_critic", lambda rm: "critic")
    monkeypatch.setattr(cmp, "rft_run", record("rft_run", ("rft model", done)))
    monkeypatch.setattr(cmp, "r1_run", record("r1_run", ("r1 model", done)))
    monkeypatch.setattr(cmp.copy, "deepcopy", lambda x: x)
    cmp._train_all("base")
    (args, kwargs), = seen["sft_run"]
    assert ("LoRA r=4", kwargs["rank"], kwargs["lr"]) in lora.RUNS and kwargs.get("steps", 20) == 20
    assert seen["chapter_pairs"] == [(("base",), {"seed": 0})]
    assert [a[2] for a, _ in seen["train_dpo"]] == [dpo.DPOConfig(seed=0), dpo.DPOConfig(rpo_alpha=dpo.RPO_ALPHA, seed=0)]
    assert [a[2] for a, _ in seen["train_orpo"]] == [dpo.ORPOConfig(seed=0)]
    assert [a[2] for a, _ in seen["train_kto"]] == [dpo.KTOConfig(seed=0)]
    assert seen["train_ppo"][0][0][3] == ppo_rlhf.PPOConfig(seed=0)
    assert seen["train_grpo"][0][0][1] == grpo.RECIPE
    assert seen["rft_run"][0][0][0] is rejection_sampling.RECIPE and seen["r1_run"][0][0][0] is r1_recipe.RECIPE

