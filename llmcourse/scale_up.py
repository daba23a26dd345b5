"""The way up: chapter 10's GRPO recipe run through TRL's `GRPOTrainer`, on a real model and on several GPUs.

The course trains an 847k-parameter GPT with its own GRPO loop (`llmcourse.grpo`). This script runs the *same
recipe*, `llmcourse.grpo.RECIPE`, with the task world's rule rewards, through Hugging Face TRL, the library the
field uses, so the step from the course to a real model is one command:

* ``--model course`` (the tests' path; CPU, about 75 s of training on one thread for the full recipe): the course's
  base model, converted to a transformers model (`llmcourse.hf`), trained by TRL on the course's own prompts and
  rewards. It shows that TRL with these settings *is* chapter 10's algorithm: it starts from the same model, sees the
  same problems in the same order, and reaches what the course's loop reaches (held-out sampled accuracy from 34%
  to 88.5%, greedy 98%, in one run here; the course's own loop reaches 83–87% sampled). It is also the way to try
  every code path of the script (TRL's trainer, LoRA, the evaluation) in seconds, on a laptop, before renting a GPU.
  It needs nothing beyond the course's environment and downloads nothing.
* ``--model Qwen/Qwen2.5-0.5B-Instruct`` (the default; one GPU): a real instruct model, prompted through its chat
  template, scored by the same rules.
* the same script under ``accelerate launch`` (several GPUs: DDP, DeepSpeed ZeRO-2/3 or FSDP2), with vLLM
  generating the samples (``--vllm colocate`` or ``--vllm server``).

Commands
--------
The course model, the full recipe (40 updates × 16 problems × 8 samples), then the held-out evaluation::

    python -m llmcourse.scale_up --model course --eval --threads 1

The real model on one GPU (downloads about 1 GB on first use: ``Qwen/Qwen2.5-0.5B-Instruct``, 0.49 B parameters
stored in bf16, plus its tokenizer). First the model as it is, then training, then the trained model::

    python -m llmcourse.scale_up --eval-only
    python -m llmcourse.scale_up --output-dir runs/qwen-grpo --eval
    python -m llmcourse.scale_up --output-dir runs/qwen-grpo-lora --use-peft --lora-rank 16 --eval     # LoRA

Several GPUs: TRL ships accelerate configs (``zero1``, ``zero2``, ``zero3``, ``fsdp1``, ``fsdp2``, ``multi_gpu``,
``single_gpu``); this script prints the path of one (or list them all with
``python -c "import trl, pathlib; print(pathlib.Path(trl.__file__).parent / 'accelerate_configs')"``). The configs
say ``num_processes: 8``; ``--num_processes`` overrides it. Four GPUs::

    accelerate launch --config_file $(python -m llmcourse.scale_up --print-accelerate-config zero2) \\
        --num_processes 4 -m llmcourse.scale_up --output-dir runs/qwen-zero2
    accelerate launch --config_file $(python -m llmcourse.scale_up --print-accelerate-config zero3) \\
        --num_processes 4 -m llmcourse.scale_up --output-dir runs/qwen-zero3
    accelerate launch --config_file $(python -m llmcourse.scale_up --print-accelerate-config fsdp2) \\
        --num_processes 4 -m llmcourse.scale_up --output-dir runs/qwen-fsdp2
    accelerate launch --config_file $(python -m llmcourse.scale_up --print-accelerate-config multi_gpu) \\
        --num_processes 4 -m llmcourse.scale_up --output-dir runs/qwen-ddp

vLLM colocated: every training process also runs a vLLM engine on its own GPU, which generates the samples and
gets the new weights after each update (one GPU, or add it to any launch above)::

    python -m llmcourse.scale_up --vllm colocate --output-dir runs/qwen-vllm
    accelerate launch --config_file $(python -m llmcourse.scale_up --print-accelerate-config zero2) \\
        --num_processes 4 -m llmcourse.scale_up --vllm colocate --output-dir runs/qwen-zero2-vllm

vLLM as a server: generation runs in a separate process on GPUs of its own, training on the others (here 8 GPUs:
four serve, four train; the server must be up before training starts, and the model must be the same)::

    CUDA_VISIBLE_DEVICES=0,1,2,3 trl vllm-serve --model Qwen/Qwen2.5-0.5B-Instruct --data_parallel_size 4
    CUDA_VISIBLE_DEVICES=4,5,6,7 accelerate launch \\
        --config_file $(python -m llmcourse.scale_up --print-accelerate-config zero2) \\
        --num_processes 4 -m llmcourse.scale_up --vllm server --output-dir runs/qwen-server

The number of training processes must divide the 128 samples of an update (1, 2, 4, 8, 16 …): the script spreads
them as per-process micro-batches of ``--per-device-batch`` samples and accumulates gradients over the rest
(one GPU: 8 micro-batches of 16; four GPUs: 2 of 16 each), so every setting above makes the same update, 16
problems × 8 samples. After a run on several processes, ``--eval`` is skipped (the weights may be sharded);
evaluate the saved model in one process: ``python -m llmcourse.scale_up --model runs/qwen-zero2 --eval-only``.

What the real run needs
-----------------------
* A CUDA GPU with bf16 (Ampere or newer) and PyTorch built with CUDA
  (``python -c "import torch; print(torch.cuda.is_available())"`` prints True).
* ``vllm`` and ``deepspeed`` are extra installs, not part of the course's environment and never needed by its tests:
  ``pip install "trl[vllm]==1.16.0"`` (vLLM 0.22 – 0.31) and ``pip install "trl[deepspeed]==1.16.0"`` (DeepSpeed
  ≥ 0.18.6; it may compile CUDA kernels on first use). vLLM pins the PyTorch it was built against and replaces the
  course's pinned torch, so give it an environment of its own (``pip install -e .``, then the vLLM line; pip then
  warns that the course's torch pin no longer holds: the notebooks' recorded outputs assume it, this script does not).
  FSDP2 and plain DDP need only accelerate, which the course installs.
* GPU memory, **estimated from parameter counts, not measured**: Qwen2.5-0.5B has 494 M parameters (136 M of them the
  tied 151,936 × 896 embedding). TRL loads the policy in float32 and trains it under bf16 autocast: weights 2.0 GB,
  gradients 2.0 GB, AdamW's two moments 4.0 GB, and the reference model for the KL term (β = 0.04 ≠ 0) another
  2.0 GB: about 10 GB before any activation. A micro-batch of 16 samples × ~300 tokens adds the logits over the
  152k-token vocabulary (16 × 256 × 151,936 values: 1.2 GB in bf16, 2.5 GB in float32 for the log-softmax and the
  entropy, both kept for the backward pass) and, with gradient checkpointing, little else; generating the 128
  samples of an update at once needs a KV cache of about 0.5 GB (24 layers × 2 × 2 KV heads × 64 × 2 bytes =
  12 KiB per token). Estimate: **15–20 GB without vLLM** (a 24 GB card should do; on 16 GB use ``--use-peft``,
  which drops the gradients, the moments and the reference copy, about 8 GB less, or ``--per-device-batch 8``).
  **With vLLM colocated**, vLLM takes ``--vllm-gpu-memory-utilization`` (TRL's default 0.3) of the *whole* card
  for its own bf16 copy of the weights (1 GB), its KV cache and its CUDA graphs: 0.3 × 80 GB = 24 GB on an H100,
  about 35–45 GB in all, so use a 40 GB card or more, or lower the share (0.15 is plenty for a 0.5 B model:
  128 samples × ~300 tokens of KV cache is about 0.5 GB). With ``--vllm server`` the training GPUs need what they
  need without vLLM, and the server's GPUs hold vLLM alone. ZeRO-2 divides the gradients and the moments among the
  processes, ZeRO-3 and FSDP2 the weights too; for a 0.5 B model the gain of several GPUs is speed (each one
  samples its share of the 128 completions), not memory.

Settings: what comes from the course, and where TRL differs
-----------------------------------------------------------
Every setting of the algorithm is read from `llmcourse.grpo.RECIPE` (`trl_runs.grpo_settings`), never typed here: G = 8
samples per problem, 16 problems per update, 40 updates, β = 0.04 with k3 in the loss, ε = 0.2 both sides,
rewards ÷ the group's std, the per-sequence mean, μ = 1, temperature 1, 48 new tokens, the format's weight 0.1,
learning rate 2e-4 (constant, AdamW without weight decay), no gradient clipping. TRL's defaults differ, so the
script sets each of these explicitly:

==========================  ============================  ===========================================
TRL setting                 TRL's default                 the course (set here)
==========================  ============================  ===========================================
``beta``                    0.0 (no KL, no reference)     0.04 (``RECIPE.beta``)
``loss_type``               "dapo" (token mean)           "grpo" (per-sequence mean, ``RECIPE.aggregation``)
``use_bias_correction_kl``  True (k3 × π_θ/π_old)         False: plain k3 (``RECIPE.kl_estimator``)
``max_grad_norm``           1.0                           0: no clipping (the course clips nothing)
``learning_rate``           1e-6                          2e-4 (``RECIPE.lr``; real models: see below)
``lr_scheduler_type``       "linear" decay to 0           "constant"
``max_completion_length``   512                           48 (``RECIPE.max_new_tokens``; real models: 256)
``shuffle_dataset``         True                          False: the problems in the course's order
``logging_steps``           10                            1: every update, as the course logs
``seed``                    42                            0 (``RECIPE.seed``; also the problems' seed)
``bf16``                    True                          False for the course model (it trains in float32)
``gradient_checkpointing``  True                          False for the course model (nothing to save)
``disable_dropout``         False                         True (the course's model has no dropout)
==========================  ============================  ===========================================

Already equal, set anyway so that a change of TRL's defaults cannot move them: ``num_generations`` 8,
``epsilon`` 0.2 (and ``epsilon_high``), ``scale_rewards`` "group", ``num_iterations`` 1, ``temperature`` 1,
``top_p`` 1, ``top_k`` 0 (off), ``importance_sampling_level`` "token", ``weight_decay`` 0, ``reward_weights``
[1, 0.1]. TRL's advantage is (r − mean)/(std + 1e-4) with the sample std, the course's too; TRL's "grpo" loss
averages each sample's tokens, then the samples, and divides by the accumulation steps: the course's mean.

For a real model three settings are the script's, not the recipe's, since a 600 times larger model that was
already trained does not take the tiny model's step size or token budget: learning rate **1e-6** (TRL's default,
the usual size for full fine-tuning with GRPO) or **1e-5** with ``--use-peft`` (LoRA wants about ten times the
full-fine-tuning rate), **256** new tokens (the model writes its column sums in words), and **200** updates. They are
starting points, not tuned here (this repository's machines have no GPU). bf16 autocast and gradient checkpointing
are on. With vLLM, TRL corrects by importance sampling for the difference between vLLM's and the trainer's
probabilities (``vllm_importance_sampling_correction``, on by default); the course samples with the model it trains
and has no such term.

Prompts and rules for a real model
----------------------------------
A real instruct model gets the problem as a conversation, through its chat template::

    [{"role": "user", "content": "What is 47+385? Work it out column by column inside <think> </think>, then
      give only the final number inside <answer> </answer>."}]

and TRL hands the reward functions its completions as messages (``[{"role": "assistant", "content": …}]``);
`chat_accuracy_reward` and `chat_format_reward` accept those and plain strings. The accuracy rule is the course's:
`taskworld.is_correct`, the text of the first ``<answer>…</answer>`` must be the sum, exactly. The format rule is the
course's ``<think>[^<>]*</think><answer>DIGITS</answer>`` *with whitespace allowed* around and between the tags
(`loose_format_ok`). The course's strict rule fits the course's tokenizer, in which the tags are single tokens and
the base model learned to write them back to back; an instruct model's chat habits put newlines between blocks, so
the strict rule would pay nothing for a response that follows the instruction, and RL would spend its updates
deleting newlines, a lesson about whitespace, not about reasoning. The evaluation reports both rates.

The course's model keeps its own prompt format (`taskworld.prompt`, via `hf.prompt_dataset`) and its own rules,
`hf.accuracy_reward` and `hf.format_reward`, unchanged. Its positions follow the attention mask
(`hf.CourseGPTModel`) because TRL scores left-padded rows with plain forward passes; real models with rotary
positions need nothing of the kind.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from llmcourse import taskworld as tw
from llmcourse.grpo import RECIPE

if TYPE_CHECKING:                                        # TRL is imported when it is used: `import` stays cheap
    import trl
    from datasets import Dataset

COURSE = "course"
"""``--model course``: the course's base model, converted with `llmcourse.hf`."""
DEFAULT_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
"""The real model of the default run: a small instruct model (0.49 B parameters, about 1 GB in bf16)."""

