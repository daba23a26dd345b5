"""KV caches: cached generation is token-for-token identical to uncached generation."""

import pytest
import torch

from llmcourse.kv_cache import ConcatKVCache, PreallocKVCache, attention_step, generate, generate_greedy_cached, window_start
from llmcourse.model import GPT, GPTConfig, attention


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = GPT(GPTConfig(block_size=32, n_layer=2, n_embd=64, n_head=4)).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():                      # large random weights: greedy tokens depend on the context
        for name, p in m.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (1.0 if name.startswith("w") else 0.2 if p.dim() > 1 else 0.0))
    return m


def test_cached_generation_equals_uncached_over_many_prompts(model):
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        prompt = torch.randint(0, 360, (1, int(torch.randint(1, 20, (1,), generator=g))), generator=g)
        ref = generate(model, prompt, 10, cache="none")
        assert torch.equal(generate(model, prompt, 10, cache="concat"), ref)
        assert torch.equal(generate(model, prompt, 10, cache="prealloc"), ref)


@pytest.mark.parametrize("shift", [None, 1, 5])
def test_past_the_context_length_with_the_sliding_window(model, shift):
    prompt = torch.randint(0, 360, (2, 7), generator=torch.Generator().manual_seed(3))
    ref = generate(model, prompt, 80, cache="none", shift=shift)          # 87 tokens > block_size 32
    assert ref.shape == (2, 87)
    assert torch.equal(generate(model, prompt, 80, cache="concat", shift=shift), ref)
    assert torch.equal(generate(model, prompt, 80, cache="prealloc", shift=shift), ref)


def test_prompt_longer_than_the_context(model):
    prompt = torch.randint(0, 360, (1, 50), generator=torch.Generator().manual_seed(4))
    ref = generate(model, prompt, 12, cache="none")
    assert torch.equal(generate(model, prompt, 12, cache="prealloc"), ref)


def test_sampling_is_identical_across_caches_with_the_same_generator(model):
    prompt = torch.randint(0, 360, (3, 5), generator=torch.Generator().manual_seed(5))
    outs = [generate(model, prompt, 40, cache=c, temperature=1.0, generator=torch.Generator().manual_seed(9))
            for c in ("none", "concat", "prealloc")]
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_generate_greedy_cached_equals_generate_and_resets_between_prompts(model):
    cache = ConcatKVCache(model.cfg.n_layer)
    for seed in range(3):
        prompt = torch.randint(0, 360, (1, 6), generator=torch.Generator().manual_seed(seed))
        assert torch.equal(generate_greedy_cached(model, prompt, 15, cache), generate(model, prompt, 15, cache="none"))


def test_concat_and_prealloc_caches_store_the_same_keys(model):
    cfg = model.cfg
    a, b = ConcatKVCache(cfg.n_layer), PreallocKVCache(cfg.n_layer, 1, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head)
    idx = torch.randint(0, 360, (1, 9))
    model(idx[:, :6], a), model(idx[:, :6], b)
    model(idx[:, 6:], a), model(idx[:, 6:], b)
    assert a.current_pos == b.current_pos == 9
    for layer in range(cfg.n_layer):
        torch.testing.assert_close(a.k[layer], b.k[layer, :, :, :9])
        torch.testing.assert_close(a.v[layer], b.v[layer, :, :, :9])
    b.reset()
    assert b.current_pos == 0


def test_prealloc_cache_refuses_to_overflow():
    c = PreallocKVCache(1, 1, 1, 4, 2)
    with pytest.raises(ValueError, match="cache full"):
        c.update(0, torch.zeros(1, 1, 5, 2), torch.zeros(1, 1, 5, 2))


def test_attention_step_equals_full_attention_on_the_last_rows():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 7, 4, generator=g) for _ in range(3))
    out, k_all, v_all = attention_step(q[:, :, 4:], k[:, :, 4:], v[:, :, 4:], k[:, :, :4], v[:, :, :4])
    torch.testing.assert_close(out, attention(q, k, v)[:, :, 4:])
    assert torch.equal(k_all, k) and torch.equal(v_all, v)


def test_window_start_worked_examples():
    assert window_start(64, 0, 64, 32) == 0
    assert window_start(65, 0, 64, 32) == 32
    assert window_start(97, 32, 64, 32) == 64
