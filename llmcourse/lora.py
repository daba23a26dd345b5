"""LoRA and DoRA: fine-tune a frozen linear layer through a low-rank update.

A linear layer computes ``y = W x + b`` with W of shape (d_out, d_in). LoRA (Hu et al. 2021)
freezes W and learns a rank-r update ``ΔW = (α/r) · B A``::

    y = W x + b + (α/r) · B (A x)        A: (r, d_in), B: (d_out, r), r << min(d_in, d_out)

A starts random (Kaiming-uniform, as ``nn.Linear`` and PEFT do) and B starts at zero, so ΔW = 0
and the adapted model starts *exactly* equal to the base model, while a gradient still reaches
B (and, through B, later A). The layer trains r·(d_in + d_out) numbers instead of d_in·d_out.
After training the update can be merged, ``W ← W + (α/r) B A``, so inference costs nothing extra.

DoRA (Liu et al. 2024) splits the adapted weight into a magnitude and a direction: one
trainable magnitude per output feature times the unit-norm rows of W + (α/r) B A.

Shapes: N (or any leading dims) tokens, d_in input features, d_out output features, r rank.
The functions (`lora_forward`, `lora_delta`, `merge_weights`, `dora_forward`) are the math;
the modules (`LoRALinear`, `DoRALinear`) and `inject_lora` put it into the course's GPT;
`sft_run` is chapter 06's experiment (SFT of the base model, full or LoRA, with the chapter's settings).
PEFT's ``LoraConfig(r, lora_alpha, lora_dropout, target_modules, use_dora, use_rslora)`` is the
industrial version of the same thing (its ``scaling = lora_alpha / r``, or ``lora_alpha / √r`` with
``use_rslora=True``, rank-stabilised LoRA, Kalajdzievski 2023; here ``use_rslora`` too).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmcourse import taskworld as tw
from llmcourse.checkpoint import load_base_model
from llmcourse.model import GPT
from llmcourse.pretraining import TrainConfig
from llmcourse.sft import finetune

ADAPTER_PARAMS = ("lora_A", "lora_B", "magnitude")
"""Names of the trainable adapter parameters inside `LoRALinear` / `DoRALinear`."""

DEFAULT_TARGETS = ("attn", "mlp")
"""`inject_lora`'s default: every linear layer of the attention and MLP sub-blocks."""


# --------------------------------------------------------------------------- the math, as functions


def lora_scaling(alpha: float, r: int, use_rslora: bool = False) -> float:
    """The factor in front of B A: α / r (the original LoRA and PEFT's default), or α / √r (rsLoRA).

    Hu et al. divide by r so that α need not be re-tuned when r changes. Kalajdzievski (2023, rank-stabilised
    LoRA) showed that with α / r larger ranks learn more slowly (their gradients collapse as r grows), and that
    α / √r is the scaling that keeps learning stable across ranks; PEFT's ``use_rslora=True``. The two agree
    at r = 1.

    >>> lora_scaling(16, 8), lora_scaling(16, 4, use_rslora=True), lora_scaling(3, 1, use_rslora=True)
    (2.0, 8.0, 3.0)
    """
    return alpha / math.sqrt(r) if use_rslora else alpha / r


def lora_delta(A: torch.Tensor, B: torch.Tensor, alpha: float, r: int, use_rslora: bool = False) -> torch.Tensor:
    """The weight update ΔW = (α/r) · B A (α/√r with ``use_rslora``): A (r, d_in), B (d_out, r) -> (d_out, d_in), rank ≤ r."""
    return lora_scaling(alpha, r, use_rslora) * (B @ A)               # (d_out, d_in)


def lora_forward(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, A: torch.Tensor,
                 B: torch.Tensor, alpha: float, r: int) -> torch.Tensor:
    """y = W x + b + (α/r) · B (A x), for x (..., d_in) -> y (..., d_out).

    W (d_out, d_in) and b (d_out,) (or None) are the frozen base layer; A (r, d_in) and
    B (d_out, r) the adapter. The adapter's branch goes through the r-dimensional bottleneck
    (x Aᵀ is (..., r)) and never builds the d_out × d_in matrix B A. Gradients flow to A and B.

    Hand-worked, r = 1, α = 2 (so α/r = 2):

    >>> W = torch.tensor([[1., 0., 2.], [0., 1., -1.]]); b = torch.tensor([0.5, -1.])
    >>> A = torch.tensor([[1., 1., 0.]]); B = torch.tensor([[2.], [-1.]])
    >>> x = torch.tensor([1., 2., 3.])
    >>> lora_forward(x, W, b, A, B, alpha=2, r=1)    # W x + b = [7.5, -2], A x = 3, 2·B·3 = [12, -6]
    tensor([19.5000, -8.0000])
    """
    base = F.linear(x, W, b)                                           # (..., d_out)
    update = (x @ A.T) @ B.T                                           # (..., r) -> (..., d_out)
    return base + lora_scaling(alpha, r) * update


