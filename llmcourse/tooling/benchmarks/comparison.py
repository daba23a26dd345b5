"""The course's final comparison: the base model against LoRA SFT, DPO and its variants, PPO and GRPO on one
held-out set (seed 0).

Each method trains a fresh copy of the shipped base model with its chapter's recipe (seed 0, one
thread): LoRA SFT on reasoned responses (chapter 06: rank 4, 20 steps, lr 3e-3), plain DPO and DPO
with the SFT term (RPO, chapter 08: 40 steps × 32 of the base model's own rule-labelled pairs), ORPO
on the same pairs (`ORPOConfig()`: the same budget, λ 0.1, no reference) and KTO on their responses
unpaired (`KTOConfig()`: 40 steps × 64 examples, β 0.1, λ_D = λ_U = 1), PPO against the shipped reward
model (chapter 09: `PPOConfig()`), and GRPO with rule rewards (chapter 10: its recipe, `grpo.RECIPE`,
lr 2e-4 and β 0.04); chapter 12's rejection-sampling fine-tuning (`rejection_sampling.RECIPE`) and R1 recipe
(`r1_recipe.RECIPE`), and its student (`checkpoint.load_student_model`) as shipped, after GRPO, and distilled from the
GRPO model above by its right answers and by its logits (`distillation.RECIPE`); chapter 13's GRPO model above stored
in Q8_0 and Q4_0 (`quantization.quantize_model`, its block linear layers). Then every model answers the 256 held-out
problems: greedily once and
16 times at temperature 1 (sampled accuracy is pass@1 over those 16; pass@16 is the share of
problems with at least one right answer among them). The KL to the base model is the exact
categorical KL summed over the tokens of the model's own sampled responses (4 per problem), in
nats per response: how far each method moved the model where it actually answers. Training
seconds count the optimisation and the reference's pass of DPO, RPO and KTO (not the pair sampling, not
evaluation).

Test-time rows (chapter 11): the base and the GRPO model answer each held-out problem 16 more times at temperature 1
(`inference.sample_held_out`, seed 0), and one answer is chosen per problem by majority vote, by the ORM (chapter
07's shipped reward model) or by the PRM (chapter 11's shipped one), best of the 16; their cost is the generated
tokens per problem. (Chapter 11's benchmark reads the same selections from 64 samples per problem.)
"""

from __future__ import annotations

import copy
import time
from dataclasses import replace

import torch


from llmcourse import inference as inf
from llmcourse import quantization as Q
from llmcourse import taskworld as tw
from llmcourse.checkpoint import load_base_model, load_student_model
from llmcourse.distillation import RECIPE as DISTILL_RECIPE
from llmcourse.distillation import distill_run, teacher_responses
from llmcourse.dpo import RPO_ALPHA, DPOConfig, KTOConfig, ORPOConfig, chapter_pairs, train_dpo, train_kto, train_orpo
from llmcourse.evaluation import evaluate, kl_to_model
from llmcourse.grpo import RECIPE as GRPO_RECIPE
from llmcourse.grpo import train_grpo
from llmcourse.lora import sft_run
from llmcourse.model import GPT
from llmcourse.ppo_rlhf import PPOConfig, make_critic, train_ppo
from llmcourse.r1_recipe import RECIPE as R1_RECIPE
from llmcourse.r1_recipe import r1_run
from llmcourse.rejection_sampling import RECIPE as RFT_RECIPE
from llmcourse.rejection_sampling import rft_run
from llmcourse.prm import load_prm, response_scores
from llmcourse.reward_model import load_reward_model, score_responses
from llmcourse.runtime import torch_threads

K = 16
"""Samples per held-out problem for sampled accuracy and pass@k."""


def _train_all(base: GPT) -> dict[str, tuple[GPT, float]]:
    """Every method's model from the base model and its training seconds (seed 0)."""
    models: dict[str, tuple[GPT, float]] = {"base model": (base, 0.0)}
    model, h = sft_run(rank=4, lr=3e-3, seed=0)
    models["LoRA SFT (ch. 06)"] = (model, h["seconds"][0])
    pairs = chapter_pairs(base, seed=0)
    for name, alpha in (("DPO (ch. 08)", 0.0), ("DPO + SFT, RPO (ch. 08)", RPO_ALPHA)):
        model = copy.deepcopy(base)
        h = train_dpo(model, pairs, DPOConfig(rpo_alpha=alpha, seed=0))
        models[name] = (model, h["seconds"][0])
    model = copy.deepcopy(base)
    h = train_orpo(model, pairs, ORPOConfig(seed=0))
    models["ORPO (ch. 08)"] = (model, h["seconds"][0])
    model = copy.deepcopy(base)
    h = train_kto(model, pairs, KTOConfig(seed=0))
    models["KTO (ch. 08)"] = (model, h["seconds"][0])
    rm = load_reward_model()
    actor = copy.deepcopy(base)
    h = train_ppo(actor, make_critic(rm), rm, PPOConfig(seed=0))
    models["PPO + reward model (ch. 09)"] = (actor, h["seconds"][0])
    model = copy.deepcopy(base)
    h = train_grpo(model, replace(GRPO_RECIPE, seed=0))
    models["GRPO (ch. 10)"] = (model, h["seconds"][0])
    model, h = rft_run(RFT_RECIPE, seed=0)
    models["RFT, rejection sampling (ch. 12)"] = (model, h["seconds"][0])
    model, h = r1_run(R1_RECIPE, seed=0)
    models["R1 recipe (ch. 12)"] = (model, h["seconds"][0])
    return models


