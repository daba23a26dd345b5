"""Chapter 05 exercises: learning-rate schedule, gradient clipping, the SFT mask and loss."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from llmcourse import pretraining, sft, taskworld as tw
from llmcourse.tooling.checker import Exercise, KnownRight, KnownWrong, as_float64, register, under_no_grad
from llmcourse.sft import IGNORE

# --------------------------------------------------------------------------- 5.1 warmup + cosine


def _lr_cases(rng: np.random.Generator) -> list[dict]:
    base = dict(max_lr=1.0, min_lr=0.1, warmup_steps=10, total_steps=110)
    cases = [dict(step=s, **base) for s in (0, 5, 9, 10, 60, 109, 110, 150)]
    max_lr = float(np.round(rng.uniform(1e-3, 1e-2), 4))
    warm, total = int(rng.integers(2, 20)), int(rng.integers(50, 200))
    cfg = dict(max_lr=max_lr, min_lr=round(max_lr / 10, 5), warmup_steps=warm, total_steps=total)
    cases += [dict(step=int(s), **cfg) for s in (0, warm - 1, warm + (total - warm) // 3, total + 10)]
    return cases


def _lr_warmup_from_zero(step, max_lr, min_lr, warmup_steps, total_steps):
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    return pretraining.lr_at(step, max_lr, min_lr, warmup_steps, total_steps)


def _lr_cosine_over_total(step, max_lr, min_lr, warmup_steps, total_steps):
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    progress = min(1.0, step / total_steps)
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def _lr_to_zero(step, max_lr, min_lr, warmup_steps, total_steps):
    return pretraining.lr_at(step, max_lr, 0.0, warmup_steps, total_steps)


def _lr_no_clip(step, max_lr, min_lr, warmup_steps, total_steps):
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / (total_steps - warmup_steps)  # > 1 after the end: the cosine comes back up
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (max_lr - min_lr)


# --------------------------------------------------------------------------- 5.2 gradient clipping


def _clip_cases(rng: np.random.Generator) -> list[dict]:
    def grads(*scales_shapes):
        return [torch.from_numpy((rng.normal(0, s, shape)).astype(np.float32)) for s, shape in scales_shapes]
    return [
        dict(grads=grads((3.0, (4, 3)), (0.5, (3,))), max_norm=1.0),       # big: clipped
        dict(grads=grads((0.01, (2, 2)), (0.01, (5,))), max_norm=1.0),     # small: unchanged
        dict(grads=grads((0.2, (3, 3)), (4.0, (2,)), (0.1, (4,))), max_norm=0.5),
        dict(grads=grads((1.0, (6,)), (1.0, (2, 3))), max_norm=2.0),
    ]


def _clip_in_place(grads, max_norm):
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
    scale = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    for g in grads:
        g.mul_(scale)                                                  # changes the caller's tensors
    return grads, norm


def _clip_per_tensor(grads, max_norm):
    out = [g * torch.clamp(max_norm / (g.norm() + 1e-6), max=1.0) for g in grads]
    return out, torch.sqrt(sum((g ** 2).sum() for g in grads))


def _clip_by_value(grads, max_norm):
    return [g.clamp(-max_norm, max_norm) for g in grads], torch.sqrt(sum((g ** 2).sum() for g in grads))


def _clip_always(grads, max_norm):
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
    return [g * (max_norm / (norm + 1e-6)) for g in grads], norm


def _clip_sum_of_norms(grads, max_norm):
    norm = sum(g.norm() for g in grads)
    scale = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    return [g * scale for g in grads], norm


def _clip_norm_after(grads, max_norm):
    clipped, norm = pretraining.clip_grad_norm(grads, max_norm)
    return clipped, torch.minimum(norm, torch.tensor(max_norm, dtype=norm.dtype))


# --------------------------------------------------------------------------- 5.3 the SFT targets


def _sft_batch(rng: np.random.Generator, n: int) -> dict:
    problems = [tw.sample_problem(rng) for _ in range(n)]
    ids, prompt_lens = sft.collate([sft.encode_example(p) for p in problems], pad_id=_pad_id())
    return dict(ids=ids, prompt_lens=prompt_lens, pad_id=_pad_id())


def _pad_id() -> int:
    from llmcourse.tokenizer import special_id
    return special_id(tw.PAD)


def _sft_cases(rng: np.random.Generator) -> list[dict]:
    hand = dict(ids=torch.tensor([[10, 11, 12, 20, 21, 99, 0, 0], [10, 11, 20, 21, 22, 23, 99, 0]]),
                prompt_lens=torch.tensor([3, 2]), pad_id=0)
    return [hand, _sft_batch(rng, 3), _sft_batch(rng, 4)]


def _targets_view_not_copy(ids, prompt_lens, pad_id):
    targets = ids[:, 1:]                                               # a view: writing to it writes into ids
    t_next = torch.arange(1, ids.size(1))
    targets[(t_next[None, :] < prompt_lens[:, None]) | (targets == pad_id)] = IGNORE
    return targets


def _targets_int32(ids, prompt_lens, pad_id):
    return sft.sft_targets(ids, prompt_lens, pad_id).int()


def _targets_with_prompt(ids, prompt_lens, pad_id):
    targets = ids[:, 1:].clone()
    targets[targets == pad_id] = IGNORE
    return targets


def _targets_mask_by_input(ids, prompt_lens, pad_id):
    targets = ids[:, 1:].clone()
    t = torch.arange(ids.size(1) - 1)                                  # index of the *input* token
    targets[(t[None, :] < prompt_lens[:, None]) | (targets == pad_id)] = IGNORE
    return targets


def _targets_not_shifted(ids, prompt_lens, pad_id):
    targets = ids[:, :-1].clone()
    t = torch.arange(ids.size(1) - 1)
    targets[(t[None, :] < prompt_lens[:, None]) | (targets == pad_id)] = IGNORE
    return targets


def _targets_with_padding(ids, prompt_lens, pad_id):
    targets = ids[:, 1:].clone()
    t_next = torch.arange(1, ids.size(1))
    targets[t_next[None, :] < prompt_lens[:, None]] = IGNORE
    return targets


# --------------------------------------------------------------------------- 5.4 masked cross-entropy


def _ce_cases(rng: np.random.Generator) -> list[dict]:
    cases = []
    for B, T, V, keep in [(2, 4, 5, [3, 1]), (3, 5, 7, [5, 2, 1]), (2, 6, 4, [4, 2])]:
        logits = torch.from_numpy(rng.normal(0, 2, (B, T, V)).astype(np.float32))
        targets = torch.from_numpy(rng.integers(1, V, (B, T)))
        for b, k in enumerate(keep):                                   # mask the first T - k positions of row b
            targets[b, : T - k] = IGNORE
        cases.append(dict(logits=logits, targets=targets))
    return cases


def _ce_mean_over_all(logits, targets):
    keep = targets != IGNORE
    nll = F.cross_entropy(logits.transpose(1, 2), targets.clamp(min=0), reduction="none")
    return (nll * keep).sum() / targets.numel()


def _ce_mean_of_sequence_means(logits, targets):
    keep = targets != IGNORE
    nll = F.cross_entropy(logits.transpose(1, 2), targets.clamp(min=0), reduction="none")
    return ((nll * keep).sum(1) / keep.sum(1)).mean()


def _ce_sum(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="sum")


def _ce_no_mask(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.clamp(min=0).reshape(-1))


register(
    Exercise(
        id="5.1", title="Warmup and cosine decay", reference=pretraining.lr_at, cases=_lr_cases,
        hint="Two phases: for step < warmup_steps, max_lr * (step + 1) / warmup_steps; after, p = (step - "
             "warmup_steps) / (total_steps - warmup_steps) clipped to 1, and min_lr + 0.5 (1 + cos π p)(max_lr - min_lr).",
        known_wrong=[
            KnownWrong("warmup starts at 0", _lr_warmup_from_zero,
                       "At step 0 your learning rate is 0, so the first step is wasted: use (step + 1) / warmup_steps."),
            KnownWrong("cosine over all steps", _lr_cosine_over_total,
                       "The cosine must start where the warmup ends: progress = (step - warmup_steps) / "
                       "(total_steps - warmup_steps), so that the rate is max_lr right after warmup."),
            KnownWrong("decays to 0", _lr_to_zero,
                       "Your schedule decays to 0; it must end at min_lr: min_lr + 0.5 (1 + cos π p)(max_lr - min_lr)."),
            KnownWrong("no clip after the end", _lr_no_clip,
                       "After total_steps the progress exceeds 1 and the cosine climbs back up: clip it, "
                       "min(1, progress), so the rate stays at min_lr."),
        ]),
    Exercise(
        id="5.2", title="Clip the global gradient norm", reference=pretraining.clip_grad_norm, cases=_clip_cases,
        hint="norm = sqrt(sum over all tensors of (g**2).sum()); scale = min(1, max_norm / (norm + 1e-6)); "
             "return ([g * scale for g in grads], norm), with the norm measured before clipping.",
        known_wrong=[
            KnownWrong("clips each tensor separately", _clip_per_tensor,
                       "You clipped each tensor to max_norm on its own, which changes the direction of the "
                       "update. Compute one norm over all the tensors together and scale them all by the same factor."),
            KnownWrong("clips values, not the norm", _clip_by_value,
                       "clamp(-max_norm, max_norm) clips each entry (value clipping). Norm clipping rescales the "
                       "whole gradient so its L2 norm is at most max_norm."),
            KnownWrong("rescales even small gradients", _clip_always,
                       "A gradient whose norm is already below max_norm must be left alone: the scale is "
                       "min(1, max_norm / (norm + 1e-6))."),
            KnownWrong("sums the per-tensor norms", _clip_sum_of_norms,
                       "The global norm is sqrt(Σ ||g_i||²), not Σ ||g_i||: add the squares, then take one square root."),
            KnownWrong("returns the norm after clipping", _clip_norm_after,
                       "Return the norm measured *before* clipping: it is what you log to see how often (and how "
                       "hard) clipping acts."),
            KnownWrong("scales the gradients in place", _clip_in_place,
                       "You scaled the given tensors in place (g.mul_(scale) or g *= scale), which changed the "
                       "caller's gradients. This function returns new tensors, [g * scale for g in grads], and "
                       "leaves its inputs alone (torch.nn.utils.clip_grad_norm_, with its trailing _, is the in-place one)."),
        ],
        atol=1e-5),
    Exercise(
        id="5.3", title="The SFT targets (response-only mask)", reference=sft.sft_targets, cases=_sft_cases,
        exact_dtype=True,  # the docstring: targets are long, as F.cross_entropy requires
        hint="targets = ids[:, 1:] (position t predicts token t+1); set -100 where the *target's* index t+1 is "
             "< prompt_len (a prompt token) or where the target is padding.",
        known_wrong=[
            KnownWrong("trains on the prompt", _targets_with_prompt,
                       "Your targets include the prompt tokens: the model would learn to write questions. Set "
                       "-100 wherever the target token t+1 is in the prompt (t + 1 < prompt_len)."),
            KnownWrong("off by one: masks by the input's index", _targets_mask_by_input,
                       "You masked position t when the *input* t is in the prompt, which also drops the first "
                       "response token (predicted from the last prompt token). Mask by the target's index, t + 1."),
            KnownWrong("targets not shifted", _targets_not_shifted,
                       "Position t must predict the *next* token: targets come from ids[:, 1:], not ids[:, :-1]."),
            KnownWrong("counts the padding", _targets_with_padding,
                       "Padding positions are still targets; the model would be trained to emit <|pad|>. Set "
                       "-100 where the target is pad_id."),
            KnownWrong("int32 targets", _targets_int32,
                       "The values are right but the targets are int32: F.cross_entropy needs class indices of "
                       "dtype long (int64) and fails with 'expected target dtype to be Long'. Keep ids' dtype "
                       "(ids[:, 1:].clone()), or convert with .long()."),
            KnownWrong("writes -100 into ids", _targets_view_not_copy,
                       "ids[:, 1:] is a *view* of ids: writing -100 into it wrote into the token ids too, so the "
                       "model's inputs would contain -100 (an index error in the embedding). Take a copy: "
                       "ids[:, 1:].clone()."),
        ]),
    Exercise(
        id="5.4", title="Masked cross-entropy mean", reference=sft.masked_cross_entropy, cases=_ce_cases,
        grad_wrt=("logits",),
        hint="Negative log-softmax of the target at every position, zero where target == -100, then the sum "
             "divided by the number of kept positions (F.cross_entropy(..., ignore_index=-100) does exactly this).",
        known_wrong=[
            KnownWrong("divides by all positions", _ce_mean_over_all,
                       "You zeroed the masked positions but divided by B*T: divide by the number of kept tokens "
                       "((targets != -100).sum())."),
            KnownWrong("mean of per-sequence means", _ce_mean_of_sequence_means,
                       "Averaging each sequence first gives a token of a short response more weight than one of a "
                       "long response. Average over all kept tokens of the batch at once."),
            KnownWrong("sum, not mean", _ce_sum,
                       "The loss is the mean over the kept tokens, not the sum (the sum grows with batch size "
                       "and length, and so would the gradient)."),
            KnownWrong("mask ignored", _ce_no_mask,
                       "The -100 positions are counted (as if their target were token 0). Leave them out of both "
                       "the sum and the count."),
            KnownWrong("loss without gradient", under_no_grad(sft.masked_cross_entropy),
                       "The value is right but the loss carries no gradient: it was computed under "
                       "`torch.no_grad()`, or detached (`.detach()`, `.item()`, NumPy) on the way, so the training "
                       "cell's `loss.backward()` would fail. Compute it with torch operations on the logits, outside "
                       "`no_grad`, and return the tensor itself."),
        ],
        known_right=[KnownRight("float64 loss", as_float64(sft.masked_cross_entropy))],
        atol=1e-5),
)
