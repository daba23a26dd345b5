"""The course's LoRA and DoRA (`llmcourse.lora`) beside PEFT's own code, on the same weights.

Oracle: the installed PEFT (``peft.tuners.lora.layer.Linear``, ``LoraConfig``, ``get_peft_model``,
``merge_adapter`` / ``unmerge_adapter`` / ``merge_and_unload``, ``disable_adapter()``), not a transcription of its
formulas. Both sides get the same base weights and the same adapter tensors, copied across with PEFT's layout:
``lora_A`` is ``nn.Linear(d_in, r)``, weight (r, d_in), the course's A as is; ``lora_B`` is ``nn.Linear(r, d_out)``,
weight (d_out, r), the course's B; DoRA's magnitude is ``lora_magnitude_vector[adapter].weight`` (d_out,).
Layer comparisons run in float64, so "agree" means agree to float64 rounding (≤ 1e-12 here, typically ~1e-15);
the two compute the same sums in different orders, so bit-equality is not expected except where noted.

Where the conventions differ, the difference is asserted exactly:
* initialisation: both draw A Kaiming-uniform (a = √5, bound 1/√d_in) and set B = 0, but PEFT first builds
  ``nn.Linear(d_in, r)`` and ``nn.Linear(r, d_out)`` (two default inits) and then redraws A, so with the same seed
  PEFT's A is the third draw from the generator, the course's the first;
* biases: the course freezes every bias; PEFT does the same with its default ``bias="none"``, and
  ``bias="lora_only"`` / ``bias="all"`` add exactly the adapted layers' / all biases to the trainable count;
* ``merge_and_unload``: PEFT leaves the merged weights frozen (``requires_grad=False``), the course's version
  makes the whole model trainable again (it returns "an ordinary GPT");
* targets: the course's targets name any dotted part of a module's path (``"attn"`` = both attention layers),
  PEFT's list entries match the *end* of a module's name, so the course's ``("attn", "mlp")`` is PEFT's
  ``["c_attn", "c_proj", "c_fc"]`` (``_PEFT_TARGETS`` below, checked layer by layer).
"""

import copy
import math
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from peft.tuners.lora.layer import Linear as PeftLoraLinear

from llmcourse import lora  # noqa: E402
from llmcourse.lora import DoRALinear, LoRALinear  # noqa: E402
from llmcourse.model import GPT, GPTConfig  # noqa: E402

F64 = torch.float64
TOL = 1e-12                       # float64 rounding on sums of ~100 terms of size ~1
ADAPTER = "default"               # PEFT's adapter name

# The course's `inject_lora(targets=...)` and the PEFT `target_modules` list that selects the same nn.Linear layers.
_PEFT_TARGETS = {
    ("attn", "mlp"): ["c_attn", "c_proj", "c_fc"],          # the course's default: all four layers of every block
    ("attn",): ["attn.c_attn", "attn.c_proj"],
    ("mlp",): ["mlp.c_fc", "mlp.c_proj"],
    ("c_proj",): ["c_proj"],                                 # both output projections, attention's and the MLP's
    ("mlp.c_fc",): ["c_fc"],
    ("c_attn", "mlp"): ["c_attn", "c_fc", "mlp.c_proj"],
}


def _maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# --------------------------------------------------------------------------- one layer, both sides


def _config(r, alpha, dora=False, rslora=False, dropout=0.0, **kw) -> LoraConfig:
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, use_dora=dora, use_rslora=rslora, **kw)


