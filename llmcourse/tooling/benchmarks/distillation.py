"""Distillation into a smaller student (chapter 12): GRPO on the student against data, logit and on-policy
distillation from the GRPO teacher, on the same budget of sampled responses; 3 seeds, one thread.

The teacher is chapter 10's GRPO model (`grpo.RECIPE`, seed 0), trained once for the whole run. The student is the
shipped `load_student_model` (the base model's recipe at half the width, 227,200 parameters). For each seed s,
starting from a fresh copy of the student (torch's global seed set to s):

- GRPO on the student: `train_grpo(student, replace(grpo.RECIPE, seed=s))`, 5,120 student samples;
- data / logit distillation: the teacher answers `distillation.RECIPE.teacher_samples` = 5,120 training problems
  (seed s), the right and well-formed answers are the data of both (`distill_run`, routes "data" and "logit");
- on-policy distillation, forward and reverse KL: 5,120 student samples (routes "on-policy …").

Every model is evaluated on the 256 held-out problems (`evaluate(model, k=16)`: greedy, and 16 samples per problem at
temperature 1). Costs: teacher samples generated, student samples generated, student training seconds (sampling
included, evaluations not), parameters. A full run (seeds 0–2) writes `llmcourse/data/distillation.json`, which
chapter 12 plots.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from llmcourse import distillation as dist
from llmcourse import taskworld as tw
from llmcourse.checkpoint import load_student_model, student_model_metrics
from llmcourse.evaluation import evaluate
from llmcourse.grpo import RECIPE as GRPO_RECIPE
from llmcourse.grpo import grpo_run, train_grpo
from llmcourse.runtime import torch_threads

SEEDS = (0, 1, 2)
"""Student-side seeds (the GRPO run, the teacher's sampling, the batches); the teacher is seed 0's."""
CFG = dist.RECIPE
"""The distillation recipe."""
K = 16
"""Samples per held-out problem in the evaluation."""
RESULTS_FILE: Path = dist.RESULTS_PATH
"""Where a full run writes what chapter 12 plots."""
PURE_KD_ROW, ALL_ANSWERS_ROW = "ablation: logit, pure KD (α 1, τ 1)", "ablation: data, all teacher answers"
METHODS = {"GRPO on the student": ("grpo", None), "data distillation": ("data", CFG),
           "logit distillation": ("logit", CFG), "on-policy forward KL": ("on-policy forward", CFG),
           "on-policy reverse KL": ("on-policy reverse", CFG),
           ALL_ANSWERS_ROW: ("data", dist.ALL_ANSWERS), PURE_KD_ROW: ("logit", dist.PURE_KD)}
"""The rows of the table: (route, distillation config); "grpo" is `train_grpo` with chapter 10's recipe. The
ablations explain the ranking, they do not compete for "best route"."""
TARGET_GAIN = 0.05
"""The best distillation route must beat GRPO on the student by this much held-out sampled accuracy (R1's claim)."""


def _pct(x: float) -> str:
    return f"{100 * x:5.1f}%"


def _metrics(model, seed: int) -> dict:
    e = evaluate(model, k=K, seed=seed)
    return {k: e[k] for k in ("sampled_accuracy", "greedy_accuracy", "format_rate", "reasoned_share",
                              "reasoned_accuracy", "pass_at_k")}


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def _spread(xs: list[float]) -> float:
    m = _mean(xs)
    return (sum((x - m) ** 2 for x in xs) / max(1, len(xs) - 1)) ** 0.5


def run() -> list[str]:
    with torch_threads(1):
        t0 = time.perf_counter()
        teacher, teacher_history = grpo_run(GRPO_RECIPE, seed=0)
        teacher_seconds = teacher_history["seconds"][0]
        teacher_eval = _metrics(teacher, 0)
        student0 = load_student_model()
        student_eval = _metrics(student0, 0)
        n_student, n_teacher = student0.n_params(), teacher.n_params()
        grpo_samples = GRPO_RECIPE.updates * GRPO_RECIPE.prompts_per_update * GRPO_RECIPE.samples_per_prompt
        rows: dict[str, list[dict]] = {m: [] for m in METHODS}
        kept: list[int] = []
        sampling_seconds: list[float] = []
        for seed in SEEDS:
            cfg = replace(CFG, seed=seed)
            t1 = time.perf_counter()
            teacher_data = dist.teacher_responses(teacher, cfg)
            sampling_seconds.append(time.perf_counter() - t1)
            kept.append(len(dist.right_examples(*teacher_data)))
            for method, (route, method_cfg) in METHODS.items():
                torch.manual_seed(seed)
                student = load_student_model()
                if route == "grpo":
                    history = train_grpo(student, replace(GRPO_RECIPE, seed=seed))
                    history.update(teacher_samples=[0], student_samples=[grpo_samples])
                else:
                    history = dist.distill_run(student, teacher, route, replace(method_cfg, seed=seed),
                                               teacher_data=teacher_data)
                rows[method].append(dict(seed=seed, **_metrics(student, seed), seconds=history["seconds"][0],
                                         teacher_samples=history["teacher_samples"][0],
                                         student_samples=history["student_samples"][0]))

        lines = [f"student {n_student:,} parameters (teacher {n_teacher:,}); held-out: {len(tw.eval_problems())} "
                 f"problems, greedy + {K} samples at temperature 1; seeds {list(SEEDS)}; one thread",
                 f"teacher: chapter 10's GRPO (seed 0), {teacher_seconds:.0f} s, {grpo_samples} samples: sampled "
                 f"{_pct(teacher_eval['sampled_accuracy']).strip()}, "
                 f"greedy {_pct(teacher_eval['greedy_accuracy']).strip()}",
                 f"student before training: sampled {_pct(student_eval['sampled_accuracy']).strip()}, greedy "
                 f"{_pct(student_eval['greedy_accuracy']).strip()}, "
                 f"reasoned {_pct(student_eval['reasoned_share']).strip()}"
                 f" (right when reasoned {_pct(student_eval['reasoned_accuracy']).strip()})",
                 f"teacher answers kept (right, well-formed) of {CFG.teacher_samples}: {kept}; the teacher wrote them "
                 f"in {_mean(sampling_seconds):.0f} s (not in the students' training seconds)",
                 "",
                 f"{'method':<36} {'sampled':>8} {'± sd':>6} {'greedy':>7} {'format':>7} {'reasoned':>8} "
                 f"{'r. acc':>7} {'teacher smp':>11} {'student smp':>11} {'train s':>7} {'params':>8} | per seed"]
        table = []
        for method in METHODS:
            rs = rows[method]
            acc = [r["sampled_accuracy"] for r in rs]
            row = dict(method=method, sampled_accuracy=_mean(acc), sampled_sd=_spread(acc),
                       greedy_accuracy=_mean([r["greedy_accuracy"] for r in rs]),
                       format_rate=_mean([r["format_rate"] for r in rs]),
                       reasoned_share=_mean([r["reasoned_share"] for r in rs]),
                       reasoned_accuracy=_mean([r["reasoned_accuracy"] for r in rs]),
                       teacher_samples=rs[0]["teacher_samples"], student_samples=rs[0]["student_samples"],
                       seconds=_mean([r["seconds"] for r in rs]), params=n_student, per_seed=rs)
            table.append(row)
            lines.append(f"{method:<36} {_pct(row['sampled_accuracy'])}  {100 * row['sampled_sd']:5.1f} "
                         f"{_pct(row['greedy_accuracy'])} {_pct(row['format_rate'])} {_pct(row['reasoned_share']):>8} "
                         f"{_pct(row['reasoned_accuracy'])} {row['teacher_samples']:>11} {row['student_samples']:>11} "
                         f"{row['seconds']:7.1f} {n_student:>8,} | " + " ".join(f"{100 * a:.1f}" for a in acc))

        def ok(flag: bool) -> str:
            return "met" if flag else "MISSED"
        by = {r["method"]: r for r in table}
        grpo_acc = [r["sampled_accuracy"] for r in rows["GRPO on the student"]]
        distilled = [m for m, (route, _) in METHODS.items() if route != "grpo" and not m.startswith("ablation")]
        best = max(distilled, key=lambda m: by[m]["sampled_accuracy"])
        best_acc = [r["sampled_accuracy"] for r in rows[best]]
        gain = by[best]["sampled_accuracy"] - by["GRPO on the student"]["sampled_accuracy"]
        acc = {m: by[m]["sampled_accuracy"] for m in METHODS}
        logit_vs_data = acc["logit distillation"] - acc["data distillation"]
        lines += ["", "targets:",
                  f"  the best distillation route ({best}) beats GRPO on the student by >= {100 * TARGET_GAIN:.0f} "
                  f"points of held-out sampled accuracy, same sampled-response budget ({grpo_samples}): "
                  f"{100 * gain:+.1f} points (mean of {len(SEEDS)} seeds; per seed "
                  + ", ".join(f"{100 * (b - g):+.1f}" for b, g in zip(best_acc, grpo_acc))
                  + f"): {ok(gain >= TARGET_GAIN)}",
                  f"  logit vs data distillation, measured: {100 * logit_vs_data:+.1f} points "
                  f"(logit {_pct(acc['logit distillation']).strip()}, data {_pct(acc['data distillation']).strip()}, "
                  f"sd {100 * by['logit distillation']['sampled_sd']:.1f} / "
                  f"{100 * by['data distillation']['sampled_sd']:.1f})",
                  f"  why (ablations): pure KD {_pct(acc[PURE_KD_ROW]).strip()} vs the teacher's "
                  f"{_pct(teacher_eval['sampled_accuracy']).strip()}; data on every teacher answer "
                  f"{_pct(acc[ALL_ANSWERS_ROW]).strip()} vs on the right ones {_pct(acc['data distillation']).strip()}",
                  f"  on-policy reverse vs forward KL: "
                  f"{100 * (acc['on-policy reverse KL'] - acc['on-policy forward KL']):+.1f} points",
                  f"total {time.perf_counter() - t0:.0f} s"]

        if tuple(SEEDS) == (0, 1, 2):                       # a full run: the data chapter 12 plots
            RESULTS_FILE.write_text(json.dumps(dict(
                config=asdict(CFG), pure_kd=asdict(METHODS[PURE_KD_ROW][1]),
                all_answers=asdict(METHODS[ALL_ANSWERS_ROW][1]), grpo_config=asdict(GRPO_RECIPE), seeds=list(SEEDS), k=K,
                teacher=dict(params=n_teacher, seconds=teacher_seconds, samples=grpo_samples, **teacher_eval),
                student=dict(params=n_student, **student_eval, shipped=student_model_metrics()),
                kept=kept, teacher_sampling_seconds=sampling_seconds, table=table), indent=1, default=float) + "\n")
            lines.append(f"wrote {RESULTS_FILE.name}")
        return lines
