"""Chapter 13 exercises (mixture of experts): top-k routing with the gated combine, and Switch Transformer's
load-balancing loss."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from llmcourse import moe
from llmcourse.tooling.checker import Exercise, KnownRight, KnownWrong, as_float64, register, under_no_grad


def _t(x, dtype=torch.float32) -> torch.Tensor:
    return torch.tensor(np.asarray(x), dtype=dtype)


def _distinct_logits(rng: np.random.Generator, N: int, E: int) -> np.ndarray:
    """Router logits with no ties within a row (ties are measure zero; the cases avoid them)."""
    return np.stack([rng.permutation(E) * 0.37 + rng.normal(0, 0.1, E) for _ in range(N)]) + rng.normal(0, 1.0, (N, 1))


# --------------------------------------------------------------------------- 13.4 top-k routing and the combine


def _combine_cases(rng: np.random.Generator) -> list[dict]:
    # the hand-worked token: logits (0, 2, 2 + log 3, −1), k = 2 -> experts 2 and 1, gates 3/4 and 1/4
    hand_logits = _t([[0.0, 2.0, np.log(3.0) + 2.0, -1.0], [1.0, -2.0, 0.5, 3.0]])
    hand_out = _t(np.arange(4 * 2 * 3).reshape(4, 2, 3) % 7 - 3.0)
    cases = [dict(router_logits=hand_logits, expert_outputs=hand_out, k=2),
             dict(router_logits=hand_logits, expert_outputs=hand_out, k=1)]
    for E, k in ((8, 2), (4, 3), (6, 1)):
        N, C = int(rng.integers(3, 8)), int(rng.integers(2, 5))
        cases.append(dict(router_logits=_t(_distinct_logits(rng, N, E)), expert_outputs=_t(rng.normal(0, 1, (E, N, C))),
                          k=k))
    return cases


def _chosen(expert_outputs, indices):
    tokens = torch.arange(indices.size(0)).unsqueeze(-1)
    return expert_outputs[indices, tokens]                                            # (N, k, C)


def _comb_full_softmax(router_logits, expert_outputs, k):
    probs = F.softmax(router_logits, dim=-1)                                          # over all E experts
    top, idx = probs.topk(k, dim=-1)                                                  # not renormalised
    return (top.unsqueeze(-1) * _chosen(expert_outputs, idx)).sum(1)


def _comb_normalised_logits(router_logits, expert_outputs, k):
    top, idx = router_logits.topk(k, dim=-1)
    gates = top / top.sum(-1, keepdim=True)                                           # the logits normalised
    return (gates.unsqueeze(-1) * _chosen(expert_outputs, idx)).sum(1)


def _comb_smallest(router_logits, expert_outputs, k):
    top, idx = router_logits.topk(k, dim=-1, largest=False)
    return (F.softmax(top, -1).unsqueeze(-1) * _chosen(expert_outputs, idx)).sum(1)


def _comb_no_gates(router_logits, expert_outputs, k):
    _, idx = router_logits.topk(k, dim=-1)
    return _chosen(expert_outputs, idx).mean(1)                                       # every chosen expert 1/k


def _comb_dense(router_logits, expert_outputs, k):
    probs = F.softmax(router_logits, dim=-1)                                          # (N, E)
    return torch.einsum("ne,enc->nc", probs, expert_outputs)                          # every expert, no top-k


def _comb_gates_misaligned(router_logits, expert_outputs, k):
    top, idx = router_logits.topk(k, dim=-1)
    idx_sorted, _ = idx.sort(dim=-1)                                                  # experts in index order …
    return (F.softmax(top, -1).unsqueeze(-1) * _chosen(expert_outputs, idx_sorted)).sum(1)   # … gates in score order


def _comb_softmax_over_tokens(router_logits, expert_outputs, k):
    top, idx = router_logits.topk(k, dim=-1)
    return (F.softmax(top, dim=0).unsqueeze(-1) * _chosen(expert_outputs, idx)).sum(1)


def _comb_gates_detached(router_logits, expert_outputs, k):
    top, idx = router_logits.topk(k, dim=-1)
    gates = F.softmax(top, -1).detach()
    return (gates.unsqueeze(-1) * _chosen(expert_outputs, idx)).sum(1)


def _comb_top1(router_logits, expert_outputs, k):
    return moe.topk_combine(router_logits, expert_outputs, 1)


def _comb_masked_softmax(router_logits, expert_outputs, k):
    kth = router_logits.topk(k, dim=-1).values[:, -1:]                                # (N, 1)
    masked = router_logits.masked_fill(router_logits < kth, float("-inf"))
    return torch.einsum("ne,enc->nc", F.softmax(masked, -1), expert_outputs)


def _comb_in_place(router_logits, expert_outputs, k):
    idx, gates = moe.route(router_logits, k)
    weights = torch.zeros_like(router_logits).scatter(1, idx, gates)                 # (N, E), 0 off the top k
    expert_outputs.mul_(weights.T.unsqueeze(-1))                                      # written over the caller's
    return expert_outputs.sum(0)


def _comb_mixtral(router_logits, expert_outputs, k):
    probs = F.softmax(router_logits.float(), dim=-1)                                  # transformers' MixtralTopKRouter
    top, idx = torch.topk(probs, k, dim=-1)
    top = top / top.sum(dim=-1, keepdim=True)
    out = torch.zeros(expert_outputs.shape[1:], dtype=expert_outputs.dtype)
    for e in range(expert_outputs.size(0)):                                           # and MixtralExperts' loop
        token, slot = torch.where(idx == e)
        out = out.index_add(0, token, expert_outputs[e, token] * top[token, slot, None])
    return out


# --------------------------------------------------------------------------- 13.5 the load-balancing loss


def _lb_cases(rng: np.random.Generator) -> list[dict]:
    balanced = _t(np.tile(np.eye(4) * 2.0, (2, 1)))                                   # every expert first twice
    skewed = _t([[3.0, 1.0, 0.0, -1.0], [2.5, 0.5, 0.2, -2.0], [2.0, 1.5, -1.0, 0.0], [0.1, 2.0, 0.3, -0.5],
                 [1.0, -1.0, 2.0, 0.0], [3.0, 0.0, 2.0, 1.0]])
    cases = [dict(router_logits=balanced, k=1, alpha=1.0), dict(router_logits=skewed, k=2, alpha=0.01),
             dict(router_logits=skewed, k=1, alpha=1.0)]
    for E, k, alpha in ((8, 2, 0.01), (4, 2, 1.0), (6, 3, 0.1)):
        N = int(rng.integers(6, 20))
        logits = _distinct_logits(rng, N, E)
        logits[:, 0] += 1.0                                                           # some imbalance
        cases.append(dict(router_logits=_t(logits), k=k, alpha=alpha))
    return cases


def _lb_parts(router_logits, k):
    N, E = router_logits.shape
    probs = F.softmax(router_logits, dim=-1)
    idx = router_logits.topk(k, dim=-1).indices
    counts = torch.bincount(idx.reshape(-1), minlength=E).to(probs.dtype)
    return N, E, probs, counts


def _lb_f_from_probs(router_logits, k, alpha=0.01):
    N, E, probs, _ = _lb_parts(router_logits, k)
    P = probs.mean(0)
    return alpha * E * (P * P).sum()                                                  # f_i = P_i


def _lb_no_E(router_logits, k, alpha=0.01):
    N, E, probs, counts = _lb_parts(router_logits, k)
    return alpha * (counts / (N * k) * probs.mean(0)).sum()


def _lb_counts(router_logits, k, alpha=0.01):
    N, E, probs, counts = _lb_parts(router_logits, k)
    return alpha * E * (counts * probs.mean(0)).sum()                                 # counts, not fractions


def _lb_P_summed(router_logits, k, alpha=0.01):
    N, E, probs, counts = _lb_parts(router_logits, k)
    return alpha * E * (counts / (N * k) * probs.sum(0)).sum()                        # P summed over tokens


def _lb_first_choice(router_logits, k, alpha=0.01):
    N, E, probs, _ = _lb_parts(router_logits, k)
    counts = torch.bincount(router_logits.argmax(-1), minlength=E).to(probs.dtype)     # the first choice only
    return alpha * E * (counts / N * probs.mean(0)).sum()


def _lb_f_over_N(router_logits, k, alpha=0.01):
    N, E, probs, counts = _lb_parts(router_logits, k)
    return alpha * E * (counts / N * probs.mean(0)).sum()                             # transformers' f: sums to k


def _lb_straight_through(router_logits, k, alpha=0.01):
    N, E, probs, counts = _lb_parts(router_logits, k)
    hard = counts / (N * k)
    f = hard + probs.mean(0) - probs.mean(0).detach()                                 # "so that f gets a gradient too"
    return alpha * E * (f * probs.mean(0)).sum()


def _lb_no_alpha(router_logits, k, alpha=0.01):
    return moe.load_balancing_loss(router_logits, k, 1.0)


def _lb_P_from_gates(router_logits, k, alpha=0.01):
    N, E, probs, counts = _lb_parts(router_logits, k)
    idx, gates = moe.route(router_logits, k)
    P = torch.zeros(N, E).scatter(1, idx, gates).mean(0)                              # the renormalised top-k gates
    return alpha * E * (counts / (N * k) * P).sum()


def _lb_softmax_over_tokens(router_logits, k, alpha=0.01):
    N, E, _, counts = _lb_parts(router_logits, k)
    probs = F.softmax(router_logits, dim=0)
    return alpha * E * (counts / (N * k) * probs.mean(0)).sum()


def _lb_transformers_form(router_logits, k, alpha=0.01):
    E = router_logits.size(-1)                                                        # load_balancing_loss_func / k
    routing_weights = F.softmax(router_logits, dim=-1)
    _, selected = torch.topk(routing_weights, k, dim=-1)
    tokens_per_expert = torch.histc(selected.reshape(-1).float(), bins=E, min=0, max=E) / routing_weights.shape[0]
    return alpha * E * (tokens_per_expert * routing_weights.mean(0)).sum() / k


def _lb_one_hot(router_logits, k, alpha=0.01):
    N, E = router_logits.shape
    idx = router_logits.topk(k, dim=-1).indices
    f = F.one_hot(idx, E).sum(1).float().mean(0) / k                                  # (E,)
    return alpha * E * torch.dot(f, F.softmax(router_logits, -1).mean(0))


# --------------------------------------------------------------------------- registry

_NO_GRAD_HINT = ("The value is right but the result carries no gradient: it was computed under `torch.no_grad()`, "
                 "or detached on the way, so the router would never learn from it.")

register(
    Exercise(
        id="13.4", title="Top-k routing and the gated combine", reference=moe.topk_combine, cases=_combine_cases,
        grad_wrt=("router_logits", "expert_outputs"),
        grad_help="The router learns only through the gates: the gradient must reach `router_logits` through the "
                  "softmax over the k chosen logits (the choice itself, top-k, has no gradient), and each chosen "
                  "expert's output through its gate.",
        hint="For each token take its k largest router logits (`topk(k, dim=-1)`; ties, which the cases avoid, go to "
             "the lower index), softmax over those k only (the gates sum to 1), pick the chosen experts' outputs "
             "`expert_outputs[indices, token]` (shape (N, k, C)) and return the gated sum over the k, shape (N, C).",
        known_wrong=[
            KnownWrong("softmax over all experts, not renormalised", _comb_full_softmax,
                       "Your gates are the softmax over all E experts, kept for the chosen k: they sum to less than 1, "
                       "so the layer's output shrinks. Mixtral renormalises: the softmax over the k chosen logits "
                       "(equivalently, divide the k probabilities by their sum)."),
            KnownWrong("logits normalised instead of softmaxed", _comb_normalised_logits,
                       "You divided the chosen logits by their sum. Logits can be negative or sum to 0; the gates are "
                       "the softmax of the chosen logits, exp(z_i) / Σ_{j∈top-k} exp(z_j)."),
            KnownWrong("the k smallest", _comb_smallest,
                       "You picked the k *lowest* scoring experts (`largest=False`, or an ascending sort). A token "
                       "goes to the experts whose router logits are largest."),
            KnownWrong("no gates", _comb_no_gates,
                       "You averaged the chosen experts' outputs with equal weights 1/k. Each is weighted by its gate "
                       "(the softmax over the chosen logits), and that is the only way the router gets a gradient."),
            KnownWrong("every expert (dense softmax)", _comb_dense,
                       "You mixed all E experts with the full softmax: a dense (soft) mixture, every expert run for "
                       "every token. A sparse MoE keeps only the top k per token, the rest get weight 0."),
            KnownWrong("gates and experts misaligned", _comb_gates_misaligned,
                       "Your gates are in score order but the experts you multiply them with are in another order "
                       "(you sorted the indices). Gate j belongs to expert indices[n, j]: keep topk's values and "
                       "indices together."),
            KnownWrong("softmax over the tokens", _comb_softmax_over_tokens,
                       "The softmax went over dim=0, the tokens. The gates of one token are a softmax over its k "
                       "chosen experts: dim=-1."),
            KnownWrong("gates detached", _comb_gates_detached,
                       "The value is right, but no gradient reaches `router_logits`: the gates were detached (or "
                       "computed from `.values` under no_grad). The router learns only through the gates."),
            KnownWrong("k ignored (top-1)", _comb_top1,
                       "You sent each token to one expert (Switch's top-1) whatever k is. Take the k best, and a "
                       "softmax over those k."),
            KnownWrong("no gradient", under_no_grad(moe.topk_combine), _NO_GRAD_HINT),
            KnownWrong("outputs scaled in place", _comb_in_place,
                       "The value is right, but you multiplied the caller's `expert_outputs` by the gates in place "
                       "(`*=`, `mul_`): the caller's expert outputs changed. Build the result in a new tensor."),
        ],
        known_right=[KnownRight("transformers' Mixtral router and expert loop", _comb_mixtral),
                     KnownRight("softmax over the top-k masked logits", _comb_masked_softmax),
                     KnownRight("float64", as_float64(moe.topk_combine))],
        atol=1e-5),
    Exercise(
        id="13.5", title="The load-balancing loss (Switch Transformer)", reference=moe.load_balancing_loss,
        cases=_lb_cases, grad_wrt=("router_logits",),
        grad_help="The router learns to balance through P_i, the mean router probability: the gradient reaches "
                  "`router_logits` through the softmax only. f_i, a count of dispatched tokens, has no gradient.",
        hint="f_i: count how many of the N · k token-to-expert assignments (each token's top-k experts, all k of "
             "them) go to expert i, divided by N · k; P_i: the softmax over the E experts, averaged over the tokens; "
             "return alpha · E · Σ_i f_i · P_i (a scalar; alpha when the load is even).",
        known_wrong=[
            KnownWrong("f from the probabilities", _lb_f_from_probs,
                       "You used the mean router probability for f_i too (α E Σ P_i²). f_i is the share of tokens "
                       "actually *dispatched* to expert i: count each token's top-k choices (`bincount` of the "
                       "indices), a hard count with no gradient."),
            KnownWrong("factor E missing (or a mean over experts)", _lb_no_E,
                       "Your value is E times too small: you left out the factor E, or took the mean over experts "
                       "instead of the sum (mean = sum / E). Switch multiplies by E so that the even load gives α "
                       "whatever the number of experts."),
            KnownWrong("counts, not fractions", _lb_counts,
                       "Your f_i are raw counts. Divide by the number of assignments, N · k, so that f sums to 1."),
            KnownWrong("P summed over tokens", _lb_P_summed,
                       "You summed the router probabilities over the tokens. P_i is their *mean* over the N tokens "
                       "(so P sums to 1)."),
            KnownWrong("only the first choice counted", _lb_first_choice,
                       "You counted each token's first choice only (argmax). With top-k routing every one of the k "
                       "choices puts load on an expert: count all N · k assignments."),
            KnownWrong("f divided by N, not N · k", _lb_f_over_N,
                       "Your f sums to k: you divided the k · N assignments by N. That is transformers' Mixtral "
                       "convention (its loss is k times this one); the course divides by N · k, so that f is a "
                       "distribution and the even load gives exactly α."),
            KnownWrong("gradient through f", _lb_straight_through,
                       "The value is right, but a gradient flows through f_i. In Switch's loss f_i is a count of "
                       "dispatched tokens, not differentiable; the router is trained through P_i alone."),
            KnownWrong("alpha left out", _lb_no_alpha,
                       "Multiply by alpha, the loss's weight (Switch uses 0.01)."),
            KnownWrong("P from the renormalised gates", _lb_P_from_gates,
                       "Your P_i averages the top-k gates (0 for the experts not chosen). P_i is the mean of the full "
                       "softmax over all E experts: an expert that is never chosen still has probability, and the "
                       "loss must be able to raise it."),
            KnownWrong("softmax over the tokens", _lb_softmax_over_tokens,
                       "The softmax went over dim=0, the tokens. The router's probabilities are, for each token, a "
                       "softmax over the E experts: dim=-1."),
            KnownWrong("no gradient", under_no_grad(moe.load_balancing_loss), _NO_GRAD_HINT),
        ],
        known_right=[KnownRight("transformers' load_balancing_loss_func / k", _lb_transformers_form),
                     KnownRight("one-hot counts", _lb_one_hot),
                     KnownRight("float64", as_float64(moe.load_balancing_loss))],
        atol=1e-6),
)