REAL_MODEL_STEPS = 200
"""Updates for a real model: five times the course's 40 (3,200 problems), a starting point."""
REAL_MODEL_LR = 1e-6
"""Learning rate for full fine-tuning of a real model (TRL's default)."""
REAL_MODEL_LORA_LR = 1e-5
"""Learning rate for a real model with LoRA (about ten times the full-fine-tuning rate)."""
REAL_MODEL_MAX_NEW_TOKENS = 256
"""Token budget of a real model's response (it writes its column sums in words)."""
REAL_MODEL_PER_DEVICE = 16
"""Samples per process per micro-batch for a real model (the rest of the update is accumulated)."""

INSTRUCTION = ("Work it out column by column inside <think> </think>, "
               "then give only the final number inside <answer> </answer>.")
"""What a real model is told after the question."""

VLLM_MODES = ("off", "colocate", "server")

_LOOSE_FORMAT = re.compile(r"\s*<think>[^<>]*</think>\s*<answer>\s*(\d+)\s*</answer>\s*")


# --------------------------------------------------------------------------- the recipe in TRL's terms

# --------------------------------------------------------------------------- command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring); defaults that depend on the model are filled in here."""
    p = argparse.ArgumentParser(prog="python -m llmcourse.scale_up", description=__doc__.split("\n\n")[0],
                                epilog="Commands, memory and the settings: python -c \"import llmcourse.scale_up as s; "
                                       "help(s)\"")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"a model id or folder, or {COURSE!r} for the course's base model (default: %(default)s)")
    p.add_argument("--output-dir", default=None, help="where the trained model goes (default: runs/scale_up-<model>)")
    p.add_argument("--max-steps", type=int, default=None,
                   help=f"updates (default: the recipe's {RECIPE.updates} for the course model, "
                        f"{REAL_MODEL_STEPS} for a real one)")
    p.add_argument("--prompts-per-update", type=int, default=RECIPE.prompts_per_update,
                   help="problems per update, each sampled %d times (default: the recipe's %%(default)s)"
                        % RECIPE.samples_per_prompt)
    p.add_argument("--per-device-batch", type=int, default=None,
                   help="samples per process per micro-batch; the rest of an update is accumulated "
                        f"(default: the whole update for the course model, {REAL_MODEL_PER_DEVICE} for a real one)")
    p.add_argument("--max-completion-length", type=int, default=None,
                   help=f"new tokens per sample (default: the recipe's {RECIPE.max_new_tokens} for the course model, "
                        f"{REAL_MODEL_MAX_NEW_TOKENS} for a real one)")
    p.add_argument("--lr", type=float, default=None,
                   help=f"learning rate (default: the recipe's {RECIPE.lr:g} for the course model; {REAL_MODEL_LR:g} "
                        f"for a real one, {REAL_MODEL_LORA_LR:g} with --use-peft)")
    p.add_argument("--beta", type=float, default=RECIPE.beta, help="weight of the KL to the reference (%(default)s)")
    p.add_argument("--seed", type=int, default=RECIPE.seed, help="seed of the problems and the sampling (%(default)s)")
    p.add_argument("--vllm", choices=VLLM_MODES, default="off",
                   help="generate with vLLM in each training process (colocate) or in a `trl vllm-serve` server")
    p.add_argument("--vllm-gpu-memory-utilization", type=float, default=0.3,
                   help="colocate: share of the GPU's memory vLLM may take (TRL's default %(default)s)")
    p.add_argument("--vllm-server-host", default="0.0.0.0", help="server: host of `trl vllm-serve` (%(default)s)")
    p.add_argument("--vllm-server-port", type=int, default=8000, help="server: its port (%(default)s)")
    p.add_argument("--use-peft", action="store_true", help="train LoRA adapters instead of all the weights")
    p.add_argument("--lora-rank", type=int, default=16, help="LoRA rank r (%(default)s)")
    p.add_argument("--lora-alpha", type=float, default=32.0, help="LoRA alpha; the update is scaled by alpha/r")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast (default: on for a real model when the GPU has bf16, off for the course model)")
    p.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                   help="recompute activations in the backward pass (default: on for a real model)")
    p.add_argument("--eval", action="store_true", help="after training, accuracy on the held-out problems")
    p.add_argument("--eval-only", action="store_true", help="evaluate --model as it is, without training")
    p.add_argument("--eval-problems", type=int, default=tw.EVAL_SIZE,
                   help="how many of the held-out problems to evaluate on (%(default)s, all)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--print-accelerate-config", metavar="NAME", default=None,
                   help="print the path of TRL's shipped accelerate config NAME (zero2, zero3, fsdp2, multi_gpu, …)")
    args = p.parse_args(argv)

    course = is_course(args.model)
    if args.max_steps is None:
        args.max_steps = RECIPE.updates if course else REAL_MODEL_STEPS
    if args.max_completion_length is None:
        args.max_completion_length = RECIPE.max_new_tokens if course else REAL_MODEL_MAX_NEW_TOKENS
    if args.lr is None:
        args.lr = RECIPE.lr if course else (REAL_MODEL_LORA_LR if args.use_peft else REAL_MODEL_LR)
    if args.per_device_batch is None:
        args.per_device_batch = args.prompts_per_update * RECIPE.samples_per_prompt if course else REAL_MODEL_PER_DEVICE
    if args.bf16 is None:
        args.bf16 = not course and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if args.gradient_checkpointing is None:
        args.gradient_checkpointing = not course
    if args.output_dir is None:
        args.output_dir = str(Path("runs") / ("scale_up-" + Path(args.model).name.replace("/", "-")))
    if course and args.vllm != "off":
        p.error("vLLM does not know the course's model type; --vllm needs a real model")
    return args


