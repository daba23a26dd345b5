"""Per-token log-probs: one batched forward pass == a plain loop, token by token, row by row.

The oracle runs the model on each row alone, one prefix at a time, and takes the log-softmax
of the last position's logits: no batching, no padding, no shifted gather to get wrong.
"""

import doctest
import math

import pytest
import torch

from llmcourse import logprobs
from llmcourse import taskworld as tw
from llmcourse.logprobs import masked_mean, masked_sum, sequence_logprobs, target_mask, token_logprobs
from llmcourse.model import GPT, GPTConfig
from llmcourse.sampling import pack_responses, prompt_ids, sample_responses
from llmcourse.tokenizer import encode, special_id

EOS, PAD = special_id(tw.EOS), special_id(tw.PAD)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return GPT(GPTConfig(block_size=32, n_layer=2, n_embd=32, n_head=2)).eval()


@pytest.fixture(scope="module")
def batch():
    """Hand-made responses to prompts of three lengths: finished, cut, one token, and empty rows."""
    problems = [tw.Problem(47, 385), tw.Problem(2, 3), tw.Problem(15, 26), tw.Problem(6, 9)]
    responses = [encode(tw.response(problems[0])) + [EOS],              # finished, reasoned
                 encode("<answer>5</answer>") + [EOS],                   # finished, bare
                 encode("<think>5+6=11"),                               # cut at the budget
                 [EOS]]                                                 # only the end-of-text
    return pack_responses(prompt_ids(problems), responses)


@torch.no_grad()
def direct_token_logprobs(model, ids):
    """The oracle: ``out[b, t] = log softmax(model(ids[b, :t+1])[-1])[ids[b, t+1]]``, one row and prefix at a time."""
    B, T = ids.shape
    out = torch.empty(B, T - 1, dtype=torch.float64)
    for b in range(B):
        for t in range(T - 1):
            logits = model(ids[b:b + 1, :t + 1])[0, -1]                 # (V,): row b alone, tokens 0..t
            out[b, t] = torch.log_softmax(logits.double(), dim=-1)[ids[b, t + 1]]
    return out


def test_token_logprobs_equal_a_direct_computation_token_by_token(base, batch):
    got = token_logprobs(base, batch.ids)
    assert got.shape == (len(batch), batch.ids.size(1) - 1) and got.dtype == torch.float32
    assert torch.allclose(got.double(), direct_token_logprobs(base, batch.ids), atol=1e-5, rtol=0)


def test_token_logprobs_on_a_random_model_and_random_ids(tiny):
    ids = torch.randint(0, 360, (3, 11), generator=torch.Generator().manual_seed(0))
    got = token_logprobs(tiny, ids)
    assert torch.allclose(got.double(), direct_token_logprobs(tiny, ids), atol=1e-5, rtol=0)
    assert (got <= 0).all()


def test_right_padding_does_not_change_a_rows_response_logprobs(base, batch):
    mask = target_mask(batch.response_mask)                            # (B, T-1)
    padded = token_logprobs(base, batch.ids)
    for i in range(len(batch)):
        n = int(batch.prompt_lens[i] + batch.response_lens[i])
        alone = token_logprobs(base, batch.ids[i:i + 1, :n])[0]          # (n-1,): no padding at all
        assert torch.allclose(padded[i][mask[i]], alone[mask[i, :n - 1]], atol=1e-5, rtol=0)


def test_target_mask_keeps_exactly_the_response_tokens(batch):
    mask = target_mask(batch.response_mask)                            # (B, T-1)
    assert mask.shape == (len(batch), batch.ids.size(1) - 1)
    targets = batch.ids[:, 1:]                                         # the token each column scores
    for i in range(len(batch)):
        p, m = int(batch.prompt_lens[i]), int(batch.response_lens[i])
        assert targets[i][mask[i]].tolist() == batch.ids[i, p:p + m].tolist()
        assert mask[i].sum() == m and not mask[i, :p - 1].any()         # no prompt token, no padding
    assert mask[3].sum() == 1 and targets[3][mask[3]].tolist() == [EOS]


def test_sequence_logprobs_is_the_chain_rule_over_the_response(base, batch):
    with torch.no_grad():
        lp = sequence_logprobs(token_logprobs(base, batch.ids), target_mask(batch.response_mask))   # (B,)
    direct = direct_token_logprobs(base, batch.ids)                     # (B, T-1)
    for i in range(len(batch)):
        p, m = int(batch.prompt_lens[i]), int(batch.response_lens[i])
        assert math.isclose(float(lp[i]), float(direct[i, p - 1:p + m - 1].sum()), abs_tol=1e-4)