def merge_weights(W: torch.Tensor, A: torch.Tensor, B: torch.Tensor, alpha: float, r: int) -> torch.Tensor:
    """W + (α/r) · B A as a new (d_out, d_in) tensor; W itself is left unchanged.

    A layer with the merged weight computes what the adapted layer computes, with no extra
    matmul. With the example of `lora_forward`:

    >>> W = torch.tensor([[1., 0., 2.], [0., 1., -1.]])
    >>> merge_weights(W, torch.tensor([[1., 1., 0.]]), torch.tensor([[2.], [-1.]]), alpha=2, r=1)
    tensor([[ 5.,  4.,  2.],
            [-2., -1., -1.]])
    """
    return W + lora_delta(A, B, alpha, r)


def weight_norm(V: torch.Tensor) -> torch.Tensor:
    """DoRA's norm: the L2 norm of each output feature's weights, V (d_out, d_in) -> (d_out,).

    That is the norm over the input dimension (``dim=1`` of torch's (d_out, d_in) layout), one
    number per output feature, as PEFT's ``DoraLinearLayer.get_weight_norm`` computes it. (The
    paper writes W as d × k with one *column* per output feature, hence "column-wise norm".)

    >>> weight_norm(torch.tensor([[3., 0., 4.], [0., 1., 0.]]))
    tensor([5., 1.])
    """
    return torch.linalg.vector_norm(V, dim=1)                          # (d_out,)


def dora_forward(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, A: torch.Tensor,
                 B: torch.Tensor, m: torch.Tensor, alpha: float, r: int) -> torch.Tensor:
    """DoRA: y = m ⊙ (V x) / ‖V‖ + b with V = W + (α/r) B A, for x (..., d_in) -> (..., d_out).

    m (d_out,) is the trainable magnitude of each output feature, ‖V‖ (d_out,) the norm of each
    row of V (`weight_norm`). As in the paper (section 4.3) and PEFT, ‖V‖ is treated as a
    constant: it is detached, so no gradient flows through it (this saves memory and changes
    little). The bias is not rescaled. With m = ‖W‖ and B = 0 this is the base layer.

    Hand-worked, α = r = 1: V = [[3, 0, 4], [1, 1, 0]] has row norms [5, √2]; with m = [10, 2]
    the rows are rescaled by [2, √2], V x = [7, 2] for x = [1, 1, 1], so y = [14, 2√2] + b:

    >>> W = torch.tensor([[3., 0., 4.], [0., 1., 0.]]); b = torch.tensor([0., 1.])
    >>> A = torch.tensor([[1., 0., 0.]]); B = torch.tensor([[0.], [1.]])
    >>> dora_forward(torch.ones(3), W, b, A, B, m=torch.tensor([10., 2.]), alpha=1, r=1)
    tensor([14.0000,  3.8284])
    """
    V = W + lora_delta(A, B, alpha, r)                                 # (d_out, d_in)
    scale = m / weight_norm(V).detach()                                # (d_out,): magnitude over norm
    y = F.linear(x, V)                                                 # (..., d_out)
    return scale * y + (b if b is not None else 0.0)


def lora_param_count(shapes: list[tuple[int, int]], r: int, dora: bool = False) -> int:
    """Trainable numbers when every linear layer of weight shape (d_out, d_in) in ``shapes`` is adapted.

    Each layer adds A (r, d_in) and B (d_out, r): r · (d_in + d_out); DoRA adds one magnitude per
    output feature, d_out more. The frozen weights and biases are not counted.

    >>> lora_param_count([(6, 2)], r=1)                  # 1 · (2 + 6); the full W has 12
    8
    >>> lora_param_count([(384, 128), (128, 128)], r=4, dora=True)   # 4·512 + 384 + 4·256 + 128
    3584
    """
    return sum(r * (d_in + d_out) + (d_out if dora else 0) for d_out, d_in in shapes)