def is_course(model: str) -> bool:
    """Is ``model`` the course's GPT: ``"course"``, or a folder holding a converted (model type ``course_gpt``)
    model or LoRA adapters on one? Reads local files only (a model id is never looked up)."""
    if model == COURSE:
        return True
    folder = Path(model)
    if (folder / "config.json").is_file():
        return json.loads((folder / "config.json").read_text()).get("model_type") == "course_gpt"
    if (folder / "adapter_config.json").is_file():
        base = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path") or ""
        return base != model and is_course(base)
    return False


def accelerate_config(name: str) -> Path:
    """The path of TRL's shipped accelerate config ``name`` (``"zero3"`` or ``"zero3.yaml"``)."""
    import trl
    folder = Path(trl.__file__).parent / "accelerate_configs"
    path = folder / (name if name.endswith(".yaml") else f"{name}.yaml")
    if not path.is_file():
        have = sorted(f.stem for f in folder.glob("*.yaml"))
        raise FileNotFoundError(f"TRL ships no accelerate config {name!r}; it has {have} in {folder}")
    return path


def world_size() -> int:
    """Processes of this run (``accelerate launch`` sets ``WORLD_SIZE``; 1 otherwise)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


# --------------------------------------------------------------------------- data and rewards


def train_problems(args: argparse.Namespace) -> list[tw.Problem]:
    """The training problems, in order: the course's (`train_grpo` draws ``updates × prompts_per_update`` from seed
    ``10_000 + seed``; a longer run continues the same stream, so the first 640 are the recipe's)."""
    return tw.sample_problems(args.max_steps * args.prompts_per_update, seed=10_000 + args.seed)


