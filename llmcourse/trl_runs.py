"""Chapters 06, 08 and 10's runs through PEFT and TRL's trainers, on the course model converted to transformers.

Each function trains the shipped base model (`llmcourse.hf.save_pretrained`) with a TRL trainer set to the
course's recipe, converts the result back to a course `GPT` (`llmcourse.hf.from_transformers`) and returns it
with the training time, so the course's own `llmcourse.evaluation.evaluate` scores both on the same held-out
problems::

    model, info = grpo(seed=0)                 # TRL's GRPOTrainer, chapter 10's recipe
    evaluate(model)["sampled_accuracy"]

Where TRL's conventions differ from the course's recipe, the setting is the course's and the difference left
is named at the function. The seconds are the trainer's ``train()`` call, on however many threads torch has.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

import datasets
import torch
from peft import LoraConfig, get_peft_model
from transformers import PrinterCallback
from transformers.utils import logging as hf_logging
from trl import DPOConfig as TRLDPOConfig
from trl import DPOTrainer, SFTConfig, SFTTrainer
from trl import GRPOConfig as TRLGRPOConfig
from trl import GRPOTrainer

from llmcourse import hf
from llmcourse import taskworld as tw
from llmcourse.checkpoint import load_base_model
from llmcourse.dpo import RPO_ALPHA, DPOConfig, chapter_pairs
from llmcourse.grpo import RECIPE, GRPOConfig
from llmcourse.lora import sft_config, sft_problems
from llmcourse.model import GPTConfig

PEFT_TARGETS = ["c_attn", "c_proj", "c_fc"]
"""PEFT's ``target_modules`` for the course's LoRA targets ("attn", "mlp": every linear layer of the blocks).
PEFT matches module *names* (a suffix), the course matches the blocks' sub-module paths; both select the same
16 layers. The tied LM head is in neither."""

PARITY_PATH = Path(__file__).parent / "data" / "trl_parity.json"
"""The appendix's measured comparison, seeds 0–2 (``python -m llmcourse bench --skip-notebooks --only libraries``)."""

COMMON = dict(use_cpu=True, report_to="none", save_strategy="no", disable_tqdm=True, logging_steps=1,
              bf16=False, dataloader_num_workers=0)
"""Settings every run shares: CPU, no logging service, no checkpoints, a log line per step."""


def _workdir(workdir: str | Path | None) -> Path:
    return Path(tempfile.mkdtemp(prefix="llmcourse_trl_")) if workdir is None else Path(workdir)


def _history(trainer, *keys: str) -> dict[str, list[float]]:
    """Per-step values of TRL's logged metrics ``keys`` (the trainer's ``state.log_history``)."""
    logs = [h for h in trainer.state.log_history if "loss" in h]
    return {k: [float(h[k]) for h in logs if k in h] for k in keys}


def quiet() -> None:
    """Silence transformers' and datasets' progress bars and advice: the runs print nothing of their own."""
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()


def _train(trainer) -> float:
    """Train; return the seconds of ``train()`` alone. The per-step log stays in ``trainer.state.log_history``."""
    trainer.remove_callback(PrinterCallback)
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start


def lora_config(rank: int) -> LoraConfig:
    """PEFT's `LoraConfig` for chapter 06's LoRA at ``rank``: α = 2r, no dropout, every linear layer of the blocks."""
    return LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=PEFT_TARGETS,
                      fan_in_fan_out=True)       # GPT-2's Conv1D stores weights (in, out)


