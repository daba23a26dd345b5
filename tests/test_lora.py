"""LoRA and DoRA (`llmcourse.lora`) against hand-worked numbers, PEFT's formulas and each other.

Oracles: small matrices worked by hand (2×3 W, r = 1); PEFT's conventions (scaling = lora_alpha / r,
A Kaiming-uniform with a = √5 and B zero, DoRA's norm per output feature over dim 1 and detached);
equalities between variants (merged = unmerged, disabled = base, adapter at init = base, DoRA with
m = ‖V‖ = LoRA); parameter counts by the formula r·(d_in + d_out) per adapted layer.
"""

import copy
import doctest
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from llmcourse import lora
from llmcourse.lora import DoRALinear, LoRALinear, inject_lora
from llmcourse.model import GPT, GPTConfig

# Hand-worked: W (2, 3), b (2,), A (1, 3), B (2, 1), α = 2, r = 1, so α/r = 2.
W = torch.tensor([[1., 0., 2.], [0., 1., -1.]])
b = torch.tensor([0.5, -1.])
A = torch.tensor([[1., 1., 0.]])
B = torch.tensor([[2.], [-1.]])
X = torch.tensor([[1., 2., 3.], [0., -1., 1.]])
# row 1: W x + b = [7.5, -2], A x = 3, 2·B·3 = [12, -6]      -> [19.5, -8]
# row 2: W x + b = [2.5, -3], A x = -1, 2·B·(-1) = [-4, 2]    -> [-1.5, -1]
Y = torch.tensor([[19.5, -8.], [-1.5, -1.]])
W_MERGED = torch.tensor([[5., 4., 2.], [-2., -1., -1.]])    # W + 2·B A, B A = [[2, 2, 0], [-1, -1, 0]]

CFG = GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=16)


def _gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(CFG).eval()


def _ids(seed: int = 1) -> torch.Tensor:
    return torch.randint(0, CFG.vocab_size, (3, 10), generator=torch.Generator().manual_seed(seed))


def _train_a_little(model: nn.Module, steps: int = 3) -> None:
    """A few Adam steps on a next-token loss, so that B ≠ 0 and the adapters change the outputs."""
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = _ids()
    for _ in range(steps):
        logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, CFG.vocab_size), ids[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()


def _layer_with(W, b, A, B, alpha, cls=LoRALinear) -> LoRALinear:
    base = nn.Linear(W.size(1), W.size(0), bias=b is not None)
    with torch.no_grad():
        base.weight.copy_(W)
        if b is not None:
            base.bias.copy_(b)
    layer = cls(base, r=A.size(0), alpha=alpha)
    with torch.no_grad():
        layer.lora_A.copy_(A)
        layer.lora_B.copy_(B)
    return layer


# --------------------------------------------------------------------------- the formulas, by hand


def test_doctests():
    assert doctest.testmod(lora).failed == 0


def test_lora_forward_matches_the_hand_worked_example():
    assert torch.equal(lora.lora_forward(X, W, b, A, B, alpha=2, r=1), Y)


def test_scaling_is_alpha_over_r_as_in_peft():
    assert lora.lora_scaling(16, 8) == 2.0 and lora.lora_scaling(8, 16) == 0.5
    # same B A, rank 2 with α = 4 gives the same update as rank 1 with α = 2
    A2, B2 = torch.cat([A, torch.zeros(1, 3)]), torch.cat([B, torch.zeros(2, 1)], dim=1)
    assert torch.equal(lora.lora_forward(X, W, b, A2, B2, alpha=4, r=2), Y)


def test_rslora_scales_by_alpha_over_sqrt_r_and_equals_lora_at_rank_one():
    assert lora.lora_scaling(8, 16, use_rslora=True) == 2.0 and lora.lora_scaling(8, 16) == 0.5
    assert lora.lora_scaling(5, 1, use_rslora=True) == lora.lora_scaling(5, 1) == 5.0
    g = torch.Generator().manual_seed(9)
    A4, B4 = torch.randn(4, 3, generator=g), torch.randn(2, 4, generator=g)
    assert torch.allclose(lora.lora_delta(A4, B4, alpha=6, r=4, use_rslora=True), 3.0 * (B4 @ A4))


def test_rslora_layer_computes_alpha_over_sqrt_r_and_merges_what_it_computes():
    torch.manual_seed(1)
    base = nn.Linear(5, 3)
    layer = LoRALinear(base, r=4, alpha=6, use_rslora=True)
    with torch.no_grad():
        layer.lora_B.copy_(torch.randn(3, 4))
    x = torch.randn(2, 5)
    want = base(x) + 3.0 * (x @ layer.lora_A.T) @ layer.lora_B.T     # α/√r = 6/2
    assert layer.scaling == 3.0 and "use_rslora=True" in repr(layer)
    assert torch.allclose(layer(x), want, atol=1e-6)
    assert torch.allclose(layer.delta_weight(), 3.0 * layer.lora_B @ layer.lora_A)
    with torch.no_grad():
        layer.merge()
        assert torch.allclose(layer(x), want, atol=1e-5)


@pytest.mark.parametrize("dora", [False, True])
def test_rslora_at_rank_one_is_the_same_model_as_lora(dora):
    base, ids = _gpt(), _ids()
    outs = []
    for use_rslora in (False, True):
        torch.manual_seed(0)                                          # the same A in both
        m = lora.inject_lora(copy.deepcopy(base), r=1, alpha=3, dora=dora, use_rslora=use_rslora)
        g = torch.Generator().manual_seed(4)
        with torch.no_grad():
            for layer in lora.lora_layers(m):
                layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g))
            outs.append(m(ids))
    assert torch.equal(outs[0], outs[1])


