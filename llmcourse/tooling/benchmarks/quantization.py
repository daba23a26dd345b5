"""Quantization (chapter 13): absmax groups, llama.cpp's Q8_0 / Q4_0 on the GRPO model, the notes' Q4_0 puzzle,
speed of PyTorch's int8 kernels, QLoRA against LoRA (3 seeds).

1. Round-trip error of the GRPO model's block weights in int8 / int4 with one scale per tensor, per output channel
   and per block of 32 … 128 weights; and what one outlier weight (50 × the layer's largest) does to each.
2. Chapter 10's GRPO model (`checkpoint.load_grpo_model`) with its block linear layers in int8 and int4 (one scale
   per tensor), Q8_0 and Q4_0 (`quantization.quantize_model`): held-out greedy and sampled accuracy (k samples at
   temperature 1), format rate, KL to the fp32 model (`evaluation.kl_to_model`: the exact per-token KL summed over
   the quantized model's own sampled responses, nats) and bytes. The notes' garbage: the same Q4_0 bytes read
   with the nibble order llama.cpp used before May 2023 (``layout="adjacent"``), and the repair (read as written).
3. Greedy generation speed, batch 1, KV cache, fp32 against PyTorch's dynamic int8 linear layers
   (`quantization.dynamic_int8`), at the course GPT's size and at a width whose weights exceed the L3 cache
   (read from ``lscpu``), with the weight bytes each generated token reads; ratios measured in one run.
4. QLoRA (`quantization.qlora_run`, `quantization.QLORA`) against LoRA on the fp32 base (`lora.sft_run(4, 3e-3)`),
   same seeds, greedy and sampled accuracy, and the bytes of the frozen block weights.
A full run (seeds 0–2) writes `llmcourse/data/quantization.json`, which chapter 13 plots.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import torch

from llmcourse import quantization as Q
from llmcourse import taskworld as tw
from llmcourse.checkpoint import load_grpo_model
from llmcourse.evaluation import evaluate, kl_to_model
from llmcourse.lora import sft_run
from llmcourse.model import GPT, GPTConfig
from llmcourse.runtime import torch_threads

SEEDS = (0, 1, 2)
K = 4
"""Samples per held-out problem for the sampled accuracy."""
PROBLEMS: list[tw.Problem] | None = None
"""The problems evaluated (None: the 256 held-out ones)."""
QLORA = Q.QLORA
WIDE = GPTConfig(n_layer=4, n_head=8, n_embd=1024)
"""The wide GPT of the speed test: 50 M weights in its linear layers, 200 MB in fp32, 50 MB in int8."""
NEW_TOKENS = 48
BLOCKS = (32, 64, 128)
RESULTS_FILE: Path = Q.RESULTS_PATH
ROWS = (("fp32", "fp32", "ggml"), ("int8 / tensor", "int8", "ggml"), ("int4 / tensor", "int4", "ggml"),
        ("Q8_0", "q8_0", "ggml"), ("Q4_0", "q4_0", "ggml"), ("Q4_0, other nibble order", "q4_0", "adjacent"))


def cache_sizes() -> dict[str, str]:
    """L1d / L2 / L3 as ``lscpu`` reports them (empty where it is missing)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {k.split()[0]: v.strip() for k, v in (line.split(":", 1) for line in out.splitlines() if ":" in line)
            if k.startswith(("L1d", "L2", "L3"))}


def _pct(x: float) -> str:
    return f"{100 * x:5.1f}%"


