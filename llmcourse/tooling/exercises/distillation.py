"""Chapter 12 exercises: the distillation loss with a temperature (forward KL, τ², masked mean, mixed with the
cross-entropy) and its reverse-KL form (on-policy distillation, GKD)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from llmcourse import distillation as dist
from llmcourse.sft import IGNORE
from llmcourse.tooling.checker import (Exercise, KnownRight, KnownWrong, as_float64, register, under_no_grad)


def _t(x, dtype=torch.float32) -> torch.Tensor:
    return torch.tensor(np.asarray(x), dtype=dtype)


def _random_mask(rng: np.random.Generator, B: int, T: int) -> torch.Tensor:
    """Each row: a prompt (False), then a response (True), then padding (False); at least one True per row."""
    mask = np.zeros((B, T), dtype=bool)
    for b in range(B):
        start = int(rng.integers(0, T - 1))
        mask[b, start:start + int(rng.integers(1, T - start + 1))] = True
    return _t(mask, torch.bool)


def _logit_pair(rng: np.random.Generator, B: int, T: int, V: int) -> tuple[torch.Tensor, torch.Tensor]:
    teacher = rng.normal(0, 2.0, (B, T, V)) + 1.5                                  # not normalised
    student = teacher + rng.normal(0, 1.5, (B, T, V))                              # near the teacher, not equal
    return _t(student), _t(teacher)


# --------------------------------------------------------------------------- 12.2 the distillation loss


_HAND_MASK = _t([[False, True, True, False]], torch.bool)                          # a prompt, two response tokens, pad


def _hand_logits() -> tuple[torch.Tensor, torch.Tensor]:
    teacher = torch.log(_t([[[0.25, 0.25, 0.5], [0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.9, 0.05, 0.05]]]))
    student = torch.zeros(1, 4, 3)                                                 # uniform over the 3 tokens
    student[0, 2] = _t([0.0, 1.0, 2.0])
    student[0, 0] = _t([5.0, 0.0, 0.0])                                            # the prompt: far from the teacher
    return student, teacher


def _kd_cases(rng: np.random.Generator) -> list[dict]:
    s, t = _hand_logits()
    targets = torch.where(_HAND_MASK, torch.tensor([[0, 2, 0, 1]]), IGNORE)        # −100 off the response, as in SFT
    cases = [dict(student_logits=s, teacher_logits=t, targets=targets, mask=_HAND_MASK, alpha=1.0, temperature=2.0),
             dict(student_logits=s, teacher_logits=t, targets=targets, mask=_HAND_MASK, alpha=0.5, temperature=1.0)]
    for alpha, tau in ((0.5, 2.0), (0.3, 4.0), (0.9, 0.5), (0.0, 2.0)):
        B, T, V = int(rng.integers(2, 5)), int(rng.integers(4, 8)), int(rng.integers(3, 9))
        student, teacher = _logit_pair(rng, B, T, V)
        cases.append(dict(student_logits=student, teacher_logits=teacher,
                          targets=None, mask=_random_mask(rng, B, T), alpha=alpha, temperature=tau))
        cases[-1]["targets"] = torch.where(cases[-1]["mask"], _t(rng.integers(0, V, (B, T)), torch.long), IGNORE)
    return cases


def _ce(student_logits, targets, mask):
    nll = -F.log_softmax(student_logits, -1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (nll * mask).sum() / mask.sum()


def _mix(kd, student_logits, targets, mask, alpha):
    return alpha * kd + (1 - alpha) * _ce(student_logits, targets, mask)


def _fwd(student_logits, teacher_logits, mask, temperature, s_tau=None, t_tau=None):
    s_tau, t_tau = s_tau or temperature, t_tau or temperature
    logp_s = F.log_softmax(student_logits / s_tau, -1)
    logp_t = F.log_softmax(teacher_logits.detach() / t_tau, -1)
    kl = (logp_t.exp() * (logp_t - logp_s)).sum(-1)
    return (kl * mask).sum() / mask.sum()


def _kd_no_tau_squared(student_logits, teacher_logits, targets, mask, alpha=0.5, temperature=1.0):
    kd = _fwd(student_logits, teacher_logits, mask, temperature)                  # τ² left out
    return _mix(kd, student_logits, targets, mask, alpha)


def _kd_tau_once(student_logits, teacher_logits, targets, mask, alpha=0.5, temperature=1.0):
    kd = temperature * _fwd(student_logits, teacher_logits, mask, temperature)    # τ, not τ²
    return _mix(kd, student_logits, targets, mask, alpha)


def _kd_teacher_at_one(student_logits, teacher_logits, targets, mask, alpha=0.5, temperature=1.0):
    kd = temperature ** 2 * _fwd(student_logits, teacher_logits, mask, temperature, t_tau=1.0)
    return _mix(kd, student_logits, targets, mask, alpha)


def _kd_student_at_one(student_logits, teacher_logits, targets, mask, alpha=0.5, temperature=1.0):
    kd = temperature ** 2 * _fwd(student_logits, teacher_logits, mask, temperature, s_tau=1.0)
    return _mix(kd, student_logits, targets, mask, alpha)


def _kd_reverse(student_logits, teacher_logits, targets, mask, alpha=0.5, temperature=1.0):
    kd = dist.reverse_kd_loss(student_logits, teacher_logits, mask, temperature)
    return _mix(kd, student_logits, targets, mask, alpha)


def _kd_kl_div_on_logits(student_logits, teacher_logits, targets, mask, alpha=0.5, temperature=1.0):
    p_t = F.softmax(teacher_logits.detach() / temperature, -1)
    kl = F.kl_div(student_logits / temperature, p_t, reduction="none").sum(-1)    # input must be log-probs
    kd = temperature ** 2 * (kl * mask).sum() / mask.sum()
    return _mix(kd, student_logits, targets, mask, alpha)


def _kd_no_mask(student_logits, teacher_logits, targets, mask, alpha=0.5, temperature=1.0):
    everywhere = torch.ones_like(mask)
    kd = temperature ** 2 * _fwd(student_logits, teacher_logits, everywhere, temperature)
    return _mix(kd, student_logits, targets, everywhere, alpha)


def _kd_masked_then_mean(student_logits, teacher_logits, targets, mask, alpha=0.5, temperature=1.0):
    logp_s = F.log_softmax(student_logits / temperature, -1)
    logp_t = F.log_softmax(teacher_logits.detach() / temperature, -1)
    kl = (logp_t.exp() * (logp_t - logp_s)).sum(-1) * mask                        # zeros off the response …
    nll = -F.log_softmax(student_logits, -1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
    return alpha * temperature ** 2 * kl.mean() + (1 - alpha) * nll.mean()        # … but divided by B · T


def _kd_sum(student_logits, teacher_logits, targets, mask, alpha=0.5, temperature=1.0):
    n = mask.sum()
    kd = temperature ** 2 * _fwd(student_logits, teacher_logits, mask, temperature) * n
    return alpha * kd + (1 - alpha) * _ce(student_logits, targets, mask) * n


def _kd_batchmean(student_logits, teacher_logits, targets, mask, alpha=0.5, temperature=1.0):
    n, B = mask.sum(), mask.size(0)                                               # F.kl_div's "batchmean": ÷ B
    kd = temperature ** 2 * _fwd(student_logits, teacher_logits, mask, temperature) * n / B
    return alpha * kd + (1 - alpha) * _ce(student_logits, targets, mask) * n / B


def _kd_teacher_not_detached(student_logits, teacher_logits, targets, mask, alpha=0.5, temperature=1.0):
    logp_s = F.log_softmax(student_logits / temperature, -1)
    logp_t = F.log_softmax(teacher_logits / temperature, -1)                     # no detach
    kl = (logp_t.exp() * (logp_t - logp_s)).sum(-1)
    kd = temperature ** 2 * (kl * mask).sum() / mask.sum()
    return _mix(kd, student_logits, targets, mask, alpha)


def _kd_alpha_swapped(student_logits, teacher_logits, targets, mask, alpha=0.5, temperature=1.0):
    return dist.distillation_loss(student_logits, teacher_logits, targets, mask, 1 - alpha, temperature)


def _kd_ce_at_tau(student_logits, teacher_logits, targets, mask, alpha=0.5, temperature=1.0):
    kd = temperature ** 2 * _fwd(student_logits, teacher_logits, mask, temperature)
    return alpha * kd + (1 - alpha) * _ce(student_logits / temperature, targets, mask)   # CE softened too


def _kd_cross_entropy_only(student_logits, teacher_logits, targets, mask, alpha=0.5, temperature=1.0):
    logp_s = F.log_softmax(student_logits / temperature, -1)
    p_t = F.softmax(teacher_logits.detach() / temperature, -1)
    soft_ce = -(p_t * logp_s).sum(-1)                                             # H(p_t, p_s): KL + H(p_t)
    kd = temperature ** 2 * (soft_ce * mask).sum() / mask.sum()
    return _mix(kd, student_logits, targets, mask, alpha)


def _kd_divided_in_place(student_logits, teacher_logits, targets, mask, alpha=0.5, temperature=1.0):
    with torch.no_grad():
        student_logits /= temperature                                             # the caller's logits softened
    kd = temperature ** 2 * _fwd(student_logits, teacher_logits, mask, 1.0, t_tau=temperature)
    return alpha * kd + (1 - alpha) * _ce(student_logits * temperature, targets, mask)


def _kd_kl_div_log_target(student_logits, teacher_logits, targets, mask, alpha=0.5, temperature=1.0):
    logp_s = F.log_softmax(student_logits / temperature, -1)
    logp_t = F.log_softmax(teacher_logits.detach() / temperature, -1)
    kl = F.kl_div(logp_s, logp_t, reduction="none", log_target=True).sum(-1)    # KL(target ‖ input)
    kd = temperature ** 2 * kl[mask].mean()
    ce = F.cross_entropy(student_logits[mask], targets[mask])
    return alpha * kd + (1 - alpha) * ce


def _kd_two_functions(student_logits, teacher_logits, targets, mask, alpha=0.5, temperature=1.0):
    kd = dist.kd_loss(student_logits, teacher_logits, mask, temperature)
    return alpha * kd + (1 - alpha) * _ce(student_logits, targets, mask)


# --------------------------------------------------------------------------- 12.3 the reverse-KL form


def _rkd_cases(rng: np.random.Generator) -> list[dict]:
    s, t = _hand_logits()
    cases = [dict(student_logits=s, teacher_logits=t, mask=_HAND_MASK, temperature=1.0),
             dict(student_logits=s, teacher_logits=t, mask=_HAND_MASK, temperature=2.0)]
    for tau in (1.0, 2.0, 0.5):
        B, T, V = int(rng.integers(2, 5)), int(rng.integers(4, 8)), int(rng.integers(3, 9))
        student, teacher = _logit_pair(rng, B, T, V)
        cases.append(dict(student_logits=student, teacher_logits=teacher, mask=_random_mask(rng, B, T),
                          temperature=tau))
    return cases


def _rev_parts(student_logits, teacher_logits, temperature):
    return (F.log_softmax(student_logits / temperature, -1), F.log_softmax(teacher_logits.detach() / temperature, -1))


def _masked(kl, mask):
    return (kl * mask).sum() / mask.sum()


def _rkd_forward(student_logits, teacher_logits, mask, temperature=1.0):
    return dist.kd_loss(student_logits, teacher_logits, mask, temperature)


def _rkd_no_tau_squared(student_logits, teacher_logits, mask, temperature=1.0):
    logp_s, logp_t = _rev_parts(student_logits, teacher_logits, temperature)
    return _masked((logp_s.exp() * (logp_s - logp_t)).sum(-1), mask)


def _rkd_weights_detached(student_logits, teacher_logits, mask, temperature=1.0):
    logp_s, logp_t = _rev_parts(student_logits, teacher_logits, temperature)
    kl = (logp_s.exp().detach() * (logp_s - logp_t)).sum(-1)                     # p_s taken as fixed weights
    return temperature ** 2 * _masked(kl, mask)


def _rkd_no_entropy(student_logits, teacher_logits, mask, temperature=1.0):
    logp_s, logp_t = _rev_parts(student_logits, teacher_logits, temperature)
    return temperature ** 2 * _masked(-(logp_s.exp() * logp_t).sum(-1), mask)   # cross-entropy H(p_s, p_t) only


def _rkd_teacher_not_detached(student_logits, teacher_logits, mask, temperature=1.0):
    logp_s = F.log_softmax(student_logits / temperature, -1)
    logp_t = F.log_softmax(teacher_logits / temperature, -1)
    return temperature ** 2 * _masked((logp_s.exp() * (logp_s - logp_t)).sum(-1), mask)


def _rkd_kl_div_on_logits(student_logits, teacher_logits, mask, temperature=1.0):
    p_s = F.softmax(student_logits / temperature, -1)
    kl = F.kl_div(teacher_logits.detach() / temperature, p_s, reduction="none").sum(-1)   # logits, not log-probs
    return temperature ** 2 * _masked(kl, mask)


def _rkd_no_mask(student_logits, teacher_logits, mask, temperature=1.0):
    return dist.reverse_kd_loss(student_logits, teacher_logits, torch.ones_like(mask), temperature)


def _rkd_sum(student_logits, teacher_logits, mask, temperature=1.0):
    return dist.reverse_kd_loss(student_logits, teacher_logits, mask, temperature) * mask.sum()


def _rkd_teacher_at_one(student_logits, teacher_logits, mask, temperature=1.0):
    logp_s = F.log_softmax(student_logits / temperature, -1)
    logp_t = F.log_softmax(teacher_logits.detach(), -1)                          # the teacher left at τ = 1
    return temperature ** 2 * _masked((logp_s.exp() * (logp_s - logp_t)).sum(-1), mask)


def _rkd_divided_in_place(student_logits, teacher_logits, mask, temperature=1.0):
    with torch.no_grad():
        student_logits /= temperature                                             # the caller's logits softened
    logp_s = F.log_softmax(student_logits, -1)
    logp_t = F.log_softmax(teacher_logits.detach() / temperature, -1)
    return temperature ** 2 * _masked((logp_s.exp() * (logp_s - logp_t)).sum(-1), mask)


def _rkd_kl_div_right(student_logits, teacher_logits, mask, temperature=1.0):
    logp_s, logp_t = _rev_parts(student_logits, teacher_logits, temperature)
    kl = F.kl_div(logp_t, logp_s, reduction="none", log_target=True).sum(-1)    # KL(p_s ‖ p_t): p_s is the target
    return temperature ** 2 * kl[mask].mean()


def _rkd_float64(student_logits, teacher_logits, mask, temperature=1.0):
    return dist.reverse_kd_loss(student_logits.double(), teacher_logits.double(), mask, temperature)


# --------------------------------------------------------------------------- registry

_NO_GRAD_HINT = ("The value is right but the result carries no gradient: it was computed under `torch.no_grad()`, "
                 "or detached (`.detach()`, `.item()`, NumPy) on the way, so the student would learn nothing.")
_GRAD_HELP = ("The student learns through its logits, `student_logits`; the teacher is a fixed target, so no gradient "
              "may reach `teacher_logits` (it would train the teacher towards the student).")

register(
    Exercise(
        id="12.2", title="The distillation loss with a temperature", reference=dist.distillation_loss,
        cases=_kd_cases, grad_wrt=("student_logits", "teacher_logits"), grad_help=_GRAD_HELP,
        hint="Soften both: logp_s = log_softmax(student_logits / τ), logp_t = log_softmax(teacher_logits.detach() / τ); "
             "KL per position = Σ_v p_t (logp_t − logp_s); KD = τ² · its mean over the positions where mask is True; "
             "CE = the mean over the same positions of −log_softmax(student_logits)[targets] (at τ = 1; targets is −100 "
             "off the response, so gather with targets.clamp(min=0) and let the mask drop those positions); return "
             "alpha · KD + (1 − alpha) · CE, a scalar.",
        known_wrong=[
            KnownWrong("no τ²", _kd_no_tau_squared,
                       "You left out the τ² factor. Softening by τ shrinks the KD gradient like 1/τ² (∂KL/∂z_s = "
                       "(p_s − p_t)/τ, and p_s − p_t itself shrinks like 1/τ); multiplying by τ² (Hinton et al. 2015) "
                       "keeps the KD term's weight against the CE term the same whatever τ."),
            KnownWrong("τ instead of τ²", _kd_tau_once,
                       "You multiplied the KL by τ. The factor is τ², one τ for each of the two ways softening "
                       "shrinks the gradient."),
            KnownWrong("teacher not softened", _kd_teacher_at_one,
                       "You divided only the student's logits by τ: the teacher's distribution is at temperature 1, so "
                       "the student is asked to be the *sharp* teacher at a soft temperature. Divide both logits by τ."),
            KnownWrong("student not softened", _kd_student_at_one,
                       "You divided only the teacher's logits by τ: the student's log-probs in the KL must be at the "
                       "same temperature, log_softmax(student_logits / τ)."),
            KnownWrong("KL direction swapped", _kd_reverse,
                       "You computed KL(p_s ‖ p_t), weighting by the student's probabilities. Logit distillation "
                       "(Hinton) is the forward KL(p_t ‖ p_s) = Σ p_t (log p_t − log p_s): the cross-entropy with the "
                       "teacher's soft targets, minus their constant entropy. The reverse form is exercise 12.3."),
            KnownWrong("F.kl_div on logits", _kd_kl_div_on_logits,
                       "F.kl_div(input, target) expects `input` to be *log-probabilities*: you passed the softened "
                       "logits, so the log-softmax is missing (the value even changes if a constant is added to the "
                       "logits). Use F.log_softmax(student_logits / τ, dim=-1)."),
            KnownWrong("no mask", _kd_no_mask,
                       "You averaged over every position, prompt and padding included. Only the positions where mask "
                       "is True (whose next token is a response token) count, in both the KD and the CE term."),
            KnownWrong("masked, then .mean()", _kd_masked_then_mean,
                       "You zeroed the positions outside the mask but then took `.mean()`, which divides by B · T, "
                       "padding included. Divide by the number of kept positions, mask.sum()."),
            KnownWrong("sum instead of mean", _kd_sum,
                       "You summed over the kept positions. The loss is the *mean* over them, so that its scale does "
                       "not grow with the batch or the response lengths (the learning rate was tuned for a mean)."),
            KnownWrong("batchmean (÷ B)", _kd_batchmean,
                       "You divided the sum over kept positions by the batch size B (F.kl_div's reduction='batchmean', "
                       "which is per *sequence* here). Divide by the number of kept positions, mask.sum()."),
            KnownWrong("teacher not detached", _kd_teacher_not_detached,
                       "The value is right, but a gradient reaches `teacher_logits`. The teacher's distribution is a "
                       "fixed target: use teacher_logits.detach() (or compute it under torch.no_grad())."),
            KnownWrong("α on the wrong term", _kd_alpha_swapped,
                       "You weighted the CE by α and the KD by 1 − α. The mix is α · KD + (1 − α) · CE: alpha=1 is "
                       "pure distillation, alpha=0 plain SFT."),
            KnownWrong("CE softened too", _kd_ce_at_tau,
                       "You computed the cross-entropy on the softened logits (÷ τ). The hard-label term is the "
                       "ordinary SFT loss, at temperature 1: only the KD term is softened."),
            KnownWrong("soft cross-entropy, not KL", _kd_cross_entropy_only,
                       "You used −Σ p_t log p_s, the cross-entropy with the teacher's soft targets. Its gradient is the "
                       "KL's, but its value is KL + H(p_t): it is not 0 when the student equals the teacher. Subtract "
                       "the teacher's entropy: Σ p_t (log p_t − log p_s)."),
            KnownWrong("logits divided in place", _kd_divided_in_place,
                       "The value is right, but you divided the caller's `student_logits` by τ in place (`/=`): the "
                       "loop reuses those logits. Compute student_logits / τ into a new tensor."),
            KnownWrong("no gradient", under_no_grad(dist.distillation_loss), _NO_GRAD_HINT),
        ],
        known_right=[KnownRight("F.kl_div with log_target, boolean indexing", _kd_kl_div_log_target),
                     KnownRight("kd_loss plus a hand-written CE", _kd_two_functions),
                     KnownRight("float64", as_float64(dist.distillation_loss))],
        atol=1e-5),
    Exercise(
        id="12.3", title="The reverse-KL form (on-policy distillation)", reference=dist.reverse_kd_loss,
        cases=_rkd_cases, grad_wrt=("student_logits", "teacher_logits"), grad_help=_GRAD_HELP,
        hint="logp_s = log_softmax(student_logits / τ), logp_t = log_softmax(teacher_logits.detach() / τ); KL per "
             "position = Σ_v p_s (logp_s − logp_t) with p_s = logp_s.exp() (keep its gradient: the weights are the "
             "student's own); return τ² · its mean over the positions where mask is True.",
        known_wrong=[
            KnownWrong("forward KL", _rkd_forward,
                       "That is the forward KL(p_t ‖ p_s) of exercise 12.2, weighted by the teacher's probabilities. "
                       "The reverse KL(p_s ‖ p_t) = Σ p_s (log p_s − log p_t) is weighted by the *student's*: it is "
                       "large where the student puts mass the teacher does not (mode-seeking)."),
            KnownWrong("no τ²", _rkd_no_tau_squared,
                       "Multiply the mean KL by τ², as in the forward form, so that the gradient's scale does not "
                       "depend on τ."),
            KnownWrong("student's weights detached", _rkd_weights_detached,
                       "The value is right, but you detached the weights p_s. In the reverse KL the student's "
                       "probabilities are both the weights and the thing compared: the gradient must flow through "
                       "p_s too (with p_s detached, the loss's gradient is not the KL's and the entropy term is lost)."),
            KnownWrong("entropy term missing", _rkd_no_entropy,
                       "You returned −Σ p_s log p_t, the cross-entropy H(p_s, p_t), without the student's own "
                       "Σ p_s log p_s. Minimising it drives the student to put all its mass on the teacher's top token "
                       "(nothing rewards entropy); the KL is H(p_s, p_t) − H(p_s)."),
            KnownWrong("teacher not detached", _rkd_teacher_not_detached,
                       "The value is right, but a gradient reaches `teacher_logits`: detach the teacher's logits."),
            KnownWrong("F.kl_div on logits", _rkd_kl_div_on_logits,
                       "F.kl_div(input, target) needs `input` as log-probabilities: you passed the teacher's softened "
                       "logits without the log-softmax."),
            KnownWrong("no mask", _rkd_no_mask,
                       "You averaged over every position. Only the masked ones (the response's) count: "
                       "(kl * mask).sum() / mask.sum()."),
            KnownWrong("sum instead of mean", _rkd_sum,
                       "You summed over the kept positions; the loss is their mean."),
            KnownWrong("teacher not softened", _rkd_teacher_at_one,
                       "You divided only the student's logits by τ. Both distributions are softened by the same τ."),
            KnownWrong("logits divided in place", _rkd_divided_in_place,
                       "The value is right, but you divided the caller's `student_logits` by τ in place (`/=`): the "
                       "loop reuses those logits. Compute student_logits / τ into a new tensor."),
            KnownWrong("no gradient", under_no_grad(dist.reverse_kd_loss), _NO_GRAD_HINT),
        ],
        known_right=[KnownRight("F.kl_div with log_target", _rkd_kl_div_right),
                     KnownRight("in float64", _rkd_float64),
                     KnownRight("float64 result", as_float64(dist.reverse_kd_loss))],
        atol=1e-5),
)
