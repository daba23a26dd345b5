"""Sampling responses: batched with the KV cache == one prompt at a time, and the masks fit the ids.

The oracles are plain loops that run each row alone through the model, without a cache or
padding: greedy rows must be equal token for token; sampled rows too, given the same
generator state and the same order of draws (see `sample_responses`).
"""

import doctest

import pytest
import torch

from llmcourse import sampling
from llmcourse import taskworld as tw
from llmcourse.model import GPT, GPTConfig
from llmcourse.sampling import pack_responses, prompt_ids, sample_responses
from llmcourse.tokenizer import decode, encode, special_id

EOS, PAD = special_id(tw.EOS), special_id(tw.PAD)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    m = GPT(GPTConfig(block_size=32, n_layer=2, n_embd=64, n_head=4)).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():      # larger random weights (LayerNorms kept at 1): peaked, context-dependent next tokens
        for name, p in m.named_parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) * (0.3 if name.startswith("w") else 0.2))
    return m


@pytest.fixture(scope="module")
def problems():
    # operands of 1 to 3 digits: prompts of several lengths, interleaved
    return [tw.Problem(47, 385), tw.Problem(2, 3), tw.Problem(908, 7), tw.Problem(15, 26), tw.Problem(6, 999),
            tw.Problem(1, 1)]


@torch.no_grad()
def greedy_one_at_a_time(model, prompt, max_new_tokens):
    """The slow, plain oracle: re-run the model on the whole sequence for every token, stop after EOS."""
    ids, response = list(prompt), []
    for _ in range(min(max_new_tokens, model.cfg.block_size - len(prompt))):
        nxt = int(model(torch.tensor([ids]))[0, -1].argmax())
        ids.append(nxt)
        response.append(nxt)
        if nxt == EOS:
            break
    return response


def assert_rows_match(r, prompts, responses):
    """Row i of ``r`` is prompts[i] + responses[i] (cut at EOS), padded, with masks and text to match."""
    assert r.ids.shape[0] == len(prompts)
    for i, (p, resp) in enumerate(zip(prompts, responses)):
        n, m = len(p), len(resp)
        assert r.ids[i, :n + m].tolist() == list(p) + resp
        assert (r.ids[i, n + m:] == PAD).all()
        assert r.prompt_lens[i] == n and r.response_lens[i] == m
        assert r.response_mask[i].tolist() == [False] * n + [True] * m + [False] * (r.ids.size(1) - n - m)
        assert bool(r.finished[i]) == (m > 0 and resp[-1] == EOS)
        assert r.texts[i] == decode(resp[:-1] if r.finished[i] else resp)


@torch.no_grad()
def sampled_one_at_a_time(model, rows, max_new_tokens, temperature, generator, batch_size):
    """The plain oracle with temperature > 0: every row alone, no cache, drawing in `sample_responses`' order.

    Rows are visited as `sample_responses` batches them (by prompt length, then input order, in
    chunks of ``batch_size``); within a chunk, at every step each row draws in turn, until all have
    ended. Returns each row's response cut after its first EOS.
    """
    responses = [None] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: (len(rows[i]), i))
    chunks = [[i for i in order if len(rows[i]) == n] for n in sorted({len(r) for r in rows})]
    chunks = [c[lo:lo + batch_size] for c in chunks for lo in range(0, len(c), batch_size)]
    for chunk in chunks:
        seqs = {i: list(rows[i]) for i in chunk}
        for _ in range(min(max_new_tokens, model.cfg.block_size - len(rows[chunk[0]]))):
            for i in chunk:
                logits = model(torch.tensor([seqs[i]]))[:, -1]              # (1, V): the row alone
                probs = torch.softmax(logits / temperature, dim=-1)         # (1, V)
                seqs[i].append(int(torch.multinomial(probs, 1, generator=generator)))
            if all(EOS in seqs[i][len(rows[i]):] for i in chunk):
                break
        for i in chunk:
            new = seqs[i][len(rows[i]):]
            responses[i] = new[:new.index(EOS) + 1] if EOS in new else new
    return responses


def test_greedy_batched_equals_one_at_a_time_and_keeps_row_order(base, problems):
    prompts = prompt_ids(problems)
    assert len({len(p) for p in prompts}) == 3                         # three prompt lengths, mixed
    full = [greedy_one_at_a_time(base, p, 48) for p in prompts]
    assert all(resp[-1] == EOS for resp in full)                       # the base model ends these within 48
    budget = max(map(len, full)) - 1                                   # shorter rows finish, the longest are cut
    for max_new_tokens in (48, budget):
        r = sample_responses(base, prompts, max_new_tokens=max_new_tokens, temperature=0.0, batch_size=2)
        assert_rows_match(r, prompts, [greedy_one_at_a_time(base, p, max_new_tokens) for p in prompts])
    assert r.finished.any() and not r.finished.all()


def test_greedy_batched_equals_one_at_a_time_on_a_random_model(tiny):
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, 352, (n,), generator=g).tolist() for n in (5, 3, 5, 9, 3, 1)]
    r = sample_responses(tiny, prompts, max_new_tokens=12, temperature=0.0, batch_size=3)
    assert_rows_match(r, prompts, [greedy_one_at_a_time(tiny, p, 12) for p in prompts])


