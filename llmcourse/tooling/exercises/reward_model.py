"""Chapter 07 exercises: labelling pairs by the rules, the score at the last real token, the
Bradley–Terry loss, pairwise accuracy."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from llmcourse import preferences, reward_model
from llmcourse.tooling.checker import Exercise, KnownRight, KnownWrong, as_float64, register, under_no_grad


# --------------------------------------------------------------------------- 7.1 labelling pairs by the rules

_REWARD_LEVELS = [0.0, 0.1, 1.0, 1.1]                                   # the rule rewards a response can get


def _index_cases(rng: np.random.Generator) -> list[dict]:
    hand = dict(rewards=torch.tensor([[0.0, 1.1], [1.0, 1.0], [1.1, 1.0]]))        # the docstring's example
    cases = [hand,
             dict(rewards=torch.tensor([[1.1, 0.0], [0.1, 0.0], [0.0, 0.1], [1.0, 1.1], [0.0, 0.0]])),
             dict(rewards=torch.tensor([[1.1, 1.1], [0.0, 0.0]]))]                # all ties: no pair
    for n in (int(rng.integers(6, 12)), int(rng.integers(12, 30))):
        levels = rng.choice(_REWARD_LEVELS, size=(n, 2))
        cases.append(dict(rewards=torch.tensor(levels, dtype=torch.float32)))
    return cases


def _index_ties_kept(rewards):
    first_wins = rewards[:, 0] >= rewards[:, 1]                        # a tie: the first answer "wins"
    rows = 2 * torch.arange(rewards.size(0))
    return torch.stack([torch.where(first_wins, rows, rows + 1), torch.where(first_wins, rows + 1, rows)], dim=1)


def _index_flipped(rewards):
    pairs = preferences.preference_index(rewards)
    return pairs.flip(1)                                               # [rejected, chosen]


def _index_within_pair(rewards):
    keep = rewards[:, 0] != rewards[:, 1]
    chosen = rewards.argmax(dim=1)                                     # 0 or 1: the position inside the pair
    return torch.stack([chosen, 1 - chosen], dim=1)[keep]


def _index_i_plus_j(rewards):
    keep = rewards[:, 0] != rewards[:, 1]
    i = torch.arange(rewards.size(0))
    chosen = rewards.argmax(dim=1)
    return torch.stack([i + chosen, i + 1 - chosen], dim=1)[keep]      # row i + j, not 2i + j


def _index_diff_in_place(rewards):
    diff = rewards[:, 0]                                               # a view of the caller's rewards
    diff -= rewards[:, 1]                                              # ... changed in place
    rows = 2 * torch.arange(rewards.size(0))
    chosen = torch.where(diff > 0, rows, rows + 1)
    rejected = torch.where(diff > 0, rows + 1, rows)
    return torch.stack([chosen, rejected], dim=1)[diff != 0]


def _index_loop(rewards):
    out = []
    for i, (r0, r1) in enumerate(rewards.tolist()):
        if r0 > r1:
            out.append([2 * i, 2 * i + 1])
        elif r1 > r0:
            out.append([2 * i + 1, 2 * i])
    return torch.tensor(out, dtype=torch.long).view(-1, 2)


def _index_nonzero(rewards):
    i = (rewards[:, 0] != rewards[:, 1]).nonzero().squeeze(1)         # the problems with a preference
    j = rewards[i].argmax(dim=1)
    return torch.stack([2 * i + j, 2 * i + 1 - j], dim=1)


# --------------------------------------------------------------------------- 7.2 the score at the last real token

def _last_cases(rng: np.random.Generator) -> list[dict]:
    hand = dict(values=torch.tensor([[1., 2., 3., 4.], [5., 6., 7., 8.]]),
                mask=torch.tensor([[True, True, False, False], [True, True, True, True]]))
    cases = [hand]
    for B, T in [(3, 5), (4, 7), (int(rng.integers(3, 7)), int(rng.integers(6, 12)))]:
        lengths = rng.integers(1, T + 1, size=B)
        lengths[rng.integers(B)] = T                                   # right-padded to the longest row
        mask = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]
        cases.append(dict(values=torch.from_numpy(rng.normal(0, 1, (B, T)).astype(np.float32)), mask=mask))
    return cases


def _last_column(values, mask):
    return values[:, -1]                                               # padding ignored


def _last_first_pad(values, mask):
    first_pad = (~mask).long().argmax(dim=1)                           # the first padding column (0 if none)
    return values.gather(1, first_pad.unsqueeze(1)).squeeze(1)


def _last_first_token(values, mask):
    return values[:, 0]


def _last_mean(values, mask):
    return (values * mask).sum(dim=1) / mask.sum(dim=1)                # mean over the real tokens


def _last_masked_max(values, mask):
    return values.masked_fill(~mask, float("-inf")).max(dim=1).values


def _last_rebuilt(values, mask):
    lengths = mask.sum(dim=1)
    return torch.tensor([values[b, int(n) - 1].item() for b, n in enumerate(lengths)])


def _last_hf(values, mask):
    # transformers' *ForSequenceClassification: the first pad minus one, modulo T (a row with no pad wraps to -1)
    last = ((~mask).long().argmax(dim=1) - 1) % values.size(1)
    return values[torch.arange(values.size(0)), last]


def _last_flip(values, mask):
    T = values.size(1)
    from_end = mask.flip(1).long().argmax(dim=1)                       # position of the last True, counted from the end
    return values[torch.arange(values.size(0)), T - 1 - from_end]


# --------------------------------------------------------------------------- 7.3 the Bradley-Terry loss


def _randn(rng: np.random.Generator, n: int, scale: float = 1.0) -> torch.Tensor:
    return torch.from_numpy(rng.normal(0.0, scale, n).astype(np.float32))


def _bt_cases(rng: np.random.Generator) -> list[dict]:
    cases = [dict(chosen=torch.tensor([0.0]), rejected=torch.tensor([0.0])),                    # log 2
             dict(chosen=torch.tensor([2.0, 0.0, 1.0]), rejected=torch.tensor([0.0, 1.0, 1.0])),
             dict(chosen=torch.tensor([1.0, 3.0]), rejected=torch.tensor([0.0, 0.5]), margin=1.0),
             dict(chosen=torch.tensor([2.0, 0.0, 150.0]), rejected=torch.tensor([0.0, 200.0, 0.0]))]  # large gaps
    n = int(rng.integers(5, 20))
    cases.append(dict(chosen=_randn(rng, n, 2.0), rejected=_randn(rng, n, 2.0)))
    cases.append(dict(chosen=_randn(rng, n), rejected=_randn(rng, n),
                      margin=torch.from_numpy(rng.uniform(0, 1, n).astype(np.float32))))             # one per pair
    return cases


def _bt_swapped(chosen, rejected, margin=0.0):
    return -F.logsigmoid(rejected - chosen - margin).mean()


def _bt_no_minus(chosen, rejected, margin=0.0):
    return F.logsigmoid(chosen - rejected - margin).mean()


def _bt_sum(chosen, rejected, margin=0.0):
    return -F.logsigmoid(chosen - rejected - margin).sum()


def _bt_log_sigmoid(chosen, rejected, margin=0.0):
    return -torch.log(torch.sigmoid(chosen - rejected - margin)).mean()


def _bt_margin_added(chosen, rejected, margin=0.0):
    return -F.logsigmoid(chosen - rejected + margin).mean()


def _bt_margin_ignored(chosen, rejected, margin=0.0):
    return -F.logsigmoid(chosen - rejected).mean()


def _bt_rejected_detached(chosen, rejected, margin=0.0):
    return -F.logsigmoid(chosen - rejected.detach() - margin).mean()


def _bt_bce_on_probabilities(chosen, rejected, margin=0.0):
    p = torch.sigmoid(chosen - rejected - margin)
    return F.binary_cross_entropy(p, torch.ones_like(p))               # clamps log(p) at −100


def _bt_margin_outside(chosen, rejected, margin=0.0):
    return -(F.logsigmoid(chosen - rejected) - margin).mean()


def _bt_softplus_sign(chosen, rejected, margin=0.0):
    return F.softplus(chosen - rejected - margin).mean()


def _bt_softplus(chosen, rejected, margin=0.0):
    return F.softplus(rejected - chosen + margin).mean()


def _bt_bce(chosen, rejected, margin=0.0):
    diff = chosen - rejected - margin
    return F.binary_cross_entropy_with_logits(diff, torch.ones_like(diff))


# --------------------------------------------------------------------------- 7.4 pairwise accuracy


def _acc_cases(rng: np.random.Generator) -> list[dict]:
    cases = [dict(chosen=torch.tensor([2.0, 1.0, 0.5, 3.0]), rejected=torch.tensor([1.0, 1.0, 0.7, -1.0])),
             dict(chosen=torch.tensor([0.0, 0.0, 0.0]), rejected=torch.tensor([0.0, 0.0, 0.0])),      # all ties
             dict(chosen=torch.tensor([5.0, -1.0]), rejected=torch.tensor([4.0, -2.0])),
             dict(chosen=torch.tensor([1.0, 0.2, -3.0, 7.0]),                                    # near ties, no ties
                  rejected=torch.tensor([1.0 - 2 ** -20, 0.2 - 1e-4, -3.0 + 1e-4, 7.0 - 2 ** -8]))]
    for n in (int(rng.integers(5, 12)), int(rng.integers(20, 60))):
        chosen = _randn(rng, n)
        rejected = _randn(rng, n)
        ties = rng.random(n) < 0.2
        rejected[torch.from_numpy(ties)] = chosen[torch.from_numpy(ties)]                           # some ties
        cases.append(dict(chosen=chosen, rejected=rejected))
    return cases


def _acc_ties_right(chosen, rejected):
    return (chosen >= rejected).float().mean().item()


def _acc_ties_half(chosen, rejected):
    return ((chosen > rejected).float().mean() + 0.5 * (chosen == rejected).float().mean()).item()


def _acc_count(chosen, rejected):
    return (chosen > rejected).sum().item()


def _acc_reversed(chosen, rejected):
    return (rejected > chosen).float().mean().item()


def _acc_probability(chosen, rejected):
    return torch.sigmoid(chosen - rejected).mean().item()


def _acc_in_place(chosen, rejected):
    diff = chosen                                                      # the same tensor, not a copy
    diff -= rejected
    return (diff > 0).float().mean().item()


def _acc_tolerance(chosen, rejected):
    return (chosen - rejected > 1e-2).float().mean().item()            # a small lead counted as a tie


def _acc_tensor(chosen, rejected):
    return (chosen > rejected).float().mean()                          # a 0-d tensor, not a float


def _acc_numpy(chosen, rejected):
    return float(np.mean(chosen.numpy() > rejected.numpy()))


# --------------------------------------------------------------------------- registry

register(
    Exercise(
        id="7.1", title="Label pairs by the rules", reference=preferences.preference_index, cases=_index_cases,
        hint="For problem i (rows 2i and 2i + 1 of the batch), keep it only if its two rewards differ, and give "
             "[row of the higher reward, row of the lower one]; stack the kept rows into an (M, 2) long tensor.",
        known_wrong=[
            KnownWrong("ties kept", _index_ties_kept,
                       "You kept the ties: when both answers got the same reward (both right in the same style, or "
                       "both wrong) there is no preference, and picking the first one teaches the reward model "
                       "noise. Leave those problems out (`rewards[:, 0] != rewards[:, 1]`)."),
            KnownWrong("order flipped", _index_flipped,
                       "Your pairs are [rejected, chosen]: the first column must be the row of the *higher* reward."),
            KnownWrong("index inside the pair", _index_within_pair,
                       "You returned 0 or 1, the position inside each pair. Return rows of the whole batch: problem "
                       "i's answers are rows 2i and 2i + 1."),
            KnownWrong("row i + j", _index_i_plus_j,
                       "Problem i's answers are rows 2i and 2i + 1 (two rows per problem), not i and i + 1."),
            KnownWrong("changes the rewards in place", _index_diff_in_place,
                       "`rewards[:, 0]` is a view of the caller's tensor, so `diff -= …` wrote into `rewards`. "
                       "Compute the difference as a new tensor (`diff = rewards[:, 0] - rewards[:, 1]`)."),
        ],
        known_right=[KnownRight("a Python loop", _index_loop), KnownRight("nonzero + argmax", _index_nonzero)],
        exact_dtype=True),
    Exercise(
        id="7.2", title="The score at the last real token", reference=reward_model.last_token_values,
        cases=_last_cases, grad_wrt=("values",),
        grad_help="The reward model is trained through this score, the value at one column per row (the last real "
                  "token) and nothing else: index the tensor itself (`gather`, or `values[rows, cols]`), not "
                  "`.item()`, `.tolist()`, `torch.tensor(...)` or under `torch.no_grad()`.",
        hint="Row b's last real token is at column mask[b].sum() − 1; pick that entry of each row "
             "(values.gather(1, last.unsqueeze(1)).squeeze(1), or values[torch.arange(B), last]).",
        known_wrong=[
            KnownWrong("last column", _last_column,
                       "You read the last column, which is padding in every row shorter than the longest: the mask "
                       "is not used. Read column mask.sum(dim=1) − 1 of each row."),
            KnownWrong("the first pad", _last_first_pad,
                       "You read the first padding column: one past the last real token (and column 0 in a row with "
                       "no padding). The last real token is at mask.sum(dim=1) − 1."),
            KnownWrong("the first token", _last_first_token,
                       "You read column 0. In a causal model the first position has seen only the first token; the "
                       "score belongs at the last real token, the only one that has seen the whole response."),
            KnownWrong("mean over the real tokens", _last_mean,
                       "You averaged over the real tokens. Earlier positions have not seen the end of the response "
                       "(causal attention), so their values judge an unfinished answer; the reward model's score is "
                       "the value at the last real token alone."),
            KnownWrong("max over the real tokens", _last_masked_max,
                       "You took the largest value over the real tokens; the score is the value at the last real "
                       "token, mask.sum(dim=1) − 1."),
            KnownWrong("no gradient", under_no_grad(reward_model.last_token_values),
                       "The values are right but no gradient reaches `values`: they were computed under "
                       "`torch.no_grad()`, detached, or rebuilt from numbers (`.item()`, `.tolist()`, "
                       "`torch.tensor(...)`), so the reward model could not learn from this score. Index the tensor "
                       "itself (`values.gather(...)`)."),
        ],
        known_right=[KnownRight("transformers' first pad − 1, modulo T", _last_hf),
                     KnownRight("the last True from a flipped mask", _last_flip)]),
    Exercise(
        id="7.3", title="The Bradley–Terry loss", reference=reward_model.bradley_terry_loss, cases=_bt_cases,
        grad_wrt=("chosen", "rejected"),
        hint="loss = mean over pairs of −log σ(chosen − rejected − margin); use F.logsigmoid, which stays finite "
             "for large differences.",
        known_wrong=[
            KnownWrong("chosen and rejected swapped", _bt_swapped,
                       "You wrote −log σ(rejected − chosen): minimising it pushes the *rejected* score up. The "
                       "preferred response comes first: −log σ(r_chosen − r_rejected)."),
            KnownWrong("no minus sign", _bt_no_minus,
                       "Your loss is log σ(…), the log-likelihood itself (≤ 0). The loss is its negative, "
                       "−log σ(r_chosen − r_rejected), so that minimising it maximises the likelihood of the labels."),
            KnownWrong("sum instead of mean", _bt_sum,
                       "You summed over the pairs. Take the mean, so that the loss (and the step size) does not grow "
                       "with the batch size."),
            KnownWrong("log(sigmoid(x))", _bt_log_sigmoid,
                       "torch.log(torch.sigmoid(x)) underflows: for x below about −104, sigmoid(x) is 0 in float32 and "
                       "the loss is infinite (and its gradient NaN). F.logsigmoid(x) computes the same thing stably."),
            KnownWrong("binary cross-entropy on σ", _bt_bce_on_probabilities,
                       "F.binary_cross_entropy(torch.sigmoid(d), 1) is the right loss in exact arithmetic, but σ(d) "
                       "rounds to 0 for large negative d and torch then clamps log(0) to −100: the loss is wrong (and "
                       "its gradient 0) exactly on the pairs ranked worst. Use F.logsigmoid(d), or "
                       "F.binary_cross_entropy_with_logits(d, torch.ones_like(d)), which work from the logit d."),
            KnownWrong("softplus of the wrong sign", _bt_softplus_sign,
                       "softplus(z) = log(1 + eᶻ) = −log σ(−z), so −log σ(r_chosen − r_rejected − m) is "
                       "softplus(r_rejected − r_chosen + m): you wrote it with the sign flipped, which rewards the "
                       "rejected response."),
            KnownWrong("margin outside the log-sigmoid", _bt_margin_outside,
                       "The margin goes inside σ, subtracted from the score difference: −log σ(r_chosen − r_rejected − m). "
                       "Added outside, it only shifts the loss by a constant and changes no gradient."),
            KnownWrong("margin added", _bt_margin_added,
                       "The margin is subtracted: −log σ(r_chosen − r_rejected − m), so the chosen response must beat "
                       "the rejected one by at least m before the loss gets small."),
            KnownWrong("margin ignored", _bt_margin_ignored,
                       "The `margin` argument is not used: subtract it from the difference, "
                       "−log σ(r_chosen − r_rejected − margin)."),
            KnownWrong("rejected score detached", _bt_rejected_detached,
                       "The value is right, but no gradient reaches the rejected score: both scores come from the "
                       "same reward model, and the loss must push the rejected one down too. Remove the .detach()."),
            KnownWrong("no gradient", under_no_grad(reward_model.bradley_terry_loss),
                       "The value is right but the loss carries no gradient: it was computed under `torch.no_grad()` "
                       "(or detached), so training the reward model with it would change nothing."),
        ],
        known_right=[KnownRight("softplus(rejected − chosen + margin)", _bt_softplus),
                     KnownRight("binary cross-entropy with logits, label 1", _bt_bce),
                     KnownRight("float64", as_float64(reward_model.bradley_terry_loss))],
        atol=1e-5),
    Exercise(
        id="7.4", title="Pairwise accuracy", reference=reward_model.pairwise_accuracy, cases=_acc_cases,
        hint="The share (a float in [0, 1]) of pairs with chosen > rejected, strictly: a tie is not a right ranking.",
        known_wrong=[
            KnownWrong("ties counted as right", _acc_ties_right,
                       "You counted ties (chosen == rejected) as right. A reward model that gives every response the "
                       "same score would then be 100% accurate; use a strict chosen > rejected."),
            KnownWrong("ties counted as half", _acc_ties_half,
                       "You counted a tie as half right. Here a tie is a failure to rank: use a strict chosen > "
                       "rejected (then a constant reward model scores 0, not 50%)."),
            KnownWrong("a count, not a share", _acc_count,
                       "You returned how many pairs are ranked right; return the share, the count divided by the "
                       "number of pairs (the mean of the comparisons)."),
            KnownWrong("reversed comparison", _acc_reversed,
                       "You counted the pairs where the rejected response scores higher: compare chosen > rejected."),
            KnownWrong("the mean Bradley–Terry probability", _acc_probability,
                       "You averaged σ(chosen − rejected), the model's probability that the chosen response wins. "
                       "Accuracy counts the pairs ranked right: the share with chosen > rejected."),
            KnownWrong("a tolerance", _acc_tolerance,
                       "You counted a pair as right only when the chosen score leads by more than a tolerance. Any "
                       "lead, however small, is a right ranking: compare chosen > rejected exactly."),
            KnownWrong("a 0-d tensor", _acc_tensor,
                       "Return a Python float: `.item()` of the mean. A tensor prints as `tensor(0.88)` and keeps its "
                       "device; the accuracy is a number to log and compare."),
            KnownWrong("subtracts in place", _acc_in_place,
                       "`diff = chosen` does not copy: `diff -= rejected` changed the caller's `chosen`. Write "
                       "`diff = chosen - rejected`, or compare directly (`chosen > rejected`)."),
        ],
        known_right=[KnownRight("NumPy", _acc_numpy)]),
)
