"""Test-time compute (chapter 11): majority vote, best-of-N by the rules, the ORM and a PRM, chain of thought.

For the base and the GRPO model on the 256 held-out problems, with the token cost of each method; 3 PRM seeds.

Every model answers each held-out problem K = 64 times at temperature 1 (`inference.RECIPE`, seed 0). The curves
read N = 1 … 64 from those samples: majority vote and best-of-N average over the K / N disjoint groups of N samples
(`inference.vote_curve`, `inference.best_of_n_curve`), pass@N is the unbiased estimator of
`evaluation.pass_at_k_curve` (best-of-N by the rules has that expectation). The cost is generated tokens per
problem: N × the mean response length. Verifiers: chapter 07's shipped reward model (ORM, its score at the last
token) and process reward models (`llmcourse.prm.PRMConfig()`, trained for seeds 0, 1, 2 on the base model's own
answers to training problems; also the shipped one), a response scored by its steps' min. The GRPO model is
chapter 10's recipe (`grpo.RECIPE`, seed 0).

PRM against ORM on the base model's held-out responses: the PRM's step accuracy (P(step right) > 0.5 against the
step labels) and, for both, response-level AUROC (threshold-free) and accuracy of "score > t means right" with t
chosen on the PRM's training responses (the same responses for both). Two more PRMs for seed 0 show why the
recipe is what it is: the same PRM with its body frozen (only a and b trained), and the textbook one, a scalar
head read at each step's end (`prm.STEP_HEAD`). Chain of thought: each model answers 16 times per problem in each
style, forced by its first token (`inference.chain_of_thought`). A full run (seeds 0–2) writes
`llmcourse/data/test_time_compute.json`, which chapter 11 plots.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import torch

from llmcourse import inference as inf
from llmcourse import taskworld as tw
from llmcourse.checkpoint import load_base_model
from llmcourse.evaluation import pass_at_k_curve
from llmcourse.grpo import RECIPE as GRPO_RECIPE
from llmcourse.grpo import grpo_run
from llmcourse.prm import (STEP_HEAD, PRMConfig, aggregate_steps, load_prm, make_prm, prm_metrics, response_scores,
                           score_steps, step_metrics, step_targets, train_prm, training_responses)
from llmcourse.reward_model import load_reward_model, reward_model_metrics, score_responses
from llmcourse.runtime import torch_threads

SEEDS = (0, 1, 2)
"""PRM training seeds."""
CFG = inf.RECIPE
"""Samples per problem, the N of the curves, the PRM's aggregation."""
PRM_CONFIG = PRMConfig()
"""The PRM's recipe (the shipped model's)."""
RESULTS_FILE: Path = inf.RESULTS_PATH
"""Where a full run writes what chapter 11 plots."""
COMPARE_AT = 16
"""The N of the targets and of the summary table."""


def _pct(x: float) -> str:
    return f"{100 * x:5.1f}%"


def _curve(xs: list[float]) -> str:
    return " ".join(f"{100 * x:5.1f}" for x in xs)


def _held_out(model, rm, problems: list[tw.Problem] | None = None) -> dict:
    """K samples per problem (the held-out set unless given), their answers, correctness (P, K), token cost and ORM
    scores (P, K)."""
    problems = list(tw.eval_problems()) if problems is None else problems
    r = inf.sample_held_out(model, CFG, problems)
    P, K = len(problems), CFG.n_samples
    correct = inf.correct_matrix(r, problems)
    return dict(responses=r, problems=problems, answers=inf.extract_answers(r.texts), correct=correct,
                tokens=inf.tokens_per_response(r), orm=score_responses(rm, r).cpu().view(P, K))


def _curves(h: dict, prm_scores: dict[str, torch.Tensor]) -> dict:
    ns, correct = list(CFG.ns), h["correct"]
    passk = pass_at_k_curve(correct.reshape(-1).tolist(), CFG.n_samples)
    return dict(ns=ns, tokens_per_problem=[n * h["tokens"] for n in ns],
                pass_at_n=[passk[n - 1] for n in ns],
                vote=inf.vote_curve(h["answers"], h["problems"], ns),
                orm=inf.best_of_n_curve(h["orm"], correct, ns),
                orm_chosen_score=inf.best_of_n_curve(h["orm"], h["orm"], ns),
                prm={name: inf.best_of_n_curve(s, correct, ns) for name, s in prm_scores.items()},
                no_answer_share=sum(a is None for a in h["answers"]) / len(h["answers"]))


