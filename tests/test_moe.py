"""Mixture of experts (`llmcourse.moe`): routing by hand, the load-balancing loss and its gradient, transformers'
Mixtral router, expert loop and `load_balancing_loss_func` as oracles (run for real, conventions pinned), the MoE
GPT's parameter counts."""

import doctest
import math

import pytest
import torch
import torch.nn.functional as F

from llmcourse import moe
from llmcourse.model import GPT, GPTConfig

CFG = GPTConfig()


def test_doctests():
    assert doctest.testmod(moe).failed == 0


# --------------------------------------------------------------------------- routing


def test_route_by_hand_top2_gates_are_the_softmax_over_the_two_chosen_logits():
    logits = torch.tensor([[0.0, 2.0, math.log(3.0) + 2.0, -1.0]])
    idx, gates = moe.route(logits, k=2)
    assert idx.tolist() == [[2, 1]]                                  # best first
    torch.testing.assert_close(gates, torch.tensor([[0.75, 0.25]]))  # e^{2+log 3} : e^2 = 3 : 1


def test_route_ties_go_to_the_lower_index():
    idx, gates = moe.route(torch.tensor([[1.0, 3.0, 3.0, 3.0]]), k=2)
    assert idx.tolist() == [[1, 2]]
    torch.testing.assert_close(gates, torch.tensor([[0.5, 0.5]]))


def test_renormalised_softmax_equals_softmax_over_the_top_k_logits():
    logits = torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
    idx, gates = moe.route(logits, k=2)
    probs = F.softmax(logits, -1).gather(-1, idx)
    torch.testing.assert_close(gates, probs / probs.sum(-1, keepdim=True))


def test_topk_combine_by_hand():
    logits = torch.tensor([[0.0, 2.0, math.log(3.0) + 2.0, -1.0]])
    outs = torch.tensor([[[9.0]], [[4.0]], [[8.0]], [[9.0]]])          # (E=4, N=1, C=1)
    assert moe.topk_combine(logits, outs, k=2).item() == pytest.approx(0.75 * 8 + 0.25 * 4)


def test_moe_layer_equals_the_dense_form_of_the_combine():
    torch.manual_seed(0)
    layer = moe.MoEMLP(16, n_experts=5, k=2, expert_hidden=12)
    x = torch.randn(3, 7, 16)
    y = layer(x)
    flat = x.reshape(-1, 16)
    every = torch.stack([e(flat) for e in layer.experts])                # (E, N, C): every expert on every token
    torch.testing.assert_close(y.reshape(-1, 16), moe.topk_combine(layer.router(flat), every, 2))


def test_one_expert_top1_is_a_plain_feed_forward():
    torch.manual_seed(0)
    layer = moe.MoEMLP(16, n_experts=1, k=1, expert_hidden=12)
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(layer(x), layer.experts[0](x))


def test_an_expert_without_tokens_gets_a_zero_gradient_not_none():
    torch.manual_seed(0)
    layer = moe.MoEMLP(8, n_experts=4, k=1, expert_hidden=8)
    with torch.no_grad():
        layer.router.weight.zero_()
        layer.router.weight[0] = 1.0
    x = torch.rand(10, 8) + 0.1                                          # positive: expert 0 wins every token
    layer(x).sum().backward()
    assert layer.indices.unique().tolist() == [0]
    for e in layer.experts[1:]:
        assert e.c_fc.weight.grad is not None and e.c_fc.weight.grad.abs().sum() == 0
    assert layer.router.weight.grad is not None


# --------------------------------------------------------------------------- the load-balancing loss


def test_balanced_load_gives_alpha():
    logits = torch.eye(4).repeat(3, 1) * 2.0                             # every expert first for 3 of 12 tokens
    for alpha in (1.0, 0.01):
        assert moe.load_balancing_loss(logits, k=1, alpha=alpha).item() == pytest.approx(alpha)
    assert moe.load_balancing_loss(torch.zeros(12, 4) + torch.eye(4).repeat(3, 1), k=2, alpha=1.0).item() \
        == pytest.approx(1.0)                                            # top-2 with an even load: still α


def test_collapsed_router_gives_alpha_times_E():
    logits = torch.tensor([[30.0, 0.0, 0.0, 0.0]]).repeat(6, 1)         # one expert takes every token, P ≈ 1
    assert moe.load_balancing_loss(logits, k=1, alpha=1.0).item() == pytest.approx(4.0, rel=1e-6)


def test_dispatch_fractions_count_all_k_choices_and_sum_to_one():
    logits = torch.tensor([[3.0, 2.0, 0.0], [3.0, 0.0, 2.0], [0.0, 3.0, 2.0]])
    f = moe.dispatch_fractions(logits, k=2)
    torch.testing.assert_close(f, torch.tensor([2.0, 2.0, 2.0]) / 6)
    assert not f.requires_grad