def chat_prompt(p: tw.Problem) -> list[dict[str, str]]:
    """A real model's prompt: one user message, the question and `INSTRUCTION`."""
    return [{"role": "user", "content": f"{p.question} {INSTRUCTION}"}]


def build_dataset(args: argparse.Namespace) -> Dataset:
    """Prompt rows with the operands ``a`` and ``b`` (TRL passes them to the reward functions): the course's
    prompt format for the course's model (`hf.prompt_dataset`), a conversation for a real model."""
    problems = train_problems(args)
    if is_course(args.model):
        from llmcourse import hf
        return hf.prompt_dataset(problems)
    from datasets import Dataset
    return Dataset.from_dict({"prompt": [chat_prompt(p) for p in problems],
                              "a": [p.a for p in problems], "b": [p.b for p in problems]})


def completion_text(completion: str | list[dict]) -> str:
    """A completion as text: a string as it is; TRL's conversational form (a list of messages, the model's
    ``{"role": "assistant", "content": …}``) as its assistant contents, joined."""
    if isinstance(completion, str):
        return completion
    parts = []
    for message in completion:
        if message.get("role", "assistant") != "assistant":
            continue
        content = message.get("content") or ""
        if isinstance(content, list):                    # content blocks: [{"type": "text", "text": …}, …]
            content = "".join(block.get("text", "") for block in content if isinstance(block, dict))
        parts.append(content)
    return "".join(parts)