@pytest.mark.parametrize("batch_size", [1, 2, 256])
def test_sampled_batched_equals_one_at_a_time_given_the_same_generator_state(base, problems, batch_size):
    rows = [p for p in prompt_ids(problems) for _ in range(2)]         # what n_samples=2 answers
    r = sample_responses(base, problems, n_samples=2, max_new_tokens=24, temperature=1.0,
                         generator=torch.Generator().manual_seed(0), batch_size=batch_size)
    expected = sampled_one_at_a_time(base, rows, 24, 1.0, torch.Generator().manual_seed(0), batch_size)
    assert_rows_match(r, rows, expected)
    assert len({tuple(e) for e in expected}) > len(problems)          # a prompt's two samples can differ
    # the order of the draws matters: another batching hands the rows other random numbers
    other = sampled_one_at_a_time(base, rows, 24, 1.0, torch.Generator().manual_seed(0), 3 - min(batch_size, 2))
    assert other != expected


def test_sampled_rows_are_prompt_major_and_masks_and_texts_agree_with_the_ids(base, problems):
    r = sample_responses(base, problems, n_samples=3, max_new_tokens=16, temperature=1.0,
                         generator=torch.Generator().manual_seed(0), batch_size=4)
    prompts = [p for p in prompt_ids(problems) for _ in range(3)]
    responses = [r.ids[i, r.prompt_lens[i]:r.prompt_lens[i] + r.response_lens[i]].tolist() for i in range(len(r))]
    assert all(EOS not in resp[:-1] for resp in responses)             # cut at the first EOS
    assert_rows_match(r, prompts, responses)
    assert r.prompt_index.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5]
    assert r.per_row(problems)[3:6] == [problems[1]] * 3
    assert r.finished.any() and not r.finished.all()                  # both kinds of rows in one batch
    assert r.ids.size(1) == int((r.prompt_lens + r.response_lens).max())   # no all-padding column


def test_rows_that_never_emit_eos_use_the_whole_budget(base, problems):
    prompts = prompt_ids(problems)
    r = sample_responses(base, prompts, max_new_tokens=3, temperature=0.0)   # even a bare answer needs 4+
    assert not r.finished.any() and (r.response_lens == 3).all()
    assert_rows_match(r, prompts, [greedy_one_at_a_time(base, p, 3) for p in prompts])


def test_sampling_follows_the_model_distribution_at_the_temperature(tiny):
    prompts, temperature, n = [[5, 6, 7], [300], [5, 6, 8]], 0.7, 600
    r = sample_responses(tiny, prompts, n_samples=n, max_new_tokens=1, temperature=temperature,
                         generator=torch.Generator().manual_seed(0), batch_size=500)
    first = r.ids[torch.arange(len(r)), r.prompt_lens].view(len(prompts), n)   # (3, n): first response token

    def worst_z(counts, probs):
        """Largest |count − n p| / sd over the tokens that the distribution gives at least 1%."""
        keep = probs > 0.01
        return float(((counts - n * probs).abs() / (n * probs * (1 - probs)).sqrt())[keep].max())

    with torch.no_grad():
        logits = [tiny(torch.tensor([p]))[0, -1] for p in prompts]    # each prompt alone, no cache: (V,)
    for i in range(len(prompts)):
        counts = torch.bincount(first[i], minlength=logits[i].numel()).float()
        assert worst_z(counts, torch.softmax(logits[i] / temperature, -1)) < 4.5
        # the check has power: the wrong temperature, or another prompt's distribution, is rejected
        assert worst_z(counts, torch.softmax(logits[i], -1)) > 6
        assert all(worst_z(counts, torch.softmax(logits[j] / temperature, -1)) > 6 for j in range(3) if j != i)


def test_the_generator_decides_the_samples(tiny):
    prompts = [[1, 2, 3], [4, 5]]
    def run(seed):
        return sample_responses(tiny, prompts, n_samples=4, max_new_tokens=10, temperature=1.0,
                                generator=torch.Generator().manual_seed(seed)).ids
    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))
    assert len({tuple(row) for row in run(0)[:4].tolist()}) > 1       # one prompt's samples differ
    greedy = sample_responses(tiny, prompts, n_samples=4, max_new_tokens=10, temperature=0.0).ids
    assert (greedy[:4] == greedy[0]).all() and (greedy[4:] == greedy[4]).all()


def test_problems_and_their_prompt_ids_give_the_same_responses(base, problems):
    assert prompt_ids(problems)[0] == encode("<|user|>What is 47+385?<|assistant|>")
    a = sample_responses(base, problems[:3], max_new_tokens=8, temperature=0.0)
    b = sample_responses(base, prompt_ids(problems[:3]), max_new_tokens=8, temperature=0.0)
    assert torch.equal(a.ids, b.ids) and a.texts == b.texts


def test_the_token_budget_shrinks_to_fit_the_context(tiny):
    long = list(range(1, 30))                                          # 29 tokens, block_size 32
    r = sample_responses(tiny, [long, [1]], max_new_tokens=10, temperature=0.0)
    assert r.response_lens.tolist()[0] <= 3 and r.ids.size(1) <= 32
    with pytest.raises(ValueError, match="no room"):
        sample_responses(tiny, [list(range(32))], max_new_tokens=4)


def test_pack_responses_by_hand():
    r = pack_responses([[1, 2, 3], [4]], [[51, EOS, 52, EOS], []], n_samples=1)
    assert r.ids.tolist() == [[1, 2, 3, 51, EOS], [4, PAD, PAD, PAD, PAD]]
    assert r.response_mask.tolist() == [[False, False, False, True, True], [False] * 5]
    assert r.texts == ["3", ""] and r.finished.tolist() == [True, False]
    assert r.ids.dtype == r.prompt_lens.dtype == torch.long and r.response_mask.dtype == torch.bool
    with pytest.raises(ValueError):
        pack_responses([[1]], [[2], [3]])
    with pytest.raises(ValueError):
        r.per_row(["only one item"])


def test_docstring_examples():
    result = doctest.testmod(sampling)
    assert result.attempted > 0 and result.failed == 0