def test_inject_passes_rslora_to_every_layer():
    m = lora.inject_lora(_gpt(), r=4, alpha=8, use_rslora=True)
    assert {layer.scaling for layer in lora.lora_layers(m)} == {4.0}


def test_lora_forward_without_bias_and_with_batch_dims():
    x = X.expand(4, 2, 3)                                             # (4, 2, 3): leading dims pass through
    assert torch.equal(lora.lora_forward(x, W, None, A, B, alpha=2, r=1), (Y - b).expand(4, 2, 2))


def test_merge_weights_by_hand_and_leaves_W_alone():
    W_before = W.clone()
    assert torch.equal(lora.merge_weights(W, A, B, alpha=2, r=1), W_MERGED)
    assert torch.equal(W, W_before)
    assert torch.equal(F.linear(X, W_MERGED, b), Y)


def test_the_update_has_rank_at_most_r():
    g = torch.Generator().manual_seed(0)
    for r in (1, 2, 3):
        delta = lora.lora_delta(torch.randn(r, 12, generator=g), torch.randn(10, r, generator=g), alpha=1, r=r)
        assert delta.shape == (10, 12) and torch.linalg.matrix_rank(delta) == r


def test_param_count_formula():
    assert lora.lora_param_count([(2, 3)], r=1) == 5                  # A 1×3 + B 2×1
    assert lora.lora_param_count([(2, 3)], r=1, dora=True) == 7       # + m, one per output feature
    C = 128                                                            # one GPT block: r · 16C; DoRA + 9C
    block = [(3 * C, C), (C, C), (4 * C, C), (C, 4 * C)]
    assert lora.lora_param_count(block, r=4) == 4 * 16 * C
    assert lora.lora_param_count(block, r=4, dora=True) == 4 * 16 * C + 9 * C


def test_init_is_peft_kaiming_uniform_and_zero_B():
    A0, B0 = lora.init_lora(d_in=20, d_out=7, r=3, generator=torch.Generator().manual_seed(5))
    expected = torch.empty(3, 20)
    nn.init.kaiming_uniform_(expected, a=math.sqrt(5), generator=torch.Generator().manual_seed(5))
    assert torch.equal(A0, expected)                                   # bound 1/√d_in, as nn.Linear
    assert A0.abs().max() <= 1 / math.sqrt(20) and A0.abs().max() > 0.5 / math.sqrt(20)
    assert torch.equal(B0, torch.zeros(7, 3))


# --------------------------------------------------------------------------- the LoRA layer


def test_layer_computes_the_formula():
    layer = _layer_with(W, b, A, B, alpha=2)
    assert torch.allclose(layer(X), Y)
    assert torch.equal(layer.delta_weight(), W_MERGED - W)


def test_layer_at_init_is_the_base_layer_bit_for_bit():
    torch.manual_seed(0)
    base = nn.Linear(5, 4)
    layer = LoRALinear(base, r=2, alpha=8)
    x = torch.randn(3, 5)
    assert torch.equal(layer(x), base(x))
    assert torch.equal(layer.lora_B, torch.zeros(4, 2)) and layer.lora_A.abs().sum() > 0
    assert layer.lora_A.abs().max() <= 1 / math.sqrt(5)