def loose_format_ok(text: str) -> bool:
    """`taskworld.format_ok` with whitespace allowed around and between the tags (see the module docstring).

    ``loose_format_ok("<think>\\n7+5=12\\n</think>\\n<answer> 432 </answer>\\n") -> True``;
    ``loose_format_ok("<answer>432</answer>") -> False`` (no reasoning); ``loose_format_ok("432") -> False``.
    """
    return _LOOSE_FORMAT.fullmatch(tw.strip_eos(text)) is not None


def chat_accuracy_reward(completions: list, a: list[int], b: list[int], **kwargs) -> list[float]:
    """TRL reward function for a real model: 1.0 for the exact sum in the first ``<answer>…</answer>``
    (`taskworld.is_correct`), else 0.0; completions as strings or as lists of messages."""
    return [float(tw.is_correct(completion_text(c), tw.Problem(x, y))) for c, x, y in zip(completions, a, b)]


def chat_format_reward(completions: list, **kwargs) -> list[float]:
    """TRL reward function for a real model: 1.0 for ``<think>…</think><answer>DIGITS</answer>`` up to whitespace
    (`loose_format_ok`), else 0.0; completions as strings or as lists of messages."""
    return [float(loose_format_ok(completion_text(c))) for c in completions]


def reward_functions(args: argparse.Namespace) -> list[Callable[..., list[float]]]:
    """Accuracy, then format (weighted by ``grpo_settings()["reward_weights"]``): the course's own
    (`hf.accuracy_reward`, `hf.format_reward`) for the course's model, the conversational ones for a real model."""
    if is_course(args.model):
        from llmcourse import hf
        return [hf.accuracy_reward, hf.format_reward]
    return [chat_accuracy_reward, chat_format_reward]