def init_lora(d_in: int, d_out: int, r: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A (r, d_in) Kaiming-uniform (a = √5, the bound 1/√d_in of ``nn.Linear``, PEFT's default) and B (d_out, r) zero.

    B = 0 makes ΔW = B A = 0: the adapted model starts exactly equal to the base. A must not be
    zero too: with both zero every gradient of A and B is zero (∂L/∂B ∝ A x, ∂L/∂A ∝ Bᵀ …) and
    the adapter never moves.
    """
    A = torch.empty(r, d_in)
    bound = 1.0 / math.sqrt(d_in)                                      # kaiming_uniform_(a=√5) on (r, d_in)
    A.uniform_(-bound, bound, generator=generator)
    B = torch.zeros(d_out, r)
    return A, B


# --------------------------------------------------------------------------- the modules


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable rank-r update: W x + b + (α/r) B A dropout(x).

    ``base`` is kept (and frozen) as ``self.base``; ``lora_A`` (r, d_in) and ``lora_B`` (d_out, r)
    are the only trainable parameters; ``use_rslora`` scales by α/√r instead of α/r (`lora_scaling`). States:

    * ``merged``: ΔW has been added into ``base.weight`` (`merge`); the forward is then the base layer's.
    * ``disabled``: the forward is the base layer alone (see `disable_adapters`), exactly the base model's
      output, so one model serves as both the policy and its frozen reference.

    >>> _ = torch.manual_seed(0)
    >>> base = nn.Linear(3, 2)
    >>> layer = LoRALinear(base, r=1, alpha=2)
    >>> x = torch.randn(4, 3)
    >>> torch.equal(layer(x), base(x))                   # B = 0: starts exactly as the base layer
    True
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0, use_rslora: bool = False):
        super().__init__()
        if r < 1:
            raise ValueError(f"the rank r must be a positive integer, got {r}")
        self.base = base
        self.r, self.alpha, self.use_rslora = r, alpha, use_rslora
        self.scaling = lora_scaling(alpha, r, use_rslora)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, device=w.device, dtype=w.dtype))     # (r, d_in)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, device=w.device, dtype=w.dtype))    # (d_out, r)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))         # PEFT's reset_lora_parameters
        for p in base.parameters():
            p.requires_grad_(False)
        self.merged = False
        self.disabled = False

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def delta_weight(self) -> torch.Tensor:
        """ΔW = (α/r) B A (α/√r with ``use_rslora``), (d_out, d_in)."""
        return lora_delta(self.lora_A, self.lora_B, self.alpha, self.r, self.use_rslora)

    def adapter(self, x: torch.Tensor) -> torch.Tensor:
        """The adapter's branch alone, scaling · B A x: (..., d_in) -> (..., d_out) (dropout is the caller's)."""
        return self.scaling * ((x @ self.lora_A.T) @ self.lora_B.T)   # through (..., r)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.disabled:
            if self.merged:                                            # as PEFT: the base layer needs W back
                self.unmerge()
            return self.base(x)
        if self.merged:
            return self.base(x)                                        # ΔW already inside base.weight
        return self.base(x) + self.adapter(self.dropout(x))           # (..., d_out)

    @torch.no_grad()
    def merge(self) -> None:
        """W ← W + ΔW, in place; the forward then costs one matmul. Undone (within float rounding) by `unmerge`."""
        if not self.merged:
            self.base.weight += self.delta_weight()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W ← W − ΔW: the base weight back, up to float rounding."""
        if self.merged:
            self.base.weight -= self.delta_weight()
            self.merged = False

    def extra_repr(self) -> str:
        rs = ", use_rslora=True" if self.use_rslora else ""
        return f"r={self.r}, alpha={self.alpha}{rs}, merged={self.merged}, disabled={self.disabled}"


class DoRALinear(LoRALinear):
    """DoRA: y = (m / ‖V‖) ⊙ (V x) + b with V = W + (α/r) B A, ‖V‖ per output feature (detached).

    ``magnitude`` (d_out,) starts at ‖W‖ (`weight_norm`), so with B = 0 the layer starts equal to the
    base. The forward is written as PEFT writes it, base(x) + (m/‖V‖ − 1) W x + (m/‖V‖)(α/r) B A x,
    which is the formula above and gives the base layer's output bit for bit at the start.
    Trainable: ``lora_A``, ``lora_B`` and ``magnitude``.

    >>> _ = torch.manual_seed(0)
    >>> base = nn.Linear(3, 2)
    >>> x = torch.randn(4, 3)
    >>> torch.equal(DoRALinear(base, r=1, alpha=2)(x), base(x))
    True
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0, use_rslora: bool = False):
        super().__init__(base, r, alpha, dropout, use_rslora)
        self.magnitude = nn.Parameter(weight_norm(base.weight.detach()).clone())      # (d_out,)
        self._merged_norm: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.disabled:
            if self.merged:
                self.unmerge()
            return self.base(x)
        if self.merged:
            return self.base(x)
        W = self.base.weight                                           # (d_out, d_in), frozen
        norm = weight_norm(W + self.delta_weight()).detach()           # (d_out,), a constant (DoRA §4.3)
        scale = self.magnitude / norm                                  # (d_out,)
        base_out = self.base(x)                                        # W x + b, (..., d_out)
        x = self.dropout(x)                                            # one dropout mask for both terms, as PEFT
        return base_out + (scale - 1) * F.linear(x, W) + scale * self.adapter(x)

    @torch.no_grad()
    def merge(self) -> None:
        """W ← (m / ‖V‖) ⊙ V with V = W + ΔW (row-wise); ‖V‖ is kept for `unmerge`."""
        if not self.merged:
            V = self.base.weight + self.delta_weight()
            self._merged_norm = weight_norm(V)
            self.base.weight.copy_((self.magnitude / self._merged_norm)[:, None] * V)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W ← W' ‖V‖ / m − ΔW: the base weight back, up to float rounding."""
        if self.merged:
            V = self.base.weight * (self._merged_norm / self.magnitude)[:, None]
            self.base.weight.copy_(V - self.delta_weight())
            self._merged_norm = None
            self.merged = False


# --------------------------------------------------------------------------- a whole model


def _matches(name: str, targets: tuple[str, ...]) -> bool:
    """Is the module called ``name`` (e.g. ``blocks.0.attn.c_proj``) one of ``targets``?

    A target names a dotted part of the path: ``"attn"`` matches both linear layers of every
    attention block, ``"c_proj"`` the output projections of attention and MLP alike,
    ``"mlp.c_fc"`` only the MLP's first layer.
    """
    return any(f".{t}." in f".{name}." for t in targets)


def inject_lora(model: nn.Module, r: int, alpha: float, targets: tuple[str, ...] = DEFAULT_TARGETS,
                dropout: float = 0.0, dora: bool = False, use_rslora: bool = False) -> nn.Module:
    """Replace the chosen ``nn.Linear`` layers of ``model`` by `LoRALinear` (or `DoRALinear`), freeze the rest.

    The course's GPT has, per block, ``attn.c_attn`` (3C, C), ``attn.c_proj`` (C, C), ``mlp.c_fc``
    (4C, C) and ``mlp.c_proj`` (C, 4C). ``lm_head`` shares its weight with the token embedding,
    so it is not a target here. ``use_rslora``: scale by α/√r (`lora_scaling`). Changes ``model`` in place
    and returns it; afterwards only the adapters' parameters require gradients.
    """
    if any(_matches("lm_head", (t,)) for t in targets):
        raise ValueError("lm_head shares its weight with the token embedding (wte); adapt the blocks instead")
    for p in model.parameters():
        p.requires_grad_(False)
    chosen = [(name, m) for name, m in model.named_modules()
              if isinstance(m, nn.Linear) and _matches(name, targets)]
    if not chosen:
        raise ValueError(f"no nn.Linear layer of the model matches targets {targets}")
    layer_cls = DoRALinear if dora else LoRALinear
    for name, linear in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer_cls(linear, r, alpha, dropout, use_rslora))
    return model


