"""LoRA at ranks 1, 2, 4, 8 against full fine-tuning, same budget (chapter 06's experiment, 3 seeds).

Each run is `llmcourse.lora.sft_run`: it fine-tunes a fresh copy of the base model with SFT on reasoned responses
only (`llmcourse.sft.finetune`, the chapter's `lora.sft_config`): 20 AdamW steps of 32
examples, warmup 4 steps then cosine decay to a tenth of the peak, no weight decay. Full
fine-tuning trains every parameter at a peak lr of 3e-4; LoRA adapts every linear layer of the
blocks with α = 2r at 3e-3 (each method's learning rate from a small sweep, chapter 06). The
goal: LoRA with ≤ 5% of the parameters trainable ends within 3 points of full fine-tuning's
held-out greedy accuracy.
"""

from __future__ import annotations

import torch

from llmcourse.checkpoint import load_base_model
from llmcourse.evaluation import evaluate
from llmcourse.lora import RUNS, WATCH, count_params, count_trainable, sft_run
from llmcourse.runtime import torch_threads

SEEDS = (0, 1, 2)
SWEEP = ((None, 1e-4), (None, 1e-3), (None, 3e-3), (4, 1e-3), (4, 1e-2))   # other learning rates, seed 0


def run() -> list[str]:
    with torch_threads(1):
        base = load_base_model()
        n_base = count_params(base)
        ev = evaluate(base, k=0)
        lines = [f"base model: greedy accuracy {100 * ev['greedy_accuracy']:.1f}%, "
                 f"reasoned format {100 * ev['greedy_format_rate']:.1f}% (256 held-out problems)",
                 f"{'run':<10} {'trainable':>16} " + " ".join(f"{'seed ' + str(s):>15}" for s in SEEDS)
                 + f" {'gap to full FT (min)':>21} {'s/run':>6}"]
        acc: dict[str, list[float]] = {}
        energy = []
        for name, rank, lr in RUNS:
            cells, secs = [], []
            for seed in SEEDS:
                model, history = sft_run(rank, lr, seed)
                e = evaluate(model, k=0)
                if rank is None:
                    delta = (model.get_submodule(WATCH).weight - base.get_submodule(WATCH).weight).detach()
                    s = torch.linalg.svdvals(delta)
                    energy.append(((s[:8] ** 2).sum() / (s ** 2).sum()).item())
                acc.setdefault(name, []).append(e["greedy_accuracy"])
                cells.append(f"{100 * e['greedy_accuracy']:5.1f}% / {100 * e['greedy_format_rate']:5.1f}%")
                secs.append(history["seconds"][0])
                trainable = count_trainable(model)
            gap = min(a - f for a, f in zip(acc[name], acc["full FT"])) if name != "full FT" else 0.0
            share = f"{trainable:,} ({100 * trainable / n_base:.1f}%)"
            lines.append(f"{name:<10} {share:>16} " + " ".join(f"{c:>15}" for c in cells)
                         + f" {100 * gap:+20.1f}  {sum(secs) / len(secs):5.1f}")
        lines.append("cells: held-out greedy accuracy / reasoned format rate after 20 steps; "
                     "gap: LoRA minus full FT of the same seed, in points (the worst seed)")
        lines.append(f"full FT's update of {WATCH}: top 8 of 128 singular values hold "
                     + ", ".join(f"{100 * x:.0f}%" for x in energy) + " of ||dW||^2 (seeds " + ", ".join(map(str, SEEDS)) + ")")
        sweep = []
        for rank, lr in SWEEP:
            model, _ = sft_run(rank, lr, seed=0)
            sweep.append(f"{'full FT' if rank is None else f'LoRA r={rank}'} at {lr:g}: "
                         f"{100 * evaluate(model, k=0)['greedy_accuracy']:.1f}%")
        lines.append("other peak learning rates (seed 0, greedy accuracy): " + "; ".join(sweep))
        return lines
