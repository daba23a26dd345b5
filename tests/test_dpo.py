"""DPO, IPO, SimPO, RPO, ORPO and KTO losses against hand-worked values, sequence log-probs against the shared
helpers, and the training loops on a handful of pairs. (TRL's own code is the oracle in test_oracle_trl.py.)"""

import copy
import math

import torch

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


def test_dpo_loss_is_log2_at_the_start():
    g = torch.Generator().manual_seed(0)
    rc, rr = (-20 * torch.rand(16, generator=g) for _ in range(2))
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
    # Azar et al. eq. 17, (h − 1/(2β))² on summed log-probs: h = 2 − (−3) = 5 and h = −3, β = 0.25 -> target 2
    pc, pr, rc, rr = torch.tensor([-3.0, -10.0]), torch.tensor([-9.0, -7.0]), torch.tensor([-5.0, -8.0]), torch.tensor([-6.0, -8.0])
    assert math.isclose(dpo.ipo_loss(pc, pr, rc, rr, beta=0.25).item(), ((5 - 2) ** 2 + (-3 - 2) ** 2) / 2, rel_tol=1e-6)
    # h = 2 is IPO's target for β = 0.25: the loss is 0 there, and a larger margin is penalised again
    pc = torch.tensor([-4.0], requires_grad=True)
    pr, rc, rr = torch.tensor([-6.0]), torch.tensor([-5.0]), torch.tensor([-5.0])
    assert dpo.ipo_loss(pc, pr, rc, rr, beta=0.25).item() == 0.0
    beyond = torch.tensor([-3.0], requires_grad=True)                   # h = 3
    dpo.ipo_loss(beyond, pr, rc, rr, beta=0.25).backward()
    assert beyond.grad.item() == 2.0                                    # d/dπ_w (h − 2)² = 2 (h − 2) > 0: pushed back


def test_simpo_loss_by_hand():
    # Meng et al. eq. 6: chosen −6 over 3 tokens, rejected −20 over 5 tokens, β = 2, γ = 1
    loss = dpo.simpo_loss(torch.tensor([-6.0]), torch.tensor([-20.0]), torch.tensor([3]), torch.tensor([5]), beta=2.0, gamma=1.0)
    assert math.isclose(loss.item(), -math.log(_sig(2 * (-2 + 4) - 1)), rel_tol=1e-6)


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


# --------------------------------------------------------------------------- ORPO and KTO, by hand


def test_log_odds_is_exact_near_probability_one_and_finite_near_zero():
    avg = torch.tensor([-1e-6, -0.05, -3.0, -150.0])                     # mean log-prob per token
    exact = avg.double() - torch.log(-torch.expm1(avg.double()))          # float64
    mine = dpo.log_odds(avg)
    assert torch.allclose(mine.double(), exact, rtol=1e-5, atol=0)
    # the naive form: P underflows to 0 at −150 (log odds −inf); the log1p(−exp(x)) form loses the digits of 1 − P
    # when P is within float32's spacing of 1 (a 1% error in 1 − P at −1e-6). (TRL 1.16's ORPO uses log1mexp, which
    # switches from one form to the other at log P = −log 2: exact too, see test_oracle_trl.py.)
    p = avg.exp()
    naive = torch.log(p) - torch.log(1 - p)
    log1p_form = avg - torch.log1p(-torch.exp(avg))
    assert torch.isinf(naive[3]) and torch.isfinite(mine).all()
    assert abs(log1p_form[0].item() - exact[0].item()) > 1e-3 and abs(mine[0].item() - exact[0].item()) < 1e-4


def test_orpo_loss_by_hand():
    # Hong et al. eq. 6-7. Pair 1: P(y_w) = 1/2 over 2 tokens, P(y_l) = 1/5 over 1: odds 1 and 1/4, log OR = log 4.
    # Pair 2: P(y_w) = 1/5 over 3 tokens, P(y_l) = 1/2 over 2 tokens: log OR = −log 4.
    pc = torch.tensor([2 * math.log(0.5), 3 * math.log(0.2)])
    pr = torch.tensor([math.log(0.2), 2 * math.log(0.5)])
    lc, lr = torch.tensor([2, 3]), torch.tensor([1, 2])
    sft = (-math.log(0.5) - math.log(0.2)) / 2
    odds_ratio_term = (-math.log(_sig(math.log(4))) - math.log(_sig(-math.log(4)))) / 2
    assert math.isclose(dpo.orpo_loss(pc, pr, lc, lr, lam=0.1).item(), sft + 0.1 * odds_ratio_term, rel_tol=1e-6)
    assert math.isclose(dpo.orpo_loss(pc, pr, lc, lr, lam=0.0).item(), dpo.chosen_nll(pc, lc).item(), rel_tol=1e-6)