def _train_students(teacher: GPT) -> dict[str, tuple[GPT, float]]:
    """Chapter 12's student as shipped, after GRPO, and distilled from ``teacher`` by its data and its logits."""
    models: dict[str, tuple[GPT, float]] = {"student (ch. 12)": (load_student_model(), 0.0)}
    torch.manual_seed(0)
    model = load_student_model()
    h = train_grpo(model, replace(GRPO_RECIPE, seed=0))
    models["student + GRPO"] = (model, h["seconds"][0])
    data = teacher_responses(teacher, DISTILL_RECIPE)
    for route in ("data", "logit"):
        torch.manual_seed(0)
        model = load_student_model()
        h = distill_run(model, teacher, route, DISTILL_RECIPE, data)
        models[f"student, {route}-distilled"] = (model, h["seconds"][0])
    return models


def _quantized(grpo_model: GPT) -> dict[str, tuple[GPT, float]]:
    """Chapter 13: the GRPO model above with its block linear layers stored in Q8_0 and in Q4_0 (no training; the
    seconds are the quantization's)."""
    models: dict[str, tuple[GPT, float]] = {}
    for fmt, label in (("q8_0", "Q8_0"), ("q4_0", "Q4_0")):
        start = time.perf_counter()
        model = Q.quantize_model(grpo_model, fmt)
        models[f"GRPO in {label}, {Q.bytes_per_weight(model):g} B/weight"] = (model, time.perf_counter() - start)
    return models


def _row(name: str, model: GPT, seconds: float, reference: GPT) -> str:
    """One line of the table: ``model`` on the held-out problems, its KL to ``reference``."""
    ev = evaluate(model, k=K)
    kl = kl_to_model(model, reference) if model is not reference else 0.0
    params = model.n_params() + sum(m.in_features * m.out_features for m in model.modules()   # + quantized weights
                                    if isinstance(m, Q.QuantizedLinear))
    return (f"{name:<32} {params:>8,} {100 * ev['greedy_accuracy']:6.1f}% "
            f"{100 * ev['sampled_accuracy']:7.1f}% {100 * ev['format_rate']:6.1f}% "
            f"{100 * ev['pass_at_k']:7.1f}% {kl:6.2f} {seconds:8.1f}")


def _test_time(model: GPT, rm, prm) -> dict[str, float]:
    """Vote, ORM and PRM best-of-K over K fresh samples per held-out problem, and the tokens per problem."""
    cfg = replace(inf.LIVE, n_samples=K, ns=(K,))                                 # K = 16: inf.LIVE's largest N
    problems = list(tw.eval_problems())
    r = inf.sample_held_out(model, cfg, problems)
    correct = inf.correct_matrix(r, problems)                                      # (P, K)
    shape = correct.shape
    return {"vote": inf.vote_accuracy(inf.extract_answers(r.texts), problems, K),
            "ORM": inf.best_of_n_mean(score_responses(rm, r).cpu().view(shape), correct, K),
            "PRM": inf.best_of_n_mean(response_scores(prm, r, cfg.aggregation).cpu().view(shape), correct, K),
            "tokens": K * inf.tokens_per_response(r)}


def run() -> list[str]:
    with torch_threads(1):
        base = load_base_model()
        start = time.perf_counter()
        models = _train_all(base)
        models.update(_quantized(models["GRPO (ch. 10)"][0]))
        students = _train_students(models["GRPO (ch. 10)"][0])
        lines = [f"held-out: {tw.EVAL_SIZE} problems; sampled accuracy and format rate over {K} samples per problem at "
                 f"temperature 1; KL to the base model (the student's rows: to the shipped student) in nats per "
                 f"response (exact per token, summed); seed 0, one thread",
                 f"{'method':<32} {'params':>8} {'greedy':>7} {'sampled':>8} {'format':>7} {'pass@16':>8} {'KL':>6} "
                 f"{'train s':>8}"]
        student = students["student (ch. 12)"][0]
        for name, (model, seconds) in {**models, **students}.items():
            lines.append(_row(name, model, seconds, student if name in students else base))
        rm, prm = load_reward_model(), load_prm()
        lines += ["", f"test-time compute (chapter 11): one of {K} fresh samples per problem chosen by a vote or a "
                      f"verifier; accuracy, generated tokens per problem",
                  f"{'model':<28} {'vote':>7} {'ORM':>7} {'PRM':>7} {'tokens':>7}"]
        for name in ("base model", "GRPO (ch. 10)"):
            t = _test_time(models[name][0], rm, prm)
            lines.append(f"{name:<28} {100 * t['vote']:6.1f}% {100 * t['ORM']:6.1f}% {100 * t['PRM']:6.1f}% "
                         f"{t['tokens']:7.0f}")
        lines.append(f"(all training and evaluation: {time.perf_counter() - start:.0f} s)")
        return lines
