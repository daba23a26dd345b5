"""DPO, IPO, SimPO and RPO losses against hand-worked values, sequence log-probs against the shared helpers,
and the training loop on a handful of pairs."""

import copy
import math

import torch
import torch.nn.functional as F

from llmcourse import dpo
from llmcourse import taskworld as tw
from llmcourse.logprobs import response_logprobs, sequence_logprobs, target_mask, token_logprobs
from llmcourse.preferences import label_pairs, sample_pairs
from llmcourse.sampling import pack_responses, prompt_ids
from llmcourse.tokenizer import encode, special_id

EOS = special_id(tw.EOS)


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# --------------------------------------------------------------------------- losses, by hand


def test_dpo_loss_by_hand():
    # Rafailov et al. eq. 7 for two pairs, β = 0.1:
    # pair 1: chosen log-ratio −3 − (−5) = 2, rejected −9 − (−6) = −3, h = 5
    # pair 2: chosen −10 − (−8) = −2, rejected −7 − (−8) = 1, h = −3
    pc, pr, rc, rr = torch.tensor([-3.0, -10.0]), torch.tensor([-9.0, -7.0]), torch.tensor([-5.0, -8.0]), torch.tensor([-6.0, -8.0])
    expected = (-math.log(_sig(0.5)) - math.log(_sig(-0.3))) / 2
    assert math.isclose(dpo.dpo_loss(pc, pr, rc, rr, beta=0.1).item(), expected, rel_tol=1e-6)


def test_dpo_loss_equals_trls_grouping_and_is_log2_at_the_start():
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (-20 * torch.rand(16, generator=g) for _ in range(4))
    trl = -F.logsigmoid(0.3 * ((pc - pr) - (rc - rr))).mean()          # TRL: policy margin minus reference margin
    assert torch.allclose(dpo.dpo_loss(pc, pr, rc, rr, 0.3), trl, atol=1e-6)
    assert math.isclose(dpo.dpo_loss(rc, rr, rc, rr, 0.3).item(), math.log(2), rel_tol=1e-6)   # policy = reference


def test_dpo_gradient_weight_is_sigmoid_of_minus_the_margin():
    # ∂L/∂π_w = −β σ(−β h) per pair (divided by B for the mean): a pair already ranked right pushes little
    pc = torch.tensor([-4.0, -4.0], requires_grad=True)
    pr, rc, rr = torch.tensor([-6.0, -2.0]), torch.tensor([-5.0, -5.0]), torch.tensor([-5.0, -5.0])
    dpo.dpo_loss(pc, pr, rc, rr, beta=0.5).backward()
    h = torch.tensor([2.0, -2.0])
    assert torch.allclose(pc.grad, -0.5 * torch.sigmoid(-0.5 * h) / 2, atol=1e-6)


def test_reference_gets_no_gradient():
    rc, rr = torch.tensor([-5.0], requires_grad=True), torch.tensor([-6.0], requires_grad=True)
    pc, pr = torch.tensor([-4.0], requires_grad=True), torch.tensor([-7.0], requires_grad=True)
    for loss in (dpo.dpo_loss(pc, pr, rc, rr, 0.1), dpo.ipo_loss(pc, pr, rc, rr, 0.1)):
        grads = torch.autograd.grad(loss, [pc, rc], allow_unused=True)
        assert grads[0] is not None and grads[1] is None


def test_ipo_loss_by_hand_and_its_minimum():
    # Azar et al. eq. 17, TRL's (h − 1/(2β))²: h = 2 − (−3) = 5 and h = −3, β = 0.25 -> target 2
    pc, pr, rc, rr = torch.tensor([-3.0, -10.0]), torch.tensor([-9.0, -7.0]), torch.tensor([-5.0, -8.0]), torch.tensor([-6.0, -8.0])
    assert math.isclose(dpo.ipo_loss(pc, pr, rc, rr, beta=0.25).item(), ((5 - 2) ** 2 + (-3 - 2) ** 2) / 2, rel_tol=1e-6)
    # h = 2 is IPO's target for β = 0.25: the loss is 0 there, and a larger margin is penalised again
    pc = torch.tensor([-4.0], requires_grad=True)
    pr, rc, rr = torch.tensor([-6.0]), torch.tensor([-5.0]), torch.tensor([-5.0])
    assert dpo.ipo_loss(pc, pr, rc, rr, beta=0.25).item() == 0.0
    beyond = torch.tensor([-3.0], requires_grad=True)                   # h = 3
    dpo.ipo_loss(beyond, pr, rc, rr, beta=0.25).backward()
    assert beyond.grad.item() == 2.0                                    # d/dπ_w (h − 2)² = 2 (h − 2) > 0: pushed back


