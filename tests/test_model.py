"""The tiny GPT: readable attention == torch's fused attention; shapes; causality."""

import pytest
import torch
import torch.nn.functional as F

from llmcourse.model import GPT, GPTConfig, attention, causal_mask, fast_attention, merge_heads, position_ids, split_heads


def _qkv(B=2, nh=3, Tq=5, Tk=5, hs=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, nh, Tq, hs, generator=g), torch.randn(B, nh, Tk, hs, generator=g),
            torch.randn(B, nh, Tk, hs, generator=g))


def test_explicit_attention_equals_torch_sdpa():
    q, k, v = _qkv()
    torch.testing.assert_close(attention(q, k, v), F.scaled_dot_product_attention(q, k, v, is_causal=True))
    torch.testing.assert_close(attention(q, k, v, causal=False), F.scaled_dot_product_attention(q, k, v))


@pytest.mark.parametrize("Tq,Tk", [(1, 7), (3, 7), (7, 7)])
def test_fast_attention_equals_explicit_with_a_cached_past(Tq, Tk):
    q, k, v = _qkv(Tq=Tq, Tk=Tk)
    torch.testing.assert_close(fast_attention(q, k, v), attention(q, k, v))


def test_causal_mask_worked_example():
    assert causal_mask(2, 3).tolist() == [[True, True, False], [True, True, True]]
    assert torch.equal(causal_mask(4, 4), torch.ones(4, 4, dtype=torch.bool).tril())


def test_split_and_merge_heads_are_inverse_and_contiguous_per_head():
    x = torch.arange(2 * 3 * 8, dtype=torch.float32).view(2, 3, 8)
    h = split_heads(x, 4)
    assert h.shape == (2, 4, 3, 2)
    assert h[0, 1, 0].tolist() == [2.0, 3.0]                           # head 1 = channels 2, 3
    assert torch.equal(merge_heads(h), x)


def test_position_ids():
    assert position_ids(5, 3).tolist() == [5, 6, 7] and position_ids(0, 2).dtype == torch.long


def test_gpt_shapes_param_count_and_fast_equals_readable():
    torch.manual_seed(0)
    cfg = GPTConfig()
    m = GPT(cfg).eval()
    assert 500_000 < m.n_params() < 5_000_000
    idx = torch.randint(0, cfg.vocab_size, (2, 20))
    logits = m(idx)
    assert logits.shape == (2, 20, cfg.vocab_size)
    slow = GPT(GPTConfig(use_sdpa=False)).eval()
    slow.load_state_dict(m.state_dict())
    torch.testing.assert_close(slow(idx), logits, atol=1e-5, rtol=1e-4)


def test_gpt_is_causal_future_tokens_do_not_change_past_logits():
    torch.manual_seed(0)
    m = GPT(GPTConfig(n_layer=2)).eval()
    a = torch.randint(0, 360, (1, 12))
    b = a.clone()
    b[0, 8:] = (b[0, 8:] + 1) % 360
    torch.testing.assert_close(m(a)[:, :8], m(b)[:, :8])


def test_context_overflow_raises():
    m = GPT(GPTConfig(block_size=8, n_layer=1))
    with pytest.raises(ValueError, match="context length"):
        m(torch.zeros(1, 9, dtype=torch.long))
