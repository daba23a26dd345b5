"""DeepSeek-R1's training pipeline at toy scale: cold start → RL → rejection sampling → SFT of the base model.

DeepSeek-R1 (DeepSeek-AI 2025, §2.3) is trained in four stages from the base model DeepSeek-V3-Base:

1. **cold start**: SFT on a few thousand long, readable chain-of-thought examples, so that RL does not start from
   a model that reasons badly or unreadably (R1-Zero's weaknesses);
2. **reasoning-oriented RL**: GRPO with rule rewards (accuracy, format, language consistency);
3. **rejection sampling and SFT**: from the RL checkpoint, about 600k reasoning samples, kept only when right (by
   rules, or by DeepSeek-V3 as a judge) and readable, plus 200k non-reasoning ones, fine-tune *the base model*
   (DeepSeek-V3-Base, not the RL model) for two epochs;
4. **RL for all scenarios**: RL again, with rule rewards for reasoning and reward models for helpfulness.

R1-Zero, the same base model trained by RL alone, is chapter 10's recipe on the task world. `train_r1` runs stages
1–3 on the task world (stage 4, optional here, is chapter 10's RL again from the final model, ``rl_again``):

    base ──SFT on cold_start_examples task-world reasoned responses──▶ cold-started model
         ──GRPO (chapter 10's recipe, `grpo.RECIPE`)──▶ RL model
         ──k samples on fresh training problems, `filter_samples`: right, well-formed, distinct, ≤ m──▶ SFT data
    base ──SFT on that data──▶ the R1 model

The data of stage 3 are the RL model's own responses, right by the rules: what RL learned, written down as
examples that any model can be fine-tuned on (DeepSeek-R1 §2.4 distils smaller models from such data). Why the
base model and not the RL model: the SFT data hold only what the rules accept, so the RL model's other drifts
(its KL from the base, its entropy) are not copied; the new model starts again from the base's distribution.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from llmcourse import taskworld as tw
from llmcourse.grpo import RECIPE as GRPO_RECIPE
from llmcourse.grpo import GRPOConfig, train_grpo
from llmcourse.model import GPT
from llmcourse.pretraining import TrainConfig
from llmcourse.rejection_sampling import RECIPE as RFT_RECIPE
from llmcourse.rejection_sampling import filter_samples, sft_config
from llmcourse.run_log import RunLog
from llmcourse.sampling import sample_responses
from llmcourse.sft import encode_example, examples_from_responses, finetune_on

STAGES = ("base", "cold start", "cold start + RL", "R1: base SFT on RL samples", "R1 + RL again")
"""The models `train_r1` hands to ``on_stage``, in order (the last only with ``rl_again``)."""


def cold_start_config(seed: int = 0) -> TrainConfig:
    """The cold start's SFT: 20 AdamW steps of 32 examples, peak lr 3e-4, warmup 4, cosine to 3e-5, no weight
    decay (chapter 06's full fine-tuning budget)."""
    return replace(sft_config(seed), steps=20)                      # a round's SFT (rejection_sampling), half as long


@dataclass(frozen=True)
class R1Config:
    """The R1 pipeline on the task world; the defaults are chapter 12's recipe (`RECIPE`)."""

    cold_start_examples: int = 200
    """Reasoned responses written by the task world (`sft.encode_example`) for the cold start: a few hundred."""
    cold_start: TrainConfig = field(default_factory=cold_start_config)
    """The cold start's SFT (its seed replaced by ``seed``)."""
    rl: GRPOConfig = field(default_factory=lambda: GRPO_RECIPE)
    """Stage 2 (and the optional stage 4): chapter 10's GRPO recipe (its seed replaced by ``seed``)."""
    problems: int = RFT_RECIPE.problems_per_round
    """Stage 3: fresh training problems the RL model answers (one rejection-sampling round's, 320)."""
    samples_per_problem: int = RFT_RECIPE.samples_per_problem
    """Stage 3: k samples per problem (320 × 8 = 2,560 responses, one RFT round's budget)."""
    max_per_problem: int = RFT_RECIPE.max_per_problem
    """Stage 3: m, distinct right and well-formed responses kept per problem at most (`filter_samples`)."""
    temperature: float = RFT_RECIPE.temperature
    """Stage 3: sampling temperature (a round's)."""
    sft: TrainConfig = field(default_factory=sft_config)
    """Stage 3: the SFT of the base model on the kept samples (rejection sampling's round SFT; seed replaced)."""
    rl_again: bool = False
    """Stage 4: GRPO again from the R1 model (chapter 10's recipe)."""
    seed: int = 0
    """Seed of every stage's problems, sampling and batches."""


RECIPE = R1Config()
"""Chapter 12's R1 run: cold start on 200 reasoned examples (20 steps), chapter 10's GRPO, 320 × 8 samples from the RL
model filtered (m = 4), 40 SFT steps of the base model on them; no second RL stage."""


def train_r1(model: GPT, cfg: R1Config, on_stage: Callable[[str, GPT], None] | None = None) -> dict[str, list[float]]:
    """The R1 pipeline from ``model`` (the base model), trained in place: at the end it is the R1 model.

    ``on_stage(name, model)`` sees the model after each stage (names in `STAGES`, "base" first; its time is not
    counted). Returns ``cold_start_examples``, ``rl_accuracy`` (GRPO's last batch's accuracy), ``rs_sampled``,
    ``rs_kept``, ``rs_kept_problems``, ``rs_sample_accuracy`` (of stage 3's samples) and ``stage_seconds`` (one per
    stage), each a one-item list except the last; and ``seconds`` (training time, sampling included).
    """
    device = next(model.parameters()).device
    base_state = copy.deepcopy(model.state_dict())                     # stage 3 fine-tunes the base model again
    log = RunLog(model, (lambda i, m: on_stage(STAGES[i], m)) if on_stage else None)
    mark = [time.perf_counter(), 0.0]                                  # a stage's start: the clock, eval seconds

    def stage_done(i: int) -> None:
        """Record the stage's training time, then show the model to ``on_stage`` as `STAGES`[i]."""
        log.add(stage_seconds=time.perf_counter() - mark[0] - (log.eval_seconds - mark[1]))
        log.evaluate(i)
        mark[:] = [time.perf_counter(), log.eval_seconds]

    log.evaluate(0)
    # Stage 1: cold start, SFT of the base model on a few hundred reasoned responses written by the task world
    cold = tw.sample_problems(cfg.cold_start_examples, seed=12_100 + cfg.seed)
    finetune_on(model, [encode_example(p, tw.REASONED) for p in cold], replace(cfg.cold_start, seed=cfg.seed),
                desc="cold start")
    stage_done(1)
    # Stage 2: RL with rule rewards from the cold-started model (its reference: the cold-started model)
    rl_history = train_grpo(model, replace(cfg.rl, seed=cfg.seed))
    stage_done(2)
    # Stage 3: rejection sampling from the RL model on fresh training problems ...
    problems = tw.sample_problems(cfg.problems, seed=12_200 + cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    model.eval()
    r = sample_responses(model, problems, cfg.samples_per_problem, temperature=cfg.temperature, generator=gen)
    rows_problems = r.per_row(problems)
    rows = filter_samples(r.texts, rows_problems, cfg.max_per_problem)
    # ... and SFT of the *base* model on what it kept (nothing kept: the base model as it was)
    model.load_state_dict(base_state)
    if rows:
        finetune_on(model, examples_from_responses(r, rows), replace(cfg.sft, seed=cfg.seed), desc="SFT on RL samples")
    model.eval()
    stage_done(3)
    # Stage 4 (optional): RL again
    if cfg.rl_again:
        train_grpo(model, replace(cfg.rl, seed=cfg.seed + 100))
        stage_done(4)
    log.add(cold_start_examples=len(cold), rl_accuracy=rl_history["accuracy"][-1], rs_sampled=len(r),
            rs_kept=len(rows), rs_kept_problems=len({rows_problems[i] for i in rows}),
            rs_sample_accuracy=sum(tw.is_correct(t, p) for t, p in zip(r.texts, rows_problems)) / len(r))
    return log.finish()


def r1_run(cfg: R1Config = RECIPE, seed: int = 0, device: str | torch.device = "cpu",
           on_stage: Callable[[str, GPT], None] | None = None) -> tuple[GPT, dict[str, list[float]]]:
    """A fresh copy of the shipped base model through `train_r1` with ``cfg`` for ``seed`` (torch's global seed set
    too): the R1 model and the history."""
    from llmcourse.checkpoint import load_base_model                   # the shipped model (chapter 05)
    torch.manual_seed(seed)
    model = load_base_model(device)
    history = train_r1(model, replace(cfg, seed=seed), on_stage=on_stage)
    return model, history
