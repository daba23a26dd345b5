"""Sparse mixture of experts: top-k routing, the gated combine, the load-balancing loss, a tiny MoE GPT.

Shapes: N tokens (B·T flattened), C = n_embd channels, E experts, k experts per token, H an expert's hidden width.

**The layer** (Shazeer et al. 2017, "Outrageously large neural networks"; Mixtral, Jiang et al. 2024). A linear
router scores every expert for every token, ``z = x W_r`` (N, E). Each token goes to its k best experts
``S = topk(z)``; their gates are the softmax over *those k logits only*,

    g_i = exp(z_i) / Σ_{j∈S} exp(z_j)   for i ∈ S,   0 otherwise,

and the layer's output is the gated sum of the chosen experts' outputs, ``y = Σ_{i∈S} g_i · MLP_i(x)``. The
softmax over the k chosen logits equals the softmax over all E renormalised over the chosen k (the common
denominator cancels), which is how transformers' Mixtral writes it; top-k of the probabilities is top-k of the
logits, since softmax is monotone. Mixtral: E = 8, k = 2. Only k of E expert MLPs run per token, so the *active*
parameters per token are a fraction of the *total*. Ties between logits (measure zero for real-valued logits) go
to the lower expert index (`torch.sort` with ``stable=True``).

No capacity factor: every expert takes every token sent to it (Switch Transformer drops tokens past a fixed
per-expert capacity so that batched kernels have static shapes; a loop over experts on a CPU does not need that).

**The load-balancing loss** (Switch Transformer, Fedus et al. 2022, eq. 4–6). Left alone, a router collapses:
the experts that win early get trained more, so they win more, and a few experts take most tokens (the others
are dead weight). The auxiliary loss

    L_aux = α · E · Σ_i f_i · P_i,   f_i = (tokens dispatched to i) / (N · k),   P_i = (1/N) Σ_x softmax(z(x))_i

is smallest, α, when the load is even (f_i = P_i = 1/E). f_i is a count (no gradient); the router learns through
P_i, which is pushed down where f_i is large. For k = 1 this is Switch's equation 4 exactly. For k > 1 the course
divides the dispatch counts by N · k so that f sums to 1 and the balanced value stays α; transformers'
`load_balancing_loss_func` divides by N, so its f sums to k and its value is k times the course's (with α = 1);
and for several layers it pools f and P over the layers before the product, where the course averages the
per-layer losses (the tests pin both differences). Switch's α = 0.01.

**The model.** `moe_gpt` builds the course GPT (`llmcourse.model.GPT`, unchanged) and swaps each block's MLP for
an `MoEMLP`; `dense_gpt` swaps it for a plain MLP of another hidden width, for the two dense baselines of the
benchmark (the same *active* parameters per token, the same *total*). Both re-initialise the new layers as GPT
does (normal(0, 0.02), the residual projection scaled by 1/√(2·n_layer)).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmcourse.base_model import BaseRecipe
from llmcourse.model import GPT, GPTConfig
from llmcourse.pretraining import TrainConfig

_BASE = BaseRecipe()
"""The base model's recipe, which the MoE comparison shortens."""

# --------------------------------------------------------------------------- routing and the combine


