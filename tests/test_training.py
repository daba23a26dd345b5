"""Training pieces against trusted oracles; the shipped base model's checkpoint and checksum."""

import math
import shutil

import pytest
import torch
import torch.nn.functional as F

from llmcourse import taskworld as tw
from llmcourse.checkpoint import (BASE_MODEL_PATH, BASE_MODEL_SHA256, CheckpointError, base_model_metrics,
                                  file_sha256, load_base_model, load_checkpoint)
from llmcourse.sft import IGNORE, collate, encode_example, masked_cross_entropy, sft_targets
from llmcourse.tokenizer import decode, special_id
from llmcourse.pretraining import pretraining_stream
from llmcourse.sft import sft_sampler
from llmcourse.taskworld import draw_styles
from llmcourse.pretraining import clip_grad_norm, get_batch, lr_at, next_token_loss


def test_lr_schedule_worked_values():
    assert lr_at(0, 1.0, 0.1, 10, 110) == pytest.approx(0.1)
    assert lr_at(9, 1.0, 0.1, 10, 110) == pytest.approx(1.0)
    assert lr_at(10, 1.0, 0.1, 10, 110) == pytest.approx(1.0)
    assert lr_at(60, 1.0, 0.1, 10, 110) == pytest.approx(0.55)
    assert lr_at(110, 1.0, 0.1, 10, 110) == lr_at(500, 1.0, 0.1, 10, 110) == pytest.approx(0.1)


@pytest.mark.parametrize("scale", [0.01, 10.0])
def test_clip_grad_norm_equals_torch(scale):
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.zeros(s)) for s in [(4, 3), (3,), (2, 2)]]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * scale
    ours, norm = clip_grad_norm([p.grad for p in params], 1.0)
    torch_norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
    torch.testing.assert_close(norm, torch_norm)
    for o, p in zip(ours, params):
        torch.testing.assert_close(o, p.grad)


def test_masked_cross_entropy_equals_torch_ignore_index():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 6, 11, generator=g)
    targets = torch.randint(0, 11, (3, 6), generator=g)
    targets[0, :4] = IGNORE
    targets[2, 1:] = IGNORE
    expected = F.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1), ignore_index=IGNORE)
    torch.testing.assert_close(masked_cross_entropy(logits, targets), expected)


def test_sft_targets_keep_exactly_the_response_and_eos():
    pad = special_id(tw.PAD)
    problems = [tw.Problem(3, 4), tw.Problem(123, 989)]
    ids, prompt_lens = collate([encode_example(p) for p in problems], pad)
    targets = sft_targets(ids, prompt_lens, pad)
    for row, p in zip(targets, problems):
        kept = [t for t in row.tolist() if t != IGNORE]
        assert decode(kept) == tw.response(p) + tw.EOS


def test_next_token_loss_and_batches_are_shifted_by_one():
    data = torch.arange(100)
    x, y = get_batch(data, 4, 8, torch.Generator().manual_seed(0))
    assert torch.equal(y, x + 1)
    logits = torch.zeros(2, 5, 7)
    assert next_token_loss(logits, torch.zeros(2, 5, dtype=torch.long)).item() == pytest.approx(math.log(7))


def test_training_data_mix_the_styles_in_the_recipes_shares():
    styles = draw_styles(10_000, 0.25, seed=0)
    assert styles == draw_styles(10_000, 0.25, seed=0)                     # seeded
    assert abs(styles.count(tw.REASONED) / len(styles) - 0.25) < 0.02
    assert set(draw_styles(50, 1.0, seed=0)) == {tw.REASONED} and set(draw_styles(50, 0.0, seed=0)) == {tw.BARE}
    problems = tw.sample_problems(400, seed=5)
    ids, prompt_lens = sft_sampler(problems, 64, seed=2, reasoned_share=0.5)(0)
    responses = [decode(row[n:].tolist()) for row, n in zip(ids, prompt_lens)]
    assert 10 < sum(r.startswith(tw.THINK) for r in responses) < 54
    assert all(r.startswith(tw.THINK) or r.startswith(tw.ANSWER) for r in responses)
    stream = decode(pretraining_stream(200, seed=1, reasoned_share=0.7).tolist())
    assert 100 < stream.count(tw.THINK) < 180 and stream.count(tw.EOS) == 200


def test_base_checkpoint_matches_its_recorded_sha256_and_loads():
    assert file_sha256(BASE_MODEL_PATH) == BASE_MODEL_SHA256
    model = load_base_model()
    assert not model.training and 500_000 < model.n_params() < 5_000_000
    m = base_model_metrics()
    assert 0.0 < m["greedy_accuracy"] < 1.0 and 0.0 < m["sampled_accuracy"] < 1.0 and 0.0 < m["format_rate"] < 1.0


def test_damaged_or_missing_checkpoint_gives_a_clear_error(tmp_path):
    bad = tmp_path / "base_model.pt"
    shutil.copy(BASE_MODEL_PATH, bad)
    with open(bad, "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        load_checkpoint(bad, sha256=BASE_MODEL_SHA256)
    with pytest.raises(CheckpointError, match="base_model"):
        load_checkpoint(tmp_path / "nope.pt", sha256=BASE_MODEL_SHA256)


def test_examples_from_responses_are_prompt_and_response_with_its_eos():
    from llmcourse.sampling import pack_responses
    from llmcourse.sft import examples_from_responses
    eos = special_id(tw.EOS)
    r = pack_responses([[1, 2], [3]], [[49, 50, eos, 7], [51, 52, 53]])     # row 1 unfinished: no EOS to learn
    assert examples_from_responses(r) == [([1, 2, 49, 50, eos], 2), ([3, 51, 52, 53], 1)]
    assert examples_from_responses(r, [1]) == [([3, 51, 52, 53], 1)]