def sft_trainable(rank: int) -> int:
    """How many parameters PEFT trains on the converted base model at ``rank`` (`lora_config`)."""
    model = get_peft_model(hf.to_transformers(load_base_model()), lora_config(rank))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def sft_lora(rank: int, lr: float, seed: int = 0, steps: int = 20, workdir: str | Path | None = None):
    """Chapter 06's LoRA run (`llmcourse.lora.sft_run`) with PEFT's LoRA and TRL's `SFTTrainer`.

    Same data (2,000 problems, reasoned responses; the loss on the completion only), batch, steps, α = 2r, peak
    lr, no weight decay, gradient clip 1.0, warmup 4 steps then cosine to lr / 10. Differences left: transformers'
    warmup starts at lr 0 (the course's at lr / 4), the batches are drawn by TRL's sampler, and PEFT initialises
    A with Kaiming-uniform (a = √5), the course with `nn.Linear`'s default (the same law)."""
    quiet()
    torch.manual_seed(seed)
    work = _workdir(workdir)
    path = hf.save_pretrained(load_base_model(), work / "base")
    course = sft_config(lr, seed, steps)
    args = SFTConfig(output_dir=str(work / "sft"), max_steps=course.steps, per_device_train_batch_size=course.batch_size,
                     learning_rate=course.max_lr, lr_scheduler_type="cosine_with_min_lr",
                     lr_scheduler_kwargs={"min_lr_rate": course.min_lr / course.max_lr},
                     warmup_steps=course.warmup_steps, weight_decay=course.weight_decay, max_grad_norm=course.grad_clip,
                     max_length=GPTConfig.block_size, seed=seed, data_seed=seed, **COMMON)
    trainer = SFTTrainer(model=path, args=args, train_dataset=hf.sft_dataset(sft_problems()),
                         processing_class=hf.hf_tokenizer(), peft_config=lora_config(rank))
    seconds = _train(trainer)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    model = hf.from_transformers(trainer.model.merge_and_unload())
    return model, dict(seconds=seconds, trainable=trainable, **_history(trainer, "loss"))


def dpo(seed: int = 0, cfg: DPOConfig = DPOConfig(rpo_alpha=RPO_ALPHA), workdir: str | Path | None = None):
    """Chapter 08's RPO run (`llmcourse.dpo.train_dpo` with ``rpo_alpha``) with TRL's `DPOTrainer`.

    Same pairs (`chapter_pairs`), β, steps, pairs per batch, constant lr, no weight decay, no clipping; the
    reference's log-probs computed once (``precompute_ref_log_probs``). RPO's SFT term is TRL 1.16's
    ``loss_type=["sigmoid", "sft"]`` with ``loss_weights=[1, α]``; differences left: its SFT term is a mean over
    all chosen tokens of the batch (the course's a mean of per-pair means), and the batches are TRL's."""
    quiet()
    torch.manual_seed(seed)
    work = _workdir(workdir)
    base = load_base_model()
    path = hf.save_pretrained(base, work / "base")
    losses = ["sigmoid", "sft"] if cfg.rpo_alpha else ["sigmoid"]
    args = TRLDPOConfig(output_dir=str(work / "dpo"), max_steps=cfg.steps, per_device_train_batch_size=cfg.batch_pairs,
                        learning_rate=cfg.lr, lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=0.0,
                        beta=cfg.beta, loss_type=losses,
                        loss_weights=[1.0, cfg.rpo_alpha] if cfg.rpo_alpha else None,
                        precompute_ref_log_probs=True, max_length=GPTConfig.block_size, seed=seed, data_seed=seed,
                        **COMMON)
    trainer = DPOTrainer(model=path, args=args, train_dataset=hf.preference_dataset(chapter_pairs(base, seed)),
                         processing_class=hf.hf_tokenizer())
    seconds = _train(trainer)
    return hf.from_transformers(trainer.model), dict(seconds=seconds, **_history(trainer, "loss", "rewards/margins"))


# How the course's choices are named in TRL. The course's "token" mean is over the whole update: TRL's "dapo"
# normalises by the tokens of the whole accumulated batch ("bnpo" by each micro-batch's).
_LOSS_TYPES = {"sequence": "grpo", "token": "dapo", "dr_grpo": "dr_grpo"}
_BIAS_CORRECTED_KL = {"k3": False, "k3_ratio": True}