def _pair(d_in=7, d_out=5, r=3, alpha=6.0, dora=False, rslora=False, bias=True, dropout=0.0, seed=0):
    """A course layer and a PEFT layer on the same base weights, with the same random A, B (and m for DoRA)."""
    g = torch.Generator().manual_seed(seed)
    base = nn.Linear(d_in, d_out, bias=bias, dtype=F64)
    with torch.no_grad():
        base.weight.copy_(torch.randn(d_out, d_in, generator=g, dtype=F64))
        if bias:
            base.bias.copy_(torch.randn(d_out, generator=g, dtype=F64))
    cls = DoRALinear if dora else LoRALinear
    ours = cls(copy.deepcopy(base), r=r, alpha=alpha, dropout=dropout, use_rslora=rslora)
    config = _config(r, alpha, dora, rslora, dropout)
    theirs = PeftLoraLinear(copy.deepcopy(base), ADAPTER, config, r=r, lora_alpha=alpha)
    if dora:   # both magnitudes start at ‖W‖, the row norms of the base weight (B = 0 at that point)
        assert torch.equal(theirs.lora_magnitude_vector[ADAPTER].weight.detach(), ours.magnitude.detach())
    A = torch.randn(r, d_in, generator=g, dtype=F64) / math.sqrt(d_in)
    B = torch.randn(d_out, r, generator=g, dtype=F64)
    m = ours.magnitude.detach() * (0.5 + torch.rand(d_out, generator=g, dtype=F64)) if dora else None
    _copy_adapter(ours, theirs, A, B, m)
    return ours, theirs


@torch.no_grad()
def _copy_adapter(ours: LoRALinear, theirs: PeftLoraLinear, A, B, m=None) -> None:
    ours.lora_A.copy_(A)
    ours.lora_B.copy_(B)
    theirs.lora_A[ADAPTER].weight.copy_(A)            # nn.Linear(d_in, r): weight (r, d_in), as the course's A
    theirs.lora_B[ADAPTER].weight.copy_(B)            # nn.Linear(r, d_out): weight (d_out, r), as the course's B
    if m is not None:
        ours.magnitude.copy_(m)
        theirs.lora_magnitude_vector[ADAPTER].weight.copy_(m)


def _peft_params(theirs: PeftLoraLinear) -> dict[str, torch.Tensor]:
    p = {"lora_A": theirs.lora_A[ADAPTER].weight, "lora_B": theirs.lora_B[ADAPTER].weight}
    if ADAPTER in theirs.lora_magnitude_vector:
        p["magnitude"] = theirs.lora_magnitude_vector[ADAPTER].weight
    return p


def _forward_and_grads(layer, params: dict[str, torch.Tensor], x: torch.Tensor, w: torch.Tensor):
    """Output, and the gradients of Σ w ⊙ y w.r.t. the adapter's parameters and the input."""
    x = x.clone().requires_grad_(True)
    y = layer(x)
    grads = torch.autograd.grad((w * y).sum(), [x, *params.values()])
    return y.detach(), dict(zip(["x", *params], grads))


def _compare_layers(ours, theirs, seed=1, train=False, dropout_seed=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, ours.in_features, generator=g, dtype=F64)     # leading dims (2, 4) pass through
    w = torch.randn(2, 4, ours.out_features, generator=g, dtype=F64)
    ours.train(train)
    theirs.train(train)
    ours_params = {"lora_A": ours.lora_A, "lora_B": ours.lora_B}
    if isinstance(ours, DoRALinear):
        ours_params["magnitude"] = ours.magnitude
    if dropout_seed is not None:
        torch.manual_seed(dropout_seed)
    y1, g1 = _forward_and_grads(ours, ours_params, x, w)
    if dropout_seed is not None:
        torch.manual_seed(dropout_seed)
    y2, g2 = _forward_and_grads(theirs, _peft_params(theirs), x, w)
    diffs = {"y": _maxdiff(y1, y2)} | {f"grad {k}": _maxdiff(g1[k], g2[k]) for k in g1}
    assert g1.keys() == g2.keys()
    return diffs