def route(router_logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k experts per token and their renormalised gates.

    router_logits: (N, E) -> indices (N, k) long, best first; gates (N, k), each row a softmax over the k chosen
    logits (sums to 1). Ties go to the lower expert index. Differentiable in ``router_logits`` through the gates.

    >>> idx, g = route(torch.tensor([[0.0, 2.0, math.log(3.0) + 2.0, -1.0]]), k=2)
    >>> idx.tolist(), [round(x, 4) for x in g[0].tolist()]
    ([[2, 1]], [0.75, 0.25])
    """
    order = torch.sort(router_logits, dim=-1, descending=True, stable=True).indices   # (N, E)
    indices = order[:, :k]                                                            # (N, k)
    top_logits = router_logits.gather(-1, indices)                                    # (N, k)
    gates = F.softmax(top_logits, dim=-1)                                             # (N, k), rows sum to 1
    return indices, gates


def topk_combine(router_logits: torch.Tensor, expert_outputs: torch.Tensor, k: int) -> torch.Tensor:
    """The gated sum of each token's k chosen experts: ``y[n] = Σ_j gates[n, j] · expert_outputs[indices[n, j], n]``.

    router_logits: (N, E); expert_outputs: (E, N, C), every expert's output for every token (the readable,
    dense form: a real layer runs each expert only on its own tokens, `MoEMLP`) -> (N, C).
    """
    indices, gates = route(router_logits, k)                                          # (N, k), (N, k)
    N = router_logits.size(0)
    tokens = torch.arange(N, device=router_logits.device).unsqueeze(-1)               # (N, 1)
    chosen = expert_outputs[indices, tokens]                                          # (N, k, C)
    return (gates.unsqueeze(-1) * chosen).sum(dim=1)                                  # (N, C)


# --------------------------------------------------------------------------- the load-balancing loss


def dispatch_fractions(router_logits: torch.Tensor, k: int) -> torch.Tensor:
    """f: (E,) the share of the N · k token-to-expert assignments that go to each expert (sums to 1; no gradient)."""
    N, E = router_logits.shape
    indices, _ = route(router_logits.detach(), k)                                     # (N, k)
    counts = torch.bincount(indices.reshape(-1), minlength=E)                         # (E,)
    return counts.to(router_logits.dtype) / (N * k)


def load_balancing_loss(router_logits: torch.Tensor, k: int, alpha: float = 0.01) -> torch.Tensor:
    """Switch Transformer's auxiliary loss ``α · E · Σ_i f_i · P_i`` for one layer's router logits.

    router_logits: (N, E) -> scalar. f_i: `dispatch_fractions` (counts over all k choices, divided by N · k, no
    gradient); P_i: the mean over tokens of the full softmax over the E experts. Equals α when the load is even.

    >>> round(load_balancing_loss(torch.zeros(6, 3) + torch.eye(3).repeat(2, 1), k=1, alpha=1.0).item(), 6)
    1.0
    """
    E = router_logits.size(-1)
    f = dispatch_fractions(router_logits, k)                                          # (E,), sums to 1
    P = F.softmax(router_logits, dim=-1).mean(dim=0)                                  # (E,), sums to 1
    return alpha * E * (f * P).sum()


# --------------------------------------------------------------------------- the layer


class FeedForward(nn.Module):
    """The GPT's MLP with a chosen hidden width: ``c_proj(gelu(c_fc(x)))``, C -> H -> C."""

    def __init__(self, n_embd: int, hidden: int):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, hidden)
        self.c_proj = nn.Linear(hidden, n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class MoEMLP(nn.Module):
    """E expert `FeedForward`s and a linear router (no bias); each token runs through its top-k experts only.

    ``forward`` keeps the last router logits (N, E) and dispatch indices (N, k) in ``self.router_logits`` and
    ``self.indices``, for the load-balancing loss and the router statistics.
    """

    def __init__(self, n_embd: int, n_experts: int, k: int, expert_hidden: int):
        super().__init__()
        self.router = nn.Linear(n_embd, n_experts, bias=False)
        self.experts = nn.ModuleList(FeedForward(n_embd, expert_hidden) for _ in range(n_experts))
        self.k = k
        self.router_logits: torch.Tensor | None = None
        self.indices: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])                                                  # (N, C)
        logits = self.router(x)                                                       # (N, E)
        indices, gates = route(logits, self.k)                                        # (N, k), (N, k)
        out = torch.zeros_like(x)                                                     # (N, C)
        for e, expert in enumerate(self.experts):                                     # only expert e's tokens
            token, slot = torch.where(indices == e)                                   # (n_e,), (n_e,)
            # an expert with no tokens still runs, on 0 rows: its gradient is then 0 rather than None
            y = expert(x[token]) * gates[token, slot].unsqueeze(-1)                   # (n_e, C)
            out = out.index_add(0, token, y)
        self.router_logits, self.indices = logits, indices
        return out.view(shape)                                                        # (B, T, C)


# --------------------------------------------------------------------------- the recipe