def grpo_settings(recipe: GRPOConfig = RECIPE) -> dict:
    """The `trl.GRPOConfig` keyword arguments of a course GRPO configuration: its algorithm, its budget per
    update and its optimiser (the batch layout and the machine are the caller's). Raises for what TRL's GRPO does
    not express (RLOO's baseline, a KL in the reward, k1 or k2 as the penalty).

    Set where TRL 1.16's defaults differ from the recipe: β (TRL 0), ``loss_type="grpo"`` (TRL "dapo"), k3 in the
    loss *without* the ratio (``use_bias_correction_kl=False``; TRL's default multiplies k3 by π_θ/π_old, the
    course's "k3_ratio"), no gradient clipping (TRL 1.0), a constant lr without warmup or weight decay (TRL: linear
    decay), plain sampling (no top-k, top-p or min-p)."""
    if recipe.advantage != "group":
        raise ValueError(f"advantage {recipe.advantage!r}: TRL's GRPOTrainer uses the group mean (RLOO is RLOOTrainer)")
    if recipe.kl_in != "loss" or recipe.kl_estimator not in _BIAS_CORRECTED_KL:
        raise ValueError(f"TRL puts k3 (or k3 × ratio) in the loss, not {recipe.kl_estimator} in the {recipe.kl_in}")
    return dict(
        num_generations=recipe.samples_per_prompt,
        num_iterations=recipe.epochs,
        learning_rate=recipe.lr,
        lr_scheduler_type="constant",                   # the course's AdamW runs at one rate
        weight_decay=0.0,                               # … without weight decay
        max_grad_norm=0.0,                              # … and clips nothing (TRL's default clips at 1.0)
        temperature=recipe.temperature,
        top_p=1.0, top_k=0, min_p=None, repetition_penalty=1.0,   # plain sampling at that temperature
        max_completion_length=recipe.max_new_tokens,
        beta=recipe.beta,
        use_bias_correction_kl=_BIAS_CORRECTED_KL[recipe.kl_estimator],
        epsilon=recipe.eps_low,
        epsilon_high=recipe.eps_high,
        scale_rewards="group" if recipe.scale_rewards else "none",
        importance_sampling_level=recipe.ratio_level,
        loss_type=_LOSS_TYPES[recipe.aggregation],
        reward_weights=[1.0, recipe.format_weight],     # correct + format_weight · format: `tw.rule_reward`
    )


def grpo_config(cfg: GRPOConfig = RECIPE, output_dir: str | Path = "grpo") -> TRLGRPOConfig:
    """TRL's `GRPOConfig` for a course recipe on one CPU process: `grpo_settings`, one update per optimizer step
    (``per_device_train_batch_size`` counts completions in TRL: prompts × G) and the course's problem order."""
    return TRLGRPOConfig(output_dir=str(output_dir), **COMMON, **grpo_settings(cfg),
                         per_device_train_batch_size=cfg.prompts_per_update * cfg.samples_per_prompt,
                         max_steps=cfg.updates * cfg.epochs, shuffle_dataset=False, seed=cfg.seed, data_seed=cfg.seed)


def grpo(seed: int = 0, cfg: GRPOConfig = RECIPE, workdir: str | Path | None = None):
    """Chapter 10's recipe (`llmcourse.grpo.grpo_run`) with TRL's `GRPOTrainer` and the course's rule rewards.

    The same training problems in the same order (`tw.sample_problems`, seed 10,000 + seed), G, prompts per
    update, lr, β, ε, aggregation and length budget (`grpo_config`). Sampling is transformers' ``generate``."""
    cfg = replace(cfg, seed=seed)
    quiet()
    torch.manual_seed(seed)
    work = _workdir(workdir)
    path = hf.save_pretrained(load_base_model(), work / "base")
    problems = tw.sample_problems(cfg.updates * cfg.prompts_per_update, seed=10_000 + seed)
    tokenizer = hf.hf_tokenizer()
    tokenizer.padding_side = "left"                  # prompts are left-padded for generation
    trainer = GRPOTrainer(model=path, reward_funcs=[hf.accuracy_reward, hf.format_reward],
                          args=grpo_config(cfg, work / "grpo"), train_dataset=hf.prompt_dataset(problems),
                          processing_class=tokenizer)
    seconds = _train(trainer)
    history = _history(trainer, "reward", "kl", "entropy", "completions/mean_length")
    return hf.from_transformers(trainer.model), dict(seconds=seconds, **history)
