"""Chapter 13 exercises: a Q8_0 round trip, Q4_0's packed blocks, and a linear layer that computes with Q4_0 weights."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from llmcourse import quantization as qz
from llmcourse.tooling.checker import Exercise, KnownRight, KnownWrong, register

QK = qz.QK


def _blocks(rng: np.random.Generator, nb: int) -> torch.Tensor:
    """nb blocks of 32 weights of different sizes, some blocks with one outlier, as in a trained layer."""
    x = rng.normal(0, 1, (nb, QK)) * np.exp(rng.normal(0, 1, (nb, 1))) * 0.05
    for i in range(0, nb, 2):
        x[i, rng.integers(QK)] *= -12                                   # an outlier, negative or positive
    return torch.from_numpy(x.astype(np.float32))


# --------------------------------------------------------------------------- 13.1 Q8_0 round trip


def _q8_cases(rng: np.random.Generator) -> list[dict]:
    a = torch.zeros(4, QK)
    a[0, :4] = torch.tensor([127.0, -2.5, 0.5, 1.5])                    # d = 1: halves away from zero
    a[1, :3] = torch.tensor([-0.3, 0.1, 0.2])                           # the largest magnitude is negative
    # a[2] all zero: d = 0, codes 0
    a[3, :2] = torch.tensor([0.1, -0.09724409133195877])                # x·(1/d) = -122.5 - ε, x / d = -122.5
    b = torch.linspace(-1, 0.6, QK).reshape(1, QK) * 0.37
    cases = [dict(x=a), dict(x=b), dict(x=torch.cat([_blocks(rng, 3), a]))]
    for _ in range(3):
        cases.append(dict(x=_blocks(rng, int(rng.integers(2, 6)))))
    return cases


def _q8_ref(x, amax, round_fn=qz.round_half_away, fp32_dequant=False, keep_fp32=False):
    d = amax / 127
    inv = torch.where(d != 0, 1.0 / d, torch.zeros_like(d))
    qs = round_fn(x * inv[:, None]).clamp(-128, 127).to(torch.int8)
    d16 = d.to(torch.float16)
    x_hat = qs.float() * (d if fp32_dequant else d16.float())[:, None]
    return (d if keep_fp32 else d16), qs, x_hat


def _q8_per_tensor(x):
    return _q8_ref(x, x.abs().max().expand(x.shape[0]))


def _q8_over_128(x):
    return _q8_ref(x, x.abs().amax(dim=1) * 127 / 128)                  # d = amax / 128


def _q8_truncate(x):
    return _q8_ref(x, x.abs().amax(dim=1), round_fn=torch.trunc)


def _q8_half_even(x):
    return _q8_ref(x, x.abs().amax(dim=1), round_fn=torch.round)


def _q8_divide(x):
    d = x.abs().amax(dim=1) / 127
    safe = torch.where(d != 0, d, torch.ones_like(d))
    qs = torch.where(d[:, None] != 0, qz.round_half_away(x / safe[:, None]), torch.zeros_like(x)).to(torch.int8)
    d16 = d.to(torch.float16)
    return d16, qs, qs.float() * d16.float()[:, None]


def _q8_max_not_absmax(x):
    return _q8_ref(x, x.amax(dim=1).clamp(min=1e-12))                    # the largest value, not magnitude


def _q8_fp32_dequant(x):
    return _q8_ref(x, x.abs().amax(dim=1), fp32_dequant=True)


def _q8_fp32_scale(x):
    return _q8_ref(x, x.abs().amax(dim=1), keep_fp32=True)


def _q8_loop(x):
    ds, qss, outs = [], [], []
    for block in x.tolist():
        amax = max(abs(v) for v in block)
        d = torch.tensor(amax, dtype=torch.float32) / 127
        inv = 1.0 / d if d != 0 else torch.tensor(0.0)
        q = [int(qz.round_half_away(torch.tensor(v, dtype=torch.float32) * inv)) for v in block]
        d16 = d.to(torch.float16)
        ds.append(d16)
        qss.append(q)
        outs.append([c * d16.float().item() for c in q])
    return torch.stack(ds), torch.tensor(qss, dtype=torch.int8), torch.tensor(outs, dtype=torch.float32)


# --------------------------------------------------------------------------- 13.2 Q4_0 blocks


def _q4_cases(rng: np.random.Generator) -> list[dict]:
    a = torch.zeros(5, QK)
    a[0, :3] = torch.tensor([-8.0, 8.0, 2.5])                            # d = 1: the +8 clipped, 10.5 rounds up
    a[0, 16:19] = torch.tensor([1.0, -3.0, 0.49])
    a[1, :3] = torch.tensor([0.2, -0.05, 0.11])                           # the largest magnitude is positive
    a[1, 20] = -0.2                                                       # a tie: the first one decides
    # a[2] all zero: d = 0, every code 8
    a[3, :2] = torch.tensor([8.0, 0.5])                                   # d = -1: -0.5 + 8.5 = 8 (roundf: 7)
    a[4, :2] = torch.tensor([1.0025131702423096, 0.9398561120033264])     # x·(1/d) = -7.5 - ε, x / d = -7.5
    cases = [dict(x=a), dict(x=torch.linspace(-0.8, 0.3, QK).reshape(1, QK)), dict(x=torch.cat([_blocks(rng, 2), a]))]
    for _ in range(3):
        cases.append(dict(x=_blocks(rng, int(rng.integers(2, 6)))))
    return cases


def _q4_pack(codes, order="ggml"):
    codes = codes.to(torch.int64)
    if order == "ggml":
        lo, hi = codes[:, :16], codes[:, 16:]
    elif order == "swapped":
        lo, hi = codes[:, 16:], codes[:, :16]
    else:
        lo, hi = codes[:, 0::2], codes[:, 1::2]
    return ((lo | (hi << 4)) & 0xFF).to(torch.uint8)


def _q4_ref(x, signed_max, code_fn=None, order="ggml", offset=8, clip=15, keep_fp32=False, divisor=-8.0):
    d = signed_max / divisor
    inv = torch.where(d != 0, 1.0 / d, torch.zeros_like(d))
    v = x * inv[:, None]
    codes = code_fn(v) if code_fn else (v + 8.5).trunc()
    if clip is not None:
        codes = codes.clamp(max=clip)
    codes = codes.to(torch.int64) & (0x0F if offset == 0 else 0xFF)     # offset 0: two's-complement nibbles
    return (d if keep_fp32 else d.to(torch.float16)), _q4_pack(codes, order)


def _signed_max(x):
    return x.gather(1, x.abs().argmax(dim=1, keepdim=True))[:, 0]


def _q4_per_tensor(x):
    flat = x.reshape(-1)
    return _q4_ref(x, flat[flat.abs().argmax()].expand(x.shape[0]))


def _q4_no_offset(x):
    return _q4_ref(x, _signed_max(x), code_fn=lambda v: (v + 0.5).floor(), offset=0, clip=7)  # -8…7 as 4 bits


def _q4_nibbles_swapped(x):
    return _q4_ref(x, _signed_max(x), order="swapped")


def _q4_adjacent(x):
    return _q4_ref(x, _signed_max(x), order="adjacent")


def _q4_roundf(x):
    return _q4_ref(x, _signed_max(x), code_fn=lambda v: qz.round_half_away(v) + 8)


def _q4_divide(x):
    d = _signed_max(x) / -8
    safe = torch.where(d != 0, d, torch.ones_like(d))
    v = torch.where(d[:, None] != 0, x / safe[:, None], torch.zeros_like(x))
    codes = (v + 8.5).trunc().clamp(max=15).to(torch.int64)
    return d.to(torch.float16), _q4_pack(codes)


def _q4_truncate(x):
    return _q4_ref(x, _signed_max(x), code_fn=lambda v: (v + 8).trunc())


def _q4_half_even(x):
    return _q4_ref(x, _signed_max(x), code_fn=lambda v: torch.round(v) + 8)


def _q4_amax(x):
    return _q4_ref(x, -x.abs().amax(dim=1))                               # the magnitude, sign dropped: d > 0 always


def _q4_over_7(x):
    return _q4_ref(x, x.abs().amax(dim=1), divisor=7.0)                   # symmetric ±7: d = amax / 7


def _q4_no_clip(x):
    return _q4_ref(x, _signed_max(x), clip=None)                          # code 16 spills into the next nibble


def _q4_fp32_scale(x):
    return _q4_ref(x, _signed_max(x), keep_fp32=True)


def _q4_loop(x):
    ds, rows = [], []
    for block in x:
        amax, mx = 0.0, 0.0
        for v in block.tolist():
            if amax < abs(v):
                amax, mx = abs(v), v
        d = torch.tensor(mx, dtype=torch.float32) / -8
        inv = 1.0 / d if d != 0 else torch.tensor(0.0)
        codes = [min(15, int(torch.tensor(v, dtype=torch.float32) * inv + 8.5)) for v in block.tolist()]
        rows.append([codes[j] | (codes[j + 16] << 4) for j in range(16)])
        ds.append(d.to(torch.float16))
    return torch.stack(ds), torch.tensor(rows, dtype=torch.uint8)


def _q4_via_bytes(x):
    data = qz.quantize_q4_0(x)                                            # the package's llama.cpp bytes
    d, qs = qz.split_blocks(data, "q4_0")
    return d.clone(), qs.clone()


# --------------------------------------------------------------------------- 13.3 the Q4_0 linear layer


def _lin_cases(rng: np.random.Generator) -> list[dict]:
    cases = []
    for d_in, d_out, lead, bias in ((64, 3, (2,), True), (32, 5, (2, 3), False), (96, 4, (3,), True),
                                    (64, 6, (1, 2), True)):
        w = _blocks(rng, d_out * d_in // QK).reshape(d_out, d_in)
        d, qs = qz.quantize_q4_0_blocks(w.reshape(-1, QK))
        cases.append(dict(x=torch.from_numpy(rng.normal(0, 1, (*lead, d_in)).astype(np.float32)),
                          d=d.reshape(d_out, -1), qs=qs.reshape(d_out, -1, QK // 2),
                          bias=torch.from_numpy(rng.normal(0, 0.1, d_out).astype(np.float32)) if bias else None))
    return cases


def _unpack(qs, order="ggml"):
    lo, hi = (qs & 0x0F).to(torch.int64), (qs >> 4).to(torch.int64)
    if order == "ggml":
        return torch.cat([lo, hi], dim=-1)
    if order == "swapped":
        return torch.cat([hi, lo], dim=-1)
    return torch.stack([lo, hi], dim=-1).flatten(-2)


def _lin(x, d, qs, bias, order="ggml", offset=8, scale=None, detach=False, fp16=False, use_bias=True):
    d_out, nb, _ = qs.shape
    codes = _unpack(qs, order).float() - offset                          # (d_out, nb, 32)
    s = d.float() if scale is None else scale(d)
    if fp16:
        W = (codes.half() * d[..., None]).float()
    else:
        W = codes * s[..., None]
    W = W.reshape(d_out, nb * QK)
    return F.linear(x.detach() if detach else x, W, bias if use_bias else None)


def _lin_swapped(x, d, qs, bias):
    return _lin(x, d, qs, bias, order="swapped")


def _lin_adjacent(x, d, qs, bias):
    return _lin(x, d, qs, bias, order="adjacent")


def _lin_no_offset(x, d, qs, bias):
    return _lin(x, d, qs, bias, offset=0)


def _lin_one_scale_per_row(x, d, qs, bias):
    return _lin(x, d, qs, bias, scale=lambda d: d[:, :1].float().expand_as(d))


def _lin_no_bias(x, d, qs, bias):
    return _lin(x, d, qs, bias, use_bias=False)


def _lin_detached(x, d, qs, bias):
    return _lin(x, d, qs, bias, detach=True)


def _lin_fp16(x, d, qs, bias):
    return _lin(x, d, qs, bias, fp16=True)


def _lin_not_transposed(x, d, qs, bias):
    d_out, nb, _ = qs.shape
    W = ((_unpack(qs).float() - 8) * d.float()[..., None]).reshape(nb * QK, d_out)   # the bytes read as (d_in, d_out)
    y = x @ W
    return y + bias if bias is not None else y


def _lin_blockwise(x, d, qs, bias):
    """As llama.cpp's kernels: an integer-valued dot product per block, times the block's scale, summed."""
    d_out, nb, _ = qs.shape
    xb = x.reshape(*x.shape[:-1], nb, QK)                                # (…, nb, 32)
    codes = _unpack(qs).float() - 8                                      # (d_out, nb, 32)
    per_block = torch.einsum("...bj,obj->...ob", xb, codes)              # (…, d_out, nb)
    y = (per_block * d.float()).sum(-1)
    return y + bias if bias is not None else y


def _lin_via_module(x, d, qs, bias):
    W = qz.dequantize_q4_0_blocks(d.reshape(-1), qs.reshape(-1, QK // 2)).reshape(qs.shape[0], -1)
    return x @ W.T + (bias if bias is not None else 0)


register(
    Exercise(
        id="13.1", title="A Q8_0 round trip", reference=qz.q8_0_round_trip, cases=_q8_cases, exact_dtype=True,
        hint="Per block (row of x): amax = max |x|, d = amax / 127 (fp32), inv_d = 1 / d (0 where d = 0), codes = "
             "round(x · inv_d) with halves away from zero (C's roundf: quantization.round_half_away); return d as "
             "float16, the codes as int8, and x̂ = codes · d with the *stored* fp16 d, as float32.",
        known_wrong=[
            KnownWrong("one scale for the whole tensor", _q8_per_tensor,
                       "You used one amax for every block. Q8_0 has one scale per block of 32 (amax over dim=1), so a "
                       "block of small weights keeps its resolution next to a block with an outlier."),
            KnownWrong("d = amax / 128", _q8_over_128,
                       "You divided amax by 128. int8's symmetric range is −127 … 127: d = amax / 127, so the largest "
                       "weight becomes exactly ±127."),
            KnownWrong("x / d instead of x · (1/d)", _q8_divide,
                       "One code is off by one, at a weight that sits on a half: you divided, x / d. ggml multiplies "
                       "by the inverse, id = 1/d (0 where d = 0), and rounds x · id; the two differ in the last bit, "
                       "which decides a tie. Compute inv_d = 1 / d first and round x * inv_d[:, None]."),
            KnownWrong("truncation", _q8_truncate,
                       "You truncated x / d toward zero (int() or .to(torch.int8) on floats). Round to the nearest "
                       "integer, halves away from zero, as ggml's roundf: quantization.round_half_away."),
            KnownWrong("halves to even", _q8_half_even,
                       "torch.round sends halves to the even integer (2.5 -> 2); ggml uses C's roundf, halves away from "
                       "zero (2.5 -> 3, −2.5 -> −3). Only exact halves differ: quantization.round_half_away."),
            KnownWrong("the largest value, not magnitude", _q8_max_not_absmax,
                       "Your scale comes from the largest value, x.max(): a block whose biggest weight is negative "
                       "then overflows int8. Use the largest magnitude, x.abs().amax(dim=1)."),
            KnownWrong("x̂ from the fp32 scale", _q8_fp32_dequant,
                       "Your x̂ multiplies by the fp32 d, but the file stores d in fp16: dequantize with "
                       "d.to(torch.float16).float(), the scale a reader of the file has."),
            KnownWrong("d kept in fp32", _q8_fp32_scale,
                       "You returned d as float32. A Q8_0 block stores d in 2 bytes, fp16 (that is the 0.5 of "
                       "8.5 bits per weight): return d.to(torch.float16), and dequantize with it."),
        ],
        known_right=[KnownRight("block by block, as the C loop", _q8_loop)]),
    Exercise(
        id="13.2", title="Q4_0 blocks, packed as llama.cpp packs them", reference=qz.quantize_q4_0_blocks,
        cases=_q4_cases, exact_dtype=True,
        hint="Per block: the weight of largest magnitude with its sign, max (the first on a tie: argmax of |x|), "
             "d = max / −8 (fp32), inv_d = 1 / d (0 where d = 0: every code is then 8), codes = min(15, "
             "trunc(x · inv_d + 8.5)); byte j = code_j | code_{j+16} << 4 as uint8, d returned as float16.",
        known_wrong=[
            KnownWrong("one scale for the whole tensor", _q4_per_tensor,
                       "You took one max over all blocks. Q4_0 has one scale per block of 32: with 16 levels, a "
                       "shared scale leaves the small blocks with one or two codes."),
            KnownWrong("no offset of 8", _q4_no_offset,
                       "Your codes are −8 … 7 stored as two's-complement nibbles. Q4_0 stores code + 8, 0 … 15 "
                       "(trunc(x / d + 8.5)), and the reader subtracts 8."),
            KnownWrong("nibbles swapped", _q4_nibbles_swapped,
                       "Element j goes in the *low* nibble of byte j and element j + 16 in the high one: "
                       "code_j | code_{j+16} << 4. You have them the other way round."),
            KnownWrong("neighbours in one byte", _q4_adjacent,
                       "You packed elements 2j and 2j + 1 into byte j (llama.cpp's order before May 2023). ggml packs "
                       "the two halves of the block: element j (low nibble) with element j + 16 (high)."),
            KnownWrong("truncation", _q4_truncate,
                       "You truncated x / d + 8 without the + 0.5: that rounds down, not to the nearest code. ggml "
                       "truncates x / d + 8.5."),
            KnownWrong("roundf, as Q8_0", _q4_roundf,
                       "You rounded as Q8_0 does, halves away from zero (roundf, quantization.round_half_away), then "
                       "added 8. Q4_0 computes trunc(x · (1/d) + 8.5), which sends every half *up*: −0.5 becomes code "
                       "8 (x̂ = 0) where roundf gives 7. (llama.cpp's Q4_0 did use roundf(v) + 8 before May 2023.)"),
            KnownWrong("x / d instead of x · (1/d)", _q4_divide,
                       "One code is off by one, at a weight that sits on a half: you divided, x / d. ggml multiplies "
                       "by the inverse, id = 1/d (0 where d = 0), and truncates x · id + 8.5; the two differ in the "
                       "last bit, which decides a tie. Compute inv_d = 1 / d first."),
            KnownWrong("halves to even", _q4_half_even,
                       "torch.round sends halves to even (10.5 -> 10); ggml's trunc(x / d + 8.5) sends them up (11). "
                       "Only exact halves differ: compute trunc(x / d + 8.5)."),
            KnownWrong("scale from the magnitude, sign dropped", _q4_amax,
                       "d must carry the sign of the block's largest-magnitude weight: d = max / −8 maps that weight to "
                       "code 0 (−8). With the sign dropped d > 0, and a block whose extreme weight is positive maps it to "
                       "+8, which is clipped to 7: the largest weight comes back 1/8 too small."),
            KnownWrong("d = amax / 7", _q4_over_7,
                       "You used a symmetric range ±7 (d = amax / 7). Q4_0 uses all 16 codes: d = max / −8 puts the "
                       "extreme weight at −8 exactly and gains a level."),
            KnownWrong("no clip at 15", _q4_no_clip,
                       "A weight of the opposite sign as large as the extreme one gets code 16, which does not fit in "
                       "4 bits and spills into the other nibble: clip with min(15, …)."),
            KnownWrong("d kept in fp32", _q4_fp32_scale,
                       "You returned d as float32. A Q4_0 block stores d in fp16 (2 bytes: 18 bytes per 32 weights, "
                       "4.5 bits per weight): return d.to(torch.float16)."),
        ],
        known_right=[KnownRight("block by block, as the C loop", _q4_loop),
                     KnownRight("through llama.cpp's bytes", _q4_via_bytes)]),
    Exercise(
        id="13.3", title="A linear layer on Q4_0 weights", reference=qz.q4_0_linear, cases=_lin_cases,
        grad_wrt=("x",), atol=1e-5, rtol=1e-5,
        grad_help="QLoRA trains adapters in every layer: the gradient must flow through the frozen quantized layer to "
                  "its input x.",
        hint="Unpack each byte into its low nibble (element j) and high nibble (element j + 16), subtract 8, multiply "
             "by the block's scale d.float(), reshape (d_out, nb, 32) -> (d_out, d_in), then x @ W.T + bias "
             "(F.linear(x, W, bias)).",
        known_wrong=[
            KnownWrong("nibbles swapped", _lin_swapped,
                       "You read element j from the high nibble. In Q4_0 byte j holds element j in its low nibble "
                       "(qs & 0x0F) and element j + 16 in its high nibble (qs >> 4)."),
            KnownWrong("neighbours in one byte", _lin_adjacent,
                       "You read byte j as elements 2j and 2j + 1, the pre-May-2023 order: the chapter's garbage. "
                       "Byte j holds elements j and j + 16: torch.cat([qs & 0x0F, qs >> 4], dim=-1)."),
            KnownWrong("no offset of 8", _lin_no_offset,
                       "The codes are stored as 0 … 15 with an offset of 8: subtract 8 before scaling. Without it every "
                       "weight is shifted by 8·d."),
            KnownWrong("one scale per row", _lin_one_scale_per_row,
                       "Every block of 32 has its own scale: W[o, 32b + j] uses d[o, b], not the row's first one."),
            KnownWrong("bias dropped", _lin_no_bias,
                       "The bias is part of the layer (it stays fp32): add it when it is not None."),
            KnownWrong("input detached", _lin_detached,
                       "The value is right but you detached x, so no gradient reaches the layers before this one "
                       "(QLoRA's adapters there would not train)."),
            KnownWrong("weights computed in fp16", _lin_fp16,
                       "You multiplied the codes by d in fp16, which rounds the weights again. Convert d to float32 "
                       "first (d.float()): the fp16 scale is exact in fp32."),
            KnownWrong("weight not transposed", _lin_not_transposed,
                       "You read the blocks as a (d_in, d_out) matrix. The bytes hold W row by row, (d_out, d_in): "
                       "y = x @ W.T + b."),
        ],
        known_right=[KnownRight("blockwise integer dot products, as llama.cpp", _lin_blockwise),
                     KnownRight("dequantize, then x @ W.T", _lin_via_module)]),
)
