"""Rejection sampling (chapter 12): RFT by round, its random-sample control, GRPO at the same budget, R1 vs R1-Zero.

Models, for seeds 0, 1, 2 (one thread): the shipped base model; rejection-sampling fine-tuning (`rejection_sampling.
RECIPE`: 2 rounds × 320 training problems × 8 samples, the right and well-formed ones kept, distinct, ≤ 4 per
problem, 40 SFT steps per round), measured after each round; the matched control (`rejection_sampling.CONTROL`: as
many samples per round drawn regardless of correctness, the same SFT); the same with every round restarting from the
base model on all kept samples (STaR's choice); chapter 10's GRPO (`grpo.RECIPE`: 40 × 16 × 8 = 5,120 sampled
responses, RFT's budget), which is also R1-Zero, pure RL from the base model; and the R1 pipeline (`r1_recipe.RECIPE`:
cold start on 200 reasoned examples → GRPO → 320 × 8 samples of the RL model filtered → SFT of the base model on
them), measured after each stage.

Each model is evaluated on the 256 held-out problems (`evaluation.evaluate`, greedy and 16 samples per problem at
temperature 1, seed 0): sampled accuracy (pass@1 from 16 samples), greedy accuracy, format rate, reasoned share and
mean response length (tokens, EOS not counted); the final models also on the hard slice (`taskworld.hard_problems`:
135 3-digit problems with ≥ 2 carries, pass@1 and pass@16). Responses sampled: what training generated (the
evaluation's samples not counted). Training seconds: sampling included, evaluations not. A full run (seeds 0–2)
writes `llmcourse/data/rejection_sampling.json`, which chapter 12 plots.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace

from llmcourse import r1_recipe as r1
from llmcourse import rejection_sampling as rs
from llmcourse import taskworld as tw
from llmcourse.checkpoint import load_base_model
from llmcourse.evaluation import evaluate
from llmcourse.grpo import RECIPE as GRPO_RECIPE
from llmcourse.grpo import grpo_run
from llmcourse.runtime import torch_threads
from llmcourse.tokenizer import encode

SEEDS = (0, 1, 2)
K = 16
"""Samples per held-out problem (and pass@K on the hard slice)."""
RFT = rs.RECIPE
CONTROL = rs.CONTROL
STAR = replace(rs.RECIPE, restart=True)
"""RFT with each round restarting from the base model on everything kept so far (STaR)."""
R1 = r1.RECIPE
RESULTS_FILE = rs.RESULTS_PATH

FINAL = ("RFT", "random control", "RFT, restarts (STaR)", "GRPO = R1-Zero", "R1: cold start", "R1: cold start + RL",
         "R1: base SFT on RL samples")
"""The rows of the table, in order."""


def _metrics(model, hard: bool = True) -> dict:
    ev = evaluate(model, k=K)
    out = dict(sampled=ev["sampled_accuracy"], greedy=ev["greedy_accuracy"], format=ev["format_rate"],
               reasoned=ev["reasoned_share"],
               length=sum(len(encode(t)) for t in ev["samples"]) / len(ev["samples"]))
    if hard:
        h = evaluate(model, tw.hard_problems(), k=K)
        out.update(hard_pass1=h["sampled_accuracy"], hard_pass_k=h["pass_at_k"])
    return out


def _rft(cfg: rs.RFTConfig, seed: int) -> dict:
    """A run of ``cfg``: held-out sampled accuracy after each round, the final model's metrics, its history."""
    by_round: list[float] = []

    def on_eval(rnd: int, model) -> None:
        if 0 < rnd < cfg.rounds:
            by_round.append(evaluate(model, k=K)["sampled_accuracy"])
    model, history = rs.rft_run(cfg, seed, on_eval=on_eval)
    final = _metrics(model)
    return dict(final, by_round=by_round + [final["sampled"]], kept=history["kept"], examples=history["examples"],
                sample_accuracy=history["sample_accuracy"], responses=sum(history["sampled"]),
                seconds=history["seconds"][0])


def _r1(seed: int) -> dict[str, dict]:
    stages: dict[str, dict] = {}

    def on_stage(name: str, model) -> None:
        if name != "base":
            stages[name] = _metrics(model)
    _, history = r1.r1_run(R1, seed, on_stage=on_stage)
    grpo_responses = R1.rl.updates * R1.rl.prompts_per_update * R1.rl.samples_per_prompt
    cum = 0.0
    for (name, m), secs, responses in zip(stages.items(), history["stage_seconds"],
                                          (0, grpo_responses, grpo_responses + history["rs_sampled"][0])):
        cum += secs
        m.update(responses=responses, seconds=cum)
    return dict(stages=stages, kept=history["rs_kept"][0], rs_sample_accuracy=history["rs_sample_accuracy"][0],
                rl_accuracy=history["rl_accuracy"][0])


def _pct(x: float) -> str:
    return f"{100 * x:5.1f}"


def _row(name: str, seed, m: dict) -> str:
    return (f"{name:<28} {seed!s:>4} {_pct(m['sampled'])} {_pct(m['greedy'])} {_pct(m['format'])} "
            f"{_pct(m['reasoned'])} {m['length']:6.1f} {_pct(m['hard_pass1'])} {_pct(m['hard_pass_k'])} "
            f"{m.get('responses', 0):6d} {m.get('seconds', 0.0):6.0f}")