@dataclass
class MoEConfig:
    """The MoE layer's shape and its balancing loss (Mixtral's E and k, at the course's width)."""

    n_experts: int = 8
    """E, experts per layer (Mixtral: 8)."""
    k: int = 2
    """Experts per token (Mixtral: 2)."""
    expert_hidden: int = 256
    """An expert's hidden width H = 2C: k = 2 experts then hold the dense GPT's 4C = 512 hidden units, so the MoE
    GPT has the course GPT's active parameters per token (plus the router) and E/k = 4 times its MLP weights."""
    alpha: float = 0.01
    """Weight of the load-balancing loss, averaged over the layers (Switch Transformer's α; 0 turns it off)."""


@dataclass
class MoERecipe:
    """Chapter 13's MoE comparison: four GPTs trained the same way on the task world's pretraining stream.

    ``moe`` (balanced), the same with α = 0 (``no_balance``: router collapse), ``dense_active`` (a dense GPT whose
    MLP has k·H hidden units: the MoE's active parameters per token, i.e. the course GPT) and ``dense_total`` (a
    dense GPT whose MLP has E·H hidden units: the MoE's total parameters)."""

    model: GPTConfig = field(default_factory=GPTConfig)
    """The GPT's shape apart from the MLPs (the course GPT's: 4 layers, 4 heads, width 128)."""
    moe: MoEConfig = field(default_factory=MoEConfig)
    """The MoE layers."""
    train: TrainConfig = field(default_factory=lambda: replace(_BASE.pretrain, steps=600, warmup_steps=30))
    """Stage 1, pretraining on packed transcripts: the base model's schedule shortened (1,400 steps there) to fit
    3 seeds × 4 models in about an hour on one thread (~0.2 / 0.35 / 0.55 s per step for dense-active / MoE /
    dense-total); the same batches for every model."""
    sft: TrainConfig = field(default_factory=lambda: replace(_BASE.sft, steps=300))
    """Stage 2, SFT on reasoned responses: the base model's SFT schedule shortened (800 steps there). After 600 + 300
    steps the course GPT answers about a third of the held-out problems greedily: room to differ both ways."""
    n_sft_problems: int = _BASE.n_sft_problems
    """Problems of the SFT set (the base model's)."""
    sft_reasoned_share: float = 1.0
    """Every SFT response reasoned (chapter 06's SFT): the models are compared on how well they reason."""
    n_problems: int = 20_000
    """Problems in the pretraining stream (the base model's has 60,000; 600 steps of 32 windows see about 20,000)."""
    reasoned_share: float = _BASE.pretrain_reasoned_share
    """Share of reasoned transcripts (the base model's pretraining mix)."""
    seed: int = 0
    """Seed of the initialisation; the data stream and batches are the same for every model and seed."""


RECIPE = MoERecipe()
"""The benchmark's recipe (seeds 0, 1, 2)."""
DEMO = replace(RECIPE, train=replace(RECIPE.train, steps=40, warmup_steps=10, batch_size=16))
"""A short run for the notebook (~8 s per model on one thread): 40 steps of 16 windows are enough for the router to
start collapsing without the balancing loss (the last layer's busiest expert near 0.46 of the assignments, against
0.27 with it)."""


# --------------------------------------------------------------------------- the models


def _init_like_gpt(module: nn.Module, n_layer: int) -> None:
    """GPT's initialisation for a swapped-in layer: Linear weights normal(0, 0.02), biases 0, ``c_proj`` scaled."""
    for name, m in module.named_modules():
        if isinstance(m, nn.Linear):
            std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("c_proj") else 0.02
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def moe_gpt(cfg: GPTConfig, moe: MoEConfig) -> GPT:
    """The course GPT with every block's MLP replaced by an `MoEMLP` (drawn from torch's global seed)."""
    model = GPT(cfg)
    for block in model.blocks:
        block.mlp = MoEMLP(cfg.n_embd, moe.n_experts, moe.k, moe.expert_hidden)
        _init_like_gpt(block.mlp, cfg.n_layer)
    return model


def dense_gpt(cfg: GPTConfig, hidden: int) -> GPT:
    """The course GPT with every block's MLP of ``hidden`` units (4·n_embd is `GPT` itself, bit for bit)."""
    model = GPT(cfg)
    if hidden != 4 * cfg.n_embd:
        for block in model.blocks:
            block.mlp = FeedForward(cfg.n_embd, hidden)
            _init_like_gpt(block.mlp, cfg.n_layer)
    return model


