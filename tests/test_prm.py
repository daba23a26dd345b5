"""The process reward model (chapter 11): step labels and where each step ends, hand-worked; the PRM's step logits
against a direct computation row by row; the aggregations; the shipped checkpoint and what it knows."""

from dataclasses import replace

import pytest
import torch

from llmcourse import prm as P
from llmcourse import taskworld as tw
from llmcourse.checkpoint import CheckpointError, file_sha256, load_base_model
from llmcourse.inference import auroc, sample_in_style
from llmcourse.logprobs import token_logprobs
from llmcourse.reward_model import load_reward_model, score_responses
from llmcourse.sampling import pack_responses, prompt_ids, sample_responses
from llmcourse.tokenizer import decode, encode

p = tw.Problem(47, 385)                       # true steps 7+5=12, 4+8+1=13, 0+3+1=4; answer 432


@pytest.fixture(scope="module")
def base():
    return load_base_model()


@pytest.fixture(scope="module")
def shipped():
    return P.load_prm()


# --------------------------------------------------------------------------- step labels


@pytest.mark.parametrize("text,labels", [
    ("<think>7+5=12,4+8+1=13,0+3+1=4</think><answer>432</answer>", [True, True, True, True]),
    ("<think>7+5=12,4+8+1=12,0+3+1=4</think><answer>422</answer>", [True, False, False, False]),   # 2nd sum wrong
    ("<think>7+5=12,4+8+1=12,0+3+1=4</think><answer>432</answer>", [True, False, False, False]),   # right by luck
    ("<think>7+5=13,4+8+1=13,0+3+1=4</think><answer>432</answer>", [False, False, False, False]),
    ("<think>7+5=12,4+8+1=13,0+3+1=4</think><answer>431</answer><|endoftext|>", [True, True, True, False]),
    ("<think>7+5=12,4+8+1=13</think><answer>432</answer>", [True, True, False]),                   # a sum missing
    ("<think>7+5=12,4+8+1=13,0+3+1=4,0+0=0</think><answer>432</answer>", [True, True, True, False, False]),
    ("<think>4+8+1=13,7+5=12,0+3+1=4</think><answer>432</answer>", [False, False, False, False]),  # order matters
    ("<answer>432</answer>", [True]), ("<answer>433</answer>", [False]), ("432", [False]),
    ("<think>7+5=12,4+8<answer>12</answer>", [True, False]),                   # unclosed: "4+8" is no step
    ("<think>7+5=12,4+8+1=13,0+3+1=4", [True, True, False]),                    # cut off before the answer
])
def test_step_labels_by_hand(text, labels):
    assert P.step_labels(text, p) == labels


def test_step_end_positions_by_hand():
    ids = encode("<think>7+5=12,4+8+1=13,0+3+1=4</think><answer>432</answer><|endoftext|>")
    ends = P.step_end_positions(ids)
    assert [decode([ids[e]]) for e in ends] == [",", ",", "</think>", "<|endoftext|>"]
    bare = encode("<answer>432</answer><|endoftext|>")
    assert P.step_end_positions(bare) == [len(bare) - 1]


def test_every_sampled_response_has_one_end_per_label(base):
    """Sampled hot, so that broken responses (cut off, unclosed, extra tags) are among them."""
    problems = tw.sample_problems(40, seed=3)
    g = torch.Generator().manual_seed(0)
    r = sample_responses(base, problems, n_samples=4, temperature=1.6, generator=g)
    targets = P.step_targets(r, problems)                    # raises when a row's ends and labels disagree
    assert targets.positions.shape == targets.labels.shape == targets.mask.shape
    assert targets.mask[:, 0].all()                          # every response has at least its answer step
    assert (targets.labels[~targets.mask] == 0).all()
    last = targets.mask.sum(dim=1) - 1
    real_end = r.prompt_lens + r.response_lens - 1
    assert torch.equal(targets.positions.gather(1, last.unsqueeze(1)).squeeze(1), real_end)


# --------------------------------------------------------------------------- aggregation


def test_aggregate_steps_by_hand():
    scores = torch.tensor([[0.75, 0.5, 1.0], [0.5, 0.25, 0.0], [0.9, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True], [True, True, False], [True, False, False]])
    assert P.aggregate_steps(scores, mask, "min").tolist() == [0.5, 0.25, 0.8999999761581421]
    assert P.aggregate_steps(scores, mask, "product").tolist() == [0.375, 0.125, 0.8999999761581421]
    assert P.aggregate_steps(scores, mask, "last").tolist() == [1.0, 0.25, 0.8999999761581421]
    with pytest.raises(ValueError):
        P.aggregate_steps(scores, mask, "mean")