@pytest.mark.parametrize("rslora", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_lora_layer_forward_and_gradients_match_peft(rslora, bias):
    ours, theirs = _pair(rslora=rslora, bias=bias)
    assert theirs.scaling[ADAPTER] == ours.scaling == lora.lora_scaling(6.0, 3, rslora)
    diffs = _compare_layers(ours, theirs)
    assert set(diffs) == {"y", "grad x", "grad lora_A", "grad lora_B"}
    assert max(diffs.values()) < TOL, diffs
    # and the course's function form computes the same as PEFT's layer
    x = torch.randn(3, 7, dtype=F64)
    if not rslora:
        y = lora.lora_forward(x, ours.base.weight, ours.base.bias, ours.lora_A, ours.lora_B, alpha=6.0, r=3)
        assert _maxdiff(y, theirs(x)) < TOL


@pytest.mark.parametrize("rslora", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_dora_layer_forward_and_gradients_match_peft(rslora, bias):
    ours, theirs = _pair(dora=True, rslora=rslora, bias=bias)
    assert isinstance(theirs.lora_magnitude_vector[ADAPTER].weight, nn.Parameter)
    assert theirs.lora_magnitude_vector[ADAPTER].weight.shape == (5,)          # one magnitude per output feature
    diffs = _compare_layers(ours, theirs)
    assert set(diffs) == {"y", "grad x", "grad lora_A", "grad lora_B", "grad magnitude"}
    assert max(diffs.values()) < TOL, diffs
    x = torch.randn(3, 7, dtype=F64)
    if not rslora:
        y = lora.dora_forward(x, ours.base.weight, ours.base.bias, ours.lora_A, ours.lora_B, ours.magnitude,
                              alpha=6.0, r=3)
        assert _maxdiff(y, theirs(x)) < TOL


def test_dora_norm_is_detached_in_peft_as_in_the_course():
    """PEFT's gradients hold ‖V‖ constant; differentiating ‖V‖ would change them (so the check bites)."""
    ours, theirs = _pair(dora=True)
    g = torch.Generator().manual_seed(5)
    x, w = torch.randn(6, 7, generator=g, dtype=F64), torch.randn(6, 5, generator=g, dtype=F64)
    _, g_peft = _forward_and_grads(theirs, _peft_params(theirs), x, w)
    # PEFT's DoRA norm, from its own function, is the course's weight_norm of V = W + ΔW
    dora_layer = theirs.lora_magnitude_vector[ADAPTER]
    norm = dora_layer.get_weight_norm(theirs.base_layer.weight, ours.lora_B @ ours.lora_A, theirs.scaling[ADAPTER])
    assert _maxdiff(norm, lora.weight_norm(ours.base.weight + ours.delta_weight())) < TOL

    def undetached(A, B, m):                                  # m ⊙ V x / ‖V‖ with ‖V‖ *not* detached
        V = ours.base.weight + ours.scaling * B @ A
        return (m / lora.weight_norm(V)) * F.linear(x, V) + ours.base.bias
    A, B, m = (t.detach().clone().requires_grad_(True) for t in (ours.lora_A, ours.lora_B, ours.magnitude))
    gA, gB, gm = torch.autograd.grad((w * undetached(A, B, m)).sum(), [A, B, m])
    assert _maxdiff(gm, g_peft["magnitude"]) < TOL            # m's gradient does not involve the norm's
    assert _maxdiff(gA, g_peft["lora_A"]) > 1e-3 and _maxdiff(gB, g_peft["lora_B"]) > 1e-3


@pytest.mark.parametrize("dora", [False, True])
def test_dropout_draws_one_mask_on_both_sides(dora):
    """In training, with the same seed, PEFT and the course drop the same inputs of the adapter branch (and, for
    DoRA, of the (m/‖V‖ − 1) W x term too): one ``nn.Dropout`` call each, on x, before the adapter."""
    ours, theirs = _pair(dora=dora, dropout=0.3)
    assert isinstance(theirs.lora_dropout[ADAPTER], nn.Dropout) and isinstance(ours.dropout, nn.Dropout)
    diffs = _compare_layers(ours, theirs, train=True, dropout_seed=11)
    assert max(diffs.values()) < TOL, diffs
    ours.eval()
    theirs.eval()
    x = torch.randn(3, 7, dtype=F64)
    assert _maxdiff(ours(x), theirs(x)) < TOL                 # and no dropout at all in eval mode


@pytest.mark.parametrize("alpha, r", [(16, 8), (16, 4), (3, 1), (8, 64), (1, 3)])
def test_rslora_scaling_is_peft_scaling(alpha, r):
    base = nn.Linear(4, 4)
    for rslora in (False, True):
        theirs = PeftLoraLinear(base, ADAPTER, _config(r, alpha, rslora=rslora), r=r, lora_alpha=alpha)
        assert theirs.scaling[ADAPTER] == lora.lora_scaling(alpha, r, use_rslora=rslora)
        assert theirs.scaling[ADAPTER] == LoRALinear(nn.Linear(4, 4), r, alpha, use_rslora=rslora).scaling


@pytest.mark.parametrize("dora", [False, True])
def test_layer_merge_and_unmerge_match_peft(dora):
    ours, theirs = _pair(dora=dora)
    W0 = ours.base.weight.detach().clone()
    x = torch.randn(3, 7, dtype=F64)
    with torch.no_grad():
        y = theirs(x)
        assert _maxdiff(theirs.get_delta_weight(ADAPTER), ours.delta_weight()) < TOL
        ours.merge()
        theirs.merge()
        assert ours.merged and theirs.merged
        assert _maxdiff(ours.base.weight, theirs.base_layer.weight) < TOL
        if not dora:
            assert _maxdiff(theirs.base_layer.weight, lora.merge_weights(W0, ours.lora_A, ours.lora_B, 6.0, 3)) < TOL
        assert _maxdiff(ours(x), y) < TOL and _maxdiff(theirs(x), y) < TOL
        ours.unmerge()
        theirs.unmerge()
        assert _maxdiff(ours.base.weight, W0) < TOL and _maxdiff(theirs.base_layer.weight, W0) < TOL


# --------------------------------------------------------------------------- the course's GPT, wrapped by PEFT


def _gpt(seed: int = 0, dtype=torch.float32) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig()).to(dtype).eval()


def _ids(seed: int = 1, T: int = 12) -> torch.Tensor:
    return torch.randint(0, GPTConfig().vocab_size, (2, T), generator=torch.Generator().manual_seed(seed))


def _adapted_names(model: nn.Module, cls) -> set[str]:
    return {n.removeprefix("base_model.model.") for n, m in model.named_modules() if isinstance(m, cls)}


def _peft_gpt(base: GPT, r: int, alpha: float, targets=("attn", "mlp"), dora=False, rslora=False, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                       # PEFT notes that a plain nn.Module has no HF config
        return get_peft_model(copy.deepcopy(base), _config(r, alpha, dora, rslora,
                                                           target_modules=_PEFT_TARGETS[targets], **kw))


def _both(r=4, alpha=8.0, targets=("attn", "mlp"), dora=False, rslora=False, dtype=F64, seed=0):
    """The course GPT with `inject_lora`, and the same GPT wrapped by PEFT, with the same (random, nonzero) adapters."""
    base = _gpt(dtype=dtype)
    ours = lora.inject_lora(copy.deepcopy(base), r=r, alpha=alpha, targets=targets, dora=dora, use_rslora=rslora)
    theirs = _peft_gpt(base, r, alpha, targets, dora, rslora)
    g = torch.Generator().manual_seed(seed)
    inner = theirs.base_model.model
    for name, layer in ((n, m) for n, m in ours.named_modules() if isinstance(m, LoRALinear)):
        A = torch.randn(layer.lora_A.shape, generator=g, dtype=dtype) / math.sqrt(layer.in_features)
        B = torch.randn(layer.lora_B.shape, generator=g, dtype=dtype) / math.sqrt(r)
        m = None
        if dora:
            m = layer.magnitude.detach() * (0.8 + 0.4 * torch.rand(layer.out_features, generator=g, dtype=dtype))
        _copy_adapter(layer, inner.get_submodule(name), A, B, m)
    return base, ours, theirs


@pytest.mark.parametrize("targets", list(_PEFT_TARGETS))
def test_course_targets_and_peft_target_modules_select_the_same_layers(targets):
    base = _gpt()
    ours = lora.inject_lora(copy.deepcopy(base), r=2, alpha=2, targets=targets)
    theirs = _peft_gpt(base, 2, 2, targets)
    assert _adapted_names(ours, LoRALinear) == _adapted_names(theirs, PeftLoraLinear)
    assert len(_adapted_names(ours, LoRALinear)) > 0


def test_the_course_targets_are_not_peft_target_modules():
    """PEFT matches the end of a module's name, so the course's ``"attn"`` would name the attention *block*
    (not a Linear layer): PEFT refuses it, while the course adapts both of the block's linear layers."""
    with pytest.raises(ValueError):
        get_peft_model(_gpt(), LoraConfig(r=2, lora_alpha=2, target_modules=["attn"]))


@pytest.mark.parametrize("r", [1, 4, 8])
@pytest.mark.parametrize("targets", [("attn", "mlp"), ("attn",), ("c_proj",)])
@pytest.mark.parametrize("dora", [False, True])
def test_trainable_counts_match_peft(r, targets, dora):
    base = _gpt()
    ours = lora.inject_lora(copy.deepcopy(base), r=r, alpha=2 * r, targets=targets, dora=dora)
    theirs = _peft_gpt(base, r, 2 * r, targets, dora)
    shapes = [tuple(m.base.weight.shape) for m in lora.lora_layers(ours)]
    n = lora.lora_param_count(shapes, r, dora=dora)
    trainable, total = theirs.get_nb_trainable_parameters()
    assert lora.count_trainable(ours) == lora.count_trainable(theirs) == trainable == n
    assert lora.count_params(ours) == total == base.n_params() + n   # the tied lm_head / wte counted once by both


def test_peft_bias_options_add_exactly_the_biases():
    """The course freezes every bias, as PEFT's default ``bias="none"``; PEFT's other choices add exactly the biases."""
    base = _gpt()
    ours = lora.inject_lora(copy.deepcopy(base), r=4, alpha=8, targets=("attn",))
    n = lora.count_trainable(ours)
    adapted_bias = sum(m.base.bias.numel() for m in lora.lora_layers(ours))
    all_bias = sum(p.numel() for name, p in base.named_parameters() if name.endswith(".bias"))
    counts = {bias: _peft_gpt(base, 4, 8, ("attn",), bias=bias).get_nb_trainable_parameters()[0]
              for bias in ("none", "lora_only", "all")}
    assert counts == {"none": n, "lora_only": n + adapted_bias, "all": n + all_bias}
    assert all_bias > adapted_bias > 0


@pytest.mark.parametrize("dora", [False, True])
@pytest.mark.parametrize("rslora", [False, True])
def test_adapted_gpt_forward_and_gradients_match_peft(dora, rslora):
    _, ours, theirs = _both(dora=dora, rslora=rslora)
    ids = _ids()
    inner = theirs.base_model.model
    losses, logits = [], []
    for model in (ours, theirs):
        out = model(ids[:, :-1])
        logits.append(out.detach())
        loss = F.cross_entropy(out.reshape(-1, out.size(-1)), ids[:, 1:].reshape(-1))
        loss.backward()
        losses.append(loss.item())
    assert _maxdiff(*logits) < TOL
    for name, layer in ((n, m) for n, m in ours.named_modules() if isinstance(m, LoRALinear)):
        for k, p in _peft_params(inner.get_submodule(name)).items():
            assert _maxdiff(getattr(layer, k).grad, p.grad) < TOL, (name, k)
    assert {n.removeprefix("base_model.model.") for n, p in theirs.named_parameters() if p.grad is not None} == {
        f"{n}.{k}.{ADAPTER}.weight".replace("magnitude", "lora_magnitude_vector")
        for n, m in ours.named_modules() if isinstance(m, LoRALinear) for k in _peft_params(inner.get_submodule(n))}


def test_adapted_gpt_at_init_is_the_base_on_both_sides():
    base = _gpt()
    ids = _ids()
    for dora in (False, True):
        ours = lora.inject_lora(copy.deepcopy(base), r=4, alpha=8, dora=dora)
        theirs = _peft_gpt(base, 4, 8, dora=dora)
        with torch.no_grad():
            assert torch.equal(ours(ids), base(ids)) and torch.equal(theirs(ids), base(ids))


def test_initialisation_differs_from_peft_only_in_the_random_draws():
    """Same law (A Kaiming-uniform with a = √5, B = 0), different draws: PEFT's A is the third draw after the seed
    (nn.Linear(d_in, r) and nn.Linear(r, d_out) initialise themselves first), the course's A the first."""
    d_in, d_out, r = 16, 48, 4
    base = nn.Linear(d_in, d_out)

    def kaiming(shape):
        t = torch.empty(shape)
        nn.init.kaiming_uniform_(t, a=math.sqrt(5))
        return t
    torch.manual_seed(3)
    ours = LoRALinear(copy.deepcopy(base), r=r, alpha=1)
    torch.manual_seed(3)
    theirs = PeftLoraLinear(copy.deepcopy(base), ADAPTER, _config(r, 1), r=r, lora_alpha=1)
    torch.manual_seed(3)
    first = kaiming((r, d_in))
    kaiming((d_out, r))                                       # lora_B's own default init, which PEFT then zeroes
    third = kaiming((r, d_in))
    assert torch.equal(ours.lora_A.detach(), first)
    assert torch.equal(theirs.lora_A[ADAPTER].weight.detach(), third)
    assert not torch.equal(first, third)
    assert torch.equal(ours.lora_B.detach(), theirs.lora_B[ADAPTER].weight.detach()) and not ours.lora_B.any()
    bound = 1 / math.sqrt(d_in)                               # the same bound, from PEFT's reset_lora_parameters
    assert ours.lora_A.abs().max() <= bound and theirs.lora_A[ADAPTER].weight.abs().max() <= bound
    torch.manual_seed(3)
    A0, _ = lora.init_lora(d_in, d_out, r)                    # the function form draws as the module does
    assert torch.equal(A0, first)


@pytest.mark.parametrize("dora", [False, True])
def test_disabled_adapters_give_the_base_model_exactly(dora):
    base, ours, theirs = _both(dora=dora, dtype=torch.float32)
    ids = _ids(2)
    with torch.no_grad():
        y_base, y_adapted = base(ids), theirs(ids)
        assert not torch.allclose(y_adapted, y_base, atol=1e-3)    # the adapters change the outputs
        with theirs.disable_adapter():
            assert torch.equal(theirs(ids), y_base)
        with lora.disable_adapters(ours):
            assert torch.equal(ours(ids), y_base)
        assert torch.allclose(theirs(ids), y_adapted, atol=0) and torch.allclose(ours(ids), y_adapted, atol=1e-5)


@pytest.mark.parametrize("dora", [False, True])
def test_gpt_merge_unmerge_and_merge_and_unload_match_peft(dora):
    base, ours, theirs = _both(dora=dora)
    ids = _ids(2)
    inner = theirs.base_model.model
    names = [n for n, m in ours.named_modules() if isinstance(m, LoRALinear)]
    with torch.no_grad():
        y = theirs(ids)
        lora.merge_lora(ours)
        theirs.merge_adapter()
        for n in names:
            assert _maxdiff(ours.get_submodule(n).base.weight, inner.get_submodule(n).base_layer.weight) < TOL, n
        assert _maxdiff(ours(ids), y) < TOL and _maxdiff(theirs(ids), y) < TOL
        with theirs.disable_adapter():                          # disabling a merged model unmerges it first
            assert _maxdiff(theirs(ids), base(ids)) < TOL
        assert not any(inner.get_submodule(n).merged for n in names)
        theirs.merge_adapter()
        lora.unmerge_lora(ours)
        theirs.unmerge_adapter()
        for n in names:
            W0 = base.get_submodule(n).weight
            assert _maxdiff(ours.get_submodule(n).base.weight, W0) < TOL
            assert _maxdiff(inner.get_submodule(n).base_layer.weight, W0) < TOL
        plain_theirs = theirs.merge_and_unload()
    plain_ours = lora.merge_and_unload(ours)
    assert type(plain_theirs) is type(plain_ours) is GPT
    sd_ours, sd_theirs = plain_ours.state_dict(), plain_theirs.state_dict()
    assert sd_ours.keys() == sd_theirs.keys() == base.state_dict().keys()
    assert max(_maxdiff(sd_ours[k], sd_theirs[k]) for k in sd_ours) < TOL
    with torch.no_grad():
        assert _maxdiff(plain_theirs(ids), y) < TOL and _maxdiff(plain_ours(ids), y) < TOL
    # the documented difference: PEFT leaves the unloaded model frozen, the course makes it trainable again
    assert lora.count_trainable(plain_ours) == base.n_params()
    assert lora.count_trainable(plain_theirs) == 0
