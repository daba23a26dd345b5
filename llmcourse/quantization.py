"""Weights in fewer bits: absmax integers, llama.cpp's Q8_0 and Q4_0, a quantized linear layer, QLoRA.

**Symmetric absmax quantization.** A group of weights w shares one scale s = max|w| / q_max and is stored as the
integers q = round(w / s) in [-q_max, q_max] (q_max = 127 for int8, 7 for int4); w ≈ s·q. The group is the whole
tensor (one scale), one output channel (one scale per row of a (d_out, d_in) weight) or a block of 32 consecutive
weights of a row. The rounding error of a weight is at most s/2, so one outlier that makes max|w| large makes every
weight of its group coarse: the smaller the group, the fewer weights an outlier spoils (`absmax_quantize`).

**llama.cpp's formats** (ggml's reference code: ``ggml/src/ggml-quants.c``, ``quantize_row_q8_0_ref`` /
``dequantize_row_q8_0`` and ``quantize_row_q4_0_ref`` / ``dequantize_row_q4_0``; the block structs ``block_q8_0``
and ``block_q4_0`` in ``ggml/src/ggml-common.h``). A row of a weight matrix (its d_in inputs, contiguous) is cut into
blocks of QK = 32 weights, each stored on its own:

* **Q8_0**, 34 bytes a block = 8.5 bits per weight: ``d`` (fp16, 2 bytes) then ``qs`` (32 × int8).
  d = amax / 127 with amax = max|x|; q_j = roundf(x_j · id) with id = 1/d (C's roundf: halves away from zero); x̂_j = q_j · d.
* **Q4_0**, 18 bytes a block = 4.5 bits per weight: ``d`` (fp16) then ``qs`` (16 bytes, two 4-bit codes each).
  The scale comes from the *signed* weight of largest magnitude, ``max`` (the first one on a tie):
  d = max / −8, so that weight becomes exactly −8 and the 16 codes cover −8 … +7 on the side where the extreme
  weight is. Codes are stored with an offset of 8, as 0 … 15: c_j = min(15, trunc(x_j · id + 8.5)), id = 1/d (the +0.5 makes
  the truncation round to nearest, halves up; the min clips the one code, +8, that does not fit).
  Byte j (0 ≤ j < 16) holds element j in its low nibble and element j + 16 in its high nibble:
  qs[j] = c_j | (c_{j+16} << 4). Dequantized: x̂_j = (c_j − 8) · d.

In both, ggml computes the codes with the fp32 d (1/d) and stores d rounded to fp16; dequantization uses the fp16 d.
All of that is reproduced here bit for bit (`quantize_q8_0`, `quantize_q4_0` give llama.cpp's bytes). Where the
course simplifies: the byte layout is the blocks of one row after another, as in a GGUF tensor's data, but without
GGUF's header and alignment padding; only the linear layers of the transformer blocks are quantized (the tied
token embedding / output layer, the LayerNorms and the biases stay fp32; llama-quantize also quantizes
``token_embd`` and keeps ``output.weight`` at a higher precision); and the matmul dequantizes the weight and
multiplies in fp32, where llama.cpp's CPU kernels (``ggml_vec_dot_q4_0_q8_0``) quantize the activations to Q8_0
too and take integer dot products block by block.

**The notes' puzzle** ("the Q4_0 model's output is almost all garbage, Q8 is normal: a quantization bug, or an
instruction set the CPU lacks?"). A missing instruction set does not garble output: ggml picks its SIMD path when
it is compiled (and, in builds with several CPU variants, at load time by what the CPU reports); a binary built for
an instruction the CPU lacks dies with "illegal instruction", and a build without it runs the scalar code, slower
but right. What garbles Q4_0 and leaves Q8_0 alone is a reader that disagrees with the writer about where the 4-bit
codes sit in a byte (Q8_0 has one code per byte and no nibbles to misplace), or a bug in one backend's Q4_0 kernel.
llama.cpp changed exactly that layout on 12 May 2023 (PR #1405, "ggml : remove bit shuffling": until then
``quantize_row_q4_0_reference`` packed neighbours, elements 2j and 2j+1 in byte j; since, elements j and j+16; Q8_0
kept its layout). It bumped its file version (GGJT 1 -> 2) and refused old Q4 files; programs that read tensors
without the version check (ggml's examples, bindings built on them) computed with misplaced codes: garbage from Q4_0,
normal text from Q8_0. `QuantizedLinear` reads Q4_0 in the old order with ``layout="adjacent"`` to reproduce the
garbage; reading in the order the file was written (or re-quantizing with the version that runs it) repairs it.
Chapter 13 measures both. (The files of that time had an fp32 scale; fp16 came a week later, PR #1508.)

Shapes: w (d_out, d_in) a linear layer's weight, d_in a multiple of 32; nb = d_in / 32 blocks per row;
x (nb, 32) a stack of blocks; d (nb,) float16; qs (nb, 32) int8 (Q8_0) or (nb, 16) uint8 (Q4_0).
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from dataclasses import dataclass

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmcourse.model import GPT

QK = 32
"""Weights per block in Q8_0 and Q4_0 (ggml's ``QK8_0`` and ``QK4_0``)."""

BLOCK_BYTES = {"q8_0": 2 + QK, "q4_0": 2 + QK // 2}
"""Bytes of one block: the fp16 scale, then the codes (``sizeof(block_q8_0)`` = 34, ``sizeof(block_q4_0)`` = 18)."""

FORMATS = ("fp32", "int8", "int4", "q8_0", "q4_0")
"""The weight formats of chapter 13: fp32; int8 / int4 absmax with one scale per tensor; llama.cpp's Q8_0 / Q4_0."""

LAYOUTS = ("ggml", "adjacent")
"""How a Q4_0 kernel reads the nibbles of byte j: ``"ggml"`` elements j (low) and j + 16 (high), llama.cpp's order
since May 2023; ``"adjacent"`` elements 2j (low) and 2j + 1 (high), the order before it (a mismatched reader)."""

assert sys.byteorder == "little", "the fp16 scale's bytes are written in the machine's order; ggml files are little-endian"


def bits_per_weight(fmt: str) -> float:
    """Storage per weight of a block format: ``bits_per_weight("q8_0") -> 8.5``, ``bits_per_weight("q4_0") -> 4.5``."""
    return 8 * BLOCK_BYTES[fmt] / QK


# --------------------------------------------------------------------------- absmax integers


def round_half_away(v: torch.Tensor) -> torch.Tensor:
    """C's ``roundf``: to the nearest integer, halves away from zero (torch.round sends halves to even).

    >>> round_half_away(torch.tensor([0.5, 1.5, 2.5, -2.5, 2.4])).tolist()
    [1.0, 2.0, 3.0, -3.0, 2.0]
    """
    t = v.trunc()
    return torch.where((v - t).abs() == 0.5, t + v.sign(), v.round())   # v - trunc(v) is exact in float


def absmax_quantize(w: torch.Tensor, bits: int = 8, group: str = "tensor",
                    block: int = QK) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric absmax quantization of a (d_out, d_in) weight -> (q int8 (d_out, d_in), scale float32).

    group: ``"tensor"`` one scale, shape (1, 1); ``"channel"`` one per output row, (d_out, 1); ``"block"`` one per
    ``block`` consecutive weights of a row, (d_out, d_in / block, 1) with q then (d_out, d_in / block, block).
    scale = max|w| / q_max, q = round(w / scale) with q_max = 2^(bits-1) − 1 (127 for int8, 7 for int4).

    >>> q, s = absmax_quantize(torch.tensor([[0.6, -1.0, 0.2, 0.0]]), bits=4)
    >>> q.tolist(), round(s.item(), 4)           # scale 1/7: 0.6·7 = 4.2 -> 4, 0.2·7 = 1.4 -> 1
    ([[4, -7, 1, 0]], 0.1429)
    """
    q_max = 2 ** (bits - 1) - 1
    if group == "tensor":
        g = w.reshape(1, 1, -1)
    elif group == "channel":
        g = w.reshape(w.shape[0], 1, -1)
    elif group == "block":
        g = w.reshape(w.shape[0], -1, block)                            # (d_out, nb, block)
    else:
        raise ValueError(f"group must be 'tensor', 'channel' or 'block', got {group!r}")
    scale = g.abs().amax(dim=-1, keepdim=True).float() / q_max          # (…, 1)
    inv = torch.where(scale > 0, 1.0 / scale, torch.zeros_like(scale))
    q = round_half_away(g.float() * inv).clamp(-q_max, q_max).to(torch.int8)
    if group == "block":
        return q, scale
    return q.reshape(w.shape), scale.reshape(scale.shape[0], 1)


def absmax_dequantize(q: torch.Tensor, scale: torch.Tensor, shape: torch.Size | None = None) -> torch.Tensor:
    """s · q back in float32 (reshaped to ``shape`` when given, e.g. a blocked weight to (d_out, d_in))."""
    w = q.float() * scale
    return w.reshape(shape) if shape is not None else w


def round_trip_error(w: torch.Tensor, bits: int, group: str, block: int = QK) -> float:
    """RMS of w − dequantize(quantize(w)) relative to the RMS of w."""
    w_hat = absmax_dequantize(*absmax_quantize(w, bits, group, block), shape=w.shape)
    return ((w - w_hat).pow(2).mean().sqrt() / w.pow(2).mean().sqrt()).item()


# --------------------------------------------------------------------------- Q8_0 blocks


def quantize_q8_0_blocks(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q8_0 of a stack of blocks, as ``quantize_row_q8_0_ref``: x (nb, 32) float32 -> (d (nb,) float16, qs (nb, 32) int8).

    d = amax / 127, codes round(x · (1/d)) halves away from zero, computed with the fp32 d; an all-zero block has d = 0.

    >>> d, qs = quantize_q8_0_blocks(torch.tensor([[127.0, -2.5, 0.4] + [0.0] * 29]))
    >>> d.item(), qs[0, :3].tolist()
    (1.0, [127, -3, 0])
    """
    amax = x.abs().amax(dim=1)                                          # (nb,)
    d = amax / 127
    inv_d = torch.where(d != 0, 1.0 / d, torch.zeros_like(d))           # ggml: id = d ? 1/d : 0
    qs = round_half_away(x * inv_d[:, None]).to(torch.int8)             # (nb, 32), |code| <= 127
    return d.to(torch.float16), qs


def dequantize_q8_0_blocks(d: torch.Tensor, qs: torch.Tensor) -> torch.Tensor:
    """(nb,) fp16 scales, (nb, 32) int8 codes -> (nb, 32) float32: x̂ = q · d (``dequantize_row_q8_0``)."""
    return qs.float() * d.float()[:, None]


def q8_0_round_trip(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exercise 13.1: x (nb, 32) float32 -> (d (nb,) float16, qs (nb, 32) int8, x̂ (nb, 32) float32), the Q8_0 codes
    of each block and the weights they give back."""
    d, qs = quantize_q8_0_blocks(x)
    return d, qs, dequantize_q8_0_blocks(d, qs)


# --------------------------------------------------------------------------- Q4_0 blocks


def quantize_q4_0_blocks(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exercise 13.2, Q4_0 of a stack of blocks as ``quantize_row_q4_0_ref``: x (nb, 32) float32 ->
    (d (nb,) float16, qs (nb, 16) uint8), byte j = code of element j | code of element j + 16 << 4.

    The block below has its largest magnitude at a negative weight, −8: d = −8 / −8 = 1 and the codes are x + 8,
    except 8.0, whose code 16 is clipped to 15 (7 · d = 7)::

        x = [-8, 8, 2.5, 0, …, 0 | 1, 0, …, 0]      (element 16 is 1)
        codes: 0, 15, 11 (10.5 rounds up), 8, …  |  9, 8, …
        qs[0] = 0 | 9 << 4 = 0x90, qs[1] = 15 | 8 << 4 = 0x8F, qs[2] = 11 | 8 << 4 = 0x8B

    >>> x = torch.zeros(1, 32); x[0, :3] = torch.tensor([-8.0, 8.0, 2.5]); x[0, 16] = 1.0
    >>> d, qs = quantize_q4_0_blocks(x)
    >>> d.item(), [hex(b) for b in qs[0, :3].tolist()]
    (1.0, ['0x90', '0x8f', '0x8b'])
    """
    i_max = x.abs().argmax(dim=1, keepdim=True)                         # first of the largest magnitudes
    signed_max = x.gather(1, i_max)[:, 0]                               # (nb,), with its sign
    d = signed_max / -8
    inv_d = torch.where(d != 0, 1.0 / d, torch.zeros_like(d))
    codes = (x * inv_d[:, None] + 8.5).trunc().clamp(max=15).to(torch.uint8)   # (nb, 32) in 0 … 15
    qs = codes[:, :QK // 2] | (codes[:, QK // 2:] << 4)                 # (nb, 16): j low, j + 16 high
    return d.to(torch.float16), qs


def unpack_q4_0_codes(qs: torch.Tensor, layout: str = "ggml") -> torch.Tensor:
    """(…, 16) uint8 -> (…, 32) codes 0 … 15 in element order, read in ``layout`` (`LAYOUTS`)."""
    lo, hi = qs & 0x0F, qs >> 4                                         # (…, 16) each
    if layout == "ggml":
        return torch.cat([lo, hi], dim=-1)                              # elements 0…15, then 16…31
    if layout == "adjacent":
        return torch.stack([lo, hi], dim=-1).flatten(-2)                # elements 0, 1, 2, … alternating
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


def dequantize_q4_0_blocks(d: torch.Tensor, qs: torch.Tensor, layout: str = "ggml") -> torch.Tensor:
    """(nb,) fp16, (nb, 16) uint8 -> (nb, 32) float32: x̂ = (code − 8) · d (``dequantize_row_q4_0``)."""
    return (unpack_q4_0_codes(qs, layout).float() - 8) * d.float()[:, None]


# --------------------------------------------------------------------------- llama.cpp's bytes


def _rows_to_blocks(w: torch.Tensor) -> torch.Tensor:
    if w.shape[-1] % QK:
        raise ValueError(f"a row of {w.shape[-1]} weights does not split into blocks of {QK}")
    return w.detach().float().reshape(-1, QK)                          # (rows · nb, 32)


def quantize_q8_0(w: torch.Tensor) -> torch.Tensor:
    """(rows, cols) -> (rows, cols / 32 · 34) uint8: each row's blocks, each block its fp16 d then 32 int8 codes."""
    d, qs = quantize_q8_0_blocks(_rows_to_blocks(w))
    blocks = torch.cat([d.view(torch.uint8).reshape(-1, 2), qs.view(torch.uint8)], dim=1)   # (rows · nb, 34)
    return blocks.reshape(w.shape[0], -1)


def quantize_q4_0(w: torch.Tensor) -> torch.Tensor:
    """(rows, cols) -> (rows, cols / 32 · 18) uint8: each row's blocks, each block its fp16 d then 16 code bytes."""
    d, qs = quantize_q4_0_blocks(_rows_to_blocks(w))
    blocks = torch.cat([d.view(torch.uint8).reshape(-1, 2), qs], dim=1)                      # (rows · nb, 18)
    return blocks.reshape(w.shape[0], -1)


def split_blocks(data: torch.Tensor, fmt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """llama.cpp bytes (rows, nb · block bytes) -> (d (rows · nb,) float16, codes (rows · nb, bytes − 2) uint8)."""
    blocks = data.reshape(-1, BLOCK_BYTES[fmt])
    return blocks[:, :2].contiguous().view(torch.float16)[:, 0], blocks[:, 2:]


def dequantize(data: torch.Tensor, fmt: str, layout: str = "ggml") -> torch.Tensor:
    """llama.cpp bytes (rows, nb · block bytes) of ``fmt`` ("q8_0" or "q4_0") -> (rows, nb · 32) float32."""
    d, codes = split_blocks(data, fmt)
    if fmt == "q8_0":
        w = dequantize_q8_0_blocks(d, codes.contiguous().view(torch.int8))
    else:
        w = dequantize_q4_0_blocks(d, codes, layout)
    return w.reshape(data.shape[0], -1)


def q4_0_linear(x: torch.Tensor, d: torch.Tensor, qs: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Exercise 13.3, a linear layer whose weight is stored in Q4_0: x (…, d_in) float32, d (d_out, nb) float16,
    qs (d_out, nb, 16) uint8, bias (d_out,) or None -> (…, d_out) = x Wᵀ + b with W the dequantized weight.

    The weight's row o is its nb blocks one after the other: W[o, 32b + j] = (code_j of block (o, b) − 8) · d[o, b].
    The gradient reaches x (QLoRA trains adapters before and after the frozen layer), never the stored codes.
    """
    d_out, nb, _ = qs.shape
    W = dequantize_q4_0_blocks(d.reshape(-1), qs.reshape(-1, QK // 2)).reshape(d_out, nb * QK)   # (d_out, d_in)
    return F.linear(x, W, bias)


# --------------------------------------------------------------------------- a quantized linear layer, a quantized model


class QuantizedLinear(nn.Module):
    """A linear layer that stores its weight in ``fmt`` and computes with the dequantized weight.

    fmt: ``"q8_0"`` / ``"q4_0"`` llama.cpp's bytes (buffer ``data``, (d_out, nb · block bytes) uint8);
    ``"int8"`` / ``"int4"`` absmax with one scale per tensor (buffers ``q`` int8 and ``scale``; int4 codes are
    kept one per byte here, counted at 4 bits in `nbytes`). layout: how Q4_0's nibbles are read (`LAYOUTS`);
    ``"adjacent"`` is a reader that disagrees with the writer, the chapter's garbage. keep_dequantized: keep the
    fp32 weight after the first forward (fast evaluation; it gives up the memory saving), else dequantize on every
    forward (QLoRA). The bias stays fp32 and frozen. ``weight`` is the dequantized weight (read-only).

    >>> layer = QuantizedLinear(nn.Linear(64, 3), "q8_0")
    >>> layer.data.shape, layer.nbytes() - 3 * 4      # 3 rows of 2 blocks of 34 bytes (+ the fp32 bias)
    (torch.Size([3, 68]), 204)
    """

    def __init__(self, linear: nn.Linear, fmt: str, layout: str = "ggml", keep_dequantized: bool = True):
        super().__init__()
        if fmt not in FORMATS[1:]:
            raise ValueError(f"fmt must be one of {FORMATS[1:]}, got {fmt!r}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        self.fmt, self.layout, self.keep_dequantized = fmt, layout, keep_dequantized
        self.in_features, self.out_features = linear.in_features, linear.out_features
        w = linear.weight.detach()
        if fmt == "q8_0":
            self.register_buffer("data", quantize_q8_0(w))
        elif fmt == "q4_0":
            self.register_buffer("data", quantize_q4_0(w))
        else:
            q, scale = absmax_quantize(w, bits=8 if fmt == "int8" else 4, group="tensor")
            self.register_buffer("q", q)
            self.register_buffer("scale", scale)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        self._w: torch.Tensor | None = None

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized weight, (d_out, d_in) float32."""
        if self._w is not None:
            return self._w
        if self.fmt in ("q8_0", "q4_0"):
            w = dequantize(self.data, self.fmt, self.layout)
        else:
            w = absmax_dequantize(self.q, self.scale)
        if self.keep_dequantized:
            self._w = w
        return w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)                      # (…, d_out)

    def weight_bytes(self) -> int:
        """Bytes of the stored weight: the blocks, or the codes at ``bits`` each plus one fp32 scale."""
        if self.fmt in ("q8_0", "q4_0"):
            return self.data.numel()
        bits = 8 if self.fmt == "int8" else 4
        return self.q.numel() * bits // 8 + 4

    def nbytes(self) -> int:
        """Bytes of the stored weight and the fp32 bias."""
        return self.weight_bytes() + (0 if self.bias is None else 4 * self.bias.numel())

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, fmt={self.fmt}, layout={self.layout}"


def quantized_layers(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """The linear layers chapter 13 quantizes: every ``nn.Linear`` inside the transformer blocks (not the tied
    ``lm_head``)."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear) and name.startswith("blocks.")]


def quantize_model(model: GPT, fmt: str, layout: str = "ggml", keep_dequantized: bool = True) -> GPT:
    """A copy of ``model`` whose block linear layers are `QuantizedLinear` in ``fmt`` (``"fp32"``: a plain copy)."""
    model = copy.deepcopy(model)
    if fmt == "fp32":
        return model
    for name, linear in quantized_layers(model):
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, QuantizedLinear(linear, fmt, layout, keep_dequantized))
    return model.eval()


def model_bytes(model: nn.Module) -> dict[str, int]:
    """What the model would take on disk: ``linear`` the block linear weights (stored format), ``other`` every other
    parameter in fp32 (embeddings, LayerNorms, biases), ``total``; ``linear_weights`` their number of weights."""
    linear, n_linear, other = 0, 0, 0
    seen: set[int] = set()
    for m in model.modules():
        if isinstance(m, QuantizedLinear):
            linear += m.weight_bytes()
            n_linear += m.in_features * m.out_features
            seen.add(id(m))
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and name.startswith("blocks.") and id(m) not in seen:
            linear += 4 * m.weight.numel()
            n_linear += m.weight.numel()
    quantized_weights = {id(m.weight) for name, m in model.named_modules()
                         if isinstance(m, nn.Linear) and name.startswith("blocks.")}
    for p in model.parameters():                                        # shared tensors counted once
        if id(p) not in quantized_weights:
            other += 4 * p.numel()
    return dict(linear=linear, other=other, total=linear + other, linear_weights=n_linear)


def bytes_per_weight(model: nn.Module) -> float:
    """Bytes per weight of the quantized (block linear) weights: 4 for fp32, 34/32 for Q8_0, 18/32 for Q4_0."""
    b = model_bytes(model)
    return b["linear"] / b["linear_weights"]


# --------------------------------------------------------------------------- speed: PyTorch's own int8 kernels


def dynamic_int8(model: GPT) -> nn.Module:
    """A copy of ``model`` with every ``nn.Linear`` replaced by PyTorch's dynamically quantized int8 linear
    (``torch.ao.quantization.quantize_dynamic``: int8 weights per tensor, activations quantized on the fly, fbgemm's
    int8 GEMM on x86). It exists in torch 2.13 but warns that quantized tensors are deprecated (torchao is their
    successor); the warning is silenced here."""
    import warnings

    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():           # torch 2.13 deprecates quantized tensors (pytorch/pytorch#184982)
        warnings.simplefilter("ignore")
        return quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8)


@torch.no_grad()
def tokens_per_second(model: nn.Module, prompt_len: int = 8, new_tokens: int = 48, repeats: int = 3) -> float:
    """Greedy generation speed, batch 1, with the KV cache (`llmcourse.kv_cache.generate`): the best of ``repeats``."""
    from llmcourse.kv_cache import generate

    idx = torch.randint(0, model.cfg.vocab_size, (1, prompt_len), generator=torch.Generator().manual_seed(0))
    generate(model, idx, 4)                                             # warm up
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        generate(model, idx, new_tokens)
        best = min(best, time.perf_counter() - t0)
    return new_tokens / best


def linear_weight_bytes(model: nn.Module, bytes_per_weight: float) -> int:
    """Bytes a decoding step reads for the weights of every linear layer (blocks and ``lm_head``) at
    ``bytes_per_weight``: each is read once per generated token."""
    n = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    return int(n * bytes_per_weight)


# --------------------------------------------------------------------------- QLoRA


@dataclass(frozen=True)
class QLoRARecipe:
    """Chapter 13's QLoRA run: chapter 06's LoRA r = 4 SFT (`llmcourse.lora.sft_run`'s settings) on a frozen base
    whose block linear weights are stored in Q4_0 and dequantized on every forward."""

    rank: int = 4
    """LoRA rank, as chapter 06's r = 4 run."""
    alpha: float = 8.0
    """α = 2r, chapter 06's."""
    lr: float = 3e-3
    """Peak learning rate, chapter 06's LoRA rate (`lora.RUNS`)."""
    steps: int = 20
    """AdamW steps of 32 examples (`lora.sft_config`)."""
    fmt: str = "q4_0"
    """The frozen base's storage format."""


QLORA = QLoRARecipe()
"""The recipe the chapter and `benchmarks/quantization.py` run (3 seeds)."""


def qlora_run(seed: int = 0, recipe: QLoRARecipe = QLORA) -> tuple[GPT, dict[str, list[float]]]:
    """LoRA on the base model with its block linear layers frozen in ``recipe.fmt``: each `QuantizedLinear`
    (dequantized on the fly) wrapped in a `llmcourse.lora.LoRALinear`, then chapter 06's SFT (`lora.sft_config`).
    Returns the model and `llmcourse.sft.finetune`'s history."""
    from llmcourse.checkpoint import load_base_model
    from llmcourse.lora import LoRALinear, sft_config, sft_problems
    from llmcourse.sft import finetune

    torch.manual_seed(seed)                                             # as sft_run: the adapters' init
    model = load_base_model()
    for p in model.parameters():
        p.requires_grad_(False)
    for name, linear in quantized_layers(model):
        parent_name, _, child = name.rpartition(".")
        frozen = QuantizedLinear(linear, recipe.fmt, keep_dequantized=False)
        setattr(model.get_submodule(parent_name), child, LoRALinear(frozen, recipe.rank, recipe.alpha))
    history = finetune(model, sft_problems(), sft_config(recipe.lr, seed, recipe.steps), reasoned_share=1.0)
    return model, history


# --------------------------------------------------------------------------- the benchmark's results

RESULTS_PATH = Path(__file__).parent / "data" / "quantization.json"
"""What ``python -m llmcourse bench --skip-notebooks --only quantization`` writes for chapter 13 (3 seeds where trained)."""


def load_results(path: Path = RESULTS_PATH) -> dict:
    """Chapter 13's measured quantization results (see `RESULTS_PATH`)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