# --------------------------------------------------------------------------- config and trainer


def batch_layout(args: argparse.Namespace, processes: int | None = None) -> tuple[int, int]:
    """(samples per process per micro-batch, gradient-accumulation steps) giving one update of
    ``prompts_per_update × G`` samples over ``processes`` processes."""
    processes = world_size() if processes is None else processes
    total = args.prompts_per_update * RECIPE.samples_per_prompt
    per_device = min(args.per_device_batch, total // processes) if total >= processes else 0
    if per_device < 1 or total % (per_device * processes):
        raise ValueError(f"an update of {total} samples does not split into micro-batches of {args.per_device_batch} "
                         f"on {processes} processes: choose a number of processes and --per-device-batch whose product "
                         f"divides {total}")
    return per_device, total // (per_device * processes)


def build_config(args: argparse.Namespace) -> trl.GRPOConfig:
    """TRL's `GRPOConfig` for ``args``: the course's recipe (`trl_runs.grpo_settings`) with the run's budget and machine.
    Builds the config only: nothing is loaded and vLLM is not imported."""
    from trl import GRPOConfig

    from llmcourse.trl_runs import grpo_settings
    course = is_course(args.model)
    settings = grpo_settings(RECIPE)
    per_device, accumulation = batch_layout(args)
    settings.update(learning_rate=args.lr, beta=args.beta, max_completion_length=args.max_completion_length)
    vllm: dict[str, Any] = {}
    if args.vllm != "off":
        vllm = dict(use_vllm=True, vllm_mode=args.vllm)
        if args.vllm == "colocate":
            vllm.update(vllm_gpu_memory_utilization=args.vllm_gpu_memory_utilization)
        else:
            vllm.update(vllm_server_host=args.vllm_server_host, vllm_server_port=args.vllm_server_port)
    return GRPOConfig(
        output_dir=args.output_dir,
        max_steps=args.max_steps * RECIPE.epochs,       # TRL counts optimizer steps: μ per sampled batch
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,       # one generation batch = one update = one optimizer step
        seed=args.seed, data_seed=args.seed,
        shuffle_dataset=False,                          # the course's order
        disable_dropout=True,
        bf16=args.bf16,
        activation_checkpointing=args.gradient_checkpointing,   # transformers 5's name for gradient_checkpointing
        use_cpu=course or not torch.cuda.is_available(),        # the 847k-parameter model trains on the CPU
        model_init_kwargs=None if course else {"dtype": "float32"},   # float32 master weights, bf16 autocast
        logging_steps=1,
        save_strategy="no",                             # `main` saves the final model
        report_to="none",
        disable_tqdm=True,                              # `CompactLog` prints one line per update
        **settings,
        **vllm,
    )


def peft_config(args: argparse.Namespace):
    """LoRA on every linear layer (``--use-peft``), or None. With LoRA, TRL's reference for the KL is the model
    with its adapters switched off: no copy."""
    if not args.use_peft:
        return None
    from peft import LoraConfig
    return LoraConfig(r=args.lora_rank, lora_alpha=args.lora_alpha, lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM", fan_in_fan_out=is_course(args.model))   # GPT-2's Conv1D stores W^T


def model_path(args: argparse.Namespace) -> str:
    """What TRL loads: the model id or folder, or for ``course`` the base model written as a transformers folder
    (``<output-dir>/course_base``; `hf.save_pretrained`). Importing `llmcourse.hf` registers the model type."""
    if args.model != COURSE:
        if is_course(args.model):
            importlib.import_module("llmcourse.hf")    # registers "course_gpt" with AutoModelForCausalLM
        return args.model
    from accelerate import PartialState

    from llmcourse import hf
    from llmcourse.checkpoint import load_base_model
    folder = Path(args.output_dir) / "course_base"
    with PartialState().main_process_first():          # one process writes, the others read
        if PartialState().is_main_process:
            hf.save_pretrained(load_base_model(), folder)
    return str(folder)


def build_trainer(args: argparse.Namespace) -> trl.GRPOTrainer:
    """TRL's `GRPOTrainer` for ``args``: model, rewards, data, config (and LoRA)."""
    from transformers import PrinterCallback
    from trl import GRPOTrainer
    config = build_config(args)
    path = model_path(args)
    processing_class = None                             # a real model's own tokenizer, loaded by TRL
    if is_course(args.model):
        from llmcourse import hf
        processing_class = hf.hf_tokenizer()
        processing_class.padding_side = "left"          # prompts are left-padded for generation
    trainer = GRPOTrainer(model=path, reward_funcs=reward_functions(args), args=config,
                          train_dataset=build_dataset(args), processing_class=processing_class,
                          peft_config=peft_config(args))
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(compact_log())
    return trainer


def compact_log():
    """A `transformers.TrainerCallback` that prints one line per update (TRL's log dicts have ~30 keys)."""
    from transformers import TrainerCallback

    class CompactLog(TrainerCallback):
        """One line per update: the reward, each reward function's mean, the KL, the entropy, the length."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs or "reward" not in logs:
                return
            rewards = " ".join(f"{k.split('/')[1].removeprefix('chat_').removesuffix('_reward')} {v:.3f}"
                               for k, v in logs.items() if k.startswith("rewards/") and k.endswith("/mean"))
            kl = f" kl {logs['kl']:.4f}" if "kl" in logs else ""
            print(f"update {state.global_step:>4}/{state.max_steps}: reward {logs['reward']:.3f} ({rewards}){kl} "
                  f"entropy {logs.get('entropy', math.nan):.3f} "
                  f"length {logs.get('completions/mean_length', math.nan):.1f} "
                  f"[{logs.get('step_time', math.nan):.1f} s]", flush=True)
    return CompactLog()


# --------------------------------------------------------------------------- evaluation


def eval_problem_set(n: int) -> list[tw.Problem]:
    """The first ``n`` of the course's held-out problems (`taskworld.eval_problems`)."""
    return list(tw.eval_problems())[:n]


def evaluate_course(hf_model, n_problems: int, seed: int = 0) -> dict:
    """Held-out metrics of a converted course model, by the course's own code: back to a `GPT`
    (`hf.from_transformers`, adapters merged first) and `evaluation.evaluate` (greedy, and 4 samples at T = 1)."""
    from llmcourse import hf
    from llmcourse.evaluation import evaluate
    if hasattr(hf_model, "merge_and_unload"):
        hf_model = hf_model.merge_and_unload()
    model = hf.from_transformers(hf_model.float().cpu())
    out = evaluate(model, eval_problem_set(n_problems), seed=seed)
    keys = ("greedy_accuracy", "greedy_format_rate", "sampled_accuracy", "format_rate", "pass_at_k", "reasoned_share",
            "n_problems")
    return {k: out[k] for k in keys}


@torch.no_grad()
def evaluate_chat(model, tokenizer, n_problems: int, max_new_tokens: int, batch_size: int = 64) -> dict:
    """Held-out greedy metrics of a real model: each problem's chat prompt, greedy decoding with transformers, the
    rules on the answer: accuracy (`taskworld.is_correct`), the whitespace-tolerant format (the training reward's)
    and the course's strict one."""
    from transformers import GenerationConfig
    problems = eval_problem_set(n_problems)
    device = next(model.parameters()).device
    texts: list[str] = []
    tokenizer.padding_side = "left"
    eos = model.generation_config.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    gen = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=pad)
    was_training = model.training
    model.eval()
    for i in range(0, len(problems), batch_size):
        prompts = [tokenizer.apply_chat_template(chat_prompt(p), tokenize=False, add_generation_prompt=True)
                   for p in problems[i:i + batch_size]]
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        out = model.generate(**enc, generation_config=gen)
        texts += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    model.train(was_training)
    n = len(problems)
    return {"greedy_accuracy": sum(tw.is_correct(t, p) for t, p in zip(texts, problems)) / n,
            "greedy_format_rate": sum(loose_format_ok(t) for t in texts) / n,
            "greedy_strict_format_rate": sum(tw.format_ok(t) for t in texts) / n,
            "n_problems": n, "example": texts[0] if texts else ""}


def load_for_eval(args: argparse.Namespace):
    """``(model, tokenizer)`` of ``--model`` as it is (``--eval-only``): the course's base model, a saved model
    folder, adapters on one, or a model id; on the GPU when there is one (not the course's)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    if args.model == COURSE:                            # the shipped base model, converted in memory
        from llmcourse import hf
        from llmcourse.checkpoint import load_base_model
        return hf.to_transformers(load_base_model()), hf.hf_tokenizer()
    path = model_path(args)
    if Path(path, "adapter_config.json").is_file():
        from peft import AutoPeftModelForCausalLM
        model = AutoPeftModelForCausalLM.from_pretrained(path).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype="auto")
    tokenizer = AutoTokenizer.from_pretrained(path)
    if not is_course(args.model) and torch.cuda.is_available():
        model = model.to("cuda")
    return model, tokenizer


def evaluate_model(args: argparse.Namespace, model, tokenizer) -> dict:
    """The held-out evaluation that fits the model: the course's for the course's, greedy chat for a real one."""
    if is_course(args.model):
        return evaluate_course(model, args.eval_problems, seed=args.seed)
    return evaluate_chat(model, tokenizer, args.eval_problems, args.max_completion_length)


# --------------------------------------------------------------------------- main


def _print_eval(title: str, metrics: dict) -> None:
    shown = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float))
    print(f"{title} ({metrics['n_problems']} held-out problems): {shown}", flush=True)
    if metrics.get("example"):
        print(f"  first answer: {metrics['example']!r}", flush=True)


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the command line; returns what it printed as a dict: ``log_history`` (TRL's per-update logs),
    ``train_seconds``, ``eval`` (when evaluated) and, for the course's model, ``base_eval`` (the shipped base model's
    recorded evaluation); with ``--print-accelerate-config``, ``accelerate_config``. Also written as
    ``<output-dir>/scale_up_summary.json``."""
    args = parse_args(argv)
    if args.print_accelerate_config:
        path = accelerate_config(args.print_accelerate_config)
        print(path)
        return {"accelerate_config": str(path)}
    if args.threads:
        torch.set_num_threads(args.threads)
    summary: dict[str, Any] = {"model": args.model, "max_steps": args.max_steps, "vllm": args.vllm,
                               "use_peft": args.use_peft, "lr": args.lr, "beta": args.beta, "seed": args.seed}
    if is_course(args.model) and args.model == COURSE:
        from llmcourse.checkpoint import base_model_metrics
        recorded = base_model_metrics()
        keys = ("greedy_accuracy", "greedy_format_rate", "sampled_accuracy", "format_rate", "pass_at_k")
        summary["base_eval"] = {k: recorded[k] for k in keys if k in recorded}
    if args.eval_only:
        model, tokenizer = load_for_eval(args)
        summary["eval"] = evaluate_model(args, model, tokenizer)
        _print_eval(f"{args.model}", summary["eval"])
        return summary

    trainer = build_trainer(args)
    main_process = trainer.accelerator.is_main_process
    if main_process:
        per_device, accumulation = batch_layout(args)
        print(f"GRPO on {args.model}: {args.max_steps} updates × {args.prompts_per_update} problems × "
              f"{RECIPE.samples_per_prompt} samples ({world_size()} process(es) × {accumulation} micro-batch(es) of "
              f"{per_device}), lr {args.lr:g}, β {args.beta:g}, vLLM {args.vllm}, LoRA {args.use_peft}", flush=True)
    start = time.perf_counter()
    trainer.train()
    summary["train_seconds"] = time.perf_counter() - start
    summary["log_history"] = [h for h in trainer.state.log_history if "reward" in h]
    trainer.save_model(args.output_dir)
    if main_process:
        print(f"trained in {summary['train_seconds']:.1f} s; saved to {args.output_dir}", flush=True)
    if args.eval:
        if world_size() > 1:
            if main_process:
                print(f"--eval skipped on {world_size()} processes: python -m llmcourse.scale_up "
                      f"--model {args.output_dir} --eval-only", flush=True)
        else:
            if "base_eval" in summary:
                print(f"base model (recorded): {summary['base_eval']}", flush=True)
            summary["eval"] = evaluate_model(args, trainer.model, trainer.processing_class)
            _print_eval("trained model", summary["eval"])
    if main_process:
        Path(args.output_dir, "scale_up_summary.json").write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