def lora_layers(model: nn.Module) -> Iterator[LoRALinear]:
    """Every `LoRALinear` (and `DoRALinear`) in ``model``."""
    return (m for m in model.modules() if isinstance(m, LoRALinear))


def count_trainable(model: nn.Module) -> int:
    """Number of parameters that require a gradient (shared tensors counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_params(model: nn.Module) -> int:
    """Number of parameters, trainable or not (shared tensors counted once)."""
    return sum(p.numel() for p in model.parameters())


@contextlib.contextmanager
def disable_adapters(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, ``model`` computes the base model's outputs exactly (no second copy needed).

        with disable_adapters(policy):
            ref_logits = policy(ids)          # the frozen reference, as PEFT's disable_adapter() gives it

    A merged layer is unmerged first (as PEFT does), which restores W within float rounding.
    """
    layers = list(lora_layers(model))
    before = [layer.disabled for layer in layers]
    for layer in layers:
        layer.disabled = True
    try:
        yield model
    finally:
        for layer, was in zip(layers, before):
            layer.disabled = was


def merge_lora(model: nn.Module) -> nn.Module:
    """Merge every adapter into its base weight (`LoRALinear.merge`); returns ``model``."""
    for layer in lora_layers(model):
        layer.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    """Undo `merge_lora`; returns ``model``."""
    for layer in lora_layers(model):
        layer.unmerge()
    return model


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Merge every adapter and put the plain ``nn.Linear`` back: the model is an ordinary GPT again.

    Changes ``model`` in place and returns it; its parameters require gradients again.
    """
    for name, m in list(model.named_modules()):
        if isinstance(m, LoRALinear):
            m.disabled = False
            m.merge()
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, m.base)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapters' tensors (``…lora_A``, ``…lora_B``, ``…magnitude``), detached copies.

    This is what one saves after LoRA training: a few kB instead of the whole model.
    """
    return {name: p.detach().clone() for name, p in model.named_parameters()
            if name.rpartition(".")[2] in ADAPTER_PARAMS}