def test_layer_freezes_the_base():
    layer = LoRALinear(nn.Linear(5, 4), r=2, alpha=2)
    trainable = {n for n, p in layer.named_parameters() if p.requires_grad}
    assert trainable == {"lora_A", "lora_B"}


def test_merge_then_unmerge():
    layer = _layer_with(W, b, A, B, alpha=2)
    layer.merge()
    assert layer.merged and torch.equal(layer.base.weight, W_MERGED)
    assert torch.allclose(layer(X), Y)
    layer.merge()                                                      # a second merge changes nothing
    assert torch.equal(layer.base.weight, W_MERGED)
    layer.unmerge()
    assert not layer.merged and torch.equal(layer.base.weight, W)


def test_dropout_acts_only_in_training_and_only_on_the_adapter():
    layer = _layer_with(W, b, A, B, alpha=2)
    layer.dropout = nn.Dropout(0.5)
    layer.eval()
    assert torch.allclose(layer(X), Y)
    layer.train()
    torch.manual_seed(0)
    outs = torch.stack([layer(X) for _ in range(50)])
    assert outs.std(0).max() > 0                                       # a fresh dropout mask every call
    with torch.no_grad():
        layer.lora_B.zero_()
    assert torch.equal(layer(X), layer.base(X))                        # no adapter: no dropout anywhere


# --------------------------------------------------------------------------- DoRA


def test_dora_forward_by_hand():
    W_ = torch.tensor([[3., 0., 4.], [0., 1., 0.]])
    A_, B_ = torch.tensor([[1., 0., 0.]]), torch.tensor([[0.], [1.]])  # V = [[3, 0, 4], [1, 1, 0]], ‖V‖ = [5, √2]
    y = lora.dora_forward(torch.ones(3), W_, torch.tensor([0., 1.]), A_, B_, m=torch.tensor([10., 2.]), alpha=1, r=1)
    assert torch.allclose(y, torch.tensor([14., 1 + 2 * math.sqrt(2)]))


def test_dora_norm_is_per_output_feature_over_dim_1():
    V = torch.tensor([[3., 0., 4.], [0., 1., 0.]])                     # (d_out=2, d_in=3)
    assert torch.equal(lora.weight_norm(V), torch.tensor([5., 1.]))
    layer = DoRALinear(nn.Linear(3, 2), r=1, alpha=1)
    assert layer.magnitude.shape == (2,)
    assert torch.equal(layer.magnitude.detach(), layer.base.weight.norm(dim=1))


def test_dora_with_magnitude_equal_to_the_norm_is_lora():
    g = torch.Generator().manual_seed(3)
    W_, A_, B_, b_ = (torch.randn(s, generator=g) for s in [(5, 4), (2, 4), (5, 2), (5,)])
    x = torch.randn(6, 4, generator=g)
    m = lora.weight_norm(lora.merge_weights(W_, A_, B_, alpha=3, r=2))
    assert torch.allclose(lora.dora_forward(x, W_, b_, A_, B_, m, alpha=3, r=2),
                          lora.lora_forward(x, W_, b_, A_, B_, alpha=3, r=2), atol=1e-5)


def test_dora_layer_matches_the_function_and_starts_as_the_base():
    torch.manual_seed(0)
    base = nn.Linear(4, 3)
    layer = DoRALinear(base, r=2, alpha=4)
    x = torch.randn(5, 4)
    assert torch.equal(layer(x), base(x))
    with torch.no_grad():
        layer.lora_B.normal_()
        layer.magnitude.mul_(torch.tensor([0.5, 1.0, 2.0]))
    expected = lora.dora_forward(x, base.weight, base.bias, layer.lora_A, layer.lora_B, layer.magnitude, alpha=4, r=2)
    assert torch.allclose(layer(x), expected, atol=1e-6)


def test_dora_norm_is_detached_as_in_the_paper():
    """With ‖V‖ a constant, ∂(Σ y)/∂m = Σ_tokens (V x) / ‖V‖, and B gets a linear layer's gradient."""
    g = torch.Generator().manual_seed(1)
    W_, A_, B_ = torch.randn(3, 4, generator=g), torch.randn(2, 4, generator=g), torch.randn(3, 2, generator=g)
    x = torch.randn(5, 4, generator=g)
    m = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    Bp = B_.clone().requires_grad_(True)
    lora.dora_forward(x, W_, None, A_, Bp, m, alpha=2, r=2).sum().backward()
    V = W_ + B_ @ A_
    assert torch.allclose(m.grad, (x @ V.T).sum(0) / V.norm(dim=1), atol=1e-5)
    # the gradient to B is that of a linear layer with fixed row scales m / ‖V‖
    scale = (m.detach() / V.norm(dim=1))[:, None]
    Bq = B_.clone().requires_grad_(True)
    F.linear(x, scale * (W_ + Bq @ A_)).sum().backward()
    assert torch.allclose(Bp.grad, Bq.grad, atol=1e-5)


