"""Mixture of experts (chapter 13): an MoE GPT against dense GPTs with its active and its total parameters.

Four GPTs (`llmcourse.moe.KINDS`), each trained with `llmcourse.moe.RECIPE` (the same batches, equal steps) for
seeds 0, 1, 2 on one thread: the MoE GPT (8 experts of 2C hidden units, top-2, Switch's load-balancing loss,
α = 0.01), the same without the balancing loss, a dense GPT with the MoE's active parameters per token (the course
GPT, 4C hidden units) and one with its total parameters (16C hidden units). Stage 1, pretraining: final training loss
(mean of the last 20 steps), next-token loss on the held-out problems' transcripts, seconds per step, and the
router's load per layer (max share, entropy / log E, experts under 1% of the assignments) on the held-out windows,
with and without the balancing loss. Stage 2, SFT on reasoned responses (`moe.finetune_moe`): greedy and sampled
held-out accuracy (K samples per problem), format rate, the router's load again. About an hour on one thread; a full
run writes `llmcourse/data/moe.json` for chapter 13. `report` makes the table from `run_one`'s results, also when
they were computed in several processes.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from llmcourse import moe
from llmcourse.evaluation import evaluate
from llmcourse.runtime import torch_threads

SEEDS = (0, 1, 2)
K = 4
"""Samples per held-out problem for the sampled accuracy."""
"""Initialisation seeds (the data are the same for all)."""
RECIPE = moe.RECIPE
"""The comparison's recipe."""
RESULTS_FILE: Path = moe.RESULTS_PATH
"""Where a full run writes what chapter 13 plots."""


def _mean_sd(xs: list[float]) -> str:
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.3f} ± {sd:.3f}"


def run_one(kind: str, seed: int) -> dict:
    """Train one model (stage 1, measured; stage 2, measured) on one thread."""
    from dataclasses import replace

    recipe = replace(RECIPE, seed=seed)
    with torch_threads(1):
        model, h = moe.train_moe(kind, recipe, progress=False)
        windows = moe.held_out_windows(model.cfg.block_size, recipe.reasoned_share)
        out = dict(kind=kind, seed=seed, params=h["params"], seconds_per_step=h["seconds_per_step"],
                   train_loss=sum(h["lm_loss"][-20:]) / len(h["lm_loss"][-20:]), lm_loss=h["lm_loss"],
                   held_out_loss=moe.held_out_loss(model, windows),
                   pretrained_greedy_accuracy=evaluate(model, k=0)["greedy_accuracy"])
        if moe.moe_layers(model):
            loads = moe.router_loads(model, windows)
            out.update(held_out_load=[x.tolist() for x in loads], load_stats=[moe.load_stats(x) for x in loads],
                       load_steps=h["load_steps"], train_loads=h["loads"])
        h2 = moe.finetune_moe(model, kind, recipe)
        ev = evaluate(model, k=K)
        out.update(sft_loss=sum(h2["loss"][-20:]) / 20, sft_seconds_per_step=h2["seconds"][0] / recipe.sft.steps,
                   greedy_accuracy=ev["greedy_accuracy"], sampled_accuracy=ev["sampled_accuracy"],
                   format_rate=ev["format_rate"])
        if moe.moe_layers(model):
            out["sft_load_stats"] = [moe.load_stats(x) for x in moe.router_loads(model, windows)]
    return out


def run() -> list[str]:
    results = [run_one(kind, seed) for seed in SEEDS for kind in moe.KINDS]
    return report(results)


def report(results: list[dict]) -> list[str]:
    """The table of `run`'s results (also for results computed by `run_one` in several processes); writes
    `RESULTS_FILE` when they are the full run."""
    lines = [f"{len(SEEDS)} seeds, {RECIPE.train.steps} pretraining + {RECIPE.sft.steps} SFT steps, batch "
             f"{RECIPE.train.batch_size}; mean ± sd over seeds; accuracy after SFT ({K} samples per problem)",
             f"{'model':<13} {'total':>9} {'active':>9} {'train loss':>15} {'held-out loss':>15} "
             f"{'greedy acc':>15} {'sampled acc':>15} {'s/step':>15}"]
    by_kind = {k: [r for r in results if r["kind"] == k] for k in moe.KINDS}
    for kind, rs in by_kind.items():
        p = rs[0]["params"]
        lines.append(f"{kind:<13} {p['total']:>9,} {p['active']:>9,} {_mean_sd([r['train_loss'] for r in rs]):>15} "
                     f"{_mean_sd([r['held_out_loss'] for r in rs]):>15} "
                     f"{_mean_sd([r['greedy_accuracy'] for r in rs]):>15} "
                     f"{_mean_sd([r['sampled_accuracy'] for r in rs]):>15} "
                     f"{_mean_sd([r['seconds_per_step'] for r in rs]):>15}")
    lines.append("router load on the held-out windows, per layer (max share | entropy/log E | experts < 1%):")
    for kind in ("moe", "no_balance"):
        for r in by_kind[kind]:
            cells = " ".join(f"{s['max_share']:.2f}|{s['entropy_ratio']:.2f}|{s['dead']}" for s in r["load_stats"])
            lines.append(f"  {kind:<11} seed {r['seed']}: {cells}")
    m = {k: statistics.mean(r["held_out_loss"] for r in rs) for k, rs in by_kind.items()}
    worst = {k: statistics.mean(max(s["max_share"] for s in r["load_stats"]) for r in by_kind[k])
             for k in ("moe", "no_balance")}
    dead = {k: statistics.mean(sum(s["dead"] for s in r["load_stats"]) for r in by_kind[k])
            for k in ("moe", "no_balance")}
    spd = {k: statistics.mean(r["seconds_per_step"] for r in rs) for k, rs in by_kind.items()}
    lines += [
        "targets:",
        f"  held-out loss, MoE − dense same-active: {m['moe'] - m['dense_active']:+.3f} "
        f"(MoE − dense same-total: {m['moe'] - m['dense_total']:+.3f})",
        f"  largest per-layer expert share: {worst['no_balance']:.2f} without the balancing loss, {worst['moe']:.2f} "
        f"with it (even: {1 / RECIPE.moe.n_experts:.3f}); experts under 1% (all layers): {dead['no_balance']:.1f} "
        f"without, {dead['moe']:.1f} with",
        f"  seconds per step relative to dense same-active: MoE {spd['moe'] / spd['dense_active']:.2f}×, "
        f"dense same-total {spd['dense_total'] / spd['dense_active']:.2f}×",
    ]
    if SEEDS == (0, 1, 2):
        RESULTS_FILE.write_text(json.dumps(dict(recipe=repr(RECIPE), results=results), indent=1) + "\n")
        lines.append(f"wrote {RESULTS_FILE.name}")
    return lines