def load_lora_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load tensors saved by `lora_state_dict` into a model with the same adapters injected."""
    own = dict(model.named_parameters())
    missing = [k for k in own if k.rpartition(".")[2] in ADAPTER_PARAMS and k not in state]
    unknown = [k for k in state if k not in own]
    if missing or unknown:
        raise KeyError(f"adapter keys differ: missing {missing[:3]}, unexpected {unknown[:3]}")
    with torch.no_grad():
        for k, v in state.items():
            own[k].copy_(v)


# --------------------------------------------------------------------------- chapter 06's experiment

RUNS = (("full FT", None, 3e-4), ("LoRA r=1", 1, 3e-3), ("LoRA r=2", 2, 3e-3), ("LoRA r=4", 4, 3e-3),
        ("LoRA r=8", 8, 3e-3))
"""Chapter 06's runs: (name, rank or None for full fine-tuning, peak lr); each method's lr from a small sweep."""


@dataclass(frozen=True)
class RankSweep:
    """Chapter 06's rank sweep: LoRA at every rank with one fixed α, scaled by α/r and by α/√r (rsLoRA)."""

    ranks: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    """The ranks; 64 adapts half of the 128 dimensions of the model's residual stream."""
    alpha: float = 8.0
    """α, the same at every rank: the chapter's r = 4 run has α = 2r = 8, so its α/r run is that run."""
    lr: float = RUNS[3][2]
    """LoRA's peak learning rate in `RUNS` (3e-3), for every rank and both scalings; the budget is `sft_config`'s."""


RANK_SWEEP = RankSweep()
"""The sweep that `benchmarks/rank_scaling.py` measures over 3 seeds and chapter 06 quotes."""

WATCH = "blocks.1.mlp.c_fc"
"""The layer whose update chapter 06 looks at (its singular values)."""


def sft_problems() -> list[tw.Problem]:
    """Chapter 06's 2,000 training problems (never one of the held-out set)."""
    return tw.sample_problems(2000, seed=600)


def sft_config(lr: float, seed: int = 0, steps: int = 20) -> TrainConfig:
    """Chapter 06's SFT budget: ``steps`` AdamW steps of 32 examples, warmup 4 steps then cosine decay to lr / 10,
    no weight decay."""
    return TrainConfig(steps=steps, batch_size=32, max_lr=lr, min_lr=lr / 10, warmup_steps=4, seed=seed,
                       weight_decay=0.0)


def sft_run(rank: int | None, lr: float, seed: int = 0, steps: int = 20, device: str | torch.device = "cpu",
            alpha: float | None = None, use_rslora: bool = False) -> tuple[GPT, dict[str, list[float]]]:
    """SFT on reasoned responses of a fresh base model: full fine-tuning if ``rank`` is None, else LoRA on every
    linear layer of the blocks with ``alpha`` (default 2r, `RUNS`) and α/r scaling (α/√r with ``use_rslora``).
    Returns the model and `llmcourse.sft.finetune`'s history (its ``seconds``: the training time)."""
    torch.manual_seed(seed)
    model = load_base_model(device)
    if rank is not None:
        inject_lora(model, r=rank, alpha=2 * rank if alpha is None else alpha, use_rslora=use_rslora)
    history = finetune(model, sft_problems(), sft_config(lr, seed, steps), reasoned_share=1.0)
    return model, history