def _prm_scores(prm, h: dict) -> torch.Tensor:
    P, K = h["correct"].shape
    return response_scores(prm, h["responses"], CFG.aggregation).cpu().view(P, K)


def _verifier_report(prm, rm, train: tuple, h: dict) -> dict:
    """The PRM's step accuracy and both verifiers' response-level AUROC and accuracy on the held-out responses,
    thresholds chosen on ``train`` (the PRM's training responses, rows' problems, step targets)."""
    responses, rows, _ = train
    train_right = torch.tensor([tw.is_correct(t, p) for t, p in zip(responses.texts, rows)])
    thresholds = {"prm": inf.best_threshold(response_scores(prm, responses, CFG.aggregation), train_right),
                  "orm": inf.best_threshold(score_responses(rm, responses).cpu(), train_right)}
    held, right = h["responses"], h["correct"].reshape(-1)
    targets = step_targets(held, held.per_row(h["problems"]))
    step_scores, mask = score_steps(prm, held)
    scores = {"prm": aggregate_steps(step_scores, mask, CFG.aggregation).cpu(), "orm": h["orm"].reshape(-1)}
    reasoned = torch.tensor([tw.is_reasoned(t) for t in held.texts])
    out = {"steps": step_metrics(step_scores.cpu(), targets)}
    for name, s in scores.items():
        out[name] = {"auroc": inf.auroc(s, right), "auroc_reasoned": inf.auroc(s[reasoned], right[reasoned]),
                     "accuracy": inf.threshold_accuracy(s, right, thresholds[name]), "threshold": thresholds[name]}
    out["always_wrong_accuracy"] = 1 - right.float().mean().item()
    return out


def _train(base, cfg: PRMConfig, data=None):
    """A PRM trained with ``cfg`` (on ``data`` when given): (prm, training data, history)."""
    data = data if data is not None else training_responses(base, cfg)
    torch.manual_seed(cfg.seed)
    prm = make_prm(base, cfg)
    history = train_prm(prm, data[0], data[2], cfg, progress=False)
    return prm, data, history


