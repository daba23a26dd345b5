"""LoRA's rank at a fixed α: the scaling α/r against α/√r (rsLoRA), ranks 1–64, seeds 0–2 (chapter 06).

Each run is `llmcourse.lora.sft_run` with `lora.RANK_SWEEP`'s fixed α (8, the α of the chapter's r = 4 run) and
learning rate (3e-3, LoRA's in `lora.RUNS`), the chapter's budget (`lora.sft_config`: 20 AdamW steps of 32
reasoned responses, warmup 4 steps then cosine decay) and the same batches for every run. Reported per rank and
scaling: the mean training loss over the 20 steps (how fast it learned), the loss of the last 5 steps, held-out
greedy accuracy, and the Frobenius norm of the learned update ΔW of the watched layer (`lora.WATCH`), over the
seeds. At r = 1 the two scalings are the same model (tested), so that run is trained once.
"""

from __future__ import annotations

import torch

from llmcourse.evaluation import evaluate
from llmcourse.lora import RANK_SWEEP, WATCH, lora_scaling, sft_run
from llmcourse.runtime import torch_threads

SEEDS = (0, 1, 2)


def _span(xs: list[float], fmt: str) -> str:
    return (fmt.format(min(xs)) + "–" + fmt.format(max(xs))) if len(xs) > 1 else fmt.format(xs[0])


def run() -> list[str]:
    sweep = RANK_SWEEP
    with torch_threads(1):
        results: dict[tuple[bool, int], list[dict]] = {}
        for use_rslora in (False, True):
            for r in sweep.ranks:
                if use_rslora and r == 1:
                    results[(True, 1)] = results[(False, 1)]                 # α/√1 = α/1: the same run
                    continue
                for seed in SEEDS:
                    model, history = sft_run(r, sweep.lr, seed, alpha=sweep.alpha, use_rslora=use_rslora)
                    loss = history["loss"]
                    delta = model.get_submodule(WATCH).delta_weight().detach()
                    results.setdefault((use_rslora, r), []).append(dict(
                        mean_loss=sum(loss) / len(loss), last_loss=sum(loss[-5:]) / 5,
                        accuracy=evaluate(model, k=0)["greedy_accuracy"], dw=torch.linalg.norm(delta).item(),
                        seconds=history["seconds"][0]))
        lines = [f"LoRA on every linear layer of the blocks, alpha {sweep.alpha:g} at every rank, peak lr {sweep.lr:g}, "
                 f"20 steps x 32, seeds {', '.join(map(str, SEEDS))}, one thread; ranges over the seeds",
                 f"{'scaling':<8} {'r':>3} {'factor':>7} {'mean loss (20 steps)':>21} {'loss (last 5)':>16} "
                 f"{'greedy acc.':>13} {'|dW| ' + WATCH:>26} {'s/run':>6}"]
        for use_rslora in (False, True):
            name = "a/sqrt(r)" if use_rslora else "a/r"
            for r in sweep.ranks:
                rows = results[(use_rslora, r)]
                col = lambda key: [x[key] for x in rows]                     # noqa: E731
                lines.append(f"{name:<8} {r:>3} {lora_scaling(sweep.alpha, r, use_rslora):>7.3f} "
                             f"{_span(col('mean_loss'), '{:.3f}'):>21} {_span(col('last_loss'), '{:.4f}'):>16} "
                             f"{_span([100 * a for a in col('accuracy')], '{:.1f}'):>12}% {_span(col('dw'), '{:.2f}'):>26} "
                             f"{sum(col('seconds')) / len(rows):6.1f}")
        return lines