def moe_layers(model: GPT) -> list[MoEMLP]:
    """The model's MoE layers, in order (empty for a dense GPT)."""
    return [b.mlp for b in model.blocks if isinstance(b.mlp, MoEMLP)]


def aux_loss(model: GPT, alpha: float) -> torch.Tensor:
    """The load-balancing loss of the last forward pass, averaged over the MoE layers (0 for a dense GPT)."""
    layers = moe_layers(model)
    if not layers or alpha == 0:
        return torch.zeros(())
    return torch.stack([load_balancing_loss(m.router_logits, m.k, alpha) for m in layers]).mean()


def parameter_counts(model: GPT) -> dict[str, int]:
    """``total`` parameters and ``active`` per token: an MoE layer counts its router and k of its E experts."""
    total = model.n_params()
    inactive = 0
    for m in moe_layers(model):
        per_expert = sum(p.numel() for p in m.experts[0].parameters())
        inactive += (len(m.experts) - m.k) * per_expert
    return {"total": total, "active": total - inactive}


# --------------------------------------------------------------------------- router statistics


def expert_load(indices: torch.Tensor, n_experts: int) -> torch.Tensor:
    """(E,) share of the token-to-expert assignments each expert got (sums to 1), from dispatch indices (N, k).

    Each token makes k assignments to k *different* experts, so one expert's share is at most 1/k (0.5 for top-2):
    full collapse of a top-2 router is two experts at 0.5 and the others at 0. The load-balancing loss's f."""
    counts = torch.bincount(indices.reshape(-1), minlength=n_experts).double()
    return counts / counts.sum()


def load_stats(load: torch.Tensor, dead_below: float = 0.01) -> dict[str, float]:
    """How even a load (E,) is: ``max_share``; ``entropy_ratio`` = entropy / log E (1 for an even load, 0 when one
    expert takes everything); ``dead`` = experts getting less than ``dead_below`` of the assignments.

    >>> load_stats(torch.tensor([0.25, 0.25, 0.25, 0.25]))
    {'max_share': 0.25, 'entropy_ratio': 1.0, 'dead': 0}
    """
    p = load.double()
    entropy = -(p[p > 0] * p[p > 0].log()).sum().item()
    return {"max_share": round(p.max().item(), 6), "entropy_ratio": round(entropy / math.log(len(p)), 6),
            "dead": int((p < dead_below).sum().item())}


@torch.no_grad()
def router_loads(model: GPT, x: torch.Tensor) -> list[torch.Tensor]:
    """Per MoE layer, the load (E,) of the tokens in ``x`` (B, T)."""
    was_training = model.training
    model.eval()
    model(x)
    model.train(was_training)
    return [expert_load(m.indices, len(m.experts)) for m in moe_layers(model)]


# --------------------------------------------------------------------------- training and evaluation

KINDS = ("moe", "no_balance", "dense_active", "dense_total")
"""The four models of the comparison (see `MoERecipe`)."""


def make_model(kind: str, recipe: MoERecipe) -> GPT:
    """One of `KINDS`, initialised from ``recipe.seed``, with the course tokenizer's vocabulary."""
    from llmcourse.tokenizer import get_encoding

    cfg = replace(recipe.model, vocab_size=get_encoding().n_vocab)
    torch.manual_seed(recipe.seed)
    if kind in ("moe", "no_balance"):
        return moe_gpt(cfg, recipe.moe)
    hidden = {"dense_active": recipe.moe.k, "dense_total": recipe.moe.n_experts}[kind] * recipe.moe.expert_hidden
    return dense_gpt(cfg, hidden)


def held_out_windows(block_size: int, reasoned_share: float) -> torch.Tensor:
    """(W, block_size) non-overlapping windows of the 256 held-out problems' transcripts, packed (styles seeded)."""
    from llmcourse import taskworld as tw
    from llmcourse.tokenizer import encode

    problems = tw.eval_problems()
    ids: list[int] = []
    for p, style in zip(problems, tw.draw_styles(len(problems), reasoned_share, seed=999)):
        ids += encode(tw.transcript(p, style))
    n = len(ids) // block_size
    return torch.tensor(ids[:n * block_size], dtype=torch.long).view(n, block_size)