def run() -> list[str]:
    lines: list[str] = []
    data: dict = {}
    with torch_threads(1):
        grpo = load_grpo_model()
        # 1. groups
        weights = [m.weight.detach() for _, m in Q.quantized_layers(grpo)]
        err = {}
        for bits in (8, 4):
            for group in ("tensor", "channel", *(f"block {b}" for b in BLOCKS)):
                g, b = (group.split()[0], int(group.split()[1])) if group.startswith("block") else (group, Q.QK)
                err[f"int{bits} {group}"] = sum(Q.round_trip_error(w, bits, g, b) for w in weights) / len(weights)
        lines.append("relative RMS round-trip error of the GRPO model's block weights (mean over its 16 layers):")
        for bits in (8, 4):
            lines.append(f"  int{bits}: " + ", ".join(f"{k.split(' ', 1)[1]} {v:.4f}" for k, v in err.items()
                                                   if k.startswith(f"int{bits}")))
        w = weights[2].clone()                                               # blocks.0.mlp.c_fc
        w_out = w.clone()
        w_out[0, 0] = 50 * w.abs().max()

        def rest_error(wq, group):
            w_hat = Q.absmax_dequantize(*Q.absmax_quantize(wq, 4, group), shape=wq.shape)
            mask = torch.ones_like(wq, dtype=torch.bool)
            mask[0, 0] = False
            return ((wq - w_hat)[mask].pow(2).mean().sqrt() / wq[mask].pow(2).mean().sqrt()).item()
        outlier = {g: (rest_error(w, g), rest_error(w_out, g)) for g in ("tensor", "channel", "block")}
        lines.append("int4 error of the other weights of blocks.0.mlp.c_fc, without -> with one outlier (50 x max): "
                     + ", ".join(f"{g} {a:.3f} -> {b:.3f}" for g, (a, b) in outlier.items()))
        data["round_trip"] = dict(errors=err, outlier_int4=outlier)

        # 2. the GRPO model, quantized
        lines.append(f"GRPO model (chapter 10), block linear layers quantized; {K} samples per problem:")
        lines.append(f"{'format':<26} {'greedy':>7} {'sampled':>8} {'format':>7} {'KL (nats)':>10} "
                     f"{'bytes/weight':>12} {'bytes':>10}")
        table = {}
        for label, fmt, layout in ROWS:
            qm = Q.quantize_model(grpo, fmt, layout)
            e = evaluate(qm, PROBLEMS, k=K)
            kl = kl_to_model(qm, grpo, n_samples=1) if fmt != "fp32" else 0.0
            b = Q.model_bytes(qm)
            table[label] = dict(greedy_accuracy=e["greedy_accuracy"], sampled_accuracy=e["sampled_accuracy"],
                                format_rate=e["format_rate"], kl=kl, bytes_per_weight=b["linear"] / b["linear_weights"],
                                bytes=b["total"], linear_bytes=b["linear"], example=e["responses"][0])
            lines.append(f"{label:<26} {_pct(e['greedy_accuracy']):>7} {_pct(e['sampled_accuracy']):>8} "
                         f"{_pct(e['format_rate']):>7} {kl:10.4f} {b['linear'] / b['linear_weights']:12.4f} "
                         f"{b['total']:10,}")
        lines.append(f"  a greedy answer read with the other nibble order: {table['Q4_0, other nibble order']['example']!r}")
        data["grpo"] = table
        fp = table["fp32"]["sampled_accuracy"]
        for label, limit in (("Q8_0", 0.01), ("Q4_0", 0.05)):
            gap = fp - table[label]["sampled_accuracy"]
            lines.append(f"target {label} within {100 * limit:.0f} point(s) of fp32's sampled accuracy: "
                         f"{-100 * gap:+.1f} -> {'met' if gap <= limit else 'MISSED'}")
        bad = table["Q4_0, other nibble order"]["sampled_accuracy"]
        ok = bad < 0.1 and fp - table["Q4_0"]["sampled_accuracy"] <= 0.05
        lines.append(f"target garbage shown and repaired: other nibble order {_pct(bad)}, read as written "
                     f"{_pct(table['Q4_0']['sampled_accuracy'])} -> {'met' if ok else 'MISSED'}")

        # 3. speed
        caches = cache_sizes()
        lines.append("speed, greedy generation, batch 1, KV cache, one thread; caches: "
                     + ", ".join(f"{k} {v}" for k, v in caches.items()))
        torch.manual_seed(0)
        speed = {}
        for name, model in (("course GPT", grpo), (f"wide GPT (C={WIDE.n_embd})", GPT(WIDE).eval())):
            int8 = Q.dynamic_int8(model)
            t_fp = Q.tokens_per_second(model, new_tokens=NEW_TOKENS)
            t_i8 = Q.tokens_per_second(int8, new_tokens=NEW_TOKENS)
            t_fp = max(t_fp, Q.tokens_per_second(model, new_tokens=NEW_TOKENS))   # interleaved, best of both
            b_fp, b_i8 = Q.linear_weight_bytes(model, 4), Q.linear_weight_bytes(model, 1)
            speed[name] = dict(fp32_tokens_per_s=t_fp, int8_tokens_per_s=t_i8, fp32_bytes=b_fp, int8_bytes=b_i8)
            lines.append(f"  {name:<22} fp32 {t_fp:7.1f} tok/s ({b_fp / 2**20:6.1f} MiB of weights a token), "
                         f"int8 {t_i8:7.1f} tok/s ({b_i8 / 2**20:6.1f} MiB): int8 / fp32 = {t_i8 / t_fp:.2f}x")
            del int8
        data["speed"] = dict(caches=caches, results=speed)

        # 4. QLoRA
        qlora, lora = [], []
        t0 = time.perf_counter()
        for seed in SEEDS:
            qm, _ = Q.qlora_run(seed, QLORA)
            lm, _ = sft_run(QLORA.rank, QLORA.lr, seed, steps=QLORA.steps)
            eq, el = evaluate(qm, PROBLEMS, k=K), evaluate(lm, PROBLEMS, k=K)
            qlora.append((eq["greedy_accuracy"], eq["sampled_accuracy"]))
            lora.append((el["greedy_accuracy"], el["sampled_accuracy"]))
            frozen_q = sum(m.weight_bytes() for m in qm.modules() if isinstance(m, Q.QuantizedLinear))
        frozen_fp = 4 * sum(m.weight.numel() for _, m in Q.quantized_layers(grpo))
        lines.append(f"QLoRA (LoRA r={QLORA.rank} on a frozen {QLORA.fmt.upper()} base) against LoRA on the fp32 base, "
                     f"{QLORA.steps} steps, greedy / sampled accuracy:")
        for seed, (qg, qs), (lg, ls) in zip(SEEDS, qlora, lora):
            lines.append(f"  seed {seed}: QLoRA {_pct(qg)} / {_pct(qs)}, LoRA {_pct(lg)} / {_pct(ls)}")
        gap = max(lg - qg for (qg, _), (lg, _) in zip(qlora, lora))
        lines.append(f"  frozen block weights: {frozen_fp:,} bytes in fp32, {frozen_q:,} bytes in {QLORA.fmt.upper()} "
                     f"({frozen_fp / frozen_q:.1f}x less); {time.perf_counter() - t0:.0f} s for the runs")
        lines.append(f"target QLoRA within 3 points of LoRA's greedy accuracy (worst seed): {-100 * gap:+.1f} -> "
                     f"{'met' if gap <= 0.03 else 'MISSED'}")
        data["qlora"] = dict(seeds=list(SEEDS), qlora=qlora, lora=lora, frozen_bytes_fp32=frozen_fp,
                             frozen_bytes_q=frozen_q)
        if tuple(SEEDS) == (0, 1, 2) and PROBLEMS is None:
            RESULTS_FILE.write_text(json.dumps(data, indent=1) + "\n")
            lines.append(f"wrote {RESULTS_FILE.name}")
    return lines