def run() -> list[str]:
    with torch_threads(1):
        base = _metrics(load_base_model())
        runs: dict[str, list[dict]] = {name: [] for name in FINAL}
        details: dict[str, list] = {"RFT": [], "random control": [], "RFT, restarts (STaR)": [], "R1": []}
        for seed in SEEDS:
            for name, cfg in (("RFT", RFT), ("random control", CONTROL), ("RFT, restarts (STaR)", STAR)):
                r = _rft(cfg, seed)
                runs[name].append(r)
                details[name].append(r)
            model, history = grpo_run(GRPO_RECIPE, seed)
            g = _metrics(model)
            g.update(responses=GRPO_RECIPE.updates * GRPO_RECIPE.prompts_per_update * GRPO_RECIPE.samples_per_prompt,
                     seconds=history["seconds"][0])
            runs["GRPO = R1-Zero"].append(g)
            r1_out = _r1(seed)
            details["R1"].append(r1_out)
            for stage, name in zip(r1.STAGES[1:4], FINAL[4:]):
                runs[name].append(r1_out["stages"][stage])

        header = (f"{'model':<28} {'seed':>4} {'samp%':>5} {'grdy%':>5} {'fmt%':>5} {'rsn%':>5} {'tokens':>6} "
                  f"{'hard1':>5} {'hd@' + str(K):>5} {'resp':>6} {'sec':>6}")
        lines = [f"{len(tw.eval_problems())} held-out problems: greedy and {K} samples per problem at temperature 1; "
                 f"hard slice ({len(tw.hard_problems())} problems): pass@1 and pass@{K}; one thread",
                 f"RFT: {RFT.rounds} rounds x {RFT.problems_per_round} problems x {RFT.samples_per_problem} samples, "
                 f"m = {RFT.max_per_problem}, {RFT.sft.steps} SFT steps x {RFT.sft.batch_size} at lr "
                 f"{RFT.sft.max_lr:g} per round; GRPO: {GRPO_RECIPE.updates} x {GRPO_RECIPE.prompts_per_update} x "
                 f"{GRPO_RECIPE.samples_per_prompt}; R1: cold start on {R1.cold_start_examples} reasoned examples, "
                 f"then GRPO, then {R1.problems} x {R1.samples_per_problem} samples filtered, SFT of the base model",
                 "", header, _row("base model", "", dict(base, responses=0, seconds=0.0))]
        for name in FINAL:
            for seed, m in zip(SEEDS, runs[name]):
                lines.append(_row(name, seed, m))

        lines += ["", "mean over seeds [min, max] of held-out sampled accuracy (%):"]
        for name in FINAL:
            xs = [m["sampled"] for m in runs[name]]
            lines.append(f"  {name:<28} {100 * sum(xs) / len(xs):5.1f} [{100 * min(xs):.1f}, {100 * max(xs):.1f}]")
        lines += ["", "held-out sampled accuracy (%) after each round (0 = base):"]
        for name in ("RFT", "random control", "RFT, restarts (STaR)"):
            for seed, r in zip(SEEDS, details[name]):
                curve = " -> ".join(_pct(x).strip() for x in [base["sampled"]] + r["by_round"])
                right = ", ".join(_pct(a).strip() for a in r["sample_accuracy"])
                lines.append(f"  {name:<28} seed {seed}: {curve}   (SFT examples per round {r['examples']}, "
                             f"training samples right per round (%): {right})")
        for seed, d in zip(SEEDS, details["R1"]):
            lines.append(f"  R1 seed {seed}: RL's last batch {_pct(d['rl_accuracy']).strip()}% right; rejection "
                         f"sampling kept {d['kept']} of {R1.problems * R1.samples_per_problem} samples "
                         f"({_pct(d['rs_sample_accuracy']).strip()}% right)")

        rft, ctrl = [m["sampled"] for m in runs["RFT"]], [m["sampled"] for m in runs["random control"]]
        lift = [x - base["sampled"] for x in rft]
        gap = [x - y for x, y in zip(rft, ctrl)]

        def ok(flag: bool) -> str:
            return "met" if flag else "MISSED"
        lines += ["", "targets:",
                  f"  RFT lifts the base model's held-out sampled accuracy ({_pct(base['sampled']).strip()}%) by >= 30 "
                  f"points, every seed: " + ", ".join(f"{100 * x:+.1f}" for x in lift) + f": {ok(min(lift) >= 0.30)}",
                  "  RFT beats the matched random-sample control by >= 20 points, every seed: "
                  + ", ".join(f"{100 * x:+.1f}" for x in gap) + f": {ok(min(gap) >= 0.20)}"]
        grpo = [m["sampled"] for m in runs["GRPO = R1-Zero"]]
        final_r1 = [m["sampled"] for m in runs["R1: base SFT on RL samples"]]
        lines += ["comparisons (no target):",
                  f"  RFT minus GRPO at the same budget ({runs['RFT'][0]['responses']} and "
                  f"{runs['GRPO = R1-Zero'][0]['responses']} sampled responses), points: "
                  + ", ".join(f"{100 * (x - y):+.1f}" for x, y in zip(rft, grpo)),
                  "  R1 pipeline minus R1-Zero (points): " + ", ".join(f"{100 * (x - y):+.1f}"
                                                                         for x, y in zip(final_r1, grpo))]

        if tuple(SEEDS) == (0, 1, 2):                       # a full run: the data chapter 12 plots
            RESULTS_FILE.write_text(json.dumps(dict(
                seeds=list(SEEDS), k=K, rft=asdict(RFT), control=asdict(CONTROL), star=asdict(STAR),
                grpo=asdict(GRPO_RECIPE), r1=asdict(R1), base=base, runs=runs,
                rft_by_round={name: [r["by_round"] for r in details[name]]
                              for name in ("RFT", "random control", "RFT, restarts (STaR)")},
                r1_details=[{k: v for k, v in d.items() if k != "stages"} for d in details["R1"]]),
                indent=1) + "\n")
            lines.append(f"wrote {RESULTS_FILE.name}")
        return lines