def run() -> list[str]:
    with torch_threads(1):
        base, rm = load_base_model(), load_reward_model()
        grpo_model, grpo_history = grpo_run(GRPO_RECIPE, seed=0)
        k, ns = CFG.n_samples, list(CFG.ns)
        at = ns.index(COMPARE_AT) if COMPARE_AT in ns else len(ns) - 1
        n_at = ns[at]
        lines = [f"{len(tw.eval_problems())} held-out problems x {k} samples at temperature {CFG.temperature:g} "
                 f"(seed {CFG.seed}); curves at N = {ns}; accuracy in %; one thread",
                 f"GRPO model: chapter 10's recipe, seed 0, {grpo_history['seconds'][0]:.0f} s of training"]
        base_h = _held_out(base, rm)
        hard = tw.hard_problems()
        base_hard = _held_out(base, rm, hard)

        # ---- PRMs: 3 training seeds, judged on the base model's held-out samples
        lines += ["", f"PRM training ({PRM_CONFIG.n_problems} training problems x {PRM_CONFIG.samples_per_problem} "
                      f"samples at temperature {PRM_CONFIG.temperature:g}, {PRM_CONFIG.steps} steps x "
                      f"{PRM_CONFIG.batch_size} responses, body lr {PRM_CONFIG.lr:g}, head lr {PRM_CONFIG.head_lr:g}):",
                  f"{'seed':>4} {'responses':>9} {'steps':>6} {'wrong':>6} {'wrong in reasoned':>17} {'train s':>7} | "
                  f"{'step acc':>8} {'right st':>8} {'wrong st':>8} | {'PRM AUROC':>9} {'ORM AUROC':>9} "
                  f"{'PRM acc':>7} {'ORM acc':>7} {'reasoned: PRM':>13} {'ORM':>5} | {'PRM bo' + str(n_at):>8}"]
        prm_scores, hard_prm_scores, reports, train_seconds, seed0_data = {}, {}, {}, {}, None
        for seed in SEEDS:
            cfg = replace(PRM_CONFIG, seed=seed)
            prm, data, history = _train(base, cfg)
            if seed == SEEDS[0]:
                seed0_data = data
            responses, _, targets = data
            reasoned = torch.tensor([tw.is_reasoned(t) for t in responses.texts])
            wrong = ~targets.labels.bool() & targets.mask
            wrong_share = wrong.sum().item() / targets.mask.sum().item()
            reasoned_wrong_share = wrong[reasoned].sum().item() / targets.mask[reasoned].sum().item()
            name = f"seed {seed}"
            prm_scores[name] = _prm_scores(prm, base_h)
            hard_prm_scores[name] = _prm_scores(prm, base_hard)
            rep = _verifier_report(prm, rm, data, base_h)
            reports[name], train_seconds[name] = rep, history["seconds"][0]
            bo = inf.best_of_n_mean(prm_scores[name], base_h["correct"], n_at)
            lines.append(
                f"{seed:>4} {len(responses):>9} {int(targets.mask.sum()):>6} {_pct(wrong_share):>6} "
                f"{_pct(reasoned_wrong_share):>17} {history['seconds'][0]:7.0f} | "
                f"{_pct(rep['steps']['step_accuracy']):>8} {_pct(rep['steps']['right_step_accuracy']):>8} "
                f"{_pct(rep['steps']['wrong_step_accuracy']):>8} | {rep['prm']['auroc']:9.3f} {rep['orm']['auroc']:9.3f} "
                f"{_pct(rep['prm']['accuracy']):>7} {_pct(rep['orm']['accuracy']):>7} "
                f"{rep['prm']['auroc_reasoned']:13.3f} {rep['orm']['auroc_reasoned']:5.3f} | {_pct(bo):>8}")
        first = reports[f"seed {SEEDS[0]}"]
        lines.append(f"(held-out responses: {len(base_h['responses'])}, {_pct(first['always_wrong_accuracy']).strip()} "
                     f"of them wrong, so 'always wrong' is {_pct(first['always_wrong_accuracy']).strip()} accurate; "
                     "thresholds chosen on each seed's training responses; AUROC 'reasoned': among reasoned "
                     "responses only)")
        shipped = load_prm()
        prm_scores["shipped"] = _prm_scores(shipped, base_h)
        lines.append(f"shipped PRM (seed 0, `python -m llmcourse.prm`): best-of-{n_at} "
                     f"{_pct(inf.best_of_n_mean(prm_scores['shipped'], base_h['correct'], n_at)).strip()}, recorded "
                     f"held-out step accuracy {_pct(prm_metrics()['held_out_step_accuracy']).strip()}")

        # ---- why this PRM: the body frozen, and a scalar head at each step's end (seed 0's training data)
        lines += ["", f"why this PRM (seed {SEEDS[0]}'s training responses):"]
        ablations = {"body frozen (a, b only)": replace(PRM_CONFIG, seed=SEEDS[0], lr=0.0),
                     "scalar head at each step's end": replace(PRM_CONFIG, seed=SEEDS[0], kind=STEP_HEAD.kind,
                                                               lr=STEP_HEAD.lr, head_lr=STEP_HEAD.head_lr)}
        ablation_rows = {}
        for label, cfg in ablations.items():
            prm, _, history = _train(base, cfg, seed0_data)
            s = _prm_scores(prm, base_h)
            rep = _verifier_report(prm, rm, seed0_data, base_h)
            ablation_rows[label] = dict(report=rep, best_of_n=inf.best_of_n_curve(s, base_h["correct"], ns),
                                        seconds=history["seconds"][0])
            lines.append(f"  {label:<32} step acc {_pct(rep['steps']['step_accuracy'])} (wrong steps "
                         f"{_pct(rep['steps']['wrong_step_accuracy']).strip()}), AUROC {rep['prm']['auroc']:.3f} "
                         f"(reasoned {rep['prm']['auroc_reasoned']:.3f}), best-of-{n_at} "
                         f"{_pct(ablation_rows[label]['best_of_n'][at]).strip()}, {history['seconds'][0]:.0f} s")

        # ---- curves for both models
        grpo_h = _held_out(grpo_model, rm)
        grpo_hard = _held_out(grpo_model, rm, hard)
        hard_prm_scores["shipped"] = _prm_scores(shipped, base_hard)
        curves = {"base model": _curves(base_h, prm_scores),
                  "GRPO model": _curves(grpo_h, {"shipped": _prm_scores(shipped, grpo_h)})}
        hard_curves = {"base model": _curves(base_hard, hard_prm_scores),
                       "GRPO model": _curves(grpo_hard, {"shipped": _prm_scores(shipped, grpo_hard)})}
        held = {"base model": base_h, "GRPO model": grpo_h}
        hard_held = {"base model": base_hard, "GRPO model": grpo_hard}
        for model_name, c, h, where in [(m, curves[m], held[m], f"{tw.EVAL_SIZE} held-out problems") for m in curves] + \
                [(m, hard_curves[m], hard_held[m], f"hard slice, {len(hard)} problems") for m in hard_curves]:
            lines += ["", f"{model_name} ({where}): {h['tokens']:.1f} tokens per response, "
                          f"{_pct(c['no_answer_share']).strip()} without an answer",
                      f"  {'N':<22} " + " ".join(f"{n:>5}" for n in ns),
                      f"  {'tokens per problem':<22} " + " ".join(f"{t:5.0f}" for t in c["tokens_per_problem"]),
                      f"  {'pass@N (rules)':<22} {_curve(c['pass_at_n'])}",
                      f"  {'majority vote':<22} {_curve(c['vote'])}",
                      f"  {'best-of-N, ORM':<22} {_curve(c['orm'])}",
                      f"  {'  ORM score of choice':<22} " + " ".join(f"{x:+5.2f}" for x in c["orm_chosen_score"]),
                      f"  {'  KL bound (nats)':<22} " + " ".join(f"{inf.best_of_n_kl(n):5.2f}" for n in ns)]
            for name, xs in c["prm"].items():
                lines.append(f"  {'best-of-N, PRM ' + name:<22} {_curve(xs)}")

        # ---- why the ORM over-optimises: among one problem's reasoned samples, which does each verifier pick?
        texts, right = base_h["responses"].texts, base_h["correct"]
        reasoned = torch.tensor([tw.is_reasoned(t) for t in texts]).view(right.shape)            # (P, K)

        def variants(i: int, kind: bool) -> int:
            """How many different reasoned texts problem i's right (kind True) or wrong samples are."""
            return len({t for t, r, c in zip(texts[i * k:(i + 1) * k], reasoned[i], right[i]) if r and bool(c) == kind})
        both = [i for i in range(right.size(0)) if variants(i, True) and variants(i, False)]
        picks = {"ORM": inf.wrong_pick_rate(base_h["orm"], right, reasoned),
                 "PRM shipped": inf.wrong_pick_rate(prm_scores["shipped"], right, reasoned)}
        lines += ["", f"base model, the {len(both)} problems whose {k} samples include right and wrong reasoned ones: "
                      "how often the reasoned sample a verifier scores highest is wrong"]
        lines += [f"  {name:<12} {_pct(p['verifier'])} (a blind pick among the reasoned: {_pct(p['random']).strip()})"
                  for name, p in picks.items()]
        if both:
            n_right, n_wrong = (sum(variants(i, kind) for i in both) / len(both) for kind in (True, False))
            lines.append(f"  there, the right reasoned samples are {n_right:.1f} different texts on average, the wrong "
                         f"ones {n_wrong:.1f}")

        # ---- chain of thought
        cot = {"base model": inf.chain_of_thought(base, n_samples=CFG.style_samples, seed=CFG.seed),
               "GRPO model": inf.chain_of_thought(grpo_model, n_samples=CFG.style_samples, seed=CFG.seed)}
        hard_cot = {"base model": inf.chain_of_thought(base, hard, n_samples=CFG.style_samples, seed=CFG.seed),
                    "GRPO model": inf.chain_of_thought(grpo_model, hard, n_samples=CFG.style_samples, seed=CFG.seed)}
        lines += ["", f"chain of thought ({CFG.style_samples} samples per problem and style; the style forced by its "
                      "first token, or the model's own choice): accuracy / tokens per response"]
        for where, c_all in (("held-out", cot), ("hard", hard_cot)):
            for model_name, c in c_all.items():
                lines.append(f"  {where:<8} {model_name:<12} " + "   ".join(
                    f"{style} {_pct(v['accuracy']).strip()} / {v['tokens']:.1f}" for style, v in c.items()))

        # ---- where each method lands
        rm_seconds = reward_model_metrics().get("train_seconds", float("nan"))
        prm_seconds = [train_seconds[f"seed {s}"] for s in SEEDS]
        b, g = curves["base model"], curves["GRPO model"]
        hb, hg = hard_curves["base model"], hard_curves["GRPO model"]
        prm_bo = [b["prm"][f"seed {s}"][at] for s in SEEDS]
        hard_prm_bo = [hb["prm"][f"seed {s}"][at] for s in SEEDS]
        grpo_s = f"GRPO {grpo_history['seconds'][0]:.0f} s"

        def mean(xs: list[float]) -> float:
            return sum(xs) / len(xs)
        # (method, accuracy, tokens per problem, hard-slice accuracy, hard-slice tokens, training)
        table = [("base model, one sample (pass@1)", b["pass_at_n"][0], b["tokens_per_problem"][0],
                  hb["pass_at_n"][0], hb["tokens_per_problem"][0], "none"),
                 ("base model, forced to reason", cot["base model"]["reasoned"]["accuracy"],
                  cot["base model"]["reasoned"]["tokens"], hard_cot["base model"]["reasoned"]["accuracy"],
                  hard_cot["base model"]["reasoned"]["tokens"], "none"),
                 (f"base model, majority vote of {n_at}", b["vote"][at], b["tokens_per_problem"][at],
                  hb["vote"][at], hb["tokens_per_problem"][at], "none"),
                 (f"base model, best-of-{n_at} by the ORM", b["orm"][at], b["tokens_per_problem"][at],
                  hb["orm"][at], hb["tokens_per_problem"][at], f"ORM {rm_seconds:.0f} s"),
                 (f"base model, best-of-{n_at} by the PRM (mean of seeds)", mean(prm_bo), b["tokens_per_problem"][at],
                  mean(hard_prm_bo), hb["tokens_per_problem"][at], f"PRM {mean(prm_seconds):.0f} s"),
                 (f"base model, pass@{n_at} (the rules as oracle)", b["pass_at_n"][at], b["tokens_per_problem"][at],
                  hb["pass_at_n"][at], hb["tokens_per_problem"][at], "none (needs the answer)"),
                 ("GRPO model, one sample (pass@1)", g["pass_at_n"][0], g["tokens_per_problem"][0],
                  hg["pass_at_n"][0], hg["tokens_per_problem"][0], grpo_s),
                 (f"GRPO model, majority vote of {n_at}", g["vote"][at], g["tokens_per_problem"][at],
                  hg["vote"][at], hg["tokens_per_problem"][at], grpo_s),
                 (f"GRPO model, best-of-{n_at} by the ORM", g["orm"][at], g["tokens_per_problem"][at],
                  hg["orm"][at], hg["tokens_per_problem"][at], f"{grpo_s} + ORM"),
                 (f"GRPO model, best-of-{n_at} by the PRM", g["prm"]["shipped"][at], g["tokens_per_problem"][at],
                  hg["prm"]["shipped"][at], hg["tokens_per_problem"][at], f"{grpo_s} + PRM"),
                 (f"GRPO model, pass@{n_at}", g["pass_at_n"][at], g["tokens_per_problem"][at],
                  hg["pass_at_n"][at], hg["tokens_per_problem"][at], grpo_s)]
        lines += ["", f"{'method':<52} {'accuracy':>8} {'tokens/problem':>14} | {'hard slice':>10} {'tokens':>6}  training",
                  *[f"{m:<52} {_pct(a):>8} {t:14.0f} | {_pct(ha):>10} {ht:6.0f}  {c}" for m, a, t, ha, ht, c in table]]

        # ---- the targets
        vote_gain = b["vote"][at] - b["pass_at_n"][0]
        orm_bo, pass_n = b["orm"][at], b["pass_at_n"][at]
        closed = [(x - orm_bo) / (pass_n - orm_bo) if pass_n > orm_bo else float("nan") for x in prm_bo]
        prm_acc = [reports[f"seed {s}"]["prm"]["accuracy"] for s in SEEDS]
        orm_acc = [reports[f"seed {s}"]["orm"]["accuracy"] for s in SEEDS]
        best_before = max(b["orm"][:-1])
        overopt = b["orm"][-1] <= best_before and b["orm_chosen_score"][-1] > b["orm_chosen_score"][-2]
        peak = ns[max(range(len(ns)), key=b["orm"].__getitem__)]

        def ok(flag: bool) -> str:
            return "met" if flag else "MISSED"
        lines += ["", "targets:",
                  f"  majority vote of {n_at} beats pass@1 by >= 40 points: {100 * vote_gain:+.1f} points "
                  f"({_pct(b['pass_at_n'][0]).strip()} -> {_pct(b['vote'][at]).strip()}): {ok(vote_gain >= 0.40)}",
                  f"  PRM best-of-{n_at} closes >= 2/3 of the gap from the ORM's ({_pct(orm_bo).strip()}) to pass@{n_at} "
                  f"({_pct(pass_n).strip()}), every seed: " + ", ".join(
                      f"{_pct(x).strip()} ({100 * c:.0f}%)" for x, c in zip(prm_bo, closed))
                  + f": {ok(all(c >= 2 / 3 for c in closed))}",
                  "  PRM response-level accuracy above the ORM's, every seed: " + ", ".join(
                      f"{_pct(x).strip()} vs {_pct(y).strip()}" for x, y in zip(prm_acc, orm_acc))
                  + f": {ok(all(x > y for x, y in zip(prm_acc, orm_acc)))}",
                  f"  best-of-N by the ORM over-optimises (accuracy at N = {ns[-1]} not above its best at smaller N, "
                  f"while the chosen score still rises): accuracy {_curve(b['orm']).strip()} (peak at N = {peak}), "
                  f"score {b['orm_chosen_score'][-2]:+.2f} -> {b['orm_chosen_score'][-1]:+.2f}: {ok(overopt)}"]

        if tuple(SEEDS) == (0, 1, 2):                       # a full run: the data chapter 11 plots
            RESULTS_FILE.write_text(json.dumps(dict(
                config=asdict(CFG), prm_config=asdict(PRM_CONFIG), seeds=list(SEEDS),
                kl_bound=[inf.best_of_n_kl(n) for n in ns], curves=curves, chain_of_thought=cot,
                hard_slice=dict(problems=len(hard), curves=hard_curves, chain_of_thought=hard_cot),
                wrong_picks=picks,
                verifiers={**reports, **{f"ablation: {k}": v["report"] for k, v in ablation_rows.items()}},
                ablations={k: dict(best_of_n=v["best_of_n"], seconds=v["seconds"]) for k, v in ablation_rows.items()},
                prm_train_seconds=train_seconds, orm_train_seconds=rm_seconds,
                grpo_train_seconds=grpo_history["seconds"][0],
                table=[dict(method=m, accuracy=a, tokens_per_problem=t, hard_accuracy=ha, hard_tokens_per_problem=ht,
                            training=c) for m, a, t, ha, ht, c in table]),
                indent=1) + "\n")
            lines.append(f"wrote {RESULTS_FILE.name}")
        return lines