def test_orpo_gradient_is_the_papers_eq_10():
    # ∂L_OR/∂log P_w = −σ(−log OR) / (1 − P_w), ∂L_OR/∂log P_l = +σ(−log OR) / (1 − P_l) (Hong et al. eq. 9-10):
    # a chosen response that is already likely (P_w → 1) gets a large push
    cavg = torch.tensor([math.log(0.9)], requires_grad=True)
    ravg = torch.tensor([math.log(0.3)], requires_grad=True)
    dpo.orpo_loss(cavg, ravg, torch.tensor([1]), torch.tensor([1]), lam=1.0).backward()
    log_or = math.log(9) - math.log(0.3 / 0.7)
    assert math.isclose(cavg.grad.item(), -1 - _sig(-log_or) / 0.1, rel_tol=1e-5)   # −1: the SFT term
    assert math.isclose(ravg.grad.item(), _sig(-log_or) / 0.7, rel_tol=1e-5)


def test_kto_loss_by_hand():
    # Ethayarajh et al. eq. 8: r = [1, −1, 2], desirable, undesirable, undesirable; mismatched log-ratios 1 and 0 and 2:
    # z0 = 1; β = 0.5, λ_D = 1, λ_U = 1.5
    policy, ref = torch.tensor([-4.0, -6.0, -3.0]), torch.tensor([-5.0, -5.0, -5.0])
    desirable = torch.tensor([True, False, False])
    kl_policy, kl_ref = torch.tensor([-10.0, -12.0, -7.0]), torch.tensor([-11.0, -12.0, -9.0])
    expected = ((1 - _sig(0.5 * (1 - 1))) + 1.5 * (1 - _sig(0.5 * (1 + 1))) + 1.5 * (1 - _sig(0.5 * (1 - 2)))) / 3
    loss = dpo.kto_loss(policy, ref, desirable, kl_policy, kl_ref, beta=0.5, lambda_d=1.0, lambda_u=1.5)
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)


def test_kto_reference_point_is_clamped_at_zero_and_detached():
    policy = torch.tensor([-4.0, -6.0], requires_grad=True)
    kl_policy = torch.tensor([-13.0, -12.0], requires_grad=True)          # mismatched log-ratios −2 and 0: mean −1
    ref, kl_ref = torch.tensor([-5.0, -5.0]), torch.tensor([-11.0, -12.0])
    desirable = torch.tensor([True, False])
    loss = dpo.kto_loss(policy, ref, desirable, kl_policy, kl_ref, beta=1.0, lambda_d=1.0, lambda_u=1.0)
    assert math.isclose(loss.item(), ((1 - _sig(1.0)) + (1 - _sig(1.0))) / 2, rel_tol=1e-6)   # z0 = max(0, −1) = 0
    grads = torch.autograd.grad(loss, [policy, kl_policy], allow_unused=True)
    assert grads[0] is not None and grads[1] is None                     # z0 carries no gradient
    kl_policy = torch.tensor([-8.0, -10.0], requires_grad=True)           # mean +2.5: not clamped, still detached
    loss = dpo.kto_loss(policy, ref, desirable, kl_policy, kl_ref, beta=1.0, lambda_d=1.0, lambda_u=1.0)
    assert torch.autograd.grad(loss, [kl_policy], allow_unused=True) == (None,)


def test_kto_loss_is_half_lambda_at_the_start():
    g = torch.Generator().manual_seed(2)
    ref, kl_ref = -20 * torch.rand(10, generator=g), -30 * torch.rand(10, generator=g)
    desirable = torch.rand(10, generator=g) < 0.4
    start = dpo.kto_loss(ref, ref, desirable, kl_ref, kl_ref, beta=0.2, lambda_d=1.0, lambda_u=1.0)
    assert start.item() == 0.5                                            # policy = reference: r = 0, z0 = 0, 1 − σ(0)


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
    ref_c, ref_r = dpo.pair_logprobs(base, pairs)
    one_by_one = dpo.example_logprobs(base, pairs.problems * 2, pairs.chosen + pairs.rejected, batch_rows=1)
    with torch.no_grad():
        assert torch.allclose(ref_c, response_logprobs(base, pairs.chosen_responses()), atol=1e-5)
        assert torch.allclose(ref_r, response_logprobs(base, pairs.rejected_responses()), atol=1e-5)
    assert torch.allclose(torch.cat([ref_c, ref_r]), one_by_one, atol=1e-5)
    assert not ref_c.requires_grad and not ref_r.requires_grad            # constants: no graph kept


