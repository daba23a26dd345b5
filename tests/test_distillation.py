"""Distillation (chapter 12): the losses by hand and against TRL's GKD, their gradients, the student, the loops."""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from llmcourse import distillation as dist
from llmcourse import taskworld as tw
from llmcourse.checkpoint import (STUDENT_MODEL_PATH, STUDENT_MODEL_SHA256, CheckpointError, file_sha256,
                                  load_base_model, load_student_model, student_model_metrics)
from llmcourse.pretraining import TrainConfig
from llmcourse.sft import masked_cross_entropy


def _random_logits(seed: int, B: int = 3, T: int = 5, V: int = 7):
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(B, T, V, generator=g) * 2 + 1
    student = teacher + torch.randn(B, T, V, generator=g) * 1.5
    mask = torch.rand(B, T, generator=g) < 0.6
    mask[:, 1] = True                                                       # every row keeps a position
    return student, teacher, mask


ONE = torch.ones(1, 1, dtype=torch.bool)


# --------------------------------------------------------------------------- values by hand


def test_forward_kd_on_three_tokens_by_hand():
    # teacher logits (0, log 2, log 4) at τ = 2: softmax of (0, ½ log 2, log 2) ∝ (1, √2, 2)
    z_t = torch.tensor([[[0.0, math.log(2), math.log(4)]]])
    z_s = torch.zeros(1, 1, 3)                                              # uniform at any τ
    p_t = [1 / (3 + math.sqrt(2)), math.sqrt(2) / (3 + math.sqrt(2)), 2 / (3 + math.sqrt(2))]
    kl = sum(p * math.log(p / (1 / 3)) for p in p_t)                       # KL(p_t ‖ uniform)
    assert dist.kd_loss(z_s, z_t, ONE, temperature=2.0).item() == pytest.approx(4 * kl, rel=1e-5)
    # by hand: p_t = (0.2265, 0.3204, 0.4531), Σ p ln(3p) = −0.0875 − 0.0127 + 0.1391 = 0.0389, × τ² = 4: 0.1555
    assert dist.kd_loss(z_s, z_t, ONE, temperature=2.0).item() == pytest.approx(0.1555, abs=1e-4)


def test_reverse_kd_on_three_tokens_by_hand():
    z_t = torch.tensor([[[0.0, math.log(2), math.log(4)]]])                 # τ = 1: (1/7, 2/7, 4/7)
    z_s = torch.zeros(1, 1, 3)
    kl = sum((1 / 3) * math.log((1 / 3) / q) for q in (1 / 7, 2 / 7, 4 / 7))  # KL(uniform ‖ p_t)
    assert dist.reverse_kd_loss(z_s, z_t, ONE).item() == pytest.approx(kl, rel=1e-5)
    assert dist.kd_loss(z_s, z_t, ONE).item() != pytest.approx(kl, rel=1e-2)  # the two directions differ


def test_the_mean_is_over_the_masked_positions_only():
    z_s, z_t, _ = _random_logits(0, B=1, T=3)
    mask = torch.tensor([[False, True, True]])
    per_position = [dist.kd_loss(z_s[:, t:t + 1], z_t[:, t:t + 1], ONE, 2.0) for t in (1, 2)]
    assert dist.kd_loss(z_s, z_t, mask, 2.0).item() == pytest.approx(sum(per_position).item() / 2, rel=1e-6)
    z_s[0, 0] += 100.0                                                      # a prompt position changes nothing
    assert dist.kd_loss(z_s, z_t, mask, 2.0).item() == pytest.approx(sum(per_position).item() / 2, rel=1e-6)


@pytest.mark.parametrize("loss", [dist.kd_loss, dist.reverse_kd_loss])
@pytest.mark.parametrize("tau", [0.5, 1.0, 3.0])
def test_kl_is_nonnegative_and_zero_only_for_equal_distributions(loss, tau):
    z_s, z_t, mask = _random_logits(1)
    assert loss(z_s, z_t, mask, tau).item() > 0
    assert loss(z_t, z_t, mask, tau).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(z_t + 5.0, z_t, mask, tau).item() == pytest.approx(0.0, abs=1e-5)   # a shift is the same softmax


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0, 4.0])
def test_forward_kd_gradient_is_tau_times_p_s_minus_p_t_per_kept_token(tau):
    z_s, z_t, mask = _random_logits(2)
    z_s.requires_grad_(True)
    dist.kd_loss(z_s, z_t, mask, tau).backward()
    p_s, p_t = F.softmax(z_s.detach() / tau, -1), F.softmax(z_t / tau, -1)
    expected = tau * (p_s - p_t) * mask[..., None] / mask.sum()            # (B, T, V)
    torch.testing.assert_close(z_s.grad, expected, atol=1e-6, rtol=1e-5)