def test_dora_merge_then_unmerge():
    torch.manual_seed(0)
    layer = DoRALinear(nn.Linear(4, 3), r=2, alpha=4)
    with torch.no_grad():
        layer.lora_B.normal_()
        layer.magnitude.mul_(1.5)
    x = torch.randn(5, 4)
    W0, y = layer.base.weight.detach().clone(), layer(x)
    layer.merge()
    assert torch.allclose(layer(x), y, atol=1e-5)
    assert torch.allclose(layer.base.weight.norm(dim=1), layer.magnitude.detach(), atol=1e-5)  # rows have norm m
    layer.unmerge()
    assert torch.allclose(layer.base.weight, W0, atol=1e-6)


# --------------------------------------------------------------------------- a whole GPT


@pytest.mark.parametrize("dora", [False, True])
def test_injected_gpt_at_init_is_the_base_bit_for_bit(dora):
    base, adapted = _gpt(), inject_lora(_gpt(), r=4, alpha=8, dora=dora)
    ids = _ids()
    assert torch.equal(adapted(ids), base(ids))


def test_inject_replaces_the_chosen_layers():
    model = inject_lora(_gpt(), r=2, alpha=2)
    names = {n for n, m in model.named_modules() if isinstance(m, LoRALinear)}
    assert names == {f"blocks.{i}.{s}" for i in range(CFG.n_layer)
                     for s in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}
    assert isinstance(model.lm_head, nn.Linear) and not isinstance(model.lm_head, LoRALinear)

    def adapted(targets):
        m = inject_lora(_gpt(), r=2, alpha=2, targets=targets)
        return {n.split(".", 2)[2] for n, mod in m.named_modules() if isinstance(mod, LoRALinear)}
    assert adapted(("attn",)) == {"attn.c_attn", "attn.c_proj"}
    assert adapted(("c_proj",)) == {"attn.c_proj", "mlp.c_proj"}
    assert adapted(("mlp.c_fc",)) == {"mlp.c_fc"}
    assert adapted(("c_attn", "mlp")) == {"attn.c_attn", "mlp.c_fc", "mlp.c_proj"}


def test_inject_refuses_the_tied_head_and_unknown_targets():
    with pytest.raises(ValueError, match="lm_head"):
        inject_lora(_gpt(), r=2, alpha=2, targets=("lm_head",))
    with pytest.raises(ValueError, match="no nn.Linear"):
        inject_lora(_gpt(), r=2, alpha=2, targets=("q_proj",))


@pytest.mark.parametrize("r", [1, 4])
def test_trainable_count_is_r_times_d_in_plus_d_out_per_layer(r):
    C, L = CFG.n_embd, CFG.n_layer
    model = inject_lora(_gpt(), r=r, alpha=1)
    assert lora.count_trainable(model) == L * r * ((C + 3 * C) + (C + C) + (C + 4 * C) + (4 * C + C))
    shapes = [tuple(m.base.weight.shape) for m in lora.lora_layers(model)]
    assert lora.count_trainable(model) == lora.lora_param_count(shapes, r)
    assert lora.count_params(model) == _gpt().n_params() + lora.count_trainable(model)
    dora = inject_lora(_gpt(), r=r, alpha=1, dora=True)
    assert lora.count_trainable(dora) == lora.lora_param_count(shapes, r, dora=True)


@pytest.mark.parametrize("dora", [False, True])
def test_gradients_reach_only_the_adapters(dora):
    model = inject_lora(_gpt(), r=2, alpha=4, dora=dora)
    ids = _ids()
    F.cross_entropy(model(ids[:, :-1]).reshape(-1, CFG.vocab_size), ids[:, 1:].reshape(-1)).backward()
    got = {n.rpartition(".")[2] for n, p in model.named_parameters() if p.grad is not None}
    assert got == ({"lora_A", "lora_B", "magnitude"} if dora else {"lora_A", "lora_B"})
    for layer in lora.lora_layers(model):                              # at init B = 0, so ∂L/∂A = 0; ∂L/∂B is not
        assert torch.equal(layer.lora_A.grad, torch.zeros_like(layer.lora_A))
        assert layer.lora_B.grad.abs().sum() > 0


