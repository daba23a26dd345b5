"""Chapter 06 exercises: the LoRA forward, its initialisation, parameter counts, merging, DoRA."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from llmcourse import lora
from llmcourse.tooling.checker import Exercise, KnownRight, KnownWrong, Observed, as_float64, register, under_no_grad, updates_in_place


def _randn(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return torch.from_numpy(rng.normal(0.0, scale, shape).astype(np.float32))


# --------------------------------------------------------------------------- 6.1 the LoRA forward

_W = [[1., 0., 2.], [0., 1., -1.]]                                     # the chapter's hand-worked example


def _forward_cases(rng: np.random.Generator) -> list[dict]:
    hand = dict(x=torch.tensor([[1., 2., 3.], [0., -1., 1.]]), W=torch.tensor(_W), b=torch.tensor([0.5, -1.]),
                A=torch.tensor([[1., 1., 0.]]), B=torch.tensor([[2.], [-1.]]), alpha=2, r=1)
    cases = [hand]
    for lead, d_in, d_out, r, alpha, bias in [((4,), 5, 3, 2, 4, True), ((2, 3), 6, 4, 4, 8, True),
                                              ((3,), 4, 7, 3, 1, True), ((2,), 5, 4, 2, 2, False),
                                              ((), 6, 6, 2, 3, True)]:                # a square W, one token x (d_in,)
        cases.append(dict(x=_randn(rng, *lead, d_in), W=_randn(rng, d_out, d_in), b=_randn(rng, d_out) if bias else None,
                          A=_randn(rng, r, d_in), B=_randn(rng, d_out, r), alpha=alpha, r=r))
    return cases


def _fwd_alpha(x, W, b, A, B, alpha, r):
    return F.linear(x, W, b) + alpha * ((x @ A.T) @ B.T)


def _fwd_rslora(x, W, b, A, B, alpha, r):
    return F.linear(x, W, b) + alpha / math.sqrt(r) * ((x @ A.T) @ B.T)


def _fwd_floor_division(x, W, b, A, B, alpha, r):
    return F.linear(x, W, b) + alpha // r * ((x @ A.T) @ B.T)


def _fwd_no_scaling(x, W, b, A, B, alpha, r):
    return F.linear(x, W, b) + (x @ A.T) @ B.T


def _fwd_no_bias(x, W, b, A, B, alpha, r):
    return x @ W.T + alpha / r * ((x @ A.T) @ B.T)


def _fwd_update_only(x, W, b, A, B, alpha, r):
    return (b if b is not None else 0.0) + alpha / r * ((x @ A.T) @ B.T)


def _fwd_merges_into_W(x, W, b, A, B, alpha, r):
    W += alpha / r * (B @ A)                                           # merges into the caller's frozen weight
    return F.linear(x, W, b)


def _fwd_merged(x, W, b, A, B, alpha, r):
    return F.linear(x, W + alpha / r * (B @ A), b)                     # builds the d_out × d_in update: also right


def _fwd_other_order(x, W, b, A, B, alpha, r):
    return F.linear(x, W, b) + alpha / r * (x @ (A.T @ B.T))


# --------------------------------------------------------------------------- 6.2 initialisation

_INIT_FACTS = {
    "B @ A is zero at the start":
        "with ΔW = B A = 0 the adapted model starts exactly as the base model: initialise one factor (B) to zero",
    "a gradient reaches the adapter at the start":
        "with both A and B zero every gradient is zero (∂L/∂B ∝ A x = 0 and ∂L/∂A ∝ Bᵀ… = 0): the adapter never moves",
    "rank of ΔW after one gradient step":
        "the r directions of the adapter must start different (random A), or they learn the same thing and the "
        "update stays rank 1",
    "the largest |A| in units of 1/√d_in (20,000 draws)":
        "draw A uniformly between −1/√d_in and +1/√d_in (`A.uniform_(-bound, bound, generator=generator)` with "
        "bound = 1 / d_in ** 0.5), the range nn.Linear and PEFT use",
    "A looks uniform on [−1/√d_in, 1/√d_in] (20,000 draws)":
        "the entries of A must be spread uniformly over the whole range [−1/√d_in, 1/√d_in] (mean 0, std "
        "1/√(3 d_in)): not a normal distribution, not only positive values, not a narrower range",
    "another generator seed gives another A":
        "A must come from the generator you are given, as it is: do not seed it again or make your own "
        "(`torch.manual_seed`, `torch.Generator().manual_seed(0)`, NumPy), or every seed gives the same adapter",
    "the same generator seed gives the same (A, B)":
        "draw A with the `generator` argument (`A.uniform_(-bound, bound, generator=generator)`), not torch's global "
        "random numbers: then the same seed gives the same adapter, whatever else the program drew before",
}


def _init_cases(rng: np.random.Generator) -> list[dict]:
    cases = [dict(d_in=3, d_out=2, r=1), dict(d_in=8, d_out=6, r=2), dict(d_in=16, d_out=48, r=4)]
    cases.append(dict(d_in=int(rng.integers(8, 40)), d_out=int(rng.integers(8, 40)), r=int(rng.integers(2, 7))))
    return cases


def _run_init(fn, case):
    def draw(seed: int, global_seed: int, **sizes):
        # the learner's generator, seeded `seed`; torch's global RNG seeded `global_seed`
        torch.manual_seed(global_seed)
        return fn(**(sizes or case), generator=torch.Generator().manual_seed(seed))
    with torch.random.fork_rng(devices=[]):                            # leave the caller's global RNG as it was
        out, again, other = draw(1234, 1), draw(1234, 2), draw(4321, 1)
        big = draw(7, 3, d_in=400, d_out=8, r=50)                       # 20,000 entries of A: its distribution
        fn(**case)                                                     # generator left out: its default, None
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        return Observed({"A.shape": "not returned: return the pair (A, B)", "B.shape": "not returned"})
    if not all(isinstance(t, torch.Tensor) for t in out):
        return Observed({f"{n}.shape": f"not a torch.Tensor but {type(t).__module__.split('.')[0]}.{type(t).__name__}"
                         for n, t in zip("AB", out)})
    A, B = out
    value = {"A.shape": tuple(A.shape), "B.shape": tuple(B.shape), "A.dtype": A.dtype, "B.dtype": B.dtype,
             "B is all zero": bool(torch.all(B == 0))}
    if value != {"A.shape": (case["r"], case["d_in"]), "B.shape": (case["d_out"], case["r"]),
                 "A.dtype": torch.float32, "B.dtype": torch.float32, "B is all zero": True} and not (
            value["A.shape"] == (case["r"], case["d_in"]) and value["B.shape"] == (case["d_out"], case["r"])
            and A.is_floating_point() and B.is_floating_point()):
        return Observed(value)                                         # the value check says what is wrong
    a = big[0].detach().double().flatten()                             # (20000,)
    b400 = 1.0 / math.sqrt(400)
    uniform = bool(a.abs().max() <= b400 * (1 + 1e-6) and abs(a.mean()) < 0.05 * b400
                   and abs(a.std() / (b400 / math.sqrt(3)) - 1) < 0.05)  # U(−b, b) has std b/√3
    g = torch.Generator().manual_seed(0)                               # a batch and an upstream gradient, fixed
    x = torch.randn(32, case["d_in"], generator=g, dtype=torch.float64)
    G = torch.randn(32, case["d_out"], generator=g, dtype=torch.float64)
    A, B = (t.detach().to(torch.float64).requires_grad_(True) for t in (A, B))   # float64: a clean numerical rank
    loss = (G * ((x @ A.T) @ B.T)).sum()
    gA, gB = torch.autograd.grad(loss, [A, B])
    with torch.no_grad():
        A1, B1 = A - gA, B - gB                                        # one step of gradient descent
        rank = int(torch.linalg.matrix_rank(B1 @ A1))
        facts = {"B @ A is zero at the start": bool(torch.all(B @ A == 0)),
                 "a gradient reaches the adapter at the start": bool(gA.abs().sum() + gB.abs().sum() > 0),
                 "rank of ΔW after one gradient step": rank,
                 "the largest |A| in units of 1/√d_in (20,000 draws)": round(float(a.abs().max()) / b400, 2),
                 "A looks uniform on [−1/√d_in, 1/√d_in] (20,000 draws)": uniform,
                 "the same generator seed gives the same (A, B)": all(torch.equal(t, u) for t, u in zip(out, again)),
                 "another generator seed gives another A": not torch.equal(out[0], other[0])}
    return Observed(value, facts)


def _init_both_zero(d_in, d_out, r, generator=None):
    return torch.zeros(r, d_in), torch.zeros(d_out, r)


def _init_both_random(d_in, d_out, r, generator=None):
    return (torch.randn(r, d_in, generator=generator) / math.sqrt(d_in),
            torch.randn(d_out, r, generator=generator) / math.sqrt(r))


def _init_A_constant(d_in, d_out, r, generator=None):
    return torch.full((r, d_in), 1.0 / math.sqrt(d_in)), torch.zeros(d_out, r)


def _init_transposed(d_in, d_out, r, generator=None):
    A, B = lora.init_lora(d_in, d_out, r, generator)
    return A.T.contiguous(), B.T.contiguous()                          # the x @ A @ B convention: A (d_in, r)


def _init_global_rng(d_in, d_out, r, generator=None):
    return lora.init_lora(d_in, d_out, r)                              # ignores `generator`: torch's global RNG


def _init_gaussian(d_in, d_out, r, generator=None):
    return torch.randn(r, d_in, generator=generator) / math.sqrt(d_in), torch.zeros(d_out, r)


def _init_A_zero(d_in, d_out, r, generator=None):
    bound = 1.0 / math.sqrt(d_in)
    return torch.zeros(r, d_in), torch.empty(d_out, r).uniform_(-bound, bound, generator=generator)   # swapped


def _init_kaiming_default(d_in, d_out, r, generator=None):
    A = torch.empty(r, d_in)
    torch.nn.init.kaiming_uniform_(A, generator=generator)            # a = 0: bound √(6 / d_in), not 1/√d_in
    return A, torch.zeros(d_out, r)


def _init_positive(d_in, d_out, r, generator=None):
    return torch.rand(r, d_in, generator=generator) / math.sqrt(d_in), torch.zeros(d_out, r)   # [0, b), not [−b, b]


def _init_reseeds(d_in, d_out, r, generator=None):
    return lora.init_lora(d_in, d_out, r, torch.Generator().manual_seed(0))   # its own generator, always seed 0


def _init_float64(d_in, d_out, r, generator=None):
    A, B = lora.init_lora(d_in, d_out, r, generator)
    return A.double(), B.double()


def _init_kaiming_a5(d_in, d_out, r, generator=None):
    A = torch.empty(r, d_in)
    torch.nn.init.kaiming_uniform_(A, a=math.sqrt(5), generator=generator)   # PEFT's call: bound 1/√d_in
    return A, torch.zeros(d_out, r)


def _init_rand_affine(d_in, d_out, r, generator=None):
    bound = 1.0 / math.sqrt(d_in)
    return (2 * torch.rand(r, d_in, generator=generator) - 1) * bound, torch.zeros(d_out, r)


# --------------------------------------------------------------------------- 6.3 parameter counts


def _gpt_shapes(C: int, n_layer: int) -> list[tuple[int, int]]:
    return [(3 * C, C), (C, C), (4 * C, C), (C, 4 * C)] * n_layer


def _count_cases(rng: np.random.Generator) -> list[dict]:
    cases = [dict(shapes=[(6, 2)], r=1), dict(shapes=[(2, 3)], r=1, dora=True),
             dict(shapes=_gpt_shapes(128, 1), r=4), dict(shapes=_gpt_shapes(128, 4), r=8, dora=True)]
    n = int(rng.integers(2, 6))
    shapes = [(int(rng.integers(4, 300)), int(rng.integers(4, 300))) for _ in range(n)]
    cases += [dict(shapes=shapes, r=int(rng.integers(1, 17)), dora=bool(d)) for d in (False, True)]
    return cases


def _count_full_rank(shapes, r, dora=False):
    return sum(r * d_in * d_out + (d_out if dora else 0) for d_out, d_in in shapes)


def _count_square(shapes, r, dora=False):
    return sum(2 * r * d_in + (d_out if dora else 0) for d_out, d_in in shapes)


def _count_with_frozen(shapes, r, dora=False):
    return sum(r * (d_in + d_out) + d_out * d_in + (d_out if dora else 0) for d_out, d_in in shapes)


def _count_magnitude_per_input(shapes, r, dora=False):
    return sum(r * (d_in + d_out) + (d_in if dora else 0) for d_out, d_in in shapes)


def _count_no_magnitude(shapes, r, dora=False):
    return sum(r * (d_in + d_out) for d_out, d_in in shapes)


# --------------------------------------------------------------------------- 6.4 merging


def _merge_cases(rng: np.random.Generator) -> list[dict]:
    cases = [dict(W=torch.tensor(_W), A=torch.tensor([[1., 1., 0.]]), B=torch.tensor([[2.], [-1.]]), alpha=2, r=1)]
    for d_out, d_in, r, alpha in [(4, 5, 2, 4), (6, 3, 3, 1), (8, 8, 4, 16)]:
        cases.append(dict(W=_randn(rng, d_out, d_in), A=_randn(rng, r, d_in), B=_randn(rng, d_out, r), alpha=alpha, r=r))
    return cases


def _merge_alpha(W, A, B, alpha, r):
    return W + alpha * (B @ A)


def _merge_rslora(W, A, B, alpha, r):
    return W + alpha / math.sqrt(r) * (B @ A)


def _merge_floor_division(W, A, B, alpha, r):
    return W + alpha // r * (B @ A)


def _merge_no_scaling(W, A, B, alpha, r):
    return W + B @ A


def _merge_subtracts(W, A, B, alpha, r):
    return W - alpha / r * (B @ A)


def _merge_addmm(W, A, B, alpha, r):
    return torch.addmm(W, B, A, alpha=alpha / r)


# --------------------------------------------------------------------------- 6.5 DoRA


def _dora_cases(rng: np.random.Generator) -> list[dict]:
    hand = dict(x=torch.ones(1, 3), W=torch.tensor([[3., 0., 4.], [0., 1., 0.]]), b=torch.tensor([0., 1.]),
                A=torch.tensor([[1., 0., 0.]]), B=torch.tensor([[0.], [1.]]), m=torch.tensor([10., 2.]), alpha=1, r=1)
    cases = [hand]
    for lead, d_in, d_out, r, alpha, bias in [((4,), 5, 3, 2, 4, True), ((2, 3), 6, 4, 4, 8, True),
                                              ((3,), 4, 6, 3, 1, True), ((2,), 5, 4, 2, 2, False),
                                              ((), 6, 6, 2, 3, True)]:                # a square W, one token x (d_in,)
        W = _randn(rng, d_out, d_in)
        m = lora.weight_norm(W) * torch.from_numpy(rng.uniform(0.5, 1.5, d_out).astype(np.float32))   # trained away from ‖W‖
        cases.append(dict(x=_randn(rng, *lead, d_in), W=W, b=_randn(rng, d_out) if bias else None, A=_randn(rng, r, d_in),
                          B=_randn(rng, d_out, r, scale=0.5), m=m, alpha=alpha, r=r))
    return cases


def _bias(b):
    return 0.0 if b is None else b


def _dora_columns(x, W, b, A, B, m, alpha, r):
    V = W + alpha / r * (B @ A)
    direction = V / V.norm(dim=0, keepdim=True).detach()             # normalises each *input* column
    return F.linear(x, m[:, None] * direction, b)


def _dora_no_detach(x, W, b, A, B, m, alpha, r):
    V = W + alpha / r * (B @ A)
    return (m / V.norm(dim=1)) * F.linear(x, V) + _bias(b)


def _dora_scales_bias(x, W, b, A, B, m, alpha, r):
    V = W + alpha / r * (B @ A)
    return (m / V.norm(dim=1).detach()) * F.linear(x, V, b)


def _dora_base_norm(x, W, b, A, B, m, alpha, r):
    V = W + alpha / r * (B @ A)
    return (m / W.norm(dim=1)) * F.linear(x, V) + _bias(b)             # ‖W‖, not ‖W + ΔW‖


def _dora_alpha(x, W, b, A, B, m, alpha, r):
    V = W + alpha * (B @ A)
    return (m / V.norm(dim=1).detach()) * F.linear(x, V) + _bias(b)


def _dora_frobenius(x, W, b, A, B, m, alpha, r):
    V = W + alpha / r * (B @ A)
    return (m / V.norm().detach()) * F.linear(x, V) + _bias(b)         # one norm for the whole matrix


def _dora_peft_form(x, W, b, A, B, m, alpha, r):
    s = m / (W + alpha / r * (B @ A)).norm(dim=1).detach()
    return F.linear(x, W, b) + (s - 1) * F.linear(x, W) + s * (alpha / r) * ((x @ A.T) @ B.T)


def _dora_merged_weight(x, W, b, A, B, m, alpha, r):
    V = W + alpha / r * (B @ A)
    return F.linear(x, (m / torch.linalg.norm(V, dim=1).detach())[:, None] * V, b)


# --------------------------------------------------------------------------- registry

_NO_GRAD_HINT = ("The value is right but no gradient reaches A and B: the output was computed under "
                 "`torch.no_grad()` (or detached), so training would never change the adapter. Compute it with "
                 "plain torch operations and return the tensor itself.")

_FLOAT64_HINT = ("Your result is float64 while the inputs are float32. A layer keeps the model's dtype (the model "
                 "and everything after it run in float32, and mixing the two fails with 'expected Float but found "
                 "Double'): compute in the inputs' dtype, without .double() or float64 NumPy arrays.")

register(
    Exercise(
        id="6.1", title="The LoRA forward", reference=lora.lora_forward, cases=_forward_cases,
        grad_wrt=("A", "B"),
        grad_help="Training updates the adapter through this output, so a gradient must reach A and B: no "
                  "`torch.no_grad()`, `.detach()`, `.data`, `.item()` or NumPy on the way.",
        hint="y = x Wᵀ + b + (α/r) · (x Aᵀ) Bᵀ: the frozen layer plus the scaled low-rank branch, with A (r, d_in) "
             "and B (d_out, r); F.linear(x, W, b) is x Wᵀ + b.",
        known_wrong=[
            KnownWrong("scales by α, not α/r", _fwd_alpha,
                       "You scaled the update by α. LoRA (and PEFT's `scaling = lora_alpha / r`) uses α / r, so that "
                       "changing the rank does not change the size of the update."),
            KnownWrong("rsLoRA's α/√r", _fwd_rslora,
                       "α / √r is rsLoRA's scaling (PEFT's `use_rslora=True`). This chapter uses the original α / r."),
            KnownWrong("integer division α // r", _fwd_floor_division,
                       "You scaled by α // r, Python's integer (floor) division: 3 // 2 is 1 and 1 // 3 is 0. The "
                       "scale is the real number α / r."),
            KnownWrong("no scaling", _fwd_no_scaling,
                       "The update B A x must be multiplied by α / r; you added it unscaled."),
            KnownWrong("forgets the bias", _fwd_no_bias,
                       "The frozen layer is W x + b: the bias b is part of the base output (F.linear(x, W, b))."),
            KnownWrong("only the adapter's branch", _fwd_update_only,
                       "You dropped the frozen layer's W x: LoRA *adds* (α/r) B A x to the base output W x + b, "
                       "it does not replace it."),
            KnownWrong("merges into W", _fwd_merges_into_W,
                       "Your forward added the update into W in place (`W += …`), so the caller's frozen weight "
                       "changed, and every further call would add it again. Compute the branch separately, or "
                       "build a new matrix (W + …) without writing into W."),
            KnownWrong("no gradient", under_no_grad(lora.lora_forward), _NO_GRAD_HINT),
            KnownWrong("float64 result", as_float64(lora.lora_forward), _FLOAT64_HINT),
        ],
        known_right=[KnownRight("merged weight, x (W + (α/r) B A)ᵀ", _fwd_merged),
                     KnownRight("x (Aᵀ Bᵀ)", _fwd_other_order)],
        atol=1e-5, exact_dtype=True),
    Exercise(
        id="6.2", title="Initialise the adapter", reference=lora.init_lora, cases=_init_cases, call=_run_init,
        trace_help=_INIT_FACTS,
        hint="Return (A, B) with A of shape (r, d_in), random (e.g. uniform in ±1/√d_in, as nn.Linear), and B of "
             "shape (d_out, r), zero: then B A = 0 and the adapted model starts as the base model.",
        known_wrong=[
            KnownWrong("both zero", _init_both_zero,
                       "With A = 0 and B = 0 the model does start as the base, but it is stuck there: ∂L/∂B ∝ A x = 0 "
                       "and ∂L/∂A ∝ Bᵀ … = 0, so no gradient ever moves the adapter. Keep B = 0 and make A random."),
            KnownWrong("both random", _init_both_random,
                       "With A and B both random, B A ≠ 0: the adapted model starts somewhere else than the base "
                       "model, with a random change to every layer. Initialise B to zero."),
            KnownWrong("A constant", _init_A_constant,
                       "All the rows of your A are equal, so the r components of the adapter get the same gradient "
                       "and stay copies of each other: the update is rank 1 whatever r is. Draw A at random."),
            KnownWrong("x @ A @ B shapes", _init_transposed,
                       "Your A is (d_in, r) and B (r, d_out), the convention of y = x A B. Here, as in PEFT and "
                       "nn.Linear, weights are (out, in): A is (r, d_in) and B is (d_out, r), so ΔW = B A is (d_out, d_in)."),
            KnownWrong("ignores the generator", _init_global_rng,
                       "Your A does not come from the `generator` you were given: the same seed gave different "
                       "adapters. Pass it to the draw, `A.uniform_(-bound, bound, generator=generator)` (or "
                       "`torch.rand(r, d_in, generator=generator)`), so that a seed fixes the adapter."),
            KnownWrong("seeds its own generator", _init_reseeds,
                       "Every seed gives you the same A: you draw from a generator you seeded yourself (or seed the "
                       "one you are given, or call torch.manual_seed). Draw from `generator` as it is."),
            KnownWrong("A zero, B random (swapped)", _init_A_zero,
                       "You made A zero and B random. That also starts at ΔW = 0 and can learn, but LoRA (the paper, "
                       "PEFT) and this chapter's layers make A random and B zero, and the cells below copy your A "
                       "into a layer whose B is zero: with your A = 0 both would be zero and the adapter stuck."),
            KnownWrong("a normal distribution", _init_gaussian,
                       "Your A is normally distributed. The docstring asks for the uniform distribution on "
                       "[−1/√d_in, 1/√d_in] (nn.Linear's and PEFT's default); a normal draw has no bounds. (PEFT's "
                       "init_lora_weights=\"gaussian\" is a different option.)"),
            KnownWrong("kaiming_uniform_ with its default a = 0", _init_kaiming_default,
                       "nn.init.kaiming_uniform_ with its default a = 0 draws in ±√(6/d_in), about 2.4 times too wide. "
                       "nn.Linear and PEFT call it with a = √5, which gives ±1/√d_in; or draw "
                       "A.uniform_(-bound, bound, generator=generator) directly."),
            KnownWrong("only positive values", _init_positive,
                       "torch.rand draws in [0, 1), so your A is never negative. Shift and scale it to [−b, b]: "
                       "(2 * torch.rand(...) - 1) * b, or use A.uniform_(-b, b, generator=generator)."),
            KnownWrong("float64", _init_float64,
                       "The docstring asks for float32 (the model's dtype); your A and B are float64, and copying "
                       "them into the model or adding them to its float32 weights would mix the two."),
        ],
        known_right=[KnownRight("nn.init.kaiming_uniform_(a=√5), PEFT's call", _init_kaiming_a5),
                     KnownRight("(2 rand − 1) · bound", _init_rand_affine)]),
    Exercise(
        id="6.3", title="Count the trainable parameters", reference=lora.lora_param_count, cases=_count_cases,
        hint="Each adapted (d_out, d_in) layer trains A (r × d_in) and B (d_out × r): r · (d_in + d_out) numbers; "
             "with DoRA, one magnitude per output feature adds d_out. The frozen W and b are not trained.",
        known_wrong=[
            KnownWrong("r · d_in · d_out", _count_full_rank,
                       "r · d_in · d_out would be r full matrices. A is r × d_in and B is d_out × r: their sizes add up, "
                       "r · d_in + d_out · r = r (d_in + d_out)."),
            KnownWrong("assumes square layers", _count_square,
                       "You counted 2 r d_in, as if every layer were square. B has d_out rows: r (d_in + d_out), "
                       "and the GPT's c_attn (3C × C) and MLP layers (4C × C, C × 4C) are not square."),
            KnownWrong("counts the frozen weights", _count_with_frozen,
                       "The base weight W (d_out × d_in) is frozen: it is not trained, so it is not counted."),
            KnownWrong("DoRA magnitude per input", _count_magnitude_per_input,
                       "DoRA's magnitude has one entry per *output* feature (the norm of each row of the (d_out, d_in) "
                       "weight): d_out, not d_in."),
            KnownWrong("forgets DoRA's magnitude", _count_no_magnitude,
                       "With dora=True each layer also trains its magnitude vector m, one number per output feature: "
                       "add d_out."),
        ]),
    Exercise(
        id="6.4", title="Merge the adapter", reference=lora.merge_weights, cases=_merge_cases,
        hint="Return a new tensor W + (α/r) · B A, of W's shape (d_out, d_in); leave W itself unchanged.",
        known_wrong=[
            KnownWrong("merges into W in place", updates_in_place(lora.merge_weights, "W"),
                       "You wrote the merged weight into W itself (`W += …`): the caller's base weight changed, so "
                       "the base model is gone (and merging twice adds the update twice). Return W + … as a new tensor "
                       "(LoRALinear.merge is the in-place version, and keeps track that it merged)."),
            KnownWrong("scales by α, not α/r", _merge_alpha,
                       "The merged update must be what the forward adds: (α/r) · B A, not α · B A."),
            KnownWrong("rsLoRA's α/√r", _merge_rslora,
                       "α / √r is rsLoRA's scaling (PEFT's `use_rslora=True`). This chapter's forward uses α / r, "
                       "and the merge must add exactly what the forward adds."),
            KnownWrong("integer division α // r", _merge_floor_division,
                       "You scaled by α // r, Python's integer (floor) division: 3 // 2 is 1 and 1 // 3 is 0. The "
                       "scale is the real number α / r."),
            KnownWrong("no scaling", _merge_no_scaling,
                       "You added B A unscaled; the forward multiplies it by α / r, so the merge must too."),
            KnownWrong("subtracts the update", _merge_subtracts,
                       "W − (α/r) B A is unmerging. Merging adds the update: W + (α/r) B A."),
            KnownWrong("float64 result", as_float64(lora.merge_weights), _FLOAT64_HINT),
        ],
        known_right=[KnownRight("torch.addmm", _merge_addmm)],
        atol=1e-5, exact_dtype=True),
    Exercise(
        id="6.5", title="The DoRA forward", reference=lora.dora_forward, cases=_dora_cases,
        grad_wrt=("A", "B", "m"),
        grad_help="Training updates the adapter and the magnitude through this output, so a gradient must reach A, B "
                  "and m, and none through ‖V‖: detach the norm, and nothing else.",
        hint="V = W + (α/r) B A; ‖V‖ = the norm of each row of V (dim=1), detached; y = (m / ‖V‖) ⊙ (x Vᵀ) + b.",
        known_wrong=[
            KnownWrong("norm over the wrong dim", _dora_columns,
                       "You normalised the columns of V (dim=0, one norm per input feature). DoRA's magnitude and norm "
                       "are per output feature: the norm of each row of the (d_out, d_in) weight, V.norm(dim=1), as "
                       "PEFT computes it (the paper's 'column' is a column of its d × k layout, an output feature)."),
            KnownWrong("norm not detached", _dora_no_detach,
                       "The value is right, but the gradient flows through ‖V‖. DoRA (section 4.3) and PEFT treat "
                       "‖V‖ as a constant: divide by V.norm(dim=1).detach()."),
            KnownWrong("rescales the bias", _dora_scales_bias,
                       "Only the weight is decomposed into magnitude and direction; the bias is added unscaled: "
                       "(m / ‖V‖) ⊙ (x Vᵀ) + b."),
            KnownWrong("norm of W, not of W + ΔW", _dora_base_norm,
                       "You divided by the norm of the base weight W. The direction is the adapted weight "
                       "V = W + (α/r) B A, so normalise by ‖V‖ (it changes as B and A train)."),
            KnownWrong("scales by α, not α/r", _dora_alpha,
                       "V = W + (α/r) B A: the update is scaled by α / r, as in LoRA."),
            KnownWrong("one norm for the whole matrix", _dora_frobenius,
                       "V.norm() is one number for the whole matrix (Frobenius). DoRA normalises each output "
                       "feature's row separately: V.norm(dim=1), shape (d_out,)."),
            KnownWrong("no gradient", under_no_grad(lora.dora_forward),
                       "The value is right but no gradient reaches A, B and m: the output was computed under "
                       "`torch.no_grad()` (or detached), so training would never change the adapter. Detach only ‖V‖."),
            KnownWrong("float64 result", as_float64(lora.dora_forward), _FLOAT64_HINT),
        ],
        known_right=[KnownRight("PEFT's form: base + (s − 1) W x + s (α/r) B A x", _dora_peft_form),
                     KnownRight("merged weight (m / ‖V‖) V", _dora_merged_weight)],
        atol=1e-5, exact_dtype=True),
)