def test_tau_squared_keeps_the_gradient_scale_at_high_temperature():
    z_s, z_t, mask = _random_logits(3)

    def grad_norm(tau: float) -> float:
        x = z_s.clone().requires_grad_(True)
        dist.kd_loss(x, z_t, mask, tau).backward()
        return x.grad.norm().item()
    # with τ², the gradient tends to a constant as τ grows (Hinton: ≈ (z_s − z_t)/V); without it, it falls as 1/τ²
    assert grad_norm(20.0) == pytest.approx(grad_norm(40.0), rel=0.02)
    assert grad_norm(40.0) / 40 ** 2 < grad_norm(20.0) / 20 ** 2 / 3


@pytest.mark.parametrize("loss", [dist.kd_loss, dist.reverse_kd_loss])
def test_no_gradient_reaches_the_teacher(loss):
    z_s, z_t, mask = _random_logits(4)
    z_s.requires_grad_(True)
    z_t.requires_grad_(True)
    loss(z_s, z_t, mask, 2.0).backward()
    assert z_t.grad is None and z_s.grad.abs().sum() > 0


# --------------------------------------------------------------------------- variants equal


def test_alpha_zero_is_the_sft_cross_entropy():
    z_s, z_t, mask = _random_logits(5)
    targets = torch.randint(0, z_s.size(-1), mask.shape, generator=torch.Generator().manual_seed(0))
    sft = masked_cross_entropy(z_s, torch.where(mask, targets, torch.full_like(targets, -100)))
    got = dist.distillation_loss(z_s, z_t, targets, mask, alpha=0.0, temperature=3.0)
    assert got.item() == pytest.approx(sft.item(), rel=1e-6)


def test_alpha_one_is_the_kd_loss_and_the_mix_is_linear():
    z_s, z_t, mask = _random_logits(6)
    targets = torch.zeros(mask.shape, dtype=torch.long)
    kd = dist.kd_loss(z_s, z_t, mask, 2.0)
    ce = dist.distillation_loss(z_s, z_t, targets, mask, 0.0, 2.0)
    assert dist.distillation_loss(z_s, z_t, targets, mask, 1.0, 2.0).item() == pytest.approx(kd.item())
    assert dist.distillation_loss(z_s, z_t, targets, mask, 0.3, 2.0).item() == pytest.approx(
        0.3 * kd.item() + 0.7 * ce.item(), rel=1e-6)


def test_forward_kl_to_a_one_hot_teacher_is_the_cross_entropy():
    z_s, _, mask = _random_logits(7)
    targets = torch.randint(0, z_s.size(-1), mask.shape, generator=torch.Generator().manual_seed(1))
    one_hot_logits = torch.full_like(z_s, -1e9).scatter(-1, targets.unsqueeze(-1), 0.0)   # p_t = the target, H(p_t) = 0
    ce = dist.distillation_loss(z_s, z_t := one_hot_logits, targets, mask, alpha=0.0)
    assert dist.kd_loss(z_s, z_t, mask).item() == pytest.approx(ce.item(), rel=1e-5)


# --------------------------------------------------------------------------- TRL's GKD as the oracle


@pytest.mark.parametrize("tau", [1.0, 2.0, 0.7])
def test_trl_gkd_beta_0_is_forward_and_beta_1_reverse_without_the_tau_squared(tau):
    """TRL 1.16's `GKDTrainer.generalized_jsd_loss(student, teacher, labels, beta, temperature)`: β = 0 is
    KL(p_t ‖ p_s) (its F.kl_div(student_log_probs, teacher_log_probs) is KL(target ‖ input)), β = 1 is
    KL(p_s ‖ p_t); both logits divided by the temperature, no τ² factor, and with labels its "batchmean" is the
    mean over the positions whose label is not -100. So ours = τ² · TRL's, exactly."""
    gkd = pytest.importorskip("trl.experimental.gkd")
    jsd = gkd.GKDTrainer.generalized_jsd_loss
    z_s, z_t, mask = _random_logits(8, B=4, T=6, V=11)
    labels = torch.where(mask, torch.zeros_like(mask, dtype=torch.long), torch.full(mask.shape, -100))
    fwd = jsd(z_s, z_t, labels=labels, beta=0.0, temperature=tau)
    rev = jsd(z_s, z_t, labels=labels, beta=1.0, temperature=tau)
    assert dist.kd_loss(z_s, z_t, mask, tau).item() == pytest.approx(tau ** 2 * fwd.item(), rel=1e-5)
    assert dist.reverse_kd_loss(z_s, z_t, mask, tau).item() == pytest.approx(tau ** 2 * rev.item(), rel=1e-5)
    # TRL's gradient w.r.t. the student is ours divided by τ²
    for ours, beta in ((dist.kd_loss, 0.0), (dist.reverse_kd_loss, 1.0)):
        a, b = z_s.clone().requires_grad_(True), z_s.clone().requires_grad_(True)
        ours(a, z_t, mask, tau).backward()
        jsd(b, z_t, labels=labels, beta=beta, temperature=tau).backward()
        torch.testing.assert_close(a.grad, tau ** 2 * b.grad, atol=1e-6, rtol=1e-4)


# --------------------------------------------------------------------------- the student


