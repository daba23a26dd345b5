"""The same runs with PEFT and TRL (the appendix): chapter 06's LoRA SFT, 08's RPO and 10's GRPO, seeds 0–2.

For each seed and chapter: the course's own loop (`lora.sft_run` at r = 4, `dpo.train_dpo` with the RPO weight,
`grpo.grpo_run` with the recipe) and TRL's trainer set to the same recipe on the converted model
(`llmcourse.trl_runs`), both from the shipped base model, both scored by the course's `evaluate` (the 256
held-out problems, greedy and 4 samples at temperature 1) and timed (training only), on one thread.
A full run (3 seeds) writes the results to `llmcourse/data/trl_parity.json`, which the appendix shows.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, replace
import json
import time

from llmcourse import trl_runs
from llmcourse.trl_runs import PARITY_PATH
from llmcourse.checkpoint import load_base_model
from llmcourse.dpo import RPO_ALPHA, DPOConfig, chapter_pairs, train_dpo
from llmcourse.evaluation import evaluate
from llmcourse.grpo import RECIPE, grpo_run
from llmcourse.lora import RUNS, sft_run
from llmcourse.runtime import torch_threads

SEEDS = (0, 1, 2)
LORA_RANK = 4
"""Chapter 06's LoRA run compared here (its peak lr from `lora.RUNS`)."""
SFT_STEPS = 20
RPO = DPOConfig(rpo_alpha=RPO_ALPHA)
"""Chapter 08's RPO run."""
GRPO = RECIPE
"""Chapter 10's recipe."""


def _course_dpo(seed: int, cfg: DPOConfig):
    base = load_base_model()
    pairs = chapter_pairs(base, seed)
    model = copy.deepcopy(base)
    history = train_dpo(model, pairs, replace(cfg, seed=seed))
    return model, history


def _runs(seed: int) -> dict:
    lr = dict((rank, lr) for _, rank, lr in RUNS)[LORA_RANK]
    return {
        "sft": (lambda: sft_run(LORA_RANK, lr, seed, steps=SFT_STEPS),
                lambda: trl_runs.sft_lora(LORA_RANK, lr, seed, steps=SFT_STEPS)),
        "dpo": (lambda: _course_dpo(seed, RPO), lambda: trl_runs.dpo(seed, RPO)),
        "grpo": (lambda: grpo_run(GRPO, seed),
                 lambda: trl_runs.grpo(seed, GRPO)),
    }


def _scores(model) -> dict:
    ev = evaluate(model, k=4)
    return {k: ev[k] for k in ("greedy_accuracy", "sampled_accuracy", "format_rate", "reasoned_share")}


def run() -> list[str]:
    results: list[dict] = []
    with torch_threads(1):
        base = _scores(load_base_model())
        lines = [f"base model: greedy {100 * base['greedy_accuracy']:.1f}%, sampled {100 * base['sampled_accuracy']:.1f}%",
                 f"{'run':<5} {'seed':>4} {'code':<6} {'greedy':>7} {'sampled':>8} {'format':>7} {'reasoned':>8} "
                 f"{'train s':>8} {'wall s':>7}"]
        for seed in SEEDS:
            for name, (course, library) in _runs(seed).items():
                for code, fn in (("course", course), ("TRL", library)):
                    start = time.perf_counter()
                    model, info = fn()
                    wall = time.perf_counter() - start
                    seconds = info["seconds"][0] if isinstance(info["seconds"], list) else info["seconds"]
                    row = dict(run=name, seed=seed, code=code, seconds=seconds, wall_seconds=wall, **_scores(model))
                    results.append(row)
                    lines.append(f"{name:<5} {seed:>4} {code:<6} {100 * row['greedy_accuracy']:6.1f}% "
                                 f"{100 * row['sampled_accuracy']:7.1f}% {100 * row['format_rate']:6.1f}% "
                                 f"{100 * row['reasoned_share']:7.1f}% {seconds:8.1f} {wall:7.1f}")
    if tuple(SEEDS) == (0, 1, 2):
        PARITY_PATH.write_text(json.dumps(dict(base=base, lora_rank=LORA_RANK, sft_steps=SFT_STEPS,
                                               rpo=asdict(RPO), grpo=asdict(GRPO), runs=results), indent=1) + "\n")
        lines.append(f"wrote {PARITY_PATH.name}")
    return lines