def test_gradient_reaches_the_logits_through_P_only():
    """dL/dz_nj = α E / N · p_nj (f_j − Σ_i f_i p_ni): the softmax's Jacobian applied to f, f held constant."""
    logits = torch.randn(20, 6, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    alpha, k = 0.3, 2
    moe.load_balancing_loss(logits, k, alpha).backward()
    p = F.softmax(logits.detach(), -1)
    f = moe.dispatch_fractions(logits.detach(), k)
    expected = alpha * 6 / 20 * p * (f - (p * f).sum(-1, keepdim=True))
    torch.testing.assert_close(logits.grad, expected)


# --------------------------------------------------------------------------- transformers' Mixtral, for real


@pytest.fixture(scope="module")
def mixtral():
    from transformers import MixtralConfig
    from transformers.models.mixtral import modeling_mixtral
    return modeling_mixtral, MixtralConfig


def test_route_agrees_with_transformers_mixtral_router(mixtral):
    mm, MixtralConfig = mixtral
    cfg = MixtralConfig(hidden_size=16, intermediate_size=8, num_local_experts=8, num_experts_per_tok=2)
    router = mm.MixtralTopKRouter(cfg)
    torch.nn.init.normal_(router.weight, 0, 1.0, generator=torch.Generator().manual_seed(0))
    x = torch.randn(40, 16, generator=torch.Generator().manual_seed(1))
    logits, scores, indices = router(x)
    idx, gates = moe.route(logits, 2)
    assert torch.equal(idx, indices)
    torch.testing.assert_close(gates, scores)


def test_topk_combine_agrees_with_transformers_mixtral_sparse_moe_block(mixtral):
    """Mixtral's experts are SwiGLU, ours GELU MLPs; the combine does not care: feed it Mixtral's experts'
    outputs for every token and it returns the block's output."""
    mm, MixtralConfig = mixtral
    cfg = MixtralConfig(hidden_size=16, intermediate_size=8, num_local_experts=4, num_experts_per_tok=2,
                        router_jitter_noise=0.0)
    block = mm.MixtralSparseMoeBlock(cfg).eval()
    g = torch.Generator().manual_seed(0)
    for p in block.parameters():
        torch.nn.init.normal_(p, 0, 0.5, generator=g)
    x = torch.randn(2, 5, 16, generator=g)
    flat = x.reshape(-1, 16)
    ex = block.experts
    every = []
    for e in range(4):
        gate, up = F.linear(flat, ex.gate_up_proj[e]).chunk(2, dim=-1)
        every.append(F.linear(ex.act_fn(gate) * up, ex.down_proj[e]))
    logits = F.linear(flat, block.gate.weight)
    with torch.no_grad():
        torch.testing.assert_close(moe.topk_combine(logits, torch.stack(every), 2), block(x).reshape(-1, 16))


def test_load_balancing_loss_is_transformers_divided_by_k_for_one_layer(mixtral):
    mm, _ = mixtral
    g = torch.Generator().manual_seed(0)
    for E, k in ((8, 2), (4, 1), (6, 3)):
        logits = torch.randn(30, E, generator=g) + torch.linspace(0, 1.5, E)
        theirs = mm.load_balancing_loss_func((logits,), num_experts=E, top_k=k)
        torch.testing.assert_close(moe.load_balancing_loss(logits, k, alpha=1.0), theirs / k)


def test_transformers_pools_layers_before_the_product_the_course_averages_per_layer_losses(mixtral):
    mm, _ = mixtral
    g = torch.Generator().manual_seed(1)
    E, k = 8, 2
    layers = [torch.randn(24, E, generator=g) + torch.linspace(0, s, E) for s in (0.0, 2.0, 4.0)]
    theirs = mm.load_balancing_loss_func(tuple(layers), num_experts=E, top_k=k)
    f = torch.stack([moe.dispatch_fractions(z, k) for z in layers]).mean(0)          # pooled over layers
    P = torch.stack([F.softmax(z, -1).mean(0) for z in layers]).mean(0)
    torch.testing.assert_close(theirs, k * E * (f * P).sum())
    per_layer = torch.stack([moe.load_balancing_loss(z, k, 1.0) for z in layers]).mean()
    assert not torch.isclose(per_layer, theirs / k)                                  # the two conventions differ


# --------------------------------------------------------------------------- the models


def test_parameter_counts_total_and_active_per_token():
    torch.manual_seed(0)
    m = moe.moe_gpt(CFG, moe.MoEConfig())
    C, H, E, k = 128, 256, 8, 2
    expert = C * H + H + H * C + C                                                    # 65,920
    dense_mlp = C * 4 * C + 4 * C + 4 * C * C + C                                     # 131,712
    counts = moe.parameter_counts(m)
    assert counts["total"] == 847_616 + 4 * (E * expert + C * E - dense_mlp) == 2_434_304
    assert counts["active"] == 847_616 + 4 * (k * expert + C * E - dense_mlp) == 852_224
    assert moe.parameter_counts(moe.dense_gpt(CFG, E * H))["total"] == 2_426_624      # the same-total baseline


def test_dense_gpt_with_the_usual_width_is_gpt_bit_for_bit():
    torch.manual_seed(3)
    a = GPT(CFG)
    torch.manual_seed(3)
    b = moe.dense_gpt(CFG, 4 * CFG.n_embd)
    x = torch.randint(0, CFG.vocab_size, (2, 10))
    assert torch.equal(a(x), b(x))


def test_moe_gpt_trains_with_the_aux_loss_and_records_loads():
    torch.manual_seed(0)
    small = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16)
    m = moe.moe_gpt(small, moe.MoEConfig(n_experts=4, k=2, expert_hidden=16))
    x = torch.randint(0, small.vocab_size, (3, 16))
    logits = m(x)
    aux = moe.aux_loss(m, alpha=0.01)
    (logits.logsumexp(-1).mean() + aux).backward()
    assert all(layer.router.weight.grad is not None for layer in moe.moe_layers(m))
    loads = moe.router_loads(m, x)
    assert len(loads) == 2 and all(torch.isclose(l.sum(), torch.tensor(1.0, dtype=l.dtype)) for l in loads)
    assert moe.aux_loss(moe.dense_gpt(small, 64), 0.01).item() == 0.0


def test_load_stats_of_a_collapsed_top2_router():
    s = moe.load_stats(torch.tensor([0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]))
    assert s == {"max_share": 0.5, "entropy_ratio": round(math.log(2) / math.log(8), 6), "dead": 6}