def test_the_student_loads_with_its_sha_and_is_a_quarter_of_the_base_model():
    assert file_sha256(STUDENT_MODEL_PATH) == STUDENT_MODEL_SHA256
    student, base = load_student_model(), load_base_model()
    assert 0.2 < student.n_params() / base.n_params() < 0.3
    assert student.cfg.n_layer == base.cfg.n_layer and student.cfg.n_embd == base.cfg.n_embd // 2
    m = student_model_metrics()
    assert m["n_params"] == student.n_params() and 0.0 <= m["sampled_accuracy"] <= 1.0


def test_a_damaged_or_missing_student_names_its_rebuild_command(tmp_path, monkeypatch):
    from llmcourse import checkpoint
    blob = bytearray(STUDENT_MODEL_PATH.read_bytes())
    blob[-100] ^= 0xFF
    bad = tmp_path / "student_model.pt"
    bad.write_bytes(bytes(blob))
    monkeypatch.setattr(checkpoint, "STUDENT_MODEL_PATH", bad)
    with pytest.raises(CheckpointError, match="sha256 mismatch.*llmcourse.base_model --student"):
        load_student_model()
    monkeypatch.setattr(checkpoint, "STUDENT_MODEL_PATH", tmp_path / "nowhere.pt")
    with pytest.raises(CheckpointError, match="missing.*llmcourse.base_model --student"):
        load_student_model()


def test_the_base_recipe_is_unchanged_by_the_student():
    from llmcourse.base_model import STUDENT_RECIPE, BaseRecipe
    from llmcourse.model import GPTConfig
    assert BaseRecipe().model == GPTConfig()
    assert replace(STUDENT_RECIPE, model=GPTConfig()) == BaseRecipe()       # the same data and schedule


# --------------------------------------------------------------------------- the loops, tiny


TINY = replace(dist.RECIPE, teacher_samples=24,
               offline=replace(dist.RECIPE.offline, steps=2, batch_size=4, warmup_steps=1),
               on_policy=replace(dist.RECIPE.on_policy, steps=2, batch_size=4, warmup_steps=1))


@pytest.fixture(scope="module")
def teacher_and_data():
    torch.manual_seed(0)
    teacher = load_base_model()                                             # any GPT will do for the mechanics
    return teacher, dist.teacher_responses(teacher, TINY)


def test_teacher_responses_and_the_kept_examples(teacher_and_data):
    teacher, (responses, problems) = teacher_and_data
    assert len(responses) == len(problems) == TINY.teacher_samples
    kept = dist.right_examples(responses, problems)
    right = sum(tw.is_correct(t, p) and tw.format_ok(t) for t, p in zip(responses.texts, problems))
    assert len(kept) == right
    for ids, n in kept:
        assert ids[-1] == 352 and n < len(ids)                              # ends with EOS, has a response


@pytest.mark.parametrize("route", dist.ROUTES)
def test_every_route_trains_the_student_and_counts_its_budget(route, teacher_and_data):
    teacher, data = teacher_and_data
    torch.manual_seed(0)
    student = load_student_model()
    before = copy.deepcopy(student.state_dict())
    teacher_before = copy.deepcopy(teacher.state_dict())
    history = dist.distill_run(student, teacher, route, TINY, teacher_data=data)
    assert len(history["loss"]) == 2 and all(math.isfinite(x) for x in history["loss"])
    assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items())
    assert all(torch.equal(teacher_before[k], v) for k, v in teacher.state_dict().items())
    on_policy = route.startswith("on-policy")
    assert history["student_samples"] == [8 if on_policy else 0]
    assert history["teacher_samples"] == [0 if on_policy else 24]


def test_logit_distillation_at_alpha_0_trains_exactly_as_data_distillation(teacher_and_data):
    teacher, data = teacher_and_data
    a, b = load_student_model(), load_student_model()
    dist.distill_run(a, teacher, "data", TINY, teacher_data=data)
    dist.distill_run(b, teacher, "logit", replace(TINY, alpha=0.0), teacher_data=data)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-5, msg=name)


def test_sequence_level_kd_trains_on_every_teacher_answer(teacher_and_data):
    teacher, data = teacher_and_data
    history = dist.distill_run(load_student_model(), teacher, "data", replace(TINY, only_right=False),
                               teacher_data=data)
    assert history["kept"] == [TINY.teacher_samples]


def test_an_unknown_route_is_refused():
    with pytest.raises(ValueError, match="unknown route"):
        dist.distill_run(load_student_model(), load_base_model(), "logits", TINY)


def test_the_recipe_spends_grpos_budget():
    from llmcourse.grpo import RECIPE as GRPO
    grpo_samples = GRPO.updates * GRPO.prompts_per_update * GRPO.samples_per_prompt
    assert dist.RECIPE.teacher_samples == grpo_samples
    assert dist.RECIPE.on_policy.steps * dist.RECIPE.on_policy.batch_size == grpo_samples
    assert isinstance(dist.RECIPE.offline, TrainConfig)