def test_simpo_loss_by_hand_and_trls_form():
    # Meng et al. eq. 6: chosen −6 over 3 tokens, rejected −20 over 5 tokens, β = 2, γ = 1
    loss = dpo.simpo_loss(torch.tensor([-6.0]), torch.tensor([-20.0]), torch.tensor([3]), torch.tensor([5]), beta=2.0, gamma=1.0)
    assert math.isclose(loss.item(), -math.log(_sig(2 * (-2 + 4) - 1)), rel_tol=1e-6)
    g = torch.Generator().manual_seed(1)
    pc, pr = -30 * torch.rand(8, generator=g), -30 * torch.rand(8, generator=g)
    lc, lr = torch.randint(1, 30, (8,), generator=g), torch.randint(1, 30, (8,), generator=g)
    trl = -F.logsigmoid(2.5 * ((pc / lc - pr / lr) - 1.4 / 2.5)).mean()  # CPOTrainer: logits − γ/β, then × β
    assert torch.allclose(dpo.simpo_loss(pc, pr, lc, lr, beta=2.5, gamma=1.4), trl, atol=1e-6)


def test_rpo_is_dpo_plus_alpha_times_the_chosen_nll_per_token():
    pc, pr, rc, rr = torch.tensor([-3.0, -10.0]), torch.tensor([-9.0, -7.0]), torch.tensor([-5.0, -8.0]), torch.tensor([-6.0, -8.0])
    lens = torch.tensor([3, 5])
    nll = (3 / 3 + 10 / 5) / 2
    assert torch.allclose(dpo.rpo_loss(pc, pr, rc, rr, lens, 0.1, alpha=0.0), dpo.dpo_loss(pc, pr, rc, rr, 0.1))
    assert math.isclose(dpo.rpo_loss(pc, pr, rc, rr, lens, 0.1, alpha=0.5).item(),
                        dpo.dpo_loss(pc, pr, rc, rr, 0.1).item() + 0.5 * nll, rel_tol=1e-6)


def test_implicit_rewards_detached_and_ties_count_as_wrong():
    pc = torch.tensor([-4.0, -5.0, -5.0], requires_grad=True)
    pr = torch.tensor([-6.0, -5.0, -4.0])
    ref = torch.tensor([-5.0, -5.0, -5.0])
    chosen, rejected, accuracy = dpo.implicit_rewards(pc, pr, ref, ref, beta=0.1)
    assert torch.allclose(chosen, torch.tensor([0.1, 0.0, 0.0])) and torch.allclose(rejected, torch.tensor([-0.1, 0.0, 0.1]))
    assert not chosen.requires_grad and math.isclose(accuracy, 1 / 3, rel_tol=1e-6)   # a right pair, a tie, a wrong pair


# --------------------------------------------------------------------------- sequence log-probs


def _pairs_by_hand():
    p, q = tw.Problem(2, 3), tw.Problem(47, 385)
    texts = [tw.response(p), tw.bare_response(p) + "9", tw.response(q), tw.bare_response(q)]
    batch = pack_responses([ids for ids in prompt_ids([p, q]) for _ in range(2)],
                           [encode(t) + [EOS] for t in texts[:1]] + [encode("<answer>6</answer>") + [EOS]]
                           + [encode(texts[2]) + [EOS], encode("<answer>431</answer>") + [EOS]], n_samples=2)
    return label_pairs([p, q], batch)