@torch.no_grad()
def held_out_loss(model: GPT, windows: torch.Tensor) -> float:
    """Mean next-token loss on ``windows`` (W, T)."""
    from llmcourse.pretraining import next_token_loss

    was_training = model.training
    model.eval()
    loss = next_token_loss(model(windows), windows).item()
    model.train(was_training)
    return loss


def train_moe(kind: str, recipe: MoERecipe = RECIPE, progress: bool = True, log_every: int = 20) -> tuple[GPT, dict]:
    """Stage 1: pretrain one of `KINDS` on the task world's packed stream with `llmcourse.pretraining.train`.

    The loss is the next-token loss plus, for ``"moe"``, `aux_loss` (α from ``recipe.moe``; ``"no_balance"`` uses
    α = 0). Returns the model and a history: ``lm_loss`` per step, ``loss`` (with the auxiliary term),
    ``load_steps`` and ``loads`` (every ``log_every`` steps: per layer, the training batch's expert load),
    ``seconds_per_step``, ``params`` (`parameter_counts`).
    """
    from llmcourse.pretraining import get_batch, next_token_loss, pretraining_stream, train

    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    model = make_model(kind, recipe)
    alpha = recipe.moe.alpha if kind == "moe" else 0.0
    data = pretraining_stream(recipe.n_problems, seed=100, reasoned_share=recipe.reasoned_share)
    gen = torch.Generator().manual_seed(recipe.train.seed)
    lm_losses: list[float] = []
    load_steps: list[int] = []
    loads: list[list[list[float]]] = []

    def loss_fn(m: GPT, step: int) -> torch.Tensor:
        x, _ = get_batch(data, recipe.train.batch_size, m.cfg.block_size, gen)
        lm = next_token_loss(m(x), x)
        lm_losses.append(lm.item())
        layers = moe_layers(m)
        if layers and (step % log_every == 0 or step == recipe.train.steps - 1):
            load_steps.append(step)
            loads.append([expert_load(layer.indices, len(layer.experts)).tolist() for layer in layers])
        return lm + aux_loss(m, alpha)

    history = train(model, loss_fn, recipe.train, progress=progress, desc=kind)
    history.update(lm_loss=lm_losses, load_steps=load_steps, loads=loads, params=parameter_counts(model),
                   seconds_per_step=history["seconds"][0] / recipe.train.steps)
    return model, history


def finetune_moe(model: GPT, kind: str, recipe: MoERecipe = RECIPE, progress: bool = False) -> dict:
    """Stage 2 for one of `KINDS`: response-only SFT (`llmcourse.sft.sft_loss`) on ``recipe.n_sft_problems``
    problems, plus `aux_loss` for ``"moe"`` as in pretraining. Returns `llmcourse.pretraining.train`'s history."""
    from llmcourse import taskworld as tw
    from llmcourse.pretraining import train
    from llmcourse.sft import encode_example, example_sampler, sft_loss
    from llmcourse.tokenizer import special_id

    alpha = recipe.moe.alpha if kind == "moe" else 0.0
    problems = tw.sample_problems(recipe.n_sft_problems, seed=200)
    styles = tw.draw_styles(len(problems), recipe.sft_reasoned_share, recipe.sft.seed)
    batch = example_sampler([encode_example(p, s) for p, s in zip(problems, styles)], recipe.sft.batch_size,
                            recipe.sft.seed)
    pad = special_id(tw.PAD)

    def loss_fn(m: GPT, step: int) -> torch.Tensor:
        return sft_loss(m, *batch(step), pad) + aux_loss(m, alpha)
    return train(model, loss_fn, recipe.sft, progress=progress, desc=f"{kind} sft")


# --------------------------------------------------------------------------- the benchmark's results

RESULTS_PATH = Path(__file__).parent / "data" / "moe.json"
"""What ``python -m llmcourse bench --skip-notebooks --only moe`` writes for chapter 13 (3 seeds where trained)."""


def load_results(path: Path = RESULTS_PATH) -> dict:
    """Chapter 13's measured mixture of experts results (see `RESULTS_PATH`)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