def test_both_factors_zero_never_train():
    model = inject_lora(_gpt(), r=2, alpha=4)
    with torch.no_grad():
        for layer in lora.lora_layers(model):
            layer.lora_A.zero_()
    ids = _ids()
    F.cross_entropy(model(ids[:, :-1]).reshape(-1, CFG.vocab_size), ids[:, 1:].reshape(-1)).backward()
    for layer in lora.lora_layers(model):
        assert layer.lora_A.grad.abs().sum() == 0 and layer.lora_B.grad.abs().sum() == 0


@pytest.mark.parametrize("dora", [False, True])
def test_disable_adapters_gives_the_base_model_exactly(dora):
    base, model = _gpt(), inject_lora(_gpt(), r=4, alpha=8, dora=dora)
    _train_a_little(model)
    ids = _ids(2)
    assert not torch.allclose(model(ids), base(ids), atol=1e-4)       # training changed the outputs
    with lora.disable_adapters(model):
        assert torch.equal(model(ids), base(ids))
    assert all(not layer.disabled for layer in lora.lora_layers(model))
    assert not torch.allclose(model(ids), base(ids), atol=1e-4)


@pytest.mark.parametrize("dora", [False, True])
def test_merged_model_equals_the_unmerged_one(dora):
    model = inject_lora(_gpt(), r=4, alpha=8, dora=dora)
    _train_a_little(model)
    ids = _ids(2)
    with torch.no_grad():
        y = model(ids)
        lora.merge_lora(model)
        assert torch.allclose(model(ids), y, atol=1e-5)
        lora.unmerge_lora(model)
        assert torch.allclose(model(ids), y, atol=1e-5)
        assert torch.allclose(model.blocks[0].attn.c_attn.base.weight, _gpt().blocks[0].attn.c_attn.weight, atol=1e-6)


def test_disabling_a_merged_model_unmerges_it_first():
    base, model = _gpt(), inject_lora(_gpt(), r=4, alpha=8)
    _train_a_little(model)
    lora.merge_lora(model)
    ids = _ids(2)
    with lora.disable_adapters(model):
        assert torch.allclose(model(ids), base(ids), atol=1e-5)
    assert not any(layer.merged for layer in lora.lora_layers(model))


def test_merge_and_unload_gives_a_plain_gpt():
    model = inject_lora(_gpt(), r=4, alpha=8)
    _train_a_little(model)
    ids = _ids(2)
    with torch.no_grad():
        y = model(ids)
    plain = lora.merge_and_unload(model)
    assert not any(isinstance(m, LoRALinear) for m in plain.modules())
    assert lora.count_params(plain) == _gpt().n_params() == lora.count_trainable(plain)
    with torch.no_grad():
        assert torch.allclose(plain(ids), y, atol=1e-5)


@pytest.mark.parametrize("dora", [False, True])
def test_lora_state_dict_holds_only_the_adapters_and_round_trips(dora):
    model = inject_lora(_gpt(), r=2, alpha=4, dora=dora)
    _train_a_little(model)
    state = lora.lora_state_dict(model)
    assert sum(v.numel() for v in state.values()) == lora.count_trainable(model)
    assert all(k.rpartition(".")[2] in lora.ADAPTER_PARAMS for k in state)
    fresh = inject_lora(_gpt(), r=2, alpha=4, dora=dora)
    lora.load_lora_state_dict(fresh, state)
    ids = _ids(2)
    assert torch.equal(fresh(ids), model(ids))
    with pytest.raises(KeyError):
        lora.load_lora_state_dict(inject_lora(_gpt(), r=2, alpha=4, targets=("attn",)), state)


def test_the_rank_sweep_runs_the_chapters_lora_recipe_at_one_alpha():
    from llmcourse.tooling.benchmarks import rank_scaling
    assert rank_scaling.RANK_SWEEP is lora.RANK_SWEEP and rank_scaling.sft_run is lora.sft_run
    lora_lrs = {lr for _, rank, lr in lora.RUNS if rank is not None}
    assert lora_lrs == {lora.RANK_SWEEP.lr}                            # the chapter's LoRA learning rate
    assert ("LoRA r=4", 4, lora.RANK_SWEEP.lr) in lora.RUNS and lora.RANK_SWEEP.alpha == 2 * 4   # its r = 4 run's α
    assert lora.RANK_SWEEP.ranks[0] == 1 and max(lora.RANK_SWEEP.ranks) == 64