def test_sequence_logprob_equals_the_shared_helpers(base):
    pairs = _pairs_by_hand()
    r = pairs.chosen_responses()
    with torch.no_grad():
        mine = dpo.sequence_logprob(base(r.ids), r.ids, r.response_mask)
        shared = sequence_logprobs(token_logprobs(base, r.ids), target_mask(r.response_mask))
        batched = response_logprobs(base, r)
        average = response_logprobs(base, r, average=True)
    assert torch.allclose(mine, shared, atol=1e-4) and torch.allclose(batched, shared, atol=1e-5)
    assert torch.allclose(average, shared / r.response_lens, atol=1e-5)


def test_padding_does_not_change_a_rows_logprob(base):
    # the same response scored alone and next to a longer one (so right-padded): the same log-prob
    pairs = _pairs_by_hand()
    both = dpo.pair_batch(pairs, [0, 1])                                 # chosen 0, chosen 1, rejected 0, rejected 1
    alone = dpo.pair_batch(pairs, [0])
    with torch.no_grad():
        lp_both, lp_alone = response_logprobs(base, both), response_logprobs(base, alone)
    assert torch.allclose(lp_both[[0, 2]], lp_alone, atol=1e-5)
    assert both.texts == [pairs.chosen_text[0], pairs.chosen_text[1], pairs.rejected_text[0], pairs.rejected_text[1]]


# --------------------------------------------------------------------------- training


def test_pair_logprobs_are_the_models_own(base):
    pairs = _pairs_by_hand()
    ref_c, ref_r = dpo.pair_logprobs(base, pairs, batch_pairs=1)
    with torch.no_grad():
        assert torch.allclose(ref_c, response_logprobs(base, pairs.chosen_responses()), atol=1e-5)
        assert torch.allclose(ref_r, response_logprobs(base, pairs.rejected_responses()), atol=1e-5)


def test_a_few_dpo_steps_raise_the_margin_and_leave_the_base_alone(base):
    before = {k: v.clone() for k, v in base.state_dict().items()}
    pairs = sample_pairs(base, tw.sample_problems(64, seed=3), seed=0)
    model = copy.deepcopy(base)
    seen = []
    h = dpo.train_dpo(model, pairs, dpo.DPOConfig(steps=6, batch_pairs=8, lr=1e-4, eval_every=3),
                      on_eval=lambda step, m: seen.append(step))
    assert seen == [0, 3, 6]
    assert len(h["loss"]) == 6 and abs(h["loss"][0] - math.log(2)) < 1e-4   # the first step: policy = reference
    assert h["margin"][0] == 0.0 and h["accuracy"][0] == 0.0               # all rewards 0, ties count as wrong
    assert sum(h["margin"][-2:]) / 2 > 0.0
    assert all(torch.equal(v, before[k]) for k, v in base.state_dict().items())


def test_rpo_alpha_adds_the_nll_term(base):
    pairs = sample_pairs(base, tw.sample_problems(32, seed=4), seed=0)
    plain = dpo.train_dpo(copy.deepcopy(base), pairs, dpo.DPOConfig(steps=1, batch_pairs=8))
    rpo = dpo.train_dpo(copy.deepcopy(base), pairs, dpo.DPOConfig(steps=1, batch_pairs=8, rpo_alpha=1.0))
    assert rpo["chosen_logp"] == plain["chosen_logp"]                       # the same batch, the same first forward
    assert rpo["loss"][0] > plain["loss"][0]                                # plus a positive NLL


def test_train_dpo_uses_the_given_sft_term(base):
    # an SFT term that is always 0 makes the RPO run plain DPO, step for step
    pairs = sample_pairs(base, tw.sample_problems(32, seed=4), seed=0)
    cfg = dpo.DPOConfig(steps=2, batch_pairs=8)
    plain = dpo.train_dpo(copy.deepcopy(base), pairs, cfg)
    zero = dpo.train_dpo(copy.deepcopy(base), pairs, dpo.DPOConfig(steps=2, batch_pairs=8, rpo_alpha=1.0),
                         nll_fn=lambda logps, lens: 0.0 * logps.sum())
    assert zero["loss"] == plain["loss"] and zero["margin"] == plain["margin"]