# --------------------------------------------------------------------------- the model


def test_step_logits_are_the_calibrated_log_prob_of_the_response_so_far(base):
    prm = P.ProcessRewardModel.from_base(base)
    with torch.no_grad():
        prm.scale.fill_(2.0)
        prm.bias.fill_(3.0)
    problems = [tw.Problem(47, 385), tw.Problem(5, 3)]
    texts = ["<think>7+5=12,4+8+1=13,0+3+1=4</think><answer>432</answer><|endoftext|>", "<answer>8</answer><|endoftext|>"]
    r = pack_responses(prompt_ids(problems), [encode(t) for t in texts])
    steps = P.step_positions(r)
    with torch.no_grad():
        batched = prm(r.ids, r.prompt_lens, steps.positions)
        for b in range(2):                                    # each row alone: Σ log π of tokens 2 … end of step
            n = int(r.prompt_lens[b] + r.response_lens[b])
            logp = token_logprobs(base, r.ids[b:b + 1, :n])[0]
            for s in range(int(steps.mask[b].sum())):
                end = int(steps.positions[b, s])
                expected = 2.0 * logp[int(r.prompt_lens[b]):end].sum() + 3.0
                assert batched[b, s].item() == pytest.approx(expected.item(), abs=1e-4)


def test_train_prm_runs_and_learns_the_head(base):
    cfg = replace(P.PRMConfig(), n_problems=24, samples_per_problem=2, steps=3, batch_size=8)
    responses, rows, targets = P.training_responses(base, cfg)
    assert len(responses) == len(rows) == 48
    prm = P.make_prm(base, cfg)
    history = P.train_prm(prm, responses, targets, cfg, progress=False)
    assert len(history["loss"]) == 3 and history["seconds"][0] > 0
    assert prm.bias.item() != 0.0 and not prm.training
    head = P.make_prm(base, P.STEP_HEAD)
    P.train_prm(head, responses, targets, replace(P.STEP_HEAD, steps=2, batch_size=8), progress=False)
    scores, mask = P.score_steps(head, responses)
    assert scores.shape == mask.shape == targets.mask.shape


# --------------------------------------------------------------------------- the shipped PRM


def test_shipped_prm_checksum(tmp_path):
    assert file_sha256(P.PRM_PATH) == P.PRM_SHA256
    broken = tmp_path / "prm.pt"
    broken.write_bytes(P.PRM_PATH.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="sha256"):
        P.load_prm(path=broken)
    with pytest.raises(CheckpointError, match="python -m llmcourse.prm"):
        P.load_prm(path=tmp_path / "missing.pt")


def test_shipped_prm_metrics():
    m = P.prm_metrics()
    assert m["train_responses"] == 16_000 and 0.2 < m["train_wrong_share"] < 0.6
    assert m["held_out_step_accuracy"] > 0.9 and m["held_out_response_auroc"] > 0.9


def test_shipped_prm_checks_steps_on_held_out_responses(base, shipped):
    """Fresh held-out samples (not the ones its metrics were measured on): its steps are mostly judged right, and it
    ranks right responses above wrong ones where the outcome reward model, which learned the format, cannot."""
    problems = list(tw.eval_problems())
    g = torch.Generator().manual_seed(7)
    r = sample_in_style(base, problems, tw.REASONED, n_samples=2, generator=g)   # reasoned: where the steps are
    rows = r.per_row(problems)
    targets = P.step_targets(r, rows)
    scores, mask = P.score_steps(shipped, r)
    metrics = P.step_metrics(scores, targets)
    assert metrics["step_accuracy"] > 0.9
    correct = torch.tensor([tw.is_correct(t, q) for t, q in zip(r.texts, rows)])
    assert (~correct).sum() >= 10                                                 # enough wrong ones to judge
    prm_auroc = auroc(P.aggregate_steps(scores, mask, "min"), correct)
    orm_auroc = auroc(score_responses(load_reward_model(), r), correct)
    assert prm_auroc > 0.9 and prm_auroc > orm_auroc + 0.2