def test_batch_schedule_is_train_dpos_old_order():
    # passes over the indices in seeded random order, the next shuffle appended when a pass runs short
    g = torch.Generator().manual_seed(3)
    order = torch.randperm(10, generator=g).tolist() + torch.randperm(10, generator=g).tolist()
    assert dpo.batch_schedule(10, batch=4, steps=4, seed=3) == [order[0:4], order[4:8], order[8:12], order[12:16]]
    assert [len(b) for b in dpo.batch_schedule(3, batch=8, steps=2, seed=0)] == [8, 8]   # fewer examples than a batch


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


def test_a_few_orpo_steps_need_no_reference_and_raise_the_odds_ratio(base):
    pairs = sample_pairs(base, tw.sample_problems(64, seed=3), seed=0)
    model = copy.deepcopy(base)
    h = dpo.train_orpo(model, pairs, dpo.ORPOConfig(steps=6, batch_pairs=8, lam=1.0))
    assert h["reference_logps"] == [0] and len(h["loss"]) == 6
    c, r = dpo.pair_logprobs(base, pairs)
    lens_c = dpo.response_lens(pairs.chosen)
    lens_r = dpo.response_lens(pairs.rejected)
    before = (dpo.log_odds(c / lens_c) - dpo.log_odds(r / lens_r)).mean()
    c, r = dpo.pair_logprobs(model, pairs)
    after = (dpo.log_odds(c / lens_c) - dpo.log_odds(r / lens_r)).mean()
    assert after > before


def test_a_few_kto_steps_start_at_half_and_hold_the_reference_log_probs(base):
    pairs = sample_pairs(base, tw.sample_problems(64, seed=3), seed=0)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    seen = []

    def spy(policy_logps, ref_logps, desirable, policy_kl_logps, ref_kl_logps, *args):
        seen.append((policy_logps.detach(), ref_logps, desirable, policy_kl_logps, ref_kl_logps))
        return dpo.kto_loss(policy_logps, ref_logps, desirable, policy_kl_logps, ref_kl_logps, *args)

    model = copy.deepcopy(base)
    cfg = dpo.KTOConfig(steps=3, batch_examples=16)
    h = dpo.train_kto(model, pairs, cfg, loss_fn=spy)
    assert h["reference_logps"] == [2 * len(pairs) + cfg.steps * cfg.batch_examples]
    assert abs(h["loss"][0] - 0.5) < 1e-6 and h["kl"][0] == 0.0          # policy = reference at the first step
    policy, ref, desirable, kl_policy, kl_ref = seen[0]
    assert torch.allclose(policy, ref, atol=1e-5) and torch.allclose(kl_policy, kl_ref, atol=1e-5)
    assert not kl_policy.requires_grad                                    # the mismatched rows: no gradients
    assert not torch.allclose(kl_ref, ref, atol=1e-3)                     # other responses after the same prompts
    assert 0 < desirable.sum() < len(desirable)                           # unpaired: any mix of labels
    assert all(torch.equal(v, before[k]) for k, v in base.state_dict().items())


def test_measured_run_trains_each_kind_with_its_loop(base, monkeypatch):
    pairs = sample_pairs(base, tw.sample_problems(32, seed=4), seed=0)
    monkeypatch.setattr(dpo, "evaluate", lambda model, k: {k: 0.0 for k in (
        "sampled_accuracy", "greedy_accuracy", "reasoned_share", "reasoned_accuracy", "bare_accuracy", "format_rate")})
    for cfg, key in ((dpo.DPOConfig(steps=1, batch_pairs=4, eval_every=1), "margin"),
                     (dpo.ORPOConfig(steps=1, batch_pairs=4, eval_every=1), "log_odds_ratio"),
                     (dpo.KTOConfig(steps=1, batch_examples=8, eval_every=1), "kl")):
        _, h, evals = dpo.measured_run(base, pairs, cfg)
        assert key in h and [e["step"] for e in evals] == [0, 1]
