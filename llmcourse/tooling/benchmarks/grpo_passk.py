"""Does RL widen what the model can do, or only sharpen it? pass@k for k = 1 … 64 where there is headroom, 3 seeds.

On the 256 held-out problems the base model's pass@16 is already 99.6%, so "RL does not raise pass@k" cannot be
told from a ceiling there. This benchmark measures where the base model fails often: 3-digit problems with two or
more carries (`taskworld.eval_problems(TaskConfig(3, 3))`, the evaluation seed's fixed 3-digit set, those with
≥ 2 carries) and 4-digit problems, out of the training distribution (every training problem has 1–3 digits;
`eval_problems(TaskConfig(4, 4))`). Neither set shares a problem with the base model's pretraining or SFT
problems, chapter 06's SFT problems or GRPO's training problems (seeds 0–2).

Models: the base model; LoRA SFT on reasoned answers (chapter 06's `lora.sft_run`, rank 4, lr 3e-3, 20 steps);
GRPO with chapter 10's recipe (`grpo.RECIPE`). The trained ones for seeds 0, 1, 2. Each answers every problem
``N`` times at temperature 1 (seed 0); pass@k is the unbiased estimator of Chen et al. (2021) from those n = 64
samples (`evaluation.pass_at_k_curve`), averaged over the problems; greedy accuracy from one greedy answer.
"""

from __future__ import annotations

from llmcourse import taskworld as tw
from llmcourse.checkpoint import load_base_model
from llmcourse.evaluation import evaluate, pass_at_k_curve
from llmcourse.grpo import RECIPE, grpo_run
from llmcourse.lora import RUNS, sft_run
from llmcourse.runtime import torch_threads

SEEDS = (0, 1, 2)
N = 64
KS = (1, 2, 4, 8, 16, 32, 64)
LORA = next(run for run in RUNS if run[0] == "LoRA r=4")
"""Chapter 06's LoRA run: (name, rank, lr)."""


def problem_sets() -> dict[str, list[tw.Problem]]:
    """The two sets with headroom: 3-digit problems with ≥ 2 carries, and 4-digit problems."""
    return {"3-digit, >= 2 carries": tw.hard_problems(), "4-digit (out of distribution)": list(tw.eval_problems(tw.TaskConfig(4, 4)))}


def _models(seed: int):
    """(name, trained model) of the two trained models for ``seed``."""
    name, rank, lr = LORA
    yield f"{name} SFT", sft_run(rank, lr, seed=seed)[0]
    yield "GRPO recipe", grpo_run(RECIPE, seed)[0]


def _curves(model, sets: dict[str, list[tw.Problem]]) -> dict[str, dict]:
    out = {}
    for set_name, problems in sets.items():
        ev = evaluate(model, problems, k=N)
        out[set_name] = dict(curve=pass_at_k_curve(ev["sampled_correct"], N), greedy=ev["greedy_accuracy"],
                             format=ev["format_rate"])
    return out


def _fmt(curve: list[float]) -> str:
    return " ".join(f"{100 * curve[k - 1]:5.1f}" for k in KS)


def run() -> list[str]:
    with torch_threads(1):
        sets = problem_sets()
        header = f"{'model':<22} {'seed':>4} {'greedy':>6} {'format':>6} " + " ".join(f"{'p@' + str(k):>5}" for k in KS)
        base = _curves(load_base_model(), sets)
        results: dict[str, dict[str, list[dict]]] = {}
        for seed in SEEDS:
            for name, model in _models(seed):
                for set_name, r in _curves(model, sets).items():
                    results.setdefault(set_name, {}).setdefault(name, []).append(r)
        lines = [f"{N} samples per problem at temperature 1; pass@k (%), unbiased estimator; one thread"]
        for set_name, problems in sets.items():
            b = base[set_name]
            lines += ["", f"{set_name}: {len(problems)} problems", header,
                      f"{'base model':<22} {'':>4} {100 * b['greedy']:6.1f} {100 * b['format']:6.1f} {_fmt(b['curve'])}"]
            for name, rows in results[set_name].items():
                for seed, r in zip(SEEDS, rows):
                    lines.append(f"{name:<22} {seed:>4} {100 * r['greedy']:6.1f} {100 * r['format']:6.1f} "
                                 f"{_fmt(r['curve'])}")
            for name, rows in results[set_name].items():
                lo = [min(r["curve"][k - 1] for r in rows) for k in KS]
                hi = [max(r["curve"][k - 1] for r in rows) for k in KS]
                lines.append(f"  {name}: pass@k − base's, range over seeds (points): " + ", ".join(
                    f"k={k} {100 * (lo[i] - b['curve'][k - 1]):+.1f}…{100 * (hi[i] - b['curve'][k - 1]):+.1f}"
                    for i, k in enumerate(KS)))
        return lines