def test_one_token_responses_have_probabilities_that_sum_to_one(tiny):
    prompt, V = [5, 17, 3], tiny.cfg.vocab_size
    r = pack_responses([prompt] * V, [[v] for v in range(V)])          # every possible one-token response
    with torch.no_grad():
        lp = sequence_logprobs(token_logprobs(tiny, r.ids), target_mask(r.response_mask))   # (V,)
    assert math.isclose(float(lp.exp().sum()), 1.0, abs_tol=1e-5)


def test_greedy_responses_are_the_most_likely_token_at_every_step(base):
    r = sample_responses(base, tw.sample_problems(4, seed=1), max_new_tokens=30, temperature=0.0)
    with torch.no_grad():
        logp_all = torch.log_softmax(base(r.ids[:, :-1]).float(), dim=-1)   # (B, T-1, V)
        lp = token_logprobs(base, r.ids)                                 # (B, T-1)
    mask = target_mask(r.response_mask)
    assert torch.allclose(lp[mask], logp_all.max(dim=-1).values[mask], atol=1e-6)


def test_gradients_flow_to_the_model_unless_no_grad(tiny):
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    lp = token_logprobs(tiny, ids)
    assert lp.requires_grad
    lp.sum().backward()
    assert tiny.lm_head.weight.grad is not None and tiny.lm_head.weight.grad.abs().sum() > 0
    tiny.zero_grad(set_to_none=True)
    with torch.no_grad():
        assert not token_logprobs(tiny, ids).requires_grad


def test_the_ids_are_not_changed(tiny):
    ids = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, PAD, PAD]])
    before = ids.clone()
    token_logprobs(tiny, ids)
    assert torch.equal(ids, before)


# --------------------------------------------------------------------------- masked sums and means, by hand

X = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]])
MASK = torch.tensor([[True, True, True, False], [False, True, False, False]])


def test_masked_sum_by_hand():
    assert masked_sum(X, MASK).item() == 1 + 2 + 3 + 20
    assert masked_sum(X, MASK, dim=1).tolist() == [6.0, 20.0]
    assert masked_sum(X, MASK, dim=0).tolist() == [1.0, 22.0, 3.0, 0.0]


def test_masked_mean_weighs_tokens_or_rows():
    assert masked_mean(X, MASK).item() == pytest.approx((1 + 2 + 3 + 20) / 4)     # each kept token weighs 1/4
    assert masked_mean(X, MASK, dim=1).tolist() == [2.0, 20.0]                    # each row: its own mean
    assert masked_mean(X, MASK, dim=1).mean().item() == 11.0                      # rows weigh the same


def test_masked_entries_cannot_leak_even_as_nan_or_inf():
    x = X.clone()
    x[~MASK] = torch.tensor([float("nan"), float("inf"), -float("inf"), 1e38])
    assert masked_sum(x, MASK).item() == 26.0
    assert masked_mean(x, MASK, dim=1).tolist() == [2.0, 20.0]


def test_an_empty_mask_gives_zero_not_nan():
    empty = torch.zeros_like(MASK)
    assert masked_mean(X, empty).item() == 0.0
    assert masked_mean(X, empty, dim=1).tolist() == [0.0, 0.0]
    assert masked_mean(X, torch.tensor([[True] * 4, [False] * 4]), dim=1).tolist() == [2.5, 0.0]


def test_masked_mean_gradient_reaches_only_the_kept_entries():
    x = X.clone().requires_grad_()
    masked_mean(x, MASK).backward()
    assert torch.equal(x.grad, MASK.float() / 4)
    x.grad = None
    masked_mean(x, MASK, dim=1).sum().backward()
    assert torch.equal(x.grad, torch.tensor([[1 / 3, 1 / 3, 1 / 3, 0.0], [0.0, 1.0, 0.0, 0.0]]))


def test_sequence_logprobs_by_hand():
    token_logp = torch.log(torch.tensor([[0.5, 0.5, 0.25, 0.9], [0.2, 0.5, 1.0, 0.3]]))
    mask = torch.tensor([[False, True, True, False], [True, True, True, False]])
    assert torch.allclose(sequence_logprobs(token_logp, mask).exp(), torch.tensor([0.125, 0.1]))


def test_docstring_examples():
    result = doctest.testmod(logprobs)
    assert result.attempted > 0 and result.failed == 0
