"""Quantization (chapter 13): llama.cpp's Q8_0 / Q4_0 bytes against hand-worked blocks, error bounds, the
quantized linear layer against the dequantized matmul, QLoRA's frozen base.

The hand-worked vectors follow ggml's reference code (``ggml/src/ggml-quants.c``: ``quantize_row_q8_0_ref``,
``quantize_row_q4_0_ref``, ``dequantize_row_q4_0``): Q8_0 d = amax / 127 and roundf; Q4_0 d = max / −8 with the
signed extreme, codes min(15, trunc(x / d + 8.5)), byte j = code_j | code_{j+16} << 4; d stored as fp16
(1.0 = 0x3C00, −0.5 = 0xB800, little-endian).
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from llmcourse import quantization as qz
from llmcourse.checkpoint import load_grpo_model
from llmcourse.runtime import torch_threads


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def block(values: dict[int, float]) -> torch.Tensor:
    x = torch.zeros(1, 32)
    for j, v in values.items():
        x[0, j] = v
    return x


def test_bits_per_weight_are_llama_cpps():
    assert qz.BLOCK_BYTES == {"q8_0": 34, "q4_0": 18}
    assert qz.bits_per_weight("q8_0") == 8.5 and qz.bits_per_weight("q4_0") == 4.5
    w = torch.randn(3, 64)
    assert qz.quantize_q8_0(w).shape == (3, 68) and qz.quantize_q4_0(w).shape == (3, 36)


def test_q8_0_bytes_of_a_hand_worked_block():
    x = block({0: 127.0, 1: -2.5, 2: 0.5, 3: 1.5, 4: -0.49})       # amax 127: d = 1, halves away from zero
    data = qz.quantize_q8_0(x)[0]
    assert data[:7].tolist() == [0x00, 0x3C, 0x7F, 0xFD, 0x01, 0x02, 0x00]
    assert data[7:].tolist() == [0] * 27


def test_q4_0_bytes_of_a_hand_worked_block_negative_extreme():
    x = block({0: -8.0, 1: 8.0, 2: 2.5, 16: 1.0})                  # d = 1; +8 clipped to code 15; 10.5 -> 11
    data = qz.quantize_q4_0(x)[0]
    assert data.tolist() == [0x00, 0x3C, 0x90, 0x8F, 0x8B] + [0x88] * 13
    assert qz.dequantize(data[None], "q4_0")[0, :3].tolist() == [-8.0, 7.0, 3.0]


def test_q4_0_bytes_of_a_hand_worked_block_positive_extreme():
    x = block({0: 4.0, 1: -1.0})                                    # d = 4 / −8 = −0.5: 4 -> code 0, −1 -> code 10
    data = qz.quantize_q4_0(x)[0]
    assert data.tolist() == [0x00, 0xB8, 0x80, 0x8A] + [0x88] * 14
    assert qz.dequantize(data[None], "q4_0")[0, :2].tolist() == [4.0, -1.0]


def test_q4_0_tie_takes_the_first_extreme():
    d_neg, _ = qz.quantize_q4_0_blocks(block({3: -0.5, 9: 0.5}))
    d_pos, _ = qz.quantize_q4_0_blocks(block({3: 0.5, 9: -0.5}))
    assert d_neg.item() == 0.0625 and d_pos.item() == -0.0625


def test_all_zero_blocks_have_zero_scale():
    assert qz.quantize_q8_0(torch.zeros(1, 32)).tolist() == [[0] * 34]
    # Q4_0: d = 0.0 / −8 = −0.0 in IEEE arithmetic, fp16 0x8000, as ggml's C writes it; codes 8
    assert qz.quantize_q4_0(torch.zeros(1, 32)).tolist() == [[0x00, 0x80] + [0x88] * 16]


def test_round_trip_error_bounds():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 32, generator=g) * torch.rand(200, 1, generator=g)
    d8, q8, x8 = qz.q8_0_round_trip(x)
    d32 = x.abs().amax(1) / 127
    bound8 = d32 / 2 + 127 * (d8.float() - d32).abs() + 1e-7
    assert ((x - x8).abs() <= bound8[:, None]).all()
    d4, qs4 = qz.quantize_q4_0_blocks(x)
    x4 = qz.dequantize_q4_0_blocks(d4, qs4)
    d4_32 = (x.gather(1, x.abs().argmax(1, keepdim=True))[:, 0] / -8).abs()
    bound4 = d4_32 + 8 * (d4.float().abs() - d4_32).abs() + 1e-7   # ≤ d/2, or d where +8 is clipped to 7
    assert ((x - x4).abs() <= bound4[:, None]).all()
    ratio = ((x - x4).abs().mean() / (x - x8).abs().mean()).item()    # steps of amax / 8 against amax / 127
    assert 8 < ratio < 32


def test_smaller_groups_make_smaller_errors_and_contain_an_outlier():
    w = load_grpo_model().blocks[0].mlp.c_fc.weight.detach()
    errs = [qz.round_trip_error(w, 4, g) for g in ("tensor", "channel", "block")]
    assert errs[0] > errs[1] > errs[2]
    w_out = w.clone()
    w_out[0, 0] = 50 * w.abs().max()
    others = torch.ones_like(w, dtype=torch.bool)
    others[0, 0] = False

    def error_of_others(group):
        w_hat = qz.absmax_dequantize(*qz.absmax_quantize(w_out, 4, group), shape=w.shape)
        return ((w_out - w_hat)[others].pow(2).mean().sqrt() / w_out[others].pow(2).mean().sqrt()).item()

    assert error_of_others("tensor") > 0.99                         # every other weight rounds to 0
    assert error_of_others("block") < errs[2] + 0.01                # one block of 32 spoiled, not the tensor


def test_byte_layout_round_trips_through_blocks():
    w = torch.randn(4, 96)
    for fmt, quant, deq in (("q8_0", qz.quantize_q8_0_blocks, qz.dequantize_q8_0_blocks),
                            ("q4_0", qz.quantize_q4_0_blocks, qz.dequantize_q4_0_blocks)):
        expected = deq(*quant(w.reshape(-1, 32))).reshape(4, 96)
        assert torch.equal(qz.dequantize(qz.quantize_q8_0(w) if fmt == "q8_0" else qz.quantize_q4_0(w), fmt), expected)


def test_other_nibble_order_scrambles_the_weights():
    w = torch.randn(4, 64)
    data = qz.quantize_q4_0(w)
    good, bad = qz.dequantize(data, "q4_0"), qz.dequantize(data, "q4_0", layout="adjacent")
    assert (good - w).abs().max() < 0.5 and (bad - w).abs().mean() > 2 * (good - w).abs().mean()
    assert torch.equal(good.sort(dim=1).values, bad.sort(dim=1).values)   # the same weights, in other places


@pytest.mark.parametrize("fmt", ["int8", "int4", "q8_0", "q4_0"])
def test_quantized_linear_is_the_matmul_with_the_dequantized_weight(fmt):
    lin = nn.Linear(64, 5)
    layer = qz.QuantizedLinear(lin, fmt, keep_dequantized=False)
    x = torch.randn(2, 3, 64)
    assert torch.equal(layer(x), F.linear(x, layer.weight, lin.bias))
    assert (layer.weight - lin.weight).abs().max() < {"int8": 0.01, "q8_0": 0.01, "int4": 0.1, "q4_0": 0.1}[fmt]


def test_q4_0_linear_matches_the_module_and_passes_the_gradient():
    lin = nn.Linear(64, 6)
    layer = qz.QuantizedLinear(lin, "q4_0")
    d, qs = qz.split_blocks(layer.data, "q4_0")
    x = torch.randn(3, 64, requires_grad=True)
    y = qz.q4_0_linear(x, d.reshape(6, 2), qs.reshape(6, 2, 16), lin.bias)
    assert torch.allclose(y, layer(x), atol=1e-6)
    y.sum().backward()
    assert torch.allclose(x.grad, layer.weight.sum(0).expand(3, 64), atol=1e-5)


def test_quantized_model_bytes_and_logits():
    grpo = load_grpo_model()
    ids = torch.randint(0, 360, (2, 12), generator=torch.Generator().manual_seed(0))
    ref = grpo(ids)
    for fmt, bpw, tol in (("q8_0", 34 / 32, 0.05), ("q4_0", 18 / 32, 1.0)):
        qm = qz.quantize_model(grpo, fmt)
        assert sum(isinstance(m, qz.QuantizedLinear) for m in qm.modules()) == 16
        assert qz.bytes_per_weight(qm) == bpw
        assert (qm(ids) - ref).abs().max() < tol
    b = qz.model_bytes(qz.quantize_model(grpo, "fp32"))
    assert b["total"] == 4 * grpo.n_params() and b["linear_weights"] == 786_432


def test_dynamic_int8_generates_like_fp32_on_the_first_tokens():
    grpo = load_grpo_model()
    int8 = qz.dynamic_int8(grpo)
    ids = torch.randint(0, 360, (1, 8), generator=torch.Generator().manual_seed(1))
    assert (int8(ids) - grpo(ids)).abs().max() < 0.5


def test_qlora_trains_only_adapters_on_a_q4_0_base():
    model, history = qz.qlora_run(0, qz.QLoRARecipe(steps=1))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(("lora_A", "lora_B")) for n in trainable)
    frozen = [m for m in model.modules() if isinstance(m, qz.QuantizedLinear)]
    assert len(frozen) == 16 and all(m.fmt == "q4_0" and m._w is None for m in frozen)
    assert len(history["loss"]) == 1
