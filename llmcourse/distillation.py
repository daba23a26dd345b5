"""Distillation: a smaller student learns from a teacher, through its answers or through its token distributions.

The teacher is chapter 10's GRPO model; the student is `llmcourse.checkpoint.load_student_model` (the base model's
recipe at half the width, a quarter of the parameters). Three routes, all trained on response tokens only:

- **data distillation** (sequence-level KD, Kim & Rush 2016; DeepSeek-R1 §2.4 distils its 800k samples this way):
  the teacher answers training problems, the right and well-formed answers are kept, and the student is fine-tuned
  on them with the ordinary cross-entropy (`distill_run`'s "data" route: `llmcourse.sft.finetune_on`).
- **logit distillation** on the same teacher-written responses (Hinton et al. 2015): at every response token the
  student matches the teacher's *whole* next-token distribution, both softened by a temperature τ, mixed with the
  cross-entropy on the response's own tokens (`distillation_loss`)::

      KD = τ² · (1/N) Σ_{(b,t): mask} KL( softmax(z_t[b,t]/τ) ‖ softmax(z_s[b,t]/τ) )       (`kd_loss`)
      loss = α · KD + (1 − α) · CE,   CE = (1/N) Σ_{(b,t): mask} −log softmax(z_s[b,t])[y_{b,t+1}]

  z_s, z_t: (B, T, V) student and teacher logits at the same positions, mask: (B, T) bool (the positions whose
  next token is a response token), N its number of True entries. Per token, ∂KD/∂z_s = τ · (p_s − p_t) / N, with
  p = softmax(z/τ). For a large τ, p_s − p_t ≈ (z_s − z_t) / (V τ) (logits centred), so without the τ² factor
  the gradient would shrink like 1/τ²; with it, changing τ changes *what* is matched, not the step size (Hinton §2).
- **on-policy distillation** (GKD, Agarwal et al. 2024 with λ = 1; MiniLLM, Gu et al. 2024): the *student* samples,
  and the loss is the KL to the teacher at each of its own tokens, exact over the vocabulary. Either direction:
  forward KL(p_t ‖ p_s) (`kd_loss`, mass-covering: the student must put mass wherever the teacher does) or reverse
  KL(p_s ‖ p_t) (`reverse_kd_loss`, mode-seeking: the student is punished for mass where the teacher has none, which
  is what a small student that cannot cover everything should do). On its own samples the student meets the
  prefixes it will really write, its own mistakes included (no train/test mismatch, "exposure bias").

**Budgets** are counted in sampled responses, as for GRPO on the student (chapter 10's recipe: 40 × 16 × 8 = 5,120
student samples): the offline routes get ``teacher_samples`` = 5,120 teacher responses (one per training problem,
drawn once and shared by the data and logit routes), the on-policy routes 5,120 student samples (160 steps ×
32 problems, one sample per problem: without a group baseline a second sample of one problem adds less
than a new problem). Not counted: the teacher's forward passes on the student's samples (one pass per batch, where
sampling takes one per token), the offline routes' further passes over their data (they show in the training
seconds), and the teacher's own training (GRPO's 5,120 samples, paid once for every student it teaches).

Measured (`llmcourse.tooling.benchmarks.distillation`, 3 seeds; docs/distillation.md): data distillation 95.0%
held-out sampled accuracy, above the teacher's 87.0%; logit 89.3%; on-policy reverse KL 85.2%, forward 76.5%; GRPO on
the student 67.5%, all on 5,120 sampled responses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from llmcourse import taskworld as tw
from llmcourse.logprobs import masked_mean
from llmcourse.model import GPT
from llmcourse.pretraining import TrainConfig, train
from llmcourse.sampling import Responses, sample_responses
from llmcourse.sft import example_sampler, examples_from_responses, finetune_on, sft_targets, IGNORE
from llmcourse.tokenizer import special_id

ROUTES = ("data", "logit", "on-policy forward", "on-policy reverse")
"""The distillation routes `distill_run` trains (GRPO on the student is `llmcourse.grpo.train_grpo`)."""
RESULTS_PATH = Path(__file__).parent / "data" / "distillation.json"
"""What ``python -m llmcourse bench --skip-notebooks --only distillation`` measured (3 seeds), for chapter 12."""


# --------------------------------------------------------------------------- the losses


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
            temperature: float = 1.0) -> torch.Tensor:
    """Forward KL at temperature τ, τ² · mean over masked positions of KL(softmax(z_t/τ) ‖ softmax(z_s/τ)).

    student_logits, teacher_logits: (B, T, V); mask: (B, T) bool -> scalar. The teacher is a constant (detached).
    Teacher (¾, ¼), student (½, ½) at τ = 1: ¾ log(3/2) + ¼ log(1/2) = 0.1308:

    >>> z_t, z_s = torch.tensor([[[3.0, 1.0]]]).log(), torch.zeros(1, 1, 2)
    >>> round(kd_loss(z_s, z_t, torch.ones(1, 1, dtype=torch.bool)).item(), 4)
    0.1308
    """
    logp_s = F.log_softmax(student_logits.float() / temperature, dim=-1)           # (B, T, V)
    logp_t = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)  # (B, T, V)
    kl = (logp_t.exp() * (logp_t - logp_s)).sum(dim=-1)                            # (B, T): KL(p_t ‖ p_s)
    return temperature ** 2 * masked_mean(kl, mask)


def reverse_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
                    temperature: float = 1.0) -> torch.Tensor:
    """Reverse KL at temperature τ, τ² · mean over masked positions of KL(softmax(z_s/τ) ‖ softmax(z_t/τ)).

    Exact over the vocabulary (as GKD computes it), not a sampled estimate. Shapes as `kd_loss`. Student (½, ½),
    teacher (¾, ¼): ½ log(2/3) + ½ log 2 = 0.1438:

    >>> z_t, z_s = torch.tensor([[[3.0, 1.0]]]).log(), torch.zeros(1, 1, 2)
    >>> round(reverse_kd_loss(z_s, z_t, torch.ones(1, 1, dtype=torch.bool)).item(), 4)
    0.1438
    """
    logp_s = F.log_softmax(student_logits.float() / temperature, dim=-1)           # (B, T, V)
    logp_t = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)  # (B, T, V)
    kl = (logp_s.exp() * (logp_s - logp_t)).sum(dim=-1)                            # (B, T): KL(p_s ‖ p_t)
    return temperature ** 2 * masked_mean(kl, mask)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                      mask: torch.Tensor, alpha: float = 0.5, temperature: float = 1.0) -> torch.Tensor:
    """α · KD + (1 − α) · CE: `kd_loss` at temperature τ mixed with the cross-entropy of the targets at τ = 1.

    student_logits, teacher_logits: (B, T, V); targets: (B, T) long, the token that follows each position (any id
    where ``mask`` is False); mask: (B, T) bool -> scalar, both terms means over the masked positions. α = 0 is SFT
    (`llmcourse.sft.masked_cross_entropy`), α = 1 pure logit distillation.
    """
    logp_s = F.log_softmax(student_logits.float(), dim=-1)                             # (B, T, V) at τ = 1
    nll = -logp_s.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)           # (B, T)
    ce = masked_mean(nll, mask)
    return alpha * kd_loss(student_logits, teacher_logits, mask, temperature) + (1 - alpha) * ce


# --------------------------------------------------------------------------- the recipe


@dataclass
class DistillConfig:
    """Chapter 12's distillation of the GRPO teacher into the student; the defaults are the recipe (`RECIPE`)."""

    teacher_samples: int = 5120
    """Offline routes: responses the teacher writes, one per training problem (GRPO's budget of 5,120 samples)."""
    teacher_temperature: float = 1.0
    """Temperature of the teacher's sampling (1: the responses the teacher's own accuracy is measured on)."""
    only_right: bool = True
    """Offline routes: train on the teacher's right, well-formed answers only (rejection sampling by the rules, as
    R1's distillation data); False: on every answer it wrote (sequence-level KD, Kim & Rush 2016)."""
    offline: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=400, batch_size=32, max_lr=1e-3, min_lr=1e-4, warmup_steps=20))
    """Offline routes (data and logit distillation): steps on the kept teacher responses (about 2.8 passes over the
    ~4,500 kept); its ``seed`` is replaced by the run's ``seed``."""
    alpha: float = 0.5
    """Logit distillation: weight of the KD term, α · KD + (1 − α) · CE."""
    temperature: float = 2.0
    """τ of the KD term (both distributions softened; the loss carries τ²)."""
    on_policy: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=160, batch_size=32, max_lr=1e-3, min_lr=1e-4, warmup_steps=20))
    """On-policy routes: each step the student answers ``batch_size`` fresh problems once and takes one optimizer
    step on them, so 160 × 32 = 5,120 student samples in all; its ``seed`` is replaced by the run's ``seed``."""
    on_policy_temperature: float = 1.0
    """τ of the on-policy KL (the student samples at temperature 1 regardless)."""
    max_new_tokens: int = 48
    """Token budget of every sampled response (teacher's and student's)."""
    seed: int = 0
    """Seed of the training problems, the sampling and the batches."""


RECIPE = DistillConfig()
"""Chapter 12's distillation: 5,120 teacher (or student) samples, 400 offline steps at lr 1e-3 (α 0.5, τ 2 for the
logits, Hinton's usual mix, not tuned here), 160 on-policy rounds of 32 samples."""

PURE_KD = DistillConfig(alpha=1.0, temperature=1.0)
"""Logit distillation alone (no cross-entropy, τ = 1): the student is pulled to the teacher's own distribution, so its
sampled accuracy is the teacher's at best. Why logit distillation trails data distillation here."""

ALL_ANSWERS = DistillConfig(only_right=False)
"""Data distillation on every teacher answer, right or wrong (sequence-level KD): what the rules' filter adds."""

DEMO = replace(RECIPE, teacher_samples=1024, offline=replace(RECIPE.offline, steps=100))
"""Chapter 12's live runs: the recipe on a fifth of the teacher's samples, 100 offline steps (seconds, not minutes)."""


# --------------------------------------------------------------------------- the teacher's data


@torch.no_grad()
def teacher_responses(teacher: GPT, cfg: DistillConfig) -> tuple[Responses, list[tw.Problem]]:
    """The teacher answers ``cfg.teacher_samples`` training problems once each: the responses and the problems.

    The problems are drawn from seed 30,000 + ``cfg.seed`` (neither GRPO's training problems nor the held-out set).
    """
    device = next(teacher.parameters()).device
    problems = tw.sample_problems(cfg.teacher_samples, seed=30_000 + cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    r = sample_responses(teacher.eval(), problems, 1, max_new_tokens=cfg.max_new_tokens,
                         temperature=cfg.teacher_temperature, generator=gen)
    return r, problems


def right_examples(responses: Responses, problems: Sequence[tw.Problem]) -> list[tuple[list[int], int]]:
    """SFT examples (ids, prompt_len) of the responses that are right and in the reasoned format, EOS included."""
    keep = [i for i, (t, p, done) in enumerate(zip(responses.texts, responses.per_row(problems),
                                                  responses.finished.tolist()))
            if done and tw.is_correct(t, p) and tw.format_ok(t)]
    return examples_from_responses(responses, keep)


# --------------------------------------------------------------------------- training


LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss(student_logits, teacher_logits, targets, mask) -> scalar``, all at the same (B, T-1) positions."""


def train_distill(student: GPT, teacher: GPT, batch_fn: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
                  loss_fn: LossFn, cfg: TrainConfig, progress: bool = False,
                  desc: str = "distill") -> dict[str, list[float]]:
    """The one distillation loop: ``cfg.steps`` steps of `llmcourse.pretraining.train` (warmup + cosine, clipping).

    Each step: ``batch_fn(step) -> (ids (B, T), prompt_lens (B,))`` gives prompt + response rows (teacher-written or
    student-sampled); the student and the teacher read ``ids[:, :-1]``; position t is scored where token t + 1 is a
    response token (`llmcourse.sft.sft_targets`); ``loss_fn`` turns the two logits into the loss.
    """
    device = next(student.parameters()).device
    pad = special_id(tw.PAD)
    teacher.eval()

    def step_loss(model: GPT, step: int) -> torch.Tensor:
        ids, prompt_lens = (t.to(device) for t in batch_fn(step))                # (B, T), (B,)
        targets = sft_targets(ids, prompt_lens, pad)                             # (B, T-1), -100 off the response
        mask = targets != IGNORE                                                 # (B, T-1)
        with torch.no_grad():
            teacher_logits = teacher(ids[:, :-1])                                # (B, T-1, V)
        return loss_fn(model(ids[:, :-1]), teacher_logits, targets, mask)
    return train(student, step_loss, cfg, progress=progress, desc=desc)


def student_sampler(student: GPT, cfg: DistillConfig) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
    """``batch(step)``: the student, as it is at that step, answers ``cfg.on_policy.batch_size`` fresh training
    problems once each at temperature 1 (problems from seed 40,000 + ``cfg.seed``, generator seeded with it)."""
    device = next(student.parameters()).device
    n = cfg.on_policy.batch_size
    problems = tw.sample_problems(cfg.on_policy.steps * n, seed=40_000 + cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)

    def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        student.eval()
        r = sample_responses(student, problems[step * n:(step + 1) * n], 1, max_new_tokens=cfg.max_new_tokens,
                             temperature=1.0, generator=gen)
        student.train()
        return r.ids, r.prompt_lens
    return batch


def distill_run(student: GPT, teacher: GPT, route: str, cfg: DistillConfig = RECIPE,
                teacher_data: tuple[Responses, list[tw.Problem]] | None = None,
                progress: bool = False, mix_fn: Callable[..., torch.Tensor] = distillation_loss,
                reverse_fn: Callable[..., torch.Tensor] = reverse_kd_loss) -> dict[str, list[float]]:
    """Train ``student`` in place by one of `ROUTES`; returns the history of `llmcourse.pretraining.train` with
    ``teacher_samples`` and ``student_samples`` (the budget spent) and ``kept`` (teacher responses trained on).

    ``teacher_data``: `teacher_responses` already drawn (the offline routes share them); drawn here if None.
    ``mix_fn`` (the logit route's loss) and ``reverse_fn`` (the on-policy reverse KL) have the signatures of
    `distillation_loss` and `reverse_kd_loss`: a learner's own can replace them.
    """
    if route not in ROUTES:
        raise ValueError(f"unknown route {route!r}; use one of {ROUTES}")
    if route.startswith("on-policy"):
        divergence = kd_loss if route == "on-policy forward" else reverse_fn
        on_policy = replace(cfg.on_policy, seed=cfg.seed)
        history = train_distill(
            student, teacher, student_sampler(student, cfg),
            lambda zs, zt, y, m: divergence(zs, zt, m, cfg.on_policy_temperature), on_policy, progress, route)
        history.update(teacher_samples=[0], student_samples=[on_policy.steps * on_policy.batch_size], kept=[0])
        return history
    responses, problems = teacher_data if teacher_data is not None else teacher_responses(teacher, cfg)
    examples = right_examples(responses, problems) if cfg.only_right else examples_from_responses(responses)
    offline = replace(cfg.offline, seed=cfg.seed)                                  # the batches follow the run's seed
    if route == "data":
        history = finetune_on(student, examples, offline, progress=progress, desc=route)
    else:
        history = train_distill(
            student, teacher, example_sampler(examples, offline.batch_size, offline.seed),
            lambda zs, zt, y, m: mix_fn(zs, zt, y, m, cfg.alpha, cfg.temperature), offline,
            progress, route)
    history.update(teacher_samples=[len(responses)], student_samples=[0], kept=[len(examples)])
    return history


def load_results(path: Path = RESULTS_PATH) -> dict:
    """The measured table of chapter 12 (written by its benchmark; see `RESULTS_PATH`)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
